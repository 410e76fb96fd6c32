package rendezvous

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	bolt "go.etcd.io/bbolt"
)

// DBFileName is the bbolt file a server keeps in its data dir.
const DBFileName = "rendezvous.db"

var (
	bucketRegs = []byte("registrations")
	bucketMeta = []byte("meta")
	keySeq     = []byte("seq")
)

// persistRetry is how long the writer waits before retrying a failed flush.
const persistRetry = time.Second

// persistBatch is how long the writer gathers changes after the first one
// before it commits them: one fsync per batch rather than one per
// REGISTER. While a goroutine waits in fsync it keeps its P (until the
// runtime's monitor takes it back), so on a 2-CPU host back-to-back
// commits took half the server's capacity for most of the time. The
// answers do not wait for the commit either way.
const persistBatch = 20 * time.Millisecond

// persister writes registrations through to bbolt in small batches: a
// register only records the change in memory and wakes the writer, which
// commits everything pending after persistBatch in one transaction. Close
// flushes the rest.
//
// Layout: bucket "registrations", key = len(peer ID) | peer ID | ns,
// value = seq (8 bytes BE) | expiry (8 bytes BE unix ns) | signed record;
// bucket "meta", key "seq" = the last sequence number handed out.
type persister struct {
	db  *bolt.DB
	log *slog.Logger

	mu      sync.Mutex
	pending map[string][]byte // nil value: delete
	seq     uint64
	dirty   bool

	failed atomic.Bool
	kick   chan struct{}
	stop   chan struct{}
	done   chan struct{}
}

// openPersister opens (creating) the database in dir and returns the live
// entries it holds, sorted by seq, and the stored sequence number. Entries
// expired at now are dropped from the file.
func openPersister(dir string, now int64, log *slog.Logger) (*persister, []*regEntry, uint64, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, 0, fmt.Errorf("create data dir: %w", err)
	}
	path := filepath.Join(dir, DBFileName)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, nil, 0, fmt.Errorf("open %s: %w", path, err)
	}
	var (
		entries []*regEntry
		seq     uint64
	)
	err = db.Update(func(tx *bolt.Tx) error {
		regs, err := tx.CreateBucketIfNotExists(bucketRegs)
		if err != nil {
			return err
		}
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if v := meta.Get(keySeq); len(v) == 8 {
			seq = binary.BigEndian.Uint64(v)
		}
		var drop [][]byte
		err = regs.ForEach(func(k, v []byte) error {
			e, err := decodeEntry(k, v)
			if err != nil || e.expires <= now {
				if err != nil {
					log.Warn("dropping unreadable stored registration", "err", err)
				}
				drop = append(drop, slices.Clone(k))
				return nil
			}
			entries = append(entries, e)
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range drop {
			if err := regs.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, nil, 0, fmt.Errorf("load %s: %w", path, err)
	}
	slices.SortFunc(entries, func(a, b *regEntry) int {
		switch {
		case a.seq < b.seq:
			return -1
		case a.seq > b.seq:
			return 1
		}
		return 0
	})
	p := &persister{
		db:      db,
		log:     log,
		pending: make(map[string][]byte),
		seq:     seq,
		kick:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	go p.run()
	return p, entries, seq, nil
}

func (p *persister) put(key string, val []byte, seq uint64) {
	p.mu.Lock()
	p.pending[key] = val
	p.seq = seq
	p.dirty = true
	p.mu.Unlock()
	p.wake()
}

func (p *persister) del(key string) {
	p.mu.Lock()
	p.pending[key] = nil
	p.dirty = true
	p.mu.Unlock()
	p.wake()
}

func (p *persister) wake() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

func (p *persister) failing() bool { return p.failed.Load() }

func (p *persister) run() {
	defer close(p.done)
	var retry <-chan time.Time
	for {
		select {
		case <-p.kick:
		case <-retry:
		case <-p.stop:
			return
		}
		retry = nil
		batch := time.NewTimer(persistBatch)
		select {
		case <-batch.C:
		case <-p.stop:
			batch.Stop()
			return // close flushes
		}
		if err := p.flush(); err != nil {
			p.log.Error("writing registrations to disk", "err", err)
			retry = time.After(persistRetry)
		}
	}
}

// flush commits everything pending. On failure the batch goes back into
// pending (unless newer changes replaced it) and the store refuses new
// registrations until a flush succeeds.
func (p *persister) flush() error {
	p.mu.Lock()
	if !p.dirty {
		p.mu.Unlock()
		return nil
	}
	batch, seq := p.pending, p.seq
	p.pending, p.dirty = make(map[string][]byte), false
	p.mu.Unlock()

	err := p.db.Update(func(tx *bolt.Tx) error {
		regs := tx.Bucket(bucketRegs)
		for k, v := range batch {
			var err error
			if v == nil {
				err = regs.Delete([]byte(k))
			} else {
				err = regs.Put([]byte(k), v)
			}
			if err != nil {
				return err
			}
		}
		return tx.Bucket(bucketMeta).Put(keySeq, binary.BigEndian.AppendUint64(nil, seq))
	})
	if err != nil {
		p.mu.Lock()
		for k, v := range batch {
			if _, newer := p.pending[k]; !newer {
				p.pending[k] = v
			}
		}
		p.dirty = true
		p.mu.Unlock()
		p.failed.Store(true)
		return err
	}
	p.failed.Store(false)
	return nil
}

// close stops the writer, flushes what is pending and closes the file.
func (p *persister) close() error {
	close(p.stop)
	<-p.done
	return errors.Join(p.flush(), p.db.Close())
}

func entryKey(p peer.ID, ns string) string {
	b := make([]byte, 0, 1+len(p)+len(ns))
	b = append(b, byte(len(p)))
	b = append(b, p...)
	b = append(b, ns...)
	return string(b)
}

func encodeEntry(e *regEntry) []byte {
	b := make([]byte, 0, 16+len(e.rec))
	b = binary.BigEndian.AppendUint64(b, e.seq)
	b = binary.BigEndian.AppendUint64(b, uint64(e.expires))
	return append(b, e.rec...)
}

func decodeEntry(k, v []byte) (*regEntry, error) {
	if len(k) < 1 || len(k) < 1+int(k[0]) || len(v) < 16 {
		return nil, errors.New("short key or value")
	}
	id, err := peer.IDFromBytes(k[1 : 1+int(k[0])])
	if err != nil {
		return nil, fmt.Errorf("peer id: %w", err)
	}
	return &regEntry{
		peer:    id,
		ns:      string(k[1+int(k[0]):]),
		seq:     binary.BigEndian.Uint64(v),
		expires: int64(binary.BigEndian.Uint64(v[8:])),
		rec:     slices.Clone(v[16:]),
	}, nil
}
