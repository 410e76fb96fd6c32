package chat

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"

	"github.com/p2p-messaging/p2p-messaging/internal/identity"
)

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
