// Package dhtstore is the bounded, disk-backed datastore of the daemon's
// Kademlia DHT server.
//
// go-libp2p-kad-dht keeps provider records (ADD_PROVIDER) and value records
// (PUT_VALUE: /pk, /ipns) in a go-datastore; its default is a map on the
// heap with no bound, so a peer that sends ADD_PROVIDER for ever-new keys
// grows the daemon's memory until it dies. A Store sits between the DHT and
// a pebble database in the daemon's data directory and counts what is kept:
//
//   - provider records per providing peer (the last segment of a
//     /providers/<key>/<peer> datastore key; the DHT stores a record only
//     for the peer that sent it, so this is per sending peer),
//   - provider records in total,
//   - value records in total.
//
// A write that would create a record beyond a cap is dropped silently and
// counted in Refused: the DHT's provider manager commits records in batches
// of 256 from different peers, and failing the batch would lose the honest
// records in it. Refreshing a record that is already stored (a peer's
// periodic reprovide) creates nothing and is always accepted. Deletes (the
// DHT's expiry of records after their validity, 48 h for providers) free
// room again.
//
// Records live on disk; the heap holds the per-peer counters only (one
// small map entry per providing peer, at most MaxProviders entries) plus
// pebble's fixed block cache and memtable.
package dhtstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	ds "github.com/ipfs/go-datastore"
	dsq "github.com/ipfs/go-datastore/query"
	pebbleds "github.com/ipfs/go-ds-pebble"
)

// Defaults. A chat client advertises its user name and its rooms, a handful
// of keys; a daemon serving 10,000 clients keeps some 50,000 provider records.
const (
	DefaultMaxProviders        = 250_000
	DefaultMaxProvidersPerPeer = 256
	DefaultMaxValues           = 10_000

	// cacheSize is pebble's block cache; with its default 4 MiB memtable it
	// is the store's fixed memory.
	cacheSize = 8 << 20
)

// providersPrefix is where go-libp2p-kad-dht's provider manager keeps its
// records (records.ProvidersKeyPrefix): /providers/<key>/<peer>.
const providersPrefix = "/providers/"

// ErrClosed is returned by every operation after Close.
var ErrClosed = errors.New("dht store closed")

// Limits bounds what a Store keeps. Every field must be positive.
type Limits struct {
	MaxProviders        int // provider records in total
	MaxProvidersPerPeer int // provider records of one providing peer
	MaxValues           int // value records (PUT_VALUE) in total
}

// DefaultLimits returns the limits a daemon uses unless told otherwise.
func DefaultLimits() Limits {
	return Limits{
		MaxProviders:        DefaultMaxProviders,
		MaxProvidersPerPeer: DefaultMaxProvidersPerPeer,
		MaxValues:           DefaultMaxValues,
	}
}

// Validate reports every limit that is not positive or inconsistent.
func (l Limits) Validate() error {
	var errs []error
	if l.MaxProviders <= 0 {
		errs = append(errs, fmt.Errorf("max provider records must be positive, got %d", l.MaxProviders))
	}
	if l.MaxProvidersPerPeer <= 0 {
		errs = append(errs, fmt.Errorf("max provider records per peer must be positive, got %d", l.MaxProvidersPerPeer))
	}
	if l.MaxProvidersPerPeer > l.MaxProviders && l.MaxProviders > 0 {
		errs = append(errs, fmt.Errorf("max provider records per peer (%d) exceeds the total (%d)", l.MaxProvidersPerPeer, l.MaxProviders))
	}
	if l.MaxValues <= 0 {
		errs = append(errs, fmt.Errorf("max value records must be positive, got %d", l.MaxValues))
	}
	return errors.Join(errs...)
}

// Store is a ds.Batching for go-libp2p-kad-dht (dht.Datastore) that bounds
// the records it keeps. It is safe for concurrent use.
type Store struct {
	db     *pebbleds.Datastore
	limits Limits

	// life fences the database: every operation holds it for reading,
	// Close for writing, so nothing touches pebble after it is closed.
	life   sync.RWMutex
	closed bool

	// mu serialises writes, so that "does this record exist, is there room"
	// and the write itself are one step. It guards the counters.
	mu        sync.Mutex
	perPeer   map[string]int // provider records by peer key segment
	providers int
	values    int

	refused atomic.Uint64
}

