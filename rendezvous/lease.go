package rendezvous

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	bolt "go.etcd.io/bbolt"

	"github.com/p2p-messaging/p2p-messaging/rendezvous/pb"
)

// Name lease defaults (see the package doc, "Names").
const (
	// DefaultLeaseDuration is how long a name under the exclusive prefix
	// stays bound to the key that last registered or refreshed it.
	DefaultLeaseDuration = 30 * 24 * time.Hour
	// DefaultMaxNames caps the leases one server holds.
	DefaultMaxNames = 100_000
	// DefaultMaxNamesPerPeer caps the names one key holds.
	DefaultMaxNamesPerPeer = 3
)

// leaseWriteSlack: a renewal is written to disk only once the lease has
// moved on by this much (or by 1 % of the lease, when shorter) since the
// expiry last written, so a refresh every few minutes costs no disk write.
// A crash loses at most that much of a lease.
const leaseWriteSlack = time.Hour

// Rejection reasons of the name leases (rendezvous_rejections_total).
const (
	rejectNameHeld  = "name_held"
	rejectNamesFull = "names_full"
	rejectNameCap   = "name_cap"
)

// lease binds one name to its owner until expires (unix nanoseconds).
// stored is the expiry last handed to the disk writer.
type lease struct {
	ns      string
	owner   peer.ID
	expires int64
	stored  int64
}

// nameTable holds the leases of the names under the exclusive prefix. One
// mutex guards it; it is touched only by REGISTER and UNREGISTER under the
// prefix, by the sweeper and at start.
type nameTable struct {
	lim   *Limits
	slack int64 // leaseWriteSlack, capped at 1 % of the lease

	mu     sync.Mutex
	byNS   map[string]*lease
	byPeer map[peer.ID]map[string]*lease

	db *leaseDB // nil: memory only

	claims *claimLimiter // new claims per source network (claim.go)
}

func newNameTable(lim *Limits, db *leaseDB, stored []*lease) *nameTable {
	t := &nameTable{
		lim:    lim,
		slack:  int64(min(leaseWriteSlack, lim.LeaseDuration/100)),
		byNS:   make(map[string]*lease),
		byPeer: make(map[peer.ID]map[string]*lease),
		db:     db,
		claims: newClaimLimiter(&lim.NameLimits),
	}
	for _, l := range stored {
		l.stored = l.expires
		t.insert(l)
	}
	return t
}

func (t *nameTable) insert(l *lease) {
	t.byNS[l.ns] = l
	m := t.byPeer[l.owner]
	if m == nil {
		m = make(map[string]*lease)
		t.byPeer[l.owner] = m
	}
	m[l.ns] = l
}

// drop removes l and its stored copy. Callers hold t.mu.
func (t *nameTable) drop(l *lease) {
	delete(t.byNS, l.ns)
	if m := t.byPeer[l.owner]; m != nil {
		delete(m, l.ns)
		if len(m) == 0 {
			delete(t.byPeer, l.owner)
		}
	}
	if t.db != nil && l.stored != 0 {
		t.db.del(l.ns)
	}
}

// write hands l to the disk writer when it is new or moved on by more
// than the slack. Callers hold t.mu.
func (t *nameTable) write(l *lease) {
	if t.db == nil || (l.stored != 0 && l.expires-l.stored < t.slack) {
		return
	}
	l.stored = l.expires
	t.db.put(l.ns, encodeLease(l))
}

// nameTicket is an admitted REGISTER of a name: commit it once the
// registration is stored, abort it when the store refused.
type nameTicket struct {
	l     *lease
	fresh bool // a new lease, created by admit
}

// nameRefusal is why a REGISTER of a name was refused.
type nameRefusal struct {
	status Status
	text   string
	reason string
}

