package chat

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"

	"github.com/p2p-messaging/p2p-messaging/internal/identity"
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

// crashCopy makes dir a copy of tn's data dir as a crash at this instant
// would leave it: the identity, and the database as of its last commit
// (writes still queued on the group-commit writer are lost).
func crashCopy(t *testing.T, tn *tnode, dir string) {
	t.Helper()
	key, err := os.ReadFile(filepath.Join(tn.dir, identity.FileName))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, identity.FileName), key, 0o600))
	require.NoError(t, tn.db.db.View(func(tx *bolt.Tx) error {
		return tx.CopyFile(filepath.Join(dir, DBFileName), 0o600)
	}))
}

// holdWriter blocks s's group-commit writer until the returned function is
// called.
func holdWriter(t *testing.T, s *store) (release func()) {
	t.Helper()
	held, unblock := make(chan struct{}), make(chan struct{})
	require.NoError(t, s.submit(writeOp{apply: func(*bolt.Tx) error {
		close(held)
		<-unblock
		return nil
	}}))
	<-held
	return func() { close(unblock) }
}

// The sender dies right after Send returned: the message had reached the
// receiver, whose ack never came back. After the restart the sender's
// outbox still holds it; it is resent, deduplicated, acknowledged, and
// shown exactly once.
func TestSenderCrashRightAfterSendDeliversExactlyOnce(t *testing.T) {
	r := newRendezvous(t)
	alice := newNode(t, r, "alice", "")
	bob := newNode(t, r, "bob", "")
	warm := send(t, alice, "bob", "warm-up")
	alice.rec.wait(t, 10*time.Second, isDelivered(warm.ID))

	// Bob cannot commit (so cannot ack) until released.
	release := holdWriter(t, bob.db)
	m := send(t, alice, "bob", "crash")
	// The frame went out while Alice committed it; Bob has it queued.
	require.Eventually(t, func() bool { return len(bob.db.ops) == 1 }, 10*time.Second, time.Millisecond)
	// Not committed, so not acknowledged.
	require.True(t, alice.out.pending(bob.ID()), "bob acked a message it had not stored")

	crashed := t.TempDir()
	crashCopy(t, alice, crashed)
	aliceAddrs := alice.h.Addrs()
	require.NoError(t, alice.h.Close()) // the process dies: no unregister, no flush
	release()
	bob.rec.wait(t, 10*time.Second, isMessage("crash"))
	require.NoError(t, alice.Close())

	alice = newNode(t, r, "alice", crashed, func(c *testConfig) { c.ListenAddrs = aliceAddrs })
	alice.rec.wait(t, 15*time.Second, isDelivered(m.ID))
	h, err := alice.History("bob", 0)
	require.NoError(t, err)
	require.Len(t, h, 2)
	require.Equal(t, StatusDelivered, h[1].Status)

	// Bob stored and showed it once, although it arrived twice.
	require.Equal(t, 1, bob.rec.count(isMessage("crash")))
	bh, err := bob.History("alice", 0)
	require.NoError(t, err)
	require.Len(t, bh, 2)
}

// The sender dies after Send returned and before the frame could reach the
// receiver: the message is pending on disk and delivered once after the
// restart.
func TestSenderCrashBeforeFrameDeliversAfterRestart(t *testing.T) {
	r := newRendezvous(t)
	alice := newNode(t, r, "alice", "")
	bob := newNode(t, r, "bob", "")
	warm := send(t, alice, "bob", "warm-up")
	alice.rec.wait(t, 10*time.Second, isDelivered(warm.ID))

	bobAddrs := bob.h.Addrs()
	require.NoError(t, bob.h.Close())
	alice.rec.wait(t, 5*time.Second, isPresence("bob", false))
	bob.Close()
	m := send(t, alice, "bob", "crash")
	crashed := t.TempDir()
	crashCopy(t, alice, crashed)
	require.NoError(t, alice.h.Close())
	require.NoError(t, alice.Close())

	bob = newNode(t, r, "bob", bob.dir, func(c *testConfig) { c.ListenAddrs = bobAddrs })
	alice = newNode(t, r, "alice", crashed)
	bob.rec.wait(t, 15*time.Second, isMessage("crash"))
	alice.rec.wait(t, 10*time.Second, isDelivered(m.ID))
	require.Equal(t, 1, bob.rec.count(isMessage("crash")))
}

