package chat

import (
	"context"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/stretchr/testify/require"
)

func inRoom(room string) nodeOpt {
	return func(c *testConfig) {
		c.Room = room
		c.RoomPresenceGrace = 300 * time.Millisecond
	}
}

func isRoomMessage(room, text string) func(Event) bool {
	return func(e Event) bool {
		m, ok := e.(EventMessage)
		return ok && m.Message.Room == room && m.Message.Text == text
	}
}

func isRoomPresence(room string, p peer.ID, online bool) func(Event) bool {
	return func(e Event) bool {
		ev, ok := e.(EventPresence)
		return ok && ev.Room == room && ev.Peer == p && ev.Online == online
	}
}

// waitMesh waits until every node sees the others in the room's topic.
func waitMesh(t *testing.T, room string, nodes ...*tnode) {
	t.Helper()
	for _, tn := range nodes {
		r, err := tn.rooms.get(room)
		require.NoError(t, err)
		require.Eventually(t, func() bool { return len(r.topic.ListPeers()) >= len(nodes)-1 }, 20*time.Second, 20*time.Millisecond,
			"%s sees %d peers in #%s", tn.Nick(), len(r.topic.ListPeers()), room)
	}
}

func sendRoom(t testing.TB, from *tnode, room, text string) Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := from.SendRoom(ctx, room, text)
	require.NoError(t, err)
	return m
}

// Every member receives each room message exactly once, with the room and
// the author's nick; a late joiner gets the earlier messages from history
// sync, once each, in send order; members and presence carry the room.
func TestRoomMessagesHistoryAndMembers(t *testing.T) {
	r := newRendezvous(t)
	alice := newNode(t, r, "alice", "", inRoom("dev"))
	bob := newNode(t, r, "bob", "", inRoom("dev"))
	carol := newNode(t, r, "carol", "", inRoom("dev"))
	waitMesh(t, "dev", alice, bob, carol)

	texts := []string{"one", "two", "three", "four", "five"}
	for _, text := range texts {
		m := sendRoom(t, alice, "dev", text)
		require.Equal(t, "#dev", m.To)
		alice.rec.wait(t, 5*time.Second, func(e Event) bool { s, ok := e.(EventSent); return ok && s.ID == m.ID && s.To == "#dev" })
	}
	for _, tn := range []*tnode{bob, carol} {
		for _, text := range texts {
			ev := tn.rec.wait(t, 10*time.Second, isRoomMessage("dev", text)).(EventMessage)
			require.Equal(t, alice.ID(), ev.Message.Peer)
			require.Equal(t, "alice", ev.Message.From)
			require.Equal(t, "#dev", ev.Message.To)
		}
	}
	require.Zero(t, alice.rec.count(isRoomMessage("dev", "one")), "own messages are not shown as incoming")

	// Dave joins later: the history comes once each, in order.
	dave := newNode(t, r, "dave", "", inRoom("lobby"))
	require.NoError(t, dave.Join(context.Background(), "dev"))
	require.ElementsMatch(t, []string{"dev", "lobby"}, dave.Rooms())
	for _, text := range texts {
		dave.rec.wait(t, 20*time.Second, isRoomMessage("dev", text))
	}
	var order []string
	for _, e := range dave.rec.all() {
		if m, ok := e.(EventMessage); ok && m.Message.Room == "dev" {
			order = append(order, m.Message.Text)
		}
	}
	require.Equal(t, texts, order, "each once, in send order")
	hist, err := dave.RoomHistory("dev", 3)
	require.NoError(t, err)
	require.Len(t, hist, 3)
	require.Equal(t, "five", hist[2].Text)

	// A live message after the sync is shown once too.
	sendRoom(t, bob, "dev", "welcome dave")
	dave.rec.wait(t, 10*time.Second, isRoomMessage("dev", "welcome dave"))
	require.Eventually(t, func() bool {
		return alice.rec.count(isRoomMessage("dev", "welcome dave")) == 1 && carol.rec.count(isRoomMessage("dev", "welcome dave")) == 1
	}, 10*time.Second, 20*time.Millisecond)

	// Members: everyone online; presence events name the room.
	require.Eventually(t, func() bool {
		ms, err := alice.Members("dev")
		if err != nil || len(ms) != 4 {
			return false
		}
		for _, m := range ms {
			if !m.Online {
				return false
			}
		}
		return true
	}, 20*time.Second, 50*time.Millisecond)
	alice.rec.wait(t, 10*time.Second, isRoomPresence("dev", dave.ID(), true))

	// Dave leaves: shown offline in the room once, after the grace.
	require.NoError(t, dave.Leave(context.Background(), "dev"))
	alice.rec.wait(t, 10*time.Second, isRoomPresence("dev", dave.ID(), false))
	require.Equal(t, 1, alice.rec.count(isRoomPresence("dev", dave.ID(), true)))
	_, err = dave.SendRoom(context.Background(), "dev", "gone")
	require.ErrorIs(t, err, ErrNotInRoom)
}

// A member offline during some messages catches up when it comes back,
// and its joined rooms persist across the restart.
func TestRoomCatchUpAfterRestart(t *testing.T) {
	r := newRendezvous(t)
	alice := newNode(t, r, "alice", "", inRoom("dev"))
	bobDir := t.TempDir()
	bob := newNode(t, r, "bob", bobDir, inRoom("dev"))
	require.NoError(t, bob.Join(context.Background(), "ops"))
	waitMesh(t, "dev", alice, bob)
	sendRoom(t, alice, "dev", "before")
	bob.rec.wait(t, 10*time.Second, isRoomMessage("dev", "before"))
	require.NoError(t, bob.Close())

	sendRoom(t, alice, "dev", "while away 1")
	sendRoom(t, alice, "dev", "while away 2")

	// Restarted without a room in its configuration: it rejoins both.
	bob = newNode(t, r, "bob", bobDir, func(c *testConfig) { c.RoomPresenceGrace = 300 * time.Millisecond })
	require.Equal(t, []string{"dev", "ops"}, bob.Rooms())
	bob.rec.wait(t, 20*time.Second, isRoomMessage("dev", "while away 1"))
	bob.rec.wait(t, 20*time.Second, isRoomMessage("dev", "while away 2"))
	require.Zero(t, bob.rec.count(isRoomMessage("dev", "before")), "what it had is not shown again")
	hist, err := bob.RoomHistory("dev", 0)
	require.NoError(t, err)
	require.Len(t, hist, 3)
}

// Room names: an invalid one gets an error saying why.
func TestRoomNames(t *testing.T) {
	alice := newNode(t, nil, "alice", "")
	for _, tc := range []struct{ name, why string }{
		{"", "empty"},
		{"bad room", "only letters"},
		{string(make([]byte, 65)), "at most 64"},
		{"a/b", "only letters"},
	} {
		err := alice.Join(context.Background(), tc.name)
		require.ErrorContains(t, err, tc.why, tc.name)
	}
	require.NoError(t, alice.Join(context.Background(), "a-b_c.d"))
	_, err := alice.JoinRoom(context.Background(), InvitePrefix+"x:short")
	require.ErrorContains(t, err, "secret")
}
