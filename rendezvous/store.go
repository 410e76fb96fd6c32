package rendezvous

import (
	"bytes"
	"encoding/binary"
	"sort"
	"sync"

	"github.com/libp2p/go-libp2p/core/peer"
)

// regEntry is one registration. Its fields never change after it is indexed,
// except dead, which is set (under store.mu) when it is replaced or removed.
type regEntry struct {
	peer    peer.ID
	ns      string
	rec     []byte // the signed peer record as received; shared across a peer's entries when equal
	seq     uint64
	expires int64 // unix nanoseconds
	dead    bool
	own     bool // a name registered by its lease owner (reserve.go)
}

// seqIndex holds entries ordered by seq. Removed entries stay in place, marked
// dead, until they make up half of the slice; then it is compacted into a
// fresh slice so their memory is freed.
type seqIndex struct {
	entries []*regEntry
	dead    int
}

func (ix *seqIndex) live() int { return len(ix.entries) - ix.dead }

// after returns the position of the first entry with a sequence number
// above seq.
func (ix *seqIndex) after(seq uint64) int {
	return sort.Search(len(ix.entries), func(i int) bool { return ix.entries[i].seq > seq })
}

func (ix *seqIndex) removed() {
	ix.dead++
	switch {
	case ix.dead == len(ix.entries):
		ix.entries, ix.dead = nil, 0
	case ix.dead >= 16 && ix.dead*2 >= len(ix.entries):
		kept := make([]*regEntry, 0, ix.live())
		for _, e := range ix.entries {
			if !e.dead {
				kept = append(kept, e)
			}
		}
		ix.entries, ix.dead = kept, 0
	}
}

// removal reasons, for watch events and logs.
const (
	reasonUnregister = "unregister"
	reasonExpired    = "expired"
	reasonDisconnect = "disconnect"
	reasonReplaced   = "replaced"
)

// regStore is the in-memory registration index, optionally written through
// to a bbolt file by a persister. One mutex guards it; the read path
// (discover) only takes the read lock and allocates nothing per entry.
type regStore struct {
	mu       sync.RWMutex
	seq      uint64   // last sequence number handed out
	all      seqIndex // every entry, for discover over all namespaces
	byNS     map[string]*seqIndex
	byPeer   map[peer.ID]map[string]*regEntry
	count    int
	own      int                // entries with own set, counted apart from the total cap (reserve.go)
	holds    func(peer.ID) bool // whether a peer holds a name (reserve.go); nil: none does
	watchers map[string]map[*subscriber]struct{}
	nwatch   int
	watchBy  map[peer.ID]int

	persist *persister // nil: memory only

	// expiredSeen is signalled (without blocking) when a reader skips an
	// expired entry, so the sweeper frees it soon.
	expiredSeen chan struct{}
	// onRemove is told about every removal, for metrics and logs.
	onRemove func(reason string)
}

func newStore(seq uint64, p *persister) *regStore {
	return &regStore{
		seq:         seq,
		byNS:        make(map[string]*seqIndex),
		byPeer:      make(map[peer.ID]map[string]*regEntry),
		watchers:    make(map[string]map[*subscriber]struct{}),
		watchBy:     make(map[peer.ID]int),
		persist:     p,
		expiredSeen: make(chan struct{}, 1),
		onRemove:    func(string) {},
	}
}

// load indexes entries read back from disk; they must be sorted by seq.
func (st *regStore) load(entries []*regEntry) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, e := range entries {
		st.insert(e)
		if e.seq > st.seq {
			st.seq = e.seq
		}
	}
}

func (st *regStore) insert(e *regEntry) {
	ix := st.byNS[e.ns]
	if ix == nil {
		ix = &seqIndex{}
		st.byNS[e.ns] = ix
	}
	ix.entries = append(ix.entries, e)
	st.all.entries = append(st.all.entries, e)
	m := st.byPeer[e.peer]
	if m == nil {
		m = make(map[string]*regEntry)
		st.byPeer[e.peer] = m
	}
	m[e.ns] = e
	st.count++
	if e.own {
		st.own++
	}
}