// admit decides a REGISTER of ns by p at now (unix ns). The owner of a
// live lease is admitted at once; anyone else is refused while the lease
// lasts. A free name (never leased, expired or released) gets a new lease
// for p, reserved at once so that two claimers cannot both win; claim
// checks, when not nil, may still refuse it.
func (t *nameTable) admit(p peer.ID, ns string, now int64, claim func() *nameRefusal) (nameTicket, *nameRefusal) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if l := t.byNS[ns]; l != nil {
		if l.expires > now {
			if l.owner == p {
				return nameTicket{l: l}, nil
			}
			return nameTicket{}, &nameRefusal{StatusNotAuthorized,
				"namespace is exclusive and held by another key until " + formatExpiry(l.expires) +
					" (a name outlives its holder's absences; only that key can take it back or release it)",
				rejectNameHeld}
		}
		t.drop(l)
	}
	if len(t.byNS) >= t.lim.MaxNames {
		t.sweepLocked(now)
		if len(t.byNS) >= t.lim.MaxNames {
			return nameTicket{}, &nameRefusal{StatusUnavailable, "server holds too many names, try again later", rejectNamesFull}
		}
	}
	if held := t.heldLocked(p, now); len(held) >= t.lim.MaxNamesPerPeer {
		return nameTicket{}, &nameRefusal{StatusNotAuthorized,
			fmt.Sprintf("this key already holds %d names (%s), the most one key may hold; release one first",
				len(held), strings.Join(held, ", ")),
			rejectNameCap}
	}
	if claim != nil {
		if r := claim(); r != nil {
			return nameTicket{}, r
		}
	}
	l := &lease{ns: ns, owner: p, expires: now + int64(t.lim.LeaseDuration)}
	t.insert(l)
	return nameTicket{l: l, fresh: true}, nil
}

// heldLocked lists the names p holds at now, sorted. Callers hold t.mu.
func (t *nameTable) heldLocked(p peer.ID, now int64) []string {
	var names []string
	for ns, l := range t.byPeer[p] {
		if l.expires > now {
			names = append(names, ns)
		}
	}
	sort.Strings(names)
	return names
}

// commit renews the lease of an admitted registration: it lasts
// LeaseDuration from now, and at least as long as the registration.
func (t *nameTable) commit(tk nameTicket, now, regExpires int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	l := tk.l
	if t.byNS[l.ns] != l {
		return // released meanwhile
	}
	l.expires = max(l.expires, now+int64(t.lim.LeaseDuration), regExpires)
	t.write(l)
}

// abort undoes a fresh lease whose registration the store refused.
func (t *nameTable) abort(tk nameTicket) {
	if !tk.fresh {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.byNS[tk.l.ns] == tk.l {
		t.drop(tk.l)
	}
}

// release ends p's lease on ns; false if p holds none.
func (t *nameTable) release(p peer.ID, ns string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	l := t.byNS[ns]
	if l == nil || l.owner != p {
		return false
	}
	t.drop(l)
	return true
}

// holder returns the owner of the live lease on ns, if any.
func (t *nameTable) holder(ns string, now int64) (peer.ID, time.Time, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	l := t.byNS[ns]
	if l == nil || l.expires <= now {
		return "", time.Time{}, false
	}
	return l.owner, time.Unix(0, l.expires).UTC(), true
}

// holds reports whether p holds a live lease.
func (t *nameTable) holds(p peer.ID, now int64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, l := range t.byPeer[p] {
		if l.expires > now {
			return true
		}
	}
	return false
}

// adopt gives a lease to the holders of registrations under prefix that
// have none (a store written before leases existed).
func (t *nameTable) adopt(entries []*regEntry, prefix string, now int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, e := range entries {
		if !strings.HasPrefix(e.ns, prefix) {
			continue
		}
		if l := t.byNS[e.ns]; l != nil && l.expires > now {
			continue
		} else if l != nil {
			t.drop(l)
		}
		l := &lease{ns: e.ns, owner: e.peer, expires: max(now+int64(t.lim.LeaseDuration), e.expires)}
		t.insert(l)
		t.write(l)
	}
}

// sweep frees the leases expired at now and returns how many.
func (t *nameTable) sweep(now int64) int {
	t.claims.sweep(time.Unix(0, now))
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.sweepLocked(now)
}

func (t *nameTable) sweepLocked(now int64) int {
	var expired []*lease
	for _, l := range t.byNS {
		if l.expires <= now {
			expired = append(expired, l)
		}
	}
	for _, l := range expired {
		t.drop(l)
	}
	return len(expired)
}

func (t *nameTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.byNS)
}

func (t *nameTable) failing() bool { return t.db != nil && t.db.failing() }

func (t *nameTable) close() error {
	if t.db == nil {
		return nil
	}
	return t.db.close()
}

func formatExpiry(unixNanos int64) string {
	return time.Unix(0, unixNanos).UTC().Format(time.RFC3339)
}

// ---- server hooks ----