var _ ds.Batching = (*Store)(nil)

// Open opens (creating if needed) the pebble database in dir and counts the
// records already there. Records beyond lowered limits are kept until they
// expire; no new ones are accepted until the counts are below the limits.
func Open(dir string, l Limits) (*Store, error) {
	if err := l.Validate(); err != nil {
		return nil, err
	}
	// The plain file system, not pebble's default disk-health-checking
	// wrapper: that wrapper's goroutine outlives a failed Open (a second
	// daemon on a locked data dir), and provider records are best effort.
	opts := &pebble.Options{FS: vfs.Default}
	db, err := pebbleds.NewDatastore(dir, pebbleds.WithCacheSize(cacheSize), pebbleds.WithPebbleOpts(opts))
	if err != nil {
		return nil, err
	}
	s := &Store{db: db, limits: l, perPeer: map[string]int{}}
	if err := s.count(context.Background()); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("count dht records: %w", err)
	}
	return s, nil
}

// count rebuilds the counters from the database.
func (s *Store) count(ctx context.Context) error {
	res, err := s.db.Query(ctx, dsq.Query{KeysOnly: true})
	if err != nil {
		return err
	}
	defer res.Close()
	for e := range res.Next() {
		if e.Error != nil {
			return e.Error
		}
		if p, ok := providerPeer(e.Key); ok {
			s.perPeer[p]++
			s.providers++
		} else {
			s.values++
		}
	}
	return nil
}

// providerPeer returns the peer segment of a provider record's key.
func providerPeer(key string) (string, bool) {
	if !strings.HasPrefix(key, providersPrefix) {
		return "", false
	}
	i := strings.LastIndexByte(key, '/')
	if i < len(providersPrefix) {
		return "", false // /providers/<key> without a peer: not a record
	}
	return key[i+1:], true
}

// Stats is a snapshot of what a Store holds.
type Stats struct {
	Providers     int    // provider records stored
	ProviderPeers int    // distinct peers with provider records
	Values        int    // value records stored
	Refused       uint64 // writes dropped at a cap since Open
}

// Stats reports the current counts.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Stats{Providers: s.providers, ProviderPeers: len(s.perPeer), Values: s.values, Refused: s.refused.Load()}
}

// ProvidersOf returns how many provider records the peer whose datastore
// key segment is seg holds (seg is the unpadded base32 of the peer ID's
// bytes, as the DHT writes it).
func (s *Store) ProvidersOf(seg string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.perPeer[seg]
}

func (s *Store) enter() bool {
	s.life.RLock()
	if s.closed {
		s.life.RUnlock()
		return false
	}
	return true
}

// Get implements ds.Read.
func (s *Store) Get(ctx context.Context, k ds.Key) ([]byte, error) {
	if !s.enter() {
		return nil, ErrClosed
	}
	defer s.life.RUnlock()
	return s.db.Get(ctx, k)
}

// Has implements ds.Read.
func (s *Store) Has(ctx context.Context, k ds.Key) (bool, error) {
	if !s.enter() {
		return false, ErrClosed
	}
	defer s.life.RUnlock()
	return s.db.Has(ctx, k)
}

// GetSize implements ds.Read.
func (s *Store) GetSize(ctx context.Context, k ds.Key) (int, error) {
	if !s.enter() {
		return -1, ErrClosed
	}
	defer s.life.RUnlock()
	return s.db.GetSize(ctx, k)
}

// Query implements ds.Read. A query still running when the Store closes
// ends early (pebble's datastore waits for it).
func (s *Store) Query(ctx context.Context, q dsq.Query) (dsq.Results, error) {
	if !s.enter() {
		return nil, ErrClosed
	}
	defer s.life.RUnlock()
	return s.db.Query(ctx, q)
}

// Put implements ds.Write; a put beyond a cap is dropped (see the package
// comment) and returns nil.
func (s *Store) Put(ctx context.Context, k ds.Key, v []byte) error {
	return s.commit(ctx, []op{{key: k, value: v}})
}