// remove takes e out of every index, persists the deletion and tells the
// namespace's watchers. Callers hold st.mu.
func (st *regStore) remove(e *regEntry, reason string) {
	e.dead = true
	if ix := st.byNS[e.ns]; ix != nil {
		ix.removed()
		if ix.live() == 0 {
			delete(st.byNS, e.ns)
		}
	}
	st.all.removed()
	if m := st.byPeer[e.peer]; m != nil {
		delete(m, e.ns)
		if len(m) == 0 {
			delete(st.byPeer, e.peer)
		}
	}
	st.count--
	if e.own {
		st.own--
	}
	if reason != reasonReplaced {
		if st.persist != nil {
			st.persist.del(entryKey(e.peer, e.ns))
		}
		st.emit(e.ns, func() []byte { return unregisteredEvent(e) })
	}
	st.onRemove(reason)
}

// registerResult is the outcome of a register: a status for the peer, and
// the lifetime granted when it is OK.
type registerResult struct {
	status Status
	text   string
	reason string // rejection reason for metrics; "" when OK
}

// knownRecord returns the stored copy of rec when p already registered
// byte-identical record bytes (checked in ns first, then in one other
// namespace: a peer's equal records share one slice), or nil.
func (st *regStore) knownRecord(p peer.ID, ns string, rec []byte) []byte {
	st.mu.RLock()
	defer st.mu.RUnlock()
	mine := st.byPeer[p]
	if e := mine[ns]; e != nil && bytes.Equal(e.rec, rec) {
		return e.rec
	}
	for _, e := range mine {
		if bytes.Equal(e.rec, rec) {
			return e.rec
		}
		break
	}
	return nil
}

// register adds or replaces the registration of p under ns. exclusive marks
// a namespace that only one peer may hold. The entry and its disk encoding
// are built before the write lock is taken; under it, only the index
// changes and the sequence number is filled in.
func (st *regStore) register(p peer.ID, ns string, rec []byte, ttlNanos, now int64, exclusive bool, lim *Limits) registerResult {
	return st.registerIn(p, ns, rec, ttlNanos, now, exclusive, roomOther, lim)
}

// registerIn is register for a peer of the given room class (reserve.go).
func (st *regStore) registerIn(p peer.ID, ns string, rec []byte, ttlNanos, now int64, exclusive bool, class roomClass, lim *Limits) registerResult {
	e := &regEntry{peer: p, ns: ns, rec: rec, expires: now + ttlNanos, own: class == roomOwnName}
	var key string
	var val []byte
	if st.persist != nil {
		key, val = entryKey(p, ns), encodeEntry(e)
	}

	st.mu.Lock()
	defer st.mu.Unlock()

	if st.persist != nil && st.persist.failing() {
		return registerResult{StatusInternalError, "the registration store cannot write to disk", rejectStore}
	}

	if exclusive {
		if ix := st.byNS[ns]; ix != nil {
			var stale []*regEntry
			for _, x := range ix.entries {
				if x.dead || x.peer == p {
					continue
				}
				if x.expires <= now {
					stale = append(stale, x)
					continue
				}
				return registerResult{StatusNotAuthorized, "namespace is exclusive and held by another peer", rejectExclusive}
			}
			for _, x := range stale {
				st.remove(x, reasonExpired)
			}
		}
	}

	mine := st.byPeer[p]
	old := mine[ns]
	if old == nil {
		if len(mine) >= lim.MaxRegistrationsPerPeer {
			// Expired entries do not count against the quota.
			for _, x := range mine {
				if x.expires <= now {
					st.remove(x, reasonExpired)
				}
			}
			mine = st.byPeer[p]
			if len(mine) >= lim.MaxRegistrationsPerPeer {
				return registerResult{StatusNotAuthorized, "too many registrations for this peer", rejectPeerCap}
			}
		}
		if !st.hasRoom(p, mine, class, lim) {
			return registerResult{StatusUnavailable, "server is full, try again later", rejectTotalCap}
		}
	}
	// Share the record bytes with the peer's other registrations when equal:
	// a peer registered in many namespaces costs one record.
	if old != nil && bytes.Equal(old.rec, e.rec) {
		e.rec = old.rec
	} else {
		for _, x := range mine {
			if bytes.Equal(x.rec, e.rec) {
				e.rec = x.rec
			}
			break
		}
	}
	if old != nil {
		st.remove(old, reasonReplaced)
	}
	st.seq++
	e.seq = st.seq
	st.insert(e)
	if st.persist != nil {
		binary.BigEndian.PutUint64(val, e.seq)
		st.persist.put(key, val, e.seq)
	}
	st.emit(ns, func() []byte { return registeredEvent(e, ttlNanos) })
	return registerResult{status: StatusOK}
}