// openNames opens the name leases (dir/names.db when dir is set), adopts
// the loaded registrations under the exclusive prefix and marks those of
// the names' owners in st (reserve.go). It runs before st is shared.
func openNames(cfg *serverConfig, lim *Limits, st *regStore, loaded []*regEntry, now int64) (*nameTable, error) {
	var (
		db     *leaseDB
		stored []*lease
	)
	if cfg.dataDir != "" {
		var err error
		db, stored, err = openLeaseDB(cfg.dataDir, now, cfg.log)
		if err != nil {
			return nil, err
		}
	}
	t := newNameTable(lim, db, stored)
	st.holds = func(p peer.ID) bool { return t.holds(p, cfg.now().UnixNano()) }
	if cfg.exclusivePrefix != "" {
		t.adopt(loaded, cfg.exclusivePrefix, now)
		st.markOwn(loaded, func(e *regEntry) bool {
			owner, _, ok := t.holder(e.ns, now)
			return ok && owner == e.peer && strings.HasPrefix(e.ns, cfg.exclusivePrefix)
		})
	}
	return t, nil
}

// admitName runs the lease checks of a REGISTER of ns, which lies under
// the exclusive prefix. A non-nil response is the refusal to send.
func (s *Server) admitName(remote peer.ID, conn network.Conn, r *pb.Message_Register, now time.Time) (nameTicket, *pb.Message_RegisterResponse) {
	ns := r.GetNs()
	if s.names.failing() {
		return nameTicket{}, s.reject(rejectStore, StatusInternalError, "the name store cannot write to disk")
	}
	tk, ref := s.names.admit(remote, ns, now.UnixNano(), s.claimCheck(remote, conn, r, now))
	if ref != nil {
		s.log.Debug("name claim refused", "peer", remote, "ns", ns, "status", ref.status, "err", ref.text)
		return nameTicket{}, s.reject(ref.reason, ref.status, ref.text)
	}
	return tk, nil
}

// nameRegistered ends an admitted name REGISTER: the lease is renewed when
// the store took the registration and undone when a fresh one was refused.
func (s *Server) nameRegistered(tk nameTicket, ok bool, now time.Time, ttl uint64) {
	if tk.l == nil {
		return
	}
	if !ok {
		s.names.abort(tk)
		return
	}
	if tk.fresh {
		s.log.Debug("name claimed", "peer", tk.l.owner, "ns", tk.l.ns)
	}
	s.names.commit(tk, now.UnixNano(), now.UnixNano()+int64(ttl)*int64(time.Second))
}

// releaseName ends remote's lease on ns (UNREGISTER with release_name).
func (s *Server) releaseName(remote peer.ID, ns string) {
	if s.names.release(remote, ns) {
		s.log.Debug("name released", "peer", remote, "ns", ns)
	}
}

// NameHolder reports which key holds the lease on the name ns, and until
// when; ok is false when the name is free.
func (s *Server) NameHolder(ns string) (owner peer.ID, until time.Time, ok bool) {
	return s.names.holder(ns, s.cfg.now().UnixNano())
}

// leaseHolder is the holder of the lease on ns that a DISCOVER answer
// reports (name_holder): "" unless ns is a leased name under the exclusive
// prefix.
func (s *Server) leaseHolder(ns string, now time.Time) peer.ID {
	if s.cfg.exclusivePrefix == "" || !strings.HasPrefix(ns, s.cfg.exclusivePrefix) {
		return ""
	}
	owner, _, _ := s.names.holder(ns, now.UnixNano())
	return owner
}

// Names returns the number of names leased.
func (s *Server) Names() int { return s.names.len() }

// ---- persistence ----

// NamesDBFileName is the bbolt file holding the name leases, beside
// DBFileName in the data dir.
const NamesDBFileName = "names.db"

var bucketLeases = []byte("leases")

// leaseDB writes leases through to bbolt in batches, as the persister does
// for registrations. Layout: bucket "leases", key = ns, value = expiry
// (8 bytes BE unix ns) | owner peer ID (binary).
type leaseDB struct {
	*batchWriter
}

func (d *leaseDB) put(ns string, val []byte) { d.batchWriter.put(bucketLeases, ns, val) }

func (d *leaseDB) del(ns string) { d.batchWriter.del(bucketLeases, ns) }

