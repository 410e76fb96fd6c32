package mailbox

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	bolt "go.etcd.io/bbolt"
)

// DBFileName is the deposit store inside the daemon's data directory.
const DBFileName = "mailbox.db"

// recordOverhead is what a deposit costs beyond its box in the quotas:
// its keys and header, roughly.
const recordOverhead = 128

var (
	bktDeposits = []byte("deposits") // recipKey || id -> storedMs(8) || len(sender)(1) || sender || box
	bktExpiry   = []byte("expiry")   // storedMs(8) || recipKey || id -> nil
	bktDigests  = []byte("digests")  // sha256(recipient || box) -> recipKey || id (replays)
)

// usage is what one recipient has waiting.
type usage struct {
	count int
	bytes int64
}

type pair struct{ sender, recipient peer.ID }

// store is the bbolt file plus the quota counters, which live in memory
// (rebuilt from the file when it opens) under one mutex. A deposit
// reserves its quota under the mutex, then commits in a bbolt batch
// (concurrent deposits share one fsync); a failed commit gives the quota
// back.
type store struct {
	db     *bolt.DB
	limits Limits

	mu      sync.Mutex
	lastSeq uint64 // deposit IDs start with a sequence: max(last+1, unix nanos)
	recip   map[peer.ID]*usage
	sender  map[peer.ID]int64 // bytes
	pairs   map[pair]int
	total   int64
	held    int
	expired uint64
}

func openStore(path string, l Limits) (*store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	// Group commit: concurrent deposits and deletes share a transaction
	// (and its fsync); a lone request waits at most a millisecond for
	// company.
	db.MaxBatchDelay = time.Millisecond
	db.MaxBatchSize = 256
	s := &store{db: db, limits: l, recip: map[peer.ID]*usage{}, sender: map[peer.ID]int64{}, pairs: map[pair]int{}}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bktDeposits, bktExpiry, bktDigests} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return tx.Bucket(bktDeposits).ForEach(func(k, v []byte) error {
			r, _, err := splitKey(k)
			if err != nil {
				return err
			}
			_, snd, box, err := splitValue(v)
			if err != nil {
				return err
			}
			s.account(snd, r, cost(box), 1)
			if id := k[len(k)-IDLen:]; binary.BigEndian.Uint64(id) > s.lastSeq {
				s.lastSeq = binary.BigEndian.Uint64(id)
			}
			return nil
		})
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("load %s: %w", path, err)
	}
	return s, nil
}

func (s *store) close() error { return s.db.Close() }

func cost(box []byte) int64 { return int64(len(box)) + recordOverhead }

// account adds (sign 1) or removes (sign -1) one deposit from the
// counters; s.mu is held or the store is not shared yet.
func (s *store) account(snd, r peer.ID, c int64, sign int) {
	u := s.recip[r]
	if u == nil {
		u = &usage{}
		s.recip[r] = u
	}
	u.count += sign
	u.bytes += int64(sign) * c
	if u.count <= 0 {
		delete(s.recip, r)
	}
	s.sender[snd] += int64(sign) * c
	if s.sender[snd] <= 0 {
		delete(s.sender, snd)
	}
	pk := pair{snd, r}
	s.pairs[pk] += sign
	if s.pairs[pk] <= 0 {
		delete(s.pairs, pk)
	}
	s.total += int64(sign) * c
	s.held += sign
}

func (s *store) release(snd, r peer.ID, c int64) {
	s.mu.Lock()
	s.account(snd, r, c, -1)
	s.mu.Unlock()
}

// reserve takes one deposit's share of every quota, or reports which
// quota is full.
func (s *store) reserve(snd, r peer.ID, c int64) (Status, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.limits
	u := s.recip[r]
	if u == nil {
		u = &usage{}
	}
	switch {
	case s.total+c > l.MaxStoreSize:
		return StatusStoreFull, "the daemon's mailbox store is full"
	case u.count+1 > l.MaxPerRecipient:
		return StatusRecipientFull, fmt.Sprintf("the recipient has %d deposits waiting (the most)", u.count)
	case u.bytes+c > l.MaxBytesPerRecipient:
		return StatusRecipientFull, fmt.Sprintf("the recipient has %d bytes waiting (at most %d)", u.bytes, l.MaxBytesPerRecipient)
	case s.pairs[pair{snd, r}]+1 > l.MaxPerSenderPerRecipient:
		return StatusSenderFull, fmt.Sprintf("you have %d deposits waiting for this recipient (the most)", s.pairs[pair{snd, r}])
	case s.sender[snd]+c > l.MaxBytesPerSender:
		return StatusSenderFull, fmt.Sprintf("you have %d bytes stored (at most %d)", s.sender[snd], l.MaxBytesPerSender)
	}
	s.account(snd, r, c, 1)
	return StatusOK, ""
}

