package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/charmbracelet/colorprofile"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/stretchr/testify/require"

	"github.com/p2p-messaging/p2p-messaging/chat"
)

func TestParseRoomCommands(t *testing.T) {
	invite := chat.InvitePrefix + "secret-plans:" + strings.Repeat("A", 43)
	for _, tc := range []struct {
		line    string
		want    command
		wantErr string
	}{
		{line: "/join #dev", want: command{kind: cmdJoin, room: "dev"}},
		{line: "/join " + invite, want: command{kind: cmdJoin, room: invite}},
		{line: "/join " + chat.InvitePrefix + "x:short", wantErr: "secret"},
		{line: "/join " + strings.Repeat("r", 65), wantErr: "at most 64"},
		{line: "/join bad/room", wantErr: "may hold only letters"},
		{line: "/leave dev", want: command{kind: cmdLeave, room: "dev"}},
		{line: "/leave #dev", want: command{kind: cmdLeave, room: "dev"}},
		{line: "/leave", wantErr: "usage: /leave <room>"},
		{line: "/create plans", want: command{kind: cmdCreate, room: "plans"}},
		{line: "/invite plans", want: command{kind: cmdInvite, room: "plans"}},
		{line: "/members #dev", want: command{kind: cmdMembers, room: "dev"}},
		{line: "/members", wantErr: "usage: /members <room>"},
		{line: "/unblock bob", want: command{kind: cmdUnblock, nick: "bob"}},
		{line: "/unblock", wantErr: "usage: /unblock"},
		{line: "/msg #dev hello all", want: command{kind: cmdMsg, nick: "#dev", text: "hello all"}},
		{line: "/msg #bad/room hi", wantErr: "may hold only letters"},
		{line: "/to #dev", want: command{kind: cmdTo, nick: "#dev"}},
		{line: "/history #dev 5", want: command{kind: cmdHistory, nick: "#dev", n: 5}},
		{line: "/history #dev", want: command{kind: cmdHistory, nick: "#dev", n: defaultHistory}},
	} {
		t.Run(tc.line, func(t *testing.T) {
			got, err := parseCommand(tc.line)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestRoomJSON(t *testing.T) {
	p, err := peer.Decode("12D3KooWGzBfT8k9w5ZxZXqNBpwG5ECW3GRWXYzSMEHMTvBrnFqj")
	require.NoError(t, err)
	for _, tc := range []struct {
		v    any
		want string
	}{
		{leftResult{Room: "dev"}, `{"event":"left","room":"dev"}`},
		{joinedResult{Room: "dev"}, `{"event":"joined","room":"dev"}`},
		{createdResult{Room: "x", Invite: "p2pm-invite:x:abc"}, `{"event":"created","room":"x","invite":"p2pm-invite:x:abc"}`},
		{inviteResult{Room: "x", Invite: "p2pm-invite:x:abc"}, `{"event":"invite","room":"x","invite":"p2pm-invite:x:abc"}`},
		{membersResult{Room: "dev", Members: []chat.RoomMember{{Nick: "bob", Peer: p, Online: true}}},
			`{"event":"members","room":"dev","members":[{"nick":"bob","peer":"` + p.String() + `","online":true}]}`},
		{chat.EventUnblocked{Peer: p}, `{"event":"unblocked","peer":"` + p.String() + `"}`},
		{chat.EventPresence{Nick: "bob", Peer: p, Online: true, Room: "dev"}, `{"event":"presence","nick":"bob","peer":"` + p.String() + `","online":true,"room":"dev"}`},
		{chat.EventPresence{Nick: "bob", Peer: p, Online: true}, `{"event":"presence","nick":"bob","peer":"` + p.String() + `","online":true}`},
		{chat.EventSent{ID: "ab", To: "#dev"}, `{"event":"sent","id":"ab","to":"#dev"}`},
	} {
		b, err := marshalLine(toJSON(tc.v))
		require.NoError(t, err)
		require.JSONEq(t, tc.want, string(b))
	}
	b, err := marshalLine(toJSON(chat.EventMessage{Message: chat.Message{ID: "ab", From: "bob", To: "#dev", Peer: p, Text: "hi", Room: "dev"}}))
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	require.Equal(t, "dev", m["room"])
	require.Equal(t, "#dev", m["to"])
	require.Nil(t, toJSON(unblockedResult{Peer: p}), "reported by the node's event")
	require.NotEmpty(t, roomResultLines(membersResult{Room: "dev", Members: []chat.RoomMember{{Nick: "bob", Peer: p}}}))
	require.Equal(t, "bob joined #dev", roomPresenceLine(chat.EventPresence{Nick: "bob", Peer: p, Online: true, Room: "dev"}))
	require.Empty(t, roomPresenceLine(chat.EventPresence{Nick: "bob", Peer: p, Online: true}))
}

// Three headless chats driven through the JSON contract: all join a room,
// each message reaches every other member once, an invite-only room is
// joined by invite, a late joiner gets the history once each in order,
// block and unblock answer, members lists everyone.
func TestJSONRooms(t *testing.T) {
	_, rv := daemon(t)
	procs := map[string]*jsonProc{}
	ids := map[string]string{}
	for _, name := range []string{"alice", "bob", "carol"} {
		procs[name] = startJSON(t, name, "-rendezvous", rv, "-data-dir", t.TempDir())
		ids[name] = procs[name].await("ready", map[string]any{"nick": name})["peer"].(string)
	}
	alice, bob, carol := procs["alice"], procs["bob"], procs["carol"]
	for _, p := range procs {
		p.send("/join dev")
		p.await("joined", map[string]any{"room": "dev"})
	}
	// Wait until alice sees both in the room.
	alice.await("presence", map[string]any{"room": "dev", "online": true})
	alice.await("presence", map[string]any{"room": "dev", "online": true})

	alice.send("/msg #dev hello room")
	sent := alice.await("sent", map[string]any{"to": "#dev"})
	for _, p := range []*jsonProc{bob, carol} {
		m := p.await("message", map[string]any{"id": sent["id"], "room": "dev", "text": "hello room"})
		require.Equal(t, "#dev", m["to"])
	}
	// A member confirmed it stored the message: the stored mark.
	alice.await("delivered", map[string]any{"id": sent["id"], "to": "#dev"})
	bob.send("/to #dev")
	bob.await("to", map[string]any{"nick": "#dev"})
	bob.send("bob here")
	sent2 := bob.await("sent", map[string]any{"to": "#dev"})
	alice.await("message", map[string]any{"id": sent2["id"], "room": "dev", "from": "bob"})
	carol.await("message", map[string]any{"id": sent2["id"], "room": "dev"})

	alice.send("/history #dev 10")
	h := alice.await("history", map[string]any{"with": "#dev"})
	require.Len(t, h["messages"], 2)

	alice.send("/members #dev")
	ms := alice.await("members", map[string]any{"room": "dev"})
	require.Len(t, ms["members"], 3)

	// Invite-only room.
	alice.send("/create plans")
	created := alice.await("created", map[string]any{"room": "plans"})
	invite := created["invite"].(string)
	require.True(t, strings.HasPrefix(invite, chat.InvitePrefix))
	alice.send("/invite plans")
	alice.await("invite", map[string]any{"room": "plans", "invite": invite})
	bob.send("/join " + invite)
	bob.await("joined", map[string]any{"room": "plans"})
	alice.await("presence", map[string]any{"room": "plans", "online": true})
	alice.send("/msg #plans sealed hello")
	sent3 := alice.await("sent", map[string]any{"to": "#plans"})
	bob.await("message", map[string]any{"id": sent3["id"], "room": "plans", "text": "sealed hello"})

	// Block and unblock.
	carol.send("/block " + ids["bob"])
	carol.await("blocked", map[string]any{"peer": ids["bob"]})
	carol.send("/unblock " + ids["bob"])
	carol.await("unblocked", map[string]any{"peer": ids["bob"]})

	// A late joiner gets the earlier messages once each, in order.
	dave := startJSON(t, "dave", "-rendezvous", rv, "-data-dir", t.TempDir())
	dave.await("ready", map[string]any{"nick": "dave"})
	dave.send("/join dev")
	dave.await("joined", map[string]any{"room": "dev"})
	first := dave.await("message", map[string]any{"room": "dev"})
	require.Equal(t, sent["id"], first["id"])
	second := dave.await("message", map[string]any{"room": "dev"})
	require.Equal(t, sent2["id"], second["id"])

	alice.send("/leave dev")
	alice.await("left", map[string]any{"room": "dev"})
}

// A room is a conversation of its own: /join opens and shows it, its
// messages land there, joins and leaves are notices in it, and a member
// leaving the room is not shown offline.
func TestTUIRoomConversation(t *testing.T) {
	m := testModel(t, 100, 14, colorprofile.ASCII)
	bob := mustPeer(t, bobID)
	m = update(t, m, eventMsg{chat.EventPresence{Nick: "bob", Peer: bob, Online: true}})
	m = update(t, m, resultMsg{v: joinedResult{Room: "dev"}})
	require.Equal(t, "#dev", m.cur().key, "/join switches to the room")
	m = update(t, m,
		eventMsg{chat.EventPresence{Nick: "bob", Peer: bob, Online: true, Room: "dev"}},
		eventMsg{chat.EventMessage{Message: chat.Message{ID: "m1", From: "bob", Peer: bob, To: "#dev", Room: "dev", Text: "hello room", Time: m.now()}}},
		eventMsg{chat.EventMessage{Message: chat.Message{ID: "m1", From: "bob", Peer: bob, To: "#dev", Room: "dev", Text: "hello room", Time: m.now()}}},
		eventMsg{chat.EventPresence{Nick: "bob", Peer: bob, Online: false, Room: "dev"}},
	)
	room := m.conv("#dev")
	var texts []string
	for _, l := range room.lines {
		if l.kind == lineNotice {
			texts = append(texts, l.noticeText())
		} else {
			texts = append(texts, l.text)
		}
	}
	require.Equal(t, 1, strings.Count(strings.Join(texts, "\n"), "hello room"), "shown once per message ID")
	require.Contains(t, strings.Join(texts, "\n"), "bob left")
	require.True(t, m.peers["bob"].online, "leaving a room is not going offline")
	require.Contains(t, screenText(m), "hello room")
}