// Delete implements ds.Write.
func (s *Store) Delete(ctx context.Context, k ds.Key) error {
	return s.commit(ctx, []op{{key: k, del: true}})
}

// Sync implements ds.Write.
func (s *Store) Sync(ctx context.Context, prefix ds.Key) error {
	if !s.enter() {
		return ErrClosed
	}
	defer s.life.RUnlock()
	return s.db.Sync(ctx, prefix)
}

// Batch implements ds.Batching. The batch's writes are checked against the
// caps when it is committed.
func (s *Store) Batch(context.Context) (ds.Batch, error) {
	return &batch{s: s}, nil
}

// Close flushes and closes the database; later calls return ErrClosed.
// Close the DHT (and the host serving it) first. Idempotent.
func (s *Store) Close() error {
	s.life.Lock()
	defer s.life.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	return s.db.Close()
}

type op struct {
	key   ds.Key
	value []byte
	del   bool
}

type batch struct {
	s   *Store
	mu  sync.Mutex
	ops []op
}

func (b *batch) Put(_ context.Context, k ds.Key, v []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.ops = append(b.ops, op{key: k, value: v})
	return nil
}

func (b *batch) Delete(_ context.Context, k ds.Key) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.ops = append(b.ops, op{key: k, del: true})
	return nil
}

func (b *batch) Commit(ctx context.Context) error {
	b.mu.Lock()
	ops := b.ops
	b.ops = nil
	b.mu.Unlock()
	return b.s.commit(ctx, ops)
}

// delta is one counter change, kept to undo a failed commit.
type delta struct {
	peer     string // provider peer segment, "" for a value record
	provider bool
	n        int
}

// commit checks ops against the caps and writes the admitted ones as one
// pebble batch. Counters and database change together under mu.
func (s *Store) commit(ctx context.Context, ops []op) error {
	if len(ops) == 0 {
		return nil
	}
	if !s.enter() {
		return ErrClosed
	}
	defer s.life.RUnlock()
	s.mu.Lock()
	defer s.mu.Unlock()

	b, err := s.db.Batch(ctx)
	if err != nil {
		return err
	}
	// exists overlays this batch's own earlier ops on the database.
	exists := map[string]bool{}
	has := func(k ds.Key) (bool, error) {
		if e, ok := exists[k.String()]; ok {
			return e, nil
		}
		return s.db.Has(ctx, k)
	}
	var deltas []delta
	undo := func() {
		for _, d := range deltas {
			s.apply(d.peer, d.provider, -d.n)
		}
	}
	written := 0
	for _, o := range ops {
		present, err := has(o.key)
		if err != nil {
			undo()
			return err
		}
		peer, provider := providerPeer(o.key.String())
		switch {
		case o.del:
			if err := b.Delete(ctx, o.key); err != nil {
				undo()
				return err
			}
			if present {
				s.apply(peer, provider, -1)
				deltas = append(deltas, delta{peer, provider, -1})
			}
			exists[o.key.String()] = false
		case !present && !s.room(peer, provider):
			s.refused.Add(1)
			continue
		default:
			if err := b.Put(ctx, o.key, o.value); err != nil {
				undo()
				return err
			}
			if !present {
				s.apply(peer, provider, 1)
				deltas = append(deltas, delta{peer, provider, 1})
			}
			exists[o.key.String()] = true
		}
		written++
	}
	if written == 0 {
		return nil
	}
	if err := b.Commit(ctx); err != nil {
		undo()
		return err
	}
	return nil
}

// room reports whether one more record of this kind fits. The caller holds mu.
func (s *Store) room(peer string, provider bool) bool {
	if !provider {
		return s.values < s.limits.MaxValues
	}
	return s.providers < s.limits.MaxProviders && s.perPeer[peer] < s.limits.MaxProvidersPerPeer
}

// apply changes the counters by n. The caller holds mu.
func (s *Store) apply(peer string, provider bool, n int) {
	if !provider {
		s.values += n
		return
	}
	s.providers += n
	if c := s.perPeer[peer] + n; c > 0 {
		s.perPeer[peer] = c
	} else {
		delete(s.perPeer, peer)
	}
}