// An ack that arrives before the sender's own pending record is committed
// is reported once, after EventSent, and the message leaves the outbox.
func TestAckOvertakesPendingCommit(t *testing.T) {
	r := newRendezvous(t)
	alice := newNode(t, r, "alice", "")
	bob := newNode(t, r, "bob", "")
	warm := send(t, alice, "bob", "warm-up")
	alice.rec.wait(t, 10*time.Second, isDelivered(warm.ID))

	release := holdWriter(t, alice.db)
	type result struct {
		m   Message
		err error
	}
	done := make(chan result, 1)
	go func() {
		m, err := alice.Send(t.Context(), "bob", "fast ack")
		done <- result{m, err}
	}()
	bob.rec.wait(t, 10*time.Second, isMessage("fast ack"))
	// Bob's ack is in; Alice's record is still not committed.
	require.Eventually(t, func() bool {
		return !alice.out.pending(bob.ID())
	}, 10*time.Second, time.Millisecond)
	select {
	case <-done:
		t.Fatal("Send returned before its record was committed")
	default:
	}
	release()
	res := <-done
	require.NoError(t, res.err)
	alice.rec.wait(t, 10*time.Second, isDelivered(res.m.ID))

	// Sent before delivered, each once.
	var order []string
	for _, e := range alice.rec.all() {
		switch e := e.(type) {
		case EventSent:
			if e.ID == res.m.ID {
				order = append(order, "sent")
			}
		case EventDelivered:
			if e.ID == res.m.ID {
				order = append(order, "delivered")
			}
		}
	}
	require.Equal(t, []string{"sent", "delivered"}, order)
	h, err := alice.History("bob", 1)
	require.NoError(t, err)
	require.Equal(t, StatusDelivered, h[0].Status)
	pp, err := alice.db.pendingPeers()
	require.NoError(t, err)
	require.Empty(t, pp)
}

// Attack 10: "delivered" was reported twice for one message after a
// SIGKILL of the sender, because the lazily written delivered mark was lost
// after the event had gone out. Now the event follows the mark's commit.
func TestDeliveredOnceAcrossACrash(t *testing.T) {
	r := newRendezvous(t)
	dir := t.TempDir()
	alice := newNode(t, r, "alice", dir)
	bob := newNode(t, r, "bob", "")
	warm := send(t, alice, "bob", "warm-up")
	alice.rec.wait(t, 10*time.Second, isDelivered(warm.ID))

	releaseBob := holdWriter(t, bob.db) // bob cannot ack yet
	m := send(t, alice, "bob", "once")  // alice's pending record is committed
	releaseAlice := holdWriter(t, alice.db)
	releaseBob()
	// Bob's ack is in: the message left alice's outbox, its mark is queued.
	require.Eventually(t, func() bool { return !alice.out.pending(bob.ID()) }, 10*time.Second, time.Millisecond)
	require.Zero(t, alice.rec.count(isDelivered(m.ID)), "delivered reported before its mark was committed")
	crash := t.TempDir()
	crashCopy(t, alice, crash) // the kill: the mark is lost
	releaseAlice()
	require.NoError(t, alice.Close())

	again := newNode(t, r, "alice", crash)
	again.rec.wait(t, 15*time.Second, isDelivered(m.ID))
	require.NoError(t, again.db.flush())
	require.Equal(t, 1, again.rec.count(isDelivered(m.ID)))
	require.Equal(t, 1, bob.rec.count(isMessage("once")))
}

// Issue 8: the store's writer stalls (a blocked commit) while peers keep
// sending and pinging: the readers go on, pings are answered, nobody is
// shown offline, and nothing is lost once the writer resumes.
func TestStalledWriterKeepsPeersAlive(t *testing.T) {
	fast := func(c *testConfig) { c.PingInterval, c.PingTimeout = 200*time.Millisecond, 800*time.Millisecond }
	r := newRendezvous(t)
	bob := newNode(t, r, "bob", "", fast)
	alice := newNode(t, r, "alice", "", fast)
	carol := newNode(t, r, "carol", "", fast)
	for _, n := range []*tnode{alice, carol} {
		m := send(t, n, "bob", "hello from "+n.Nick())
		n.rec.wait(t, 10*time.Second, isDelivered(m.ID))
	}
	release := holdWriter(t, bob.db)
	stalled := time.Now()
	var sent []Message
	for i := range 50 {
		sent = append(sent, send(t, alice, "bob", fmt.Sprintf("during the stall %d", i)))
	}
	// Pings to both peers are answered for longer than the ping timeout.
	for _, p := range []peer.ID{alice.ID(), carol.ID()} {
		require.Eventually(t, func() bool {
			_, _, cs := bob.peers.streams(p)
			return cs != nil && time.Unix(0, cs.pongAt.Load()).After(stalled.Add(2*time.Second))
		}, 10*time.Second, 20*time.Millisecond)
	}
	release()
	for _, m := range sent {
		alice.rec.wait(t, 10*time.Second, isDelivered(m.ID))
	}
	for i := range 50 {
		require.Equal(t, 1, bob.rec.count(isMessage(fmt.Sprintf("during the stall %d", i))))
	}
	for _, nick := range []string{"alice", "carol"} {
		require.Zero(t, bob.rec.count(isPresence(nick, false)), "%s shown offline during the stall", nick)
	}
}
