package main

import (
	"context"

	"github.com/p2p-messaging/p2p-messaging/chat"
)

// startableNode is a chatNode that can be started (registration, watches).
type startableNode interface {
	chatNode
	Start(ctx context.Context) error
}

func newNode(ctx context.Context, cfg chat.Config) (startableNode, error) {
	return chat.New(ctx, cfg)
}
