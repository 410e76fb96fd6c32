package main

import (
	"fmt"

	"github.com/p2p-messaging/p2p-messaging/chat"
)

// This file is the CLI side of the sealed offline mailbox (issue 10): the
// -mailbox flag, the stored event in JSON, and its mark in the UI.

const mailboxFlagHelp = "leave a message the recipient does not take directly sealed in the daemons' mailboxes (and receipts for what we fetched); false: never deposit (what others left for us is still fetched)"

type jsonStored struct {
	Event   string `json:"event"`
	ID      string `json:"id"`
	To      string `json:"to"`
	Daemons int    `json:"daemons"`
}

func storedJSON(e chat.EventStored) any {
	return jsonStored{Event: "stored", ID: e.ID, To: e.To, Daemons: e.Daemons}
}

// storedSuffix is the mark of a pending message held in n daemons'
// mailboxes ("" when none).
func storedSuffix(n int) string {
	switch {
	case n <= 0:
		return ""
	case n == 1:
		return " ✉ stored on 1 daemon"
	default:
		return fmt.Sprintf(" ✉ stored on %d daemons", n)
	}
}

// storedLine is the text the UI shows for an EventStored that matches no
// line on screen (e.g. a message from an earlier run).
func storedLine(e chat.EventStored) string {
	return fmt.Sprintf("message %s to %s%s", e.ID, e.To, storedSuffix(e.Daemons))
}

// storedEvent marks the message's line as stored, until it is delivered.
func (m *model) storedEvent(e chat.EventStored) {
	if l := m.byID[e.ID]; l != nil {
		if l.mark != markDelivered {
			l.stored = e.Daemons
		}
		return
	}
	m.addTo(m.convs[0], &chatLine{kind: lineInfo, text: storedLine(e)})
}
