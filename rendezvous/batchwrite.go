package rendezvous

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// persistBatch is how long the writer gathers changes after the first one
// before it commits them: one fsync per batch rather than one per
// REGISTER. While a goroutine waits in fsync it keeps its P (until the
// runtime's monitor takes it back), so on a 2-CPU host back-to-back
// commits took half the server's capacity for most of the time. The
// answers do not wait for the commit either way.
const persistBatch = 20 * time.Millisecond

// persistRetry is how long the writer waits before retrying a failed flush.
const persistRetry = time.Second

// batchWriter writes bbolt buckets through in batches, for the
// registrations (persist.go) and the name leases (lease.go): put and del
// only record the change in memory and wake the writer goroutine, which
// commits everything pending persistBatch after the first change in one
// transaction. On failure the batch goes back into pending (unless newer
// changes replaced it), failing reports true until a flush succeeds, and
// the flush is retried after persistRetry. close flushes the rest.
type batchWriter struct {
	db  *bolt.DB
	log *slog.Logger

	mu      sync.Mutex
	pending map[bucketKey][]byte // nil value: delete

	failed atomic.Bool
	kick   chan struct{}
	stop   chan struct{}
	done   chan struct{}
}

type bucketKey struct{ bucket, key string }

// openBolt opens (creating) dir/file, creates buckets, and runs load in
// the same transaction (it may read and delete what it finds).
func openBolt(dir, file string, buckets [][]byte, load func(tx *bolt.Tx) error) (*bolt.DB, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	path := filepath.Join(dir, file)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range buckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return load(tx)
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("load %s: %w", path, err)
	}
	return db, nil
}

// newBatchWriter starts the writer of db.
func newBatchWriter(db *bolt.DB, log *slog.Logger) *batchWriter {
	w := &batchWriter{
		db:      db,
		log:     log,
		pending: make(map[bucketKey][]byte),
		kick:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	go w.run()
	return w
}

func (w *batchWriter) put(bucket []byte, key string, val []byte) {
	w.set(bucketKey{string(bucket), key}, val)
}

func (w *batchWriter) del(bucket []byte, key string) { w.set(bucketKey{string(bucket), key}, nil) }

func (w *batchWriter) set(k bucketKey, val []byte) {
	w.mu.Lock()
	w.pending[k] = val
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

func (w *batchWriter) failing() bool { return w.failed.Load() }

func (w *batchWriter) run() {
	defer close(w.done)
	var retry <-chan time.Time
	for {
		select {
		case <-w.kick:
		case <-retry:
		case <-w.stop:
			return
		}
		retry = nil
		batch := time.NewTimer(persistBatch)
		select {
		case <-batch.C:
		case <-w.stop:
			batch.Stop()
			return // close flushes
		}
		if err := w.flush(); err != nil {
			w.log.Error("writing to disk", "file", w.db.Path(), "err", err)
			retry = time.After(persistRetry)
		}
	}
}

// flush commits everything pending.
func (w *batchWriter) flush() error {
	w.mu.Lock()
	if len(w.pending) == 0 {
		w.mu.Unlock()
		return nil
	}
	batch := w.pending
	w.pending = make(map[bucketKey][]byte)
	w.mu.Unlock()

	err := w.db.Update(func(tx *bolt.Tx) error {
		for k, v := range batch {
			b := tx.Bucket([]byte(k.bucket))
			if b == nil {
				return fmt.Errorf("no bucket %q", k.bucket)
			}
			var err error
			if v == nil {
				err = b.Delete([]byte(k.key))
			} else {
				err = b.Put([]byte(k.key), v)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		w.mu.Lock()
		for k, v := range batch {
			if _, newer := w.pending[k]; !newer {
				w.pending[k] = v
			}
		}
		w.mu.Unlock()
		w.failed.Store(true)
		return err
	}
	w.failed.Store(false)
	return nil
}

// close stops the writer, flushes what is pending and closes the file.
func (w *batchWriter) close() error {
	close(w.stop)
	<-w.done
	return errors.Join(w.flush(), w.db.Close())
}
