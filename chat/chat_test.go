package chat

import (
	"context"
	"errors"
	"fmt"
	"github.com/libp2p/go-libp2p"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestMessagesBothWaysWithAcks(t *testing.T) {
	r := newRendezvous(t)
	alice := newNode(t, r, "alice", "")
	bob := newNode(t, r, "bob", "")

	m := send(t, alice, "bob", "hello bob")
	require.Equal(t, bob.ID(), m.Peer, "nick resolved to bob's peer ID")
	require.Equal(t, StatusPending, m.Status)
	alice.rec.wait(t, 5*time.Second, func(e Event) bool { s, ok := e.(EventSent); return ok && s.ID == m.ID && s.To == "bob" })
	got := bob.rec.wait(t, 10*time.Second, isMessage("hello bob")).(EventMessage).Message
	require.Equal(t, "alice", got.From)
	require.Equal(t, alice.ID(), got.Peer)
	require.Equal(t, m.ID, got.ID)
	require.WithinDuration(t, m.Time, got.Time, time.Millisecond)
	alice.rec.wait(t, 10*time.Second, isDelivered(m.ID))

	m2 := send(t, bob, "alice", "hi alice")
	alice.rec.wait(t, 10*time.Second, isMessage("hi alice"))
	bob.rec.wait(t, 10*time.Second, isDelivered(m2.ID))

	h, err := alice.History("bob", 0)
	require.NoError(t, err)
	require.Len(t, h, 2)
	require.True(t, h[0].Outgoing)
	require.Equal(t, StatusDelivered, h[0].Status)
	require.Equal(t, "hi alice", h[1].Text)
	require.False(t, h[1].Outgoing)

	w, err := alice.Whois(context.Background(), "bob")
	require.NoError(t, err)
	require.True(t, w.Pinned)
	require.True(t, w.Online)
	require.Equal(t, bob.ID(), w.Peer)
	require.Equal(t, ConnDirect, w.Conn.Kind)
	require.Equal(t, "tcp", w.Conn.Transport)
	require.Equal(t, 4, w.Conn.IPVersion)

	peers := alice.Peers()
	require.Len(t, peers, 1)
	require.Equal(t, "bob", peers[0].Nick)
	require.Equal(t, ConnDirect, peers[0].Conn.Kind)
}

func TestLookupUnknownNick(t *testing.T) {
	r := newRendezvous(t)
	alice := newNode(t, r, "alice", "")
	_, err := alice.Send(context.Background(), "nobody", "hello?")
	require.ErrorIs(t, err, ErrUnknownNick)
	_, err = alice.Whois(context.Background(), "nobody")
	require.ErrorIs(t, err, ErrUnknownNick)
}

func TestSendValidatesText(t *testing.T) {
	r := newRendezvous(t)
	alice := newNode(t, r, "alice", "")
	newNode(t, r, "bob", "")
	ctx := context.Background()
	_, err := alice.Send(ctx, "bob", strings.Repeat("x", MaxTextLen+1))
	require.ErrorIs(t, err, errTextTooLong)
	_, err = alice.Send(ctx, "bob", "bad \xff utf8")
	require.ErrorIs(t, err, errBadUTF8)
	_, err = alice.Send(ctx, "bob", "")
	require.ErrorIs(t, err, errEmptyText)
	_, err = alice.Send(ctx, "bob", strings.Repeat("é", MaxTextLen/2))
	require.NoError(t, err, "exactly MaxTextLen bytes is allowed")
}

func TestNickTaken(t *testing.T) {
	r := newRendezvous(t)
	newNode(t, r, "alice", "")
	_, err := tryNode(t, r, "alice", "")
	require.ErrorIs(t, err, ErrNickTaken)
}

func TestThreePeers(t *testing.T) {
	r := newRendezvous(t)
	nodes := map[string]*tnode{}
	for _, nick := range []string{"ann", "ben", "cat"} {
		nodes[nick] = newNode(t, r, nick, "")
	}
	var ids []string
	for from, fn := range nodes {
		for to := range nodes {
			if from == to {
				continue
			}
			m := send(t, fn, to, from+" to "+to)
			ids = append(ids, from+"|"+m.ID)
		}
	}
	for from, fn := range nodes {
		for to, tn := range nodes {
			if from == to {
				continue
			}
			got := tn.rec.wait(t, 10*time.Second, isMessage(from+" to "+to)).(EventMessage).Message
			require.Equal(t, from, got.From)
		}
		_ = fn
	}
	for _, s := range ids {
		from, id, _ := strings.Cut(s, "|")
		nodes[from].rec.wait(t, 10*time.Second, isDelivered(id))
	}
	for _, tn := range nodes {
		require.Equal(t, 2, tn.rec.count(func(e Event) bool { _, ok := e.(EventMessage); return ok }), "each message shown once")
	}
}

func TestOutboxDeliversAfterRestartExactlyOnce(t *testing.T) {
	r := newRendezvous(t)
	alice := newNode(t, r, "alice", "")
	bobDir := t.TempDir()
	bob := newNode(t, r, "bob", bobDir)
	first := send(t, alice, "bob", "before")
	alice.rec.wait(t, 10*time.Second, isDelivered(first.ID))
	bobID := bob.ID()
	require.NoError(t, bob.Close())
	alice.rec.wait(t, 5*time.Second, isPresence("bob", false))

	m1 := send(t, alice, "bob", "while you were away 1")
	m2 := send(t, alice, "bob", "while you were away 2")
	h, err := alice.History("bob", 2)
	require.NoError(t, err)
	require.Equal(t, StatusPending, h[0].Status)
	require.Equal(t, StatusPending, h[1].Status)

	bob = newNode(t, r, "bob", bobDir)
	require.Equal(t, bobID, bob.ID(), "identity persisted")
	bob.rec.wait(t, 15*time.Second, isMessage("while you were away 2"))
	alice.rec.wait(t, 10*time.Second, isDelivered(m1.ID))
	alice.rec.wait(t, 10*time.Second, isDelivered(m2.ID))
	alice.rec.wait(t, 5*time.Second, isPresence("bob", true))

	// Exactly once, in order, also in the history.
	msgs := bob.rec.count(func(e Event) bool { _, ok := e.(EventMessage); return ok })
	require.Equal(t, 2, msgs)
	bh, err := bob.History("alice", 0)
	require.NoError(t, err)
	require.Len(t, bh, 3)
	require.Equal(t, "before", bh[0].Text)
	require.Equal(t, "while you were away 1", bh[1].Text)
	require.Equal(t, "while you were away 2", bh[2].Text)
	h, err = alice.History("bob", 0)
	require.NoError(t, err)
	for _, m := range h {
		require.Equal(t, StatusDelivered, m.Status, m.Text)
	}
}

func TestPresenceOfflineAfterKill(t *testing.T) {
	r := newRendezvous(t)
	alice := newNode(t, r, "alice", "")
	bob := newNode(t, r, "bob", "")
	m := send(t, bob, "alice", "hi")
	bob.rec.wait(t, 10*time.Second, isDelivered(m.ID))
	alice.rec.wait(t, 5*time.Second, isPresence("bob", true))

	// Kill: the host goes away without unregistering.
	start := time.Now()
	require.NoError(t, bob.h.Close())
	alice.rec.wait(t, 5*time.Second, isPresence("bob", false))
	t.Logf("offline after %s", time.Since(start))
	require.Empty(t, alice.Peers())

	// A message to the dead peer stays pending.
	m2 := send(t, alice, "bob", "are you there?")
	require.Equal(t, StatusPending, m2.Status)
}

func TestImpersonationWarning(t *testing.T) {
	r := newRendezvous(t)
	alice := newNode(t, r, "alice", "")
	bob := newNode(t, r, "bob", "")
	m := send(t, alice, "bob", "hi, I am alice")
	alice.rec.wait(t, 10*time.Second, isDelivered(m.ID))
	aliceID := alice.ID()
	require.NoError(t, alice.Close())

	// Another key takes the nick once alice has left.
	mallory := newNode(t, r, "alice", "")
	require.NotEqual(t, aliceID, mallory.ID())
	send(t, mallory, "bob", "send me your password")
	w := bob.rec.wait(t, 10*time.Second, func(e Event) bool { _, ok := e.(EventWarning); return ok }).(EventWarning)
	require.Equal(t, "alice", w.Nick)
	require.Equal(t, mallory.ID(), w.Peer)
	// An unverified claim is shown under the peer ID, and a stranger's
	// message is a request.
	got := bob.rec.wait(t, 10*time.Second, isRequest("send me your password")).(EventRequest)
	require.Equal(t, mallory.ID().String(), got.Nick, "an unverified claim is shown under the peer ID")

	// Messages to the nick still go to the pinned peer only.
	out := send(t, bob, "alice", "who is this?")
	require.Equal(t, aliceID, out.Peer)
	require.Zero(t, mallory.rec.count(isMessage("who is this?")))
}

func TestConversationContinuesWithoutRendezvous(t *testing.T) {
	r := newRendezvous(t)
	alice := newNode(t, r, "alice", "")
	bob := newNode(t, r, "bob", "")
	m := send(t, alice, "bob", "one")
	alice.rec.wait(t, 10*time.Second, isDelivered(m.ID))

	r.stop()
	for i, text := range []string{"two", "three"} {
		m := send(t, alice, "bob", text)
		bob.rec.wait(t, 10*time.Second, isMessage(text))
		alice.rec.wait(t, 10*time.Second, isDelivered(m.ID))
		back := send(t, bob, "alice", text+" back")
		alice.rec.wait(t, 10*time.Second, isMessage(text+" back"))
		bob.rec.wait(t, 10*time.Second, isDelivered(back.ID))
		_ = i
	}
}

func TestHistoryAfterRestart(t *testing.T) {
	r := newRendezvous(t)
	dir := t.TempDir()
	alice := newNode(t, r, "alice", dir)
	bob := newNode(t, r, "bob", "")
	m := send(t, alice, "bob", "remember me")
	bob.rec.wait(t, 10*time.Second, isMessage("remember me"))
	alice.rec.wait(t, 10*time.Second, isDelivered(m.ID))
	back := send(t, bob, "alice", "always")
	alice.rec.wait(t, 10*time.Second, isMessage("always"))
	bob.rec.wait(t, 10*time.Second, isDelivered(back.ID))
	require.NoError(t, alice.Close())

	// Offline: New without Start, on a host that listens nowhere, reads
	// the database.
	bare, err := libp2p.New(libp2p.NoListenAddrs, libp2p.DisableMetrics())
	require.NoError(t, err)
	defer bare.Close()
	n, err := New(bare, Config{Nick: "alice", DataDir: dir})
	require.NoError(t, err)
	defer n.Close()
	h, err := n.History("bob", 0)
	require.NoError(t, err)
	require.Len(t, h, 2)
	require.Equal(t, "remember me", h[0].Text)
	require.Equal(t, StatusDelivered, h[0].Status)
	require.Equal(t, "always", h[1].Text)
	require.Equal(t, "bob", h[1].From)
	last, err := n.History("bob", 1)
	require.NoError(t, err)
	require.Len(t, last, 1)
	require.Equal(t, "always", last[0].Text)
	_, err = n.History("stranger", 0)
	require.True(t, errors.Is(err, ErrUnknownNick))
}

func TestManyMessagesInOrder(t *testing.T) {
	r := newRendezvous(t)
	alice := newNode(t, r, "alice", "")
	bob := newNode(t, r, "bob", "")
	const count = 50
	var last Message
	for i := range count {
		last = send(t, alice, "bob", fmt.Sprintf("msg %02d", i))
	}
	alice.rec.wait(t, 10*time.Second, isDelivered(last.ID))
	bob.rec.wait(t, 10*time.Second, isMessage(fmt.Sprintf("msg %02d", count-1)))
	var got []string
	for _, e := range bob.rec.all() {
		if m, ok := e.(EventMessage); ok {
			got = append(got, m.Message.Text)
		}
	}
	require.Len(t, got, count)
	for i, text := range got {
		require.Equal(t, fmt.Sprintf("msg %02d", i), text)
	}
}

// A peer killed without unregistering goes offline, messages to it stay
// pending, and it gets them exactly once after it restarts.
func TestKilledPeerRestartsAndGetsOutbox(t *testing.T) {
	r := newRendezvous(t)
	alice := newNode(t, r, "alice", "")
	bobDir := t.TempDir()
	bob := newNode(t, r, "bob", bobDir)
	m := send(t, alice, "bob", "first")
	alice.rec.wait(t, 10*time.Second, isDelivered(m.ID))

	bobAddrs := bob.h.Addrs()
	require.NoError(t, bob.h.Close()) // the process dies: no unregister
	alice.rec.wait(t, 5*time.Second, isPresence("bob", false))
	bob.Close() // release the database as the dead process would
	pend := send(t, alice, "bob", "while dead")

	// Same data dir and same port, as a supervisor would restart it; the
	// dial backoff of the failed reconnects must not delay delivery.
	bob = newNode(t, r, "bob", bobDir, func(c *testConfig) { c.ListenAddrs = bobAddrs })
	bob.rec.wait(t, 15*time.Second, isMessage("while dead"))
	alice.rec.wait(t, 10*time.Second, isDelivered(pend.ID))
	require.Equal(t, 1, bob.rec.count(func(e Event) bool { _, ok := e.(EventMessage); return ok }))
	require.Equal(t, 1, alice.rec.count(isDelivered(pend.ID)))
}

// Room members show up online (with their nick) without any message, and
// Join moves the node to another room.
func TestRoomPresenceAndJoin(t *testing.T) {
	r := newRendezvous(t)
	carol := newNode(t, r, "carol", "", func(c *testConfig) { c.Room = "dev" })
	alice := newNode(t, r, "alice", "")
	require.Equal(t, DefaultRoom, alice.Room())
	require.NoError(t, alice.Join(context.Background(), "dev"))
	require.Equal(t, "dev", alice.Room())
	alice.rec.wait(t, 10*time.Second, isPresence("carol", true))
	carol.rec.wait(t, 10*time.Second, isPresence("alice", true))
	require.Eventually(t, func() bool {
		peers := alice.Peers()
		return len(peers) == 1 && peers[0].Nick == "carol" && peers[0].RTT > 0
	}, 10*time.Second, 50*time.Millisecond, "carol listed with a round-trip time")
	require.Error(t, alice.Join(context.Background(), "bad room"))
}

// A Hello nick that the rendezvous daemons do not list for the peer is
// neither pinned nor shown.
func TestUnregisteredNickClaim(t *testing.T) {
	r := newRendezvous(t)
	bob := newNode(t, r, "bob", "")
	raw := rawPeer(t)
	s := rawStream(t, raw, bob.Node)
	defer s.Reset()
	_, err := s.Write(encode(t, helloF("ghost"), msgF(id16, "boo")))
	require.NoError(t, err)
	w := bob.rec.wait(t, 10*time.Second, func(e Event) bool { _, ok := e.(EventWarning); return ok }).(EventWarning)
	require.Equal(t, "ghost", w.Nick)
	require.Equal(t, raw.ID(), w.Peer)
	got := bob.rec.wait(t, 10*time.Second, isRequest("boo")).(EventRequest)
	require.Equal(t, raw.ID().String(), got.Nick)
	_, err = bob.History("ghost", 0)
	require.ErrorIs(t, err, ErrUnknownNick, "not pinned")
	h, err := bob.History(raw.ID().String(), 0)
	require.NoError(t, err)
	require.Empty(t, h, "a stranger's message waits in the requests")
	reqs, err := bob.Requests()
	require.NoError(t, err)
	require.Len(t, reqs, 1)
	require.Equal(t, "boo", reqs[0].Text)

	// Allowed, the request becomes the conversation's first message.
	_, err = bob.Allow(raw.ID().String())
	require.NoError(t, err)
	bob.rec.wait(t, 5*time.Second, isMessage("boo"))
	h, err = bob.History(raw.ID().String(), 0)
	require.NoError(t, err)
	require.Len(t, h, 1)
	reqs, err = bob.Requests()
	require.NoError(t, err)
	require.Empty(t, reqs)
}
