package chat

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// BenchmarkSendToDelivered measures Send until its acknowledgement arrives
// (store, frame, receiver store, ack, sender store) over loopback TCP.
func BenchmarkSendToDelivered(b *testing.B) {
	r := newRendezvous(b)
	alice := newNode(b, r, "alice", "")
	newNode(b, r, "bob", "")
	m := send(b, alice, "bob", "warm-up")
	alice.rec.wait(b, 10*time.Second, isDelivered(m.ID))
	ctx := context.Background()
	seen := 0
	// delivered reports whether id's EventDelivered came, scanning only the
	// events recorded since the last call (recorder.wait rescans them all,
	// which over many iterations costs more than the send).
	// It also returns the channel closed by the next event, taken under the
	// same lock so that no event slips in between.
	delivered := func(id string) (bool, chan struct{}) {
		alice.rec.mu.Lock()
		defer alice.rec.mu.Unlock()
		for ; seen < len(alice.rec.events); seen++ {
			if d, ok := alice.rec.events[seen].(EventDelivered); ok && d.ID == id {
				seen++
				return true, nil
			}
		}
		return false, alice.rec.notify
	}
	b.ResetTimer()
	for b.Loop() {
		m, err := alice.Send(ctx, "bob", "benchmark message")
		if err != nil {
			b.Fatal(err)
		}
		timeout := time.NewTimer(10 * time.Second)
		for {
			ok, next := delivered(m.ID)
			if ok {
				break
			}
			select {
			case <-next:
			case <-timeout.C:
				b.Fatalf("%s not delivered", m.ID)
			}
		}
		timeout.Stop()
	}
}

// BenchmarkSustained sends 1000 messages as fast as Send accepts them and
// waits until all are acknowledged; it reports messages per second.
func BenchmarkSustained(b *testing.B) {
	const batch = 1000
	r := newRendezvous(b)
	alice := newNode(b, r, "alice", "")
	newNode(b, r, "bob", "")
	m := send(b, alice, "bob", "warm-up")
	alice.rec.wait(b, 10*time.Second, isDelivered(m.ID))
	ctx := context.Background()
	total, seen, delivered := 1, 0, 0
	// count returns the deliveries so far, scanning only new events, and
	// the channel closed by the next event (taken under the same lock).
	count := func() (int, chan struct{}) {
		alice.rec.mu.Lock()
		defer alice.rec.mu.Unlock()
		for ; seen < len(alice.rec.events); seen++ {
			if _, ok := alice.rec.events[seen].(EventDelivered); ok {
				delivered++
			}
		}
		return delivered, alice.rec.notify
	}
	start := time.Now()
	b.ResetTimer()
	for b.Loop() {
		for range batch {
			if _, err := alice.Send(ctx, "bob", "benchmark message"); err != nil {
				b.Fatal(err)
			}
		}
		total += batch
		waitDelivered(b, count, total)
	}
	b.ReportMetric(float64(b.N*batch)/time.Since(start).Seconds(), "msgs/s")
}

// BenchmarkSustainedParallel is BenchmarkSustained with 8 concurrent
// callers of Send: their pending records share commits.
func BenchmarkSustainedParallel(b *testing.B) {
	const batch, senders = 1000, 8
	r := newRendezvous(b)
	alice := newNode(b, r, "alice", "")
	newNode(b, r, "bob", "")
	m := send(b, alice, "bob", "warm-up")
	alice.rec.wait(b, 10*time.Second, isDelivered(m.ID))
	ctx := context.Background()
	total, seen, delivered := 1, 0, 0
	count := func() (int, chan struct{}) {
		alice.rec.mu.Lock()
		defer alice.rec.mu.Unlock()
		for ; seen < len(alice.rec.events); seen++ {
			if _, ok := alice.rec.events[seen].(EventDelivered); ok {
				delivered++
			}
		}
		return delivered, alice.rec.notify
	}
	start := time.Now()
	b.ResetTimer()
	for b.Loop() {
		var wg sync.WaitGroup
		errs := make(chan error, senders)
		for range senders {
			wg.Go(func() {
				for range batch / senders {
					if _, err := alice.Send(ctx, "bob", "benchmark message"); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
		total += batch
		waitDelivered(b, count, total)
	}
	b.ReportMetric(float64(b.N*batch)/time.Since(start).Seconds(), "msgs/s")
}

// BenchmarkFsync is one 4 KiB write and fsync on the same file system:
// a bbolt commit does two (data pages, then the meta page).
func BenchmarkFsync(b *testing.B) {
	f, err := os.Create(filepath.Join(b.TempDir(), "fsync"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for b.Loop() {
		if _, err := f.WriteAt(buf, 0); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBoltCommit is the floor of any design that makes a message
// durable before it is acknowledged: one small fsync'd bbolt transaction.
func BenchmarkBoltCommit(b *testing.B) {
	db, err := bolt.Open(filepath.Join(b.TempDir(), "floor.db"), 0o600, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	var i uint64
	for b.Loop() {
		i++
		err := db.Update(func(tx *bolt.Tx) error {
			bk, err := tx.CreateBucketIfNotExists([]byte("b"))
			if err != nil {
				return err
			}
			return bk.Put(u64(i), make([]byte, 200))
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBoltCommitTwoFiles commits one transaction on each of two
// databases at once, as the sender and the receiver do when both run on
// one machine: it shows whether their fsyncs overlap or queue.
func BenchmarkBoltCommitTwoFiles(b *testing.B) {
	var dbs [2]*bolt.DB
	for i := range dbs {
		db, err := bolt.Open(filepath.Join(b.TempDir(), "floor.db"), 0o600, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close()
		dbs[i] = db
	}
	var i uint64
	for b.Loop() {
		i++
		var wg sync.WaitGroup
		errs := make([]error, len(dbs))
		for j, db := range dbs {
			wg.Go(func() {
				errs[j] = db.Update(func(tx *bolt.Tx) error {
					bk, err := tx.CreateBucketIfNotExists([]byte("b"))
					if err != nil {
						return err
					}
					return bk.Put(u64(i), make([]byte, 200))
				})
			})
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				b.Fatal(err)
			}
		}
	}
}

// waitDelivered waits until count reports at least total deliveries.
func waitDelivered(b *testing.B, count func() (int, chan struct{}), total int) {
	timeout := time.NewTimer(60 * time.Second)
	defer timeout.Stop()
	for {
		n, next := count()
		if n >= total {
			return
		}
		select {
		case <-next:
		case <-timeout.C:
			b.Fatalf("%d of %d delivered", n, total)
		}
	}
}
