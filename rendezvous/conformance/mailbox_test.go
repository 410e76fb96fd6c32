package conformance

import (
	"context"
	"encoding/hex"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/p2p-messaging/p2p-messaging/rendezvous/mailbox"
)

// TestMailboxSurvivesSIGKILL kills the daemon binary with SIGKILL while
// senders deposit, restarts it on the same data dir, and checks that every
// deposit the daemon acknowledged is still there for the recipient.
func TestMailboxSurvivesSIGKILL(t *testing.T) {
	dir := t.TempDir()
	d := startDaemon(t, dir)
	bob := newClient(t)

	const senders = 4
	var (
		mu    sync.Mutex
		acked = map[string]bool{}
		wg    sync.WaitGroup
	)
	enough := make(chan struct{})
	var once sync.Once
	for range senders {
		c := newClient(t)
		c.connect(d)
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := mailbox.NewClient(c.h, 5*time.Second)
			for i := 0; ; i++ {
				box, err := mailbox.Seal(c.priv, bob.id(), mailbox.Letter{Kind: mailbox.KindMessage,
					ID: make([]byte, mailbox.MessageIDLen), Time: time.Now(), Text: "deposit under fire"})
				if err != nil {
					return
				}
				id, err := cl.Deposit(context.Background(), d.info.ID, bob.id(), box)
				if err != nil {
					return // the daemon is gone
				}
				mu.Lock()
				acked[hex.EncodeToString(id)] = true
				if len(acked) >= 60 {
					once.Do(func() { close(enough) })
				}
				mu.Unlock()
			}
		}()
	}
	select {
	case <-enough:
	case <-time.After(60 * time.Second):
		t.Fatal("deposits too slow")
	}
	require.NoError(t, d.cmd.Process.Signal(syscall.SIGKILL))
	<-d.exited
	wg.Wait()
	mu.Lock()
	want := len(acked)
	mu.Unlock()

	d2 := startDaemon(t, dir)
	bob.connect(d2)
	cl := mailbox.NewClient(bob.h, 0)
	got := map[string]bool{}
	for {
		ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		deps, more, err := cl.Fetch(ctx, d2.info.ID, 0)
		require.NoError(t, err)
		ids := make([][]byte, 0, len(deps))
		for _, dp := range deps {
			got[hex.EncodeToString(dp.ID)] = true
			ids = append(ids, dp.ID)
			_, err := mailbox.Open(bob.priv, dp.Box)
			require.NoError(t, err, "a stored box still opens")
		}
		if len(ids) > 0 {
			_, err = cl.Delete(ctx, d2.info.ID, ids)
			require.NoError(t, err)
		}
		cancel()
		if !more {
			break
		}
	}
	for id := range acked {
		require.True(t, got[id], "acknowledged deposit %s lost in the crash", id)
	}
	t.Logf("%d deposits acknowledged before SIGKILL, %d found after the restart", want, len(got))
	d2.stop(t)
}