func recipKey(r peer.ID) []byte {
	b := make([]byte, 0, 1+len(r)+IDLen)
	return append(append(b, byte(len(r))), r...)
}

func depKey(r peer.ID, id []byte) []byte { return append(recipKey(r), id...) }

func splitKey(k []byte) (peer.ID, []byte, error) {
	if len(k) < 1 || len(k) != 1+int(k[0])+IDLen {
		return "", nil, errors.New("corrupt deposit key")
	}
	return peer.ID(k[1 : 1+int(k[0])]), k[1+int(k[0]):], nil
}

func splitValue(v []byte) (storedMs int64, snd peer.ID, box []byte, err error) {
	if len(v) < 9 || len(v) < 9+int(v[8]) {
		return 0, "", nil, errors.New("corrupt deposit")
	}
	n := int(v[8])
	return int64(binary.BigEndian.Uint64(v)), peer.ID(v[9 : 9+n]), v[9+n:], nil
}

func digest(r peer.ID, box []byte) []byte {
	h := sha256.New()
	h.Write([]byte(r))
	h.Write(box)
	return h.Sum(nil)
}

// put stores one deposit whose quota is reserved. A replay of a box
// already held answers with the held deposit's ID and dup set; the
// caller then gives the reservation back.
func (s *store) put(snd, r peer.ID, box []byte, now time.Time) (id []byte, dup bool, err error) {
	// A deposit ID is a sequence (so a recipient's deposits sort in
	// arrival order) and 8 random bytes (so IDs cannot be guessed).
	newID := make([]byte, IDLen)
	if _, err := rand.Read(newID[8:]); err != nil {
		return nil, false, err
	}
	s.mu.Lock()
	s.lastSeq = max(s.lastSeq+1, uint64(now.UnixNano()))
	binary.BigEndian.PutUint64(newID, s.lastSeq)
	s.mu.Unlock()
	dg := digest(r, box)
	ms := now.UnixMilli()
	err = s.db.Batch(func(tx *bolt.Tx) error {
		id, dup = nil, false
		if k := tx.Bucket(bktDigests).Get(dg); k != nil {
			_, old, err := splitKey(k)
			if err != nil {
				return err
			}
			id, dup = append([]byte(nil), old...), true
			return nil
		}
		k := depKey(r, newID)
		v := make([]byte, 9, 9+len(snd)+len(box))
		binary.BigEndian.PutUint64(v, uint64(ms))
		v[8] = byte(len(snd))
		v = append(append(v, snd...), box...)
		if err := tx.Bucket(bktDeposits).Put(k, v); err != nil {
			return err
		}
		if err := tx.Bucket(bktExpiry).Put(expKey(ms, k), nil); err != nil {
			return err
		}
		if err := tx.Bucket(bktDigests).Put(dg, k); err != nil {
			return err
		}
		id = newID
		return nil
	})
	return id, dup, err
}

func expKey(ms int64, k []byte) []byte {
	e := make([]byte, 8, 8+len(k))
	binary.BigEndian.PutUint64(e, uint64(ms))
	return append(e, k...)
}