func openLeaseDB(dir string, now int64, log *slog.Logger) (*leaseDB, []*lease, error) {
	var leases []*lease
	db, err := openBolt(dir, NamesDBFileName, [][]byte{bucketLeases}, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLeases)
		var drop [][]byte
		err := b.ForEach(func(k, v []byte) error {
			l, err := decodeLease(k, v)
			if err != nil {
				log.Warn("dropping unreadable stored lease", "err", err)
			}
			if err != nil || l.expires <= now {
				drop = append(drop, bytes.Clone(k))
				return nil
			}
			leases = append(leases, l)
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range drop {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	w := newBatchWriter(db, log)
	return &leaseDB{w}, leases, nil
}

func encodeLease(l *lease) []byte {
	b := make([]byte, 0, 8+len(l.owner))
	b = binary.BigEndian.AppendUint64(b, uint64(l.expires))
	return append(b, l.owner...)
}

func decodeLease(k, v []byte) (*lease, error) {
	if len(v) < 9 || len(k) == 0 {
		return nil, errors.New("short lease")
	}
	id, err := peer.IDFromBytes(v[8:])
	if err != nil {
		return nil, fmt.Errorf("lease owner: %w", err)
	}
	return &lease{ns: string(k), owner: id, expires: int64(binary.BigEndian.Uint64(v))}, nil
}

// NameLimits bounds the names under the exclusive prefix. It is embedded
// in Limits.
type NameLimits struct {
	// LeaseDuration is how long a name stays bound to its key after that
	// key last registered it (and at least as long as the registration).
	LeaseDuration time.Duration
	// MaxNames caps the leases the server holds; a claim beyond it is
	// E_UNAVAILABLE.
	MaxNames int
	// MaxNamesPerPeer caps the names one key holds; a further claim is
	// E_NOT_AUTHORIZED until it releases one (or one expires).
	MaxNamesPerPeer int
	// ClaimDifficulty is the proof of work a new name costs (leading zero
	// bits of the claim hash, 0..MaxClaimDifficulty; 0 asks for none).
	ClaimDifficulty int
	// ClaimBurst and ClaimInterval shape the token bucket of new claims
	// per source network (IPv4 address, IPv6 /56): ClaimBurst at once,
	// then one per ClaimInterval. Beyond it a claim is E_UNAVAILABLE.
	ClaimBurst    int
	ClaimInterval time.Duration
	// HolderShare is the share (0 <= x < 1) of MaxRegistrations that only
	// peers holding a name may fill (reserve.go); HolderQuota is how many
	// registrations, its names not counted, one holder may have in it.
	// A name's own registration is counted apart from MaxRegistrations
	// (bounded by MaxNames), so it never lacks room.
	HolderShare float64
	HolderQuota int
}

// DefaultNameLimits returns the name limits of DefaultLimits.
func DefaultNameLimits() NameLimits {
	return NameLimits{
		LeaseDuration:   DefaultLeaseDuration,
		MaxNames:        DefaultMaxNames,
		MaxNamesPerPeer: DefaultMaxNamesPerPeer,
		ClaimDifficulty: DefaultClaimDifficulty,
		ClaimBurst:      DefaultClaimBurst,
		ClaimInterval:   DefaultClaimInterval,
		HolderShare:     DefaultHolderShare,
		HolderQuota:     DefaultHolderQuota,
	}
}

func (l NameLimits) validate() []error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	check(l.LeaseDuration >= time.Second, "lease duration %v must be at least 1s", l.LeaseDuration)
	check(l.MaxNames >= 1, "max names %d must be positive", l.MaxNames)
	check(l.MaxNamesPerPeer >= 1, "max names per peer %d must be positive", l.MaxNamesPerPeer)
	check(l.ClaimDifficulty >= 0 && l.ClaimDifficulty <= MaxClaimDifficulty,
		"claim difficulty %d out of range 0..%d", l.ClaimDifficulty, MaxClaimDifficulty)
	check(l.ClaimBurst >= 1, "claim burst %d must be positive", l.ClaimBurst)
	check(l.ClaimInterval > 0, "claim interval %v must be positive", l.ClaimInterval)
	check(l.HolderShare >= 0 && l.HolderShare < 1, "holder share %v out of range [0, 1)", l.HolderShare)
	check(l.HolderQuota >= 0, "holder quota %d must not be negative", l.HolderQuota)
	return errs
}