// unregister removes the registration of p under ns, if any.
func (st *regStore) unregister(p peer.ID, ns string) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	e := st.byPeer[p][ns]
	if e == nil {
		return false
	}
	st.remove(e, reasonUnregister)
	return true
}

// removePeer removes every registration of p and returns how many.
func (st *regStore) removePeer(p peer.ID, reason string) int {
	st.mu.Lock()
	defer st.mu.Unlock()
	m := st.byPeer[p]
	n := len(m)
	for _, e := range m {
		st.remove(e, reason)
	}
	return n
}

func (st *regStore) hasPeer(p peer.ID) bool {
	st.mu.RLock()
	defer st.mu.RUnlock()
	return len(st.byPeer[p]) > 0
}

// sweep removes every registration expired at now and returns how many.
func (st *regStore) sweep(now int64) int {
	st.mu.Lock()
	defer st.mu.Unlock()
	var expired []*regEntry
	for _, e := range st.all.entries {
		if !e.dead && e.expires <= now {
			expired = append(expired, e)
		}
	}
	for _, e := range expired {
		st.remove(e, reasonExpired)
	}
	return len(expired)
}

func (st *regStore) len() int {
	st.mu.RLock()
	defer st.mu.RUnlock()
	return st.count
}

// discoverBuf is a scratch area for one DISCOVER, taken from
// discoverPool, so that a warm server answers without allocating and an
// idle stream holds no response buffer.
type discoverBuf struct {
	sel    []*regEntry
	ttls   []uint64
	out    []byte
	holder peer.ID // the lease holder of the name asked for, if any (lease.go)
}

var discoverPool = sync.Pool{New: func() any { return new(discoverBuf) }}

// putDiscoverBuf returns d to the pool, dropping a large page buffer.
func putDiscoverBuf(d *discoverBuf) {
	if cap(d.out) > 64<<10 {
		d.out = nil
	}
	d.holder = ""
	discoverPool.Put(d)
}

// maxDiscoverBody leaves room for the Message envelope around a
// DISCOVER_RESPONSE body so the framed message fits MaxMessageSize; the
// registrations get what the cookie, status and holder leave of it.
const maxDiscoverBody = MaxMessageSize - 64

// discover writes into d.out a framed DISCOVER_RESPONSE Message for ns
// ("" = all namespaces) after cookie, at most limit registrations. It
// returns a non-OK status, with d.out untouched, when the cookie is bad.
func (st *regStore) discover(ns string, cookie []byte, limit int, now int64, d *discoverBuf) (Status, string) {
	st.mu.RLock()
	defer st.mu.RUnlock()

	after, err := parseCookie(cookie, ns)
	if err == nil && after > st.seq {
		err = errCookieFuture
	}
	if err != nil {
		return StatusInvalidCookie, err.Error()
	}

	ix := &st.all
	if ns != "" {
		ix = st.byNS[ns]
		if ix == nil {
			ix = &seqIndex{}
		}
	}

	d.sel, d.ttls = d.sel[:0], d.ttls[:0]
	last := after
	body := 0
	budget := maxDiscoverBody - discoverTrailerSize(ns, d.holder)
	sawExpired := false
	for _, e := range ix.entries[ix.after(after):] {
		if len(d.sel) >= limit {
			break
		}
		if e.dead {
			continue
		}
		if e.expires <= now {
			sawExpired = true
			continue
		}
		ttl := remainingSeconds(e.expires, now)
		n := registrationFieldSize(e, ttl)
		if body+n > budget {
			break
		}
		body += n
		d.sel = append(d.sel, e)
		d.ttls = append(d.ttls, ttl)
		last = e.seq
	}
	if sawExpired {
		select {
		case st.expiredSeen <- struct{}{}:
		default:
		}
	}

	d.out = appendDiscoverResponse(d.out[:0], d.sel, d.ttls, body, last, ns, d.holder)
	clear(d.sel) // drop references to entries between requests
	return StatusOK, ""
}