// fetch returns r's oldest deposits (after the deposit ID after, if set)
// that have not expired, at most limit and about maxBytes of wire size,
// and whether more wait.
func (s *store) fetch(r peer.ID, after []byte, limit, maxBytes int, now time.Time) ([]Deposit, bool, error) {
	var out []Deposit
	more := false
	cutoff := now.Add(-s.limits.TTL).UnixMilli()
	prefix := recipKey(r)
	size := 0
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bktDeposits).Cursor()
		k, v := c.Seek(prefix)
		if after != nil {
			start := depKey(r, after)
			if k, v = c.Seek(start); bytes.Equal(k, start) {
				k, v = c.Next()
			}
		}
		for ; k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			_, id, err := splitKey(k)
			if err != nil {
				return err
			}
			ms, _, box, err := splitValue(v)
			if err != nil {
				return err
			}
			if ms <= cutoff {
				continue // expired: the sweeper deletes it
			}
			sz := depositWireSize(len(box))
			if len(out) >= limit || size+sz > maxBytes {
				more = true
				return nil
			}
			size += sz
			out = append(out, Deposit{ID: append([]byte(nil), id...), Box: append([]byte(nil), box...), StoredMs: ms})
		}
		return nil
	})
	return out, more, err
}

type removed struct {
	snd, r peer.ID
	cost   int64
}

// removeTx deletes the deposit at key k from every bucket.
func removeTx(tx *bolt.Tx, k []byte) (removed, bool, error) {
	deps := tx.Bucket(bktDeposits)
	v := deps.Get(k)
	if v == nil {
		return removed{}, false, nil
	}
	r, _, err := splitKey(k)
	if err != nil {
		return removed{}, false, err
	}
	ms, snd, box, err := splitValue(v)
	if err != nil {
		return removed{}, false, err
	}
	rm := removed{snd: snd, r: r, cost: cost(box)}
	if err := tx.Bucket(bktDigests).Delete(digest(r, box)); err != nil {
		return removed{}, false, err
	}
	if err := tx.Bucket(bktExpiry).Delete(expKey(ms, k)); err != nil {
		return removed{}, false, err
	}
	if err := deps.Delete(k); err != nil {
		return removed{}, false, err
	}
	return rm, true, nil
}

// remove deletes r's deposits ids (IDs of other recipients' deposits
// simply match nothing) and returns how many it deleted.
func (s *store) remove(r peer.ID, ids [][]byte) (int, error) {
	var gone []removed
	err := s.db.Batch(func(tx *bolt.Tx) error {
		gone = gone[:0]
		for _, id := range ids {
			rm, ok, err := removeTx(tx, depKey(r, id))
			if err != nil {
				return err
			}
			if ok {
				gone = append(gone, rm)
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	s.mu.Lock()
	for _, rm := range gone {
		s.account(rm.snd, rm.r, rm.cost, -1)
	}
	s.mu.Unlock()
	return len(gone), nil
}

// sweepBatch bounds the deposits one sweep transaction deletes.
const sweepBatch = 1000

// sweep deletes every deposit older than the TTL and returns how many.
func (s *store) sweep(now time.Time) (int, error) {
	cutoff := now.Add(-s.limits.TTL).UnixMilli()
	total := 0
	for {
		var gone []removed
		err := s.db.Update(func(tx *bolt.Tx) error {
			c := tx.Bucket(bktExpiry).Cursor()
			var keys [][]byte
			for k, _ := c.First(); k != nil && len(keys) < sweepBatch; k, _ = c.Next() {
				if len(k) < 8 || int64(binary.BigEndian.Uint64(k)) > cutoff {
					break
				}
				keys = append(keys, append([]byte(nil), k...))
			}
			for _, k := range keys {
				rm, ok, err := removeTx(tx, k[8:])
				if err != nil {
					return err
				}
				if ok {
					gone = append(gone, rm)
				} else if err := tx.Bucket(bktExpiry).Delete(k); err != nil {
					return err // an index entry without its deposit
				}
			}
			return nil
		})
		if err != nil {
			return total, err
		}
		s.mu.Lock()
		for _, rm := range gone {
			s.account(rm.snd, rm.r, rm.cost, -1)
		}
		s.expired += uint64(len(gone))
		s.mu.Unlock()
		total += len(gone)
		if len(gone) < sweepBatch {
			return total, nil
		}
	}
}

// Stats is a snapshot of the store.
type Stats struct {
	Deposits int   // held
	Bytes    int64 // held, as the quotas count them
	Expired  uint64
}

func (s *store) stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Stats{Deposits: s.held, Bytes: s.total, Expired: s.expired}
}
