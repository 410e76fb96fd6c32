package main

import "context"

func (b *bench) runChat(ctx context.Context) {}

func (b *bench) evaluateChat() {}
