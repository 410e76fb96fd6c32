package main

import (
	"github.com/p2p-messaging/p2p-messaging/chat"
)

// The rooms in the terminal UI: a room is a conversation keyed "#name",
// with its own scrollback, like a direct one. Its messages come in through
// incoming (convKey routes To "#name" there), member joins and leaves are
// dimmed notices in the room's conversation, coalesced like presence.

// roomJoined opens the joined room's conversation and switches to it.
func (m *model) roomJoined(here *conv, v joinedResult) {
	m.self.room = v.Room
	key := "#" + v.Room
	c := m.conv(key)
	m.addTo(c, &chatLine{kind: lineInfo, text: "joined room " + key})
	if here != c {
		m.addTo(here, &chatLine{kind: lineInfo, text: "joined room " + key})
	}
	m.switchTo(m.index(key))
}

// roomResult shows a room command's answer in the room's conversation
// (/leave, whose conversation stays as scrollback, in the one it was typed in).
func (m *model) roomResult(here *conv, v any) {
	c := here
	switch r := v.(type) {
	case createdResult:
		c = m.conv("#" + r.Room)
	case inviteResult:
		c = m.conv("#" + r.Room)
	case membersResult:
		c = m.conv("#" + r.Room)
	}
	for _, l := range roomResultLines(v) {
		m.addTo(c, &chatLine{kind: lineInfo, text: l})
	}
}

// roomPresence is a member joining or leaving a room: a notice in the
// room's conversation. The peer's own online state is not touched: leaving
// a room is not going offline.
func (m *model) roomPresence(e chat.EventPresence) {
	state := "left"
	if e.Online {
		state = "joined"
	}
	m.addNotice("#"+e.Room, shortenIDs(e.Nick), state) // an unverified member is its peer ID
}