// remainingSeconds rounds the time left up to whole seconds, so a live
// registration never shows a TTL of 0.
func remainingSeconds(expires, now int64) uint64 {
	left := expires - now
	if left <= 0 {
		return 0
	}
	return uint64((left + 1e9 - 1) / 1e9)
}

// Watch subscriptions.

// subscriber is one watch subscriber. events carries framed WatchEvent
// messages; overflow is closed when the subscriber fell too far behind.
type subscriber struct {
	ns         string
	peer       peer.ID
	events     chan []byte
	overflow   chan struct{}
	overflowed bool
}

// emit queues the event made by mk for every subscriber of ns, without
// blocking: a subscriber whose queue is full is marked for disconnection.
// Callers hold st.mu.
func (st *regStore) emit(ns string, mk func() []byte) {
	ws := st.watchers[ns]
	if len(ws) == 0 {
		return
	}
	frame := mk()
	if frame == nil {
		return
	}
	for w := range ws {
		if w.overflowed {
			continue
		}
		select {
		case w.events <- frame:
		default:
			w.overflowed = true
			close(w.overflow)
		}
	}
}

// snapEntry is one registration of a watch snapshot: the entry (immutable
// apart from its dead flag, which is not read) and its remaining lifetime.
type snapEntry struct {
	e        *regEntry
	ttlNanos int64
}

// subscribe adds w and returns the live registrations in its namespace, so
// that nothing happens between the snapshot and the first queued event.
// The snapshot holds pointers only; the caller encodes it outside the lock.
func (st *regStore) subscribe(w *subscriber, now int64, lim *Limits) ([]snapEntry, Status, string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.nwatch >= lim.MaxWatches {
		return nil, StatusUnavailable, "too many watch subscriptions on this server"
	}
	if st.watchBy[w.peer] >= lim.MaxWatchesPerPeer {
		return nil, StatusUnavailable, "too many watch subscriptions from this peer"
	}
	var snap []snapEntry
	if ix := st.byNS[w.ns]; ix != nil {
		snap = make([]snapEntry, 0, ix.live())
		for _, e := range ix.entries {
			if e.dead || e.expires <= now {
				continue
			}
			snap = append(snap, snapEntry{e, e.expires - now})
		}
	}
	m := st.watchers[w.ns]
	if m == nil {
		m = make(map[*subscriber]struct{})
		st.watchers[w.ns] = m
	}
	m[w] = struct{}{}
	st.nwatch++
	st.watchBy[w.peer]++
	return snap, StatusOK, ""
}

func (st *regStore) unsubscribe(w *subscriber) {
	st.mu.Lock()
	defer st.mu.Unlock()
	m := st.watchers[w.ns]
	if _, ok := m[w]; !ok {
		return
	}
	delete(m, w)
	if len(m) == 0 {
		delete(st.watchers, w.ns)
	}
	st.nwatch--
	if st.watchBy[w.peer]--; st.watchBy[w.peer] <= 0 {
		delete(st.watchBy, w.peer)
	}
}

func (st *regStore) watchCount() int {
	st.mu.RLock()
	defer st.mu.RUnlock()
	return st.nwatch
}
