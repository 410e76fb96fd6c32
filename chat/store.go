package chat

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// DBFileName is the bbolt database inside the data dir.
const DBFileName = "chat.db"

// Layout of chat.db (all keys and values are bytes):
//
//	contacts/<nick>              -> JSON contactRecord (the pin: nick -> peer ID)
//	history/<peer>/<seq u64 BE>  -> JSON msgRecord (both directions, in order)
//	outbox/<peer>/<seq u64 BE>   -> message ID (16 bytes); present while pending
//	msgidx/<message ID>          -> <peer>\x00<seq u64 BE>, outgoing messages only
//	seen/<peer>/ids/<message ID> -> <seq u64 BE>   incoming IDs, for dedup
//	seen/<peer>/order/<seq>      -> <message ID>    oldest first, to bound the set
//	seen/<peer>/n                -> count of ids (u64 BE)
//	seen/<peer>/bytes            -> text bytes stored from the peer (u64 BE), for its quota
//	peers/<peer>                 -> "allowed" or "blocked": the user's decision about a peer
//	requests/<peer>              -> JSON msgRecord: a stranger's first message, waiting for /allow
//	requests-order/<seq u64 BE>  -> <peer>, oldest first, to bound the requests
var (
	bktContacts = []byte("contacts")
	bktHistory  = []byte("history")
	bktOutbox   = []byte("outbox")
	bktMsgIdx   = []byte("msgidx")
	bktSeen     = []byte("seen")
	bktIDs      = []byte("ids")
	bktOrder    = []byte("order")
	keyCount    = []byte("n")
	keyBytes    = []byte("bytes")
	bktPeers    = []byte("peers")
	bktRequests = []byte("requests")
	bktReqOrder = []byte("requests-order")
)

// Relations a user decides for a peer (peers bucket).
const (
	relAllowed = "allowed"
	relBlocked = "blocked"
	relNone    = "" // no decision (a lifted block)
)

type contactRecord struct {
	Peer     string    `json:"peer"`
	Addrs    []string  `json:"addrs,omitempty"`
	PinnedAt time.Time `json:"pinned_at"`
	LastSeen time.Time `json:"last_seen,omitzero"`
}

type contact struct {
	Nick     string
	Peer     peer.ID
	Addrs    []multiaddr.Multiaddr
	PinnedAt time.Time
	LastSeen time.Time
}

type msgRecord struct {
	ID       string        `json:"id"`
	From     string        `json:"from"`
	To       string        `json:"to"`
	Peer     string        `json:"peer"`
	Text     string        `json:"text"`
	Time     time.Time     `json:"time"`
	Outgoing bool          `json:"outgoing"`
	Status   MessageStatus `json:"status"`
}

func (r msgRecord) message() Message {
	p, _ := peer.Decode(r.Peer)
	return Message{ID: r.ID, From: r.From, To: r.To, Peer: p, Text: r.Text, Time: r.Time, Outgoing: r.Outgoing, Status: r.Status}
}

func recordOf(m Message) msgRecord {
	return msgRecord{ID: m.ID, From: m.From, To: m.To, Peer: m.Peer.String(), Text: m.Text, Time: m.Time, Outgoing: m.Outgoing, Status: m.Status}
}

// store is chat.db. Reads run directly on the database; the message writes
// (outgoing, incoming, delivered marks) go through one writer goroutine
// that gathers the writes queued while it was committing into one bbolt
// transaction: one fsync for many messages (group commit).
type store struct {
	db      *bolt.DB
	maxSeen int

	wmu     sync.Mutex // guards wclosed and sends on ops
	wclosed bool
	ops     chan writeOp
	wdone   chan struct{} // closed when the writer has drained ops
}

// writeOp is one write for the group-commit writer. apply runs inside the
// shared transaction and must set its outputs afresh on every call (it
// runs again in a transaction of its own if another write of its batch
// failed). done runs on the writer goroutine after the commit (or the
// failure), in submission order; it must not block.
type writeOp struct {
	apply func(tx *bolt.Tx) error // nil: a barrier (flush)
	done  func(err error)
}

const (
	writeQueue    = 4096 // queued writes before submitters wait (trySubmit: fail)
	maxBatchWrite = 1024 // writes per transaction
)

func openStore(path string, maxSeen int) (*store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("open %s: database in use by another process", path)
		}
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bktContacts, bktHistory, bktOutbox, bktMsgIdx, bktSeen, bktPeers, bktRequests, bktReqOrder} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("init %s: %w", path, err)
	}
	s := &store{db: db, maxSeen: maxSeen, ops: make(chan writeOp, writeQueue), wdone: make(chan struct{})}
	go s.writer()
	return s, nil
}

// close stops the writer once it has committed everything queued, then
// closes the database.
func (s *store) close() error {
	s.wmu.Lock()
	if !s.wclosed {
		s.wclosed = true
		close(s.ops)
	}
	s.wmu.Unlock()
	<-s.wdone
	return s.db.Close()
}

// submit queues op for the writer. It fails only once the store is closed
// (op.done is then not called).
func (s *store) submit(op writeOp) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.wclosed {
		return ErrClosed
	}
	s.ops <- op // the writer never takes wmu, so this cannot deadlock
	return nil
}

// trySubmit queues op unless the writer's queue is full or the store is
// closed; it never waits. Network readers use it: a stalled disk must not
// stall them (what they could not queue is not acknowledged, and the
// sender writes it again).
func (s *store) trySubmit(op writeOp) bool {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.wclosed {
		return false
	}
	select {
	case s.ops <- op:
		return true
	default:
		return false
	}
}

// submitWait queues op and waits for its commit.
func (s *store) submitWait(apply func(tx *bolt.Tx) error) error {
	ch := make(chan error, 1)
	if err := s.submit(writeOp{apply: apply, done: func(err error) { ch <- err }}); err != nil {
		return err
	}
	return <-ch
}

// flush waits until every write queued before it is committed.
func (s *store) flush() error { return s.submitWait(nil) }

// writer is the group-commit loop: it takes every write queued while the
// previous transaction was committing and commits them together.
func (s *store) writer() {
	defer close(s.wdone)
	batch := make([]writeOp, 0, maxBatchWrite)
	errs := make([]error, 0, maxBatchWrite)
	for op := range s.ops {
		batch = append(batch, op)
	gather:
		for len(batch) < maxBatchWrite {
			select {
			case op, ok := <-s.ops:
				if !ok {
					break gather
				}
				batch = append(batch, op)
			default:
				break gather
			}
		}
		errs = s.commit(batch, errs[:0])
		for i, op := range batch {
			if op.done != nil {
				op.done(errs[i])
			}
			batch[i] = writeOp{}
		}
		batch = batch[:0]
	}
}

// commit applies batch in one transaction. If that fails, each write is
// retried in a transaction of its own so that one bad write fails alone.
func (s *store) commit(batch []writeOp, errs []error) []error {
	writes := 0
	for _, op := range batch {
		if op.apply != nil {
			writes++
		}
	}
	for range batch {
		errs = append(errs, nil)
	}
	if writes == 0 {
		return errs
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		for _, op := range batch {
			if op.apply != nil {
				if err := op.apply(tx); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err == nil {
		return errs
	}
	if writes == 1 {
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	for i, op := range batch {
		if op.apply != nil {
			errs[i] = s.db.Update(op.apply)
		}
	}
	return errs
}

func u64(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}

func decodeContact(nick string, v []byte) (contact, error) {
	var r contactRecord
	if err := json.Unmarshal(v, &r); err != nil {
		return contact{}, fmt.Errorf("contact %q: %w", nick, err)
	}
	p, err := peer.Decode(r.Peer)
	if err != nil {
		return contact{}, fmt.Errorf("contact %q: %w", nick, err)
	}
	c := contact{Nick: nick, Peer: p, PinnedAt: r.PinnedAt, LastSeen: r.LastSeen}
	for _, a := range r.Addrs {
		if m, err := multiaddr.NewMultiaddr(a); err == nil {
			c.Addrs = append(c.Addrs, m)
		}
	}
	return c, nil
}

// contact returns the pin for nick.
func (s *store) contact(nick string) (contact, bool, error) {
	var c contact
	var ok bool
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bktContacts).Get([]byte(nick))
		if v == nil {
			return nil
		}
		var err error
		c, err = decodeContact(nick, v)
		ok = err == nil
		return err
	})
	return c, ok, err
}

// contacts returns every pin.
func (s *store) contacts() ([]contact, error) {
	var out []contact
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bktContacts).ForEach(func(k, v []byte) error {
			c, err := decodeContact(string(k), v)
			if err != nil {
				return nil // skip a damaged entry rather than hide all contacts
			}
			out = append(out, c)
			return nil
		})
	})
	return out, err
}

// pin records nick -> p unless nick is already pinned. It returns the peer
// the nick is pinned to after the call.
func (s *store) pin(nick string, p peer.ID, addrs []multiaddr.Multiaddr, now time.Time) (peer.ID, error) {
	var pinned peer.ID
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bktContacts)
		if v := b.Get([]byte(nick)); v != nil {
			c, err := decodeContact(nick, v)
			if err != nil {
				return err
			}
			pinned = c.Peer
			return nil
		}
		r := contactRecord{Peer: p.String(), PinnedAt: now, Addrs: addrStrings(addrs)}
		v, err := json.Marshal(r)
		if err != nil {
			return err
		}
		pinned = p
		return b.Put([]byte(nick), v)
	})
	return pinned, err
}

// repin points nick at p, replacing any earlier pin (an accepted key
// change, names.go).
func (s *store) repin(nick string, p peer.ID, addrs []multiaddr.Multiaddr, now time.Time) error {
	r := contactRecord{Peer: p.String(), PinnedAt: now, Addrs: addrStrings(addrs)}
	v, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bktContacts).Put([]byte(nick), v)
	})
}

// trySetLastSeen records when a pinned contact's presence last changed,
// without waiting (the peer table's loop calls it; a full queue skips it).
func (s *store) trySetLastSeen(nick string, p peer.ID, at time.Time) {
	s.trySubmit(writeOp{apply: func(tx *bolt.Tx) error {
		b := tx.Bucket(bktContacts)
		v := b.Get([]byte(nick))
		if v == nil {
			return nil
		}
		var r contactRecord
		if err := json.Unmarshal(v, &r); err != nil || r.Peer != p.String() {
			return nil
		}
		r.LastSeen = at.UTC()
		nv, err := json.Marshal(r)
		if err != nil {
			return err
		}
		return b.Put([]byte(nick), nv)
	}, done: func(error) {}})
}

// setAddrs updates the last known addresses of a pinned contact.
func (s *store) setAddrs(nick string, p peer.ID, addrs []multiaddr.Multiaddr) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bktContacts)
		v := b.Get([]byte(nick))
		if v == nil {
			return nil
		}
		var r contactRecord
		if err := json.Unmarshal(v, &r); err != nil || r.Peer != p.String() {
			return err
		}
		r.Addrs = addrStrings(addrs)
		nv, err := json.Marshal(r)
		if err != nil {
			return err
		}
		return b.Put([]byte(nick), nv)
	})
}

func addrStrings(addrs []multiaddr.Multiaddr) []string {
	out := make([]string, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, a.String())
	}
	return out
}

// addOutgoing stores a new outgoing message in the history and the outbox
// and waits for the commit.
func (s *store) addOutgoing(m Message) error {
	ch := make(chan error, 1)
	if err := s.addOutgoingAsync(m, func(err error) { ch <- err }); err != nil {
		return err
	}
	return <-ch
}

// addOutgoingAsync queues addOutgoing; done follows the commit.
func (s *store) addOutgoingAsync(m Message, done func(error)) error {
	id, err := parseID(m.ID)
	if err != nil {
		return err
	}
	return s.submit(writeOp{done: done, apply: func(tx *bolt.Tx) error {
		pk := []byte(m.Peer)
		hb, err := tx.Bucket(bktHistory).CreateBucketIfNotExists(pk)
		if err != nil {
			return err
		}
		seq, err := hb.NextSequence()
		if err != nil {
			return err
		}
		v, err := json.Marshal(recordOf(m))
		if err != nil {
			return err
		}
		if err := hb.Put(u64(seq), v); err != nil {
			return err
		}
		ob, err := tx.Bucket(bktOutbox).CreateBucketIfNotExists(pk)
		if err != nil {
			return err
		}
		if err := ob.Put(u64(seq), id); err != nil {
			return err
		}
		idx := append(append(append([]byte{}, pk...), 0), u64(seq)...)
		return tx.Bucket(bktMsgIdx).Put(id, idx)
	}})
}

// pending returns p's outbox, oldest first.
func (s *store) pending(p peer.ID) ([]Message, error) {
	var out []Message
	err := s.db.View(func(tx *bolt.Tx) error {
		ob := tx.Bucket(bktOutbox).Bucket([]byte(p))
		hb := tx.Bucket(bktHistory).Bucket([]byte(p))
		if ob == nil || hb == nil {
			return nil
		}
		return ob.ForEach(func(k, _ []byte) error {
			v := hb.Get(k)
			if v == nil {
				return nil
			}
			var r msgRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return nil
			}
			out = append(out, r.message())
			return nil
		})
	})
	return out, err
}

// pendingPeers returns the peers with a non-empty outbox and their counts.
func (s *store) pendingPeers() (map[peer.ID]int, error) {
	out := map[peer.ID]int{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bktOutbox).ForEachBucket(func(k []byte) error {
			n := tx.Bucket(bktOutbox).Bucket(k).Stats().KeyN
			if n > 0 {
				out[peer.ID(k)] = n
			}
			return nil
		})
	})
	return out, err
}

// ack marks the outgoing message id to p delivered and waits for the
// commit. ok reports whether it was pending until now (false for
// duplicates, unknown IDs, other peers).
func (s *store) ack(p peer.ID, id []byte) (m Message, ok bool, err error) {
	err = s.submitWait(func(tx *bolt.Tx) error {
		var err error
		m, ok, err = ackTx(tx, p, id)
		return err
	})
	return m, ok, err
}

// tryMarkDelivered queues the delivered mark of the outgoing message id to
// p without waiting (false: the queue is full or the store closed). done
// follows the commit, with the message and whether it was pending until
// then (false for duplicates, unknown IDs, other peers' messages).
func (s *store) tryMarkDelivered(p peer.ID, id []byte, done func(m Message, ok bool, err error)) bool {
	var m Message
	var ok bool
	return s.trySubmit(writeOp{
		apply: func(tx *bolt.Tx) error {
			var err error
			m, ok, err = ackTx(tx, p, id)
			return err
		},
		done: func(err error) { done(m, ok && err == nil, err) },
	})
}

func ackTx(tx *bolt.Tx, p peer.ID, id []byte) (Message, bool, error) {
	idx := tx.Bucket(bktMsgIdx).Get(id)
	pk := []byte(p)
	if len(idx) != len(pk)+9 || string(idx[:len(pk)]) != string(pk) {
		return Message{}, false, nil // not ours to ack: unknown ID or another peer's message
	}
	seq := append([]byte{}, idx[len(pk)+1:]...)
	ob := tx.Bucket(bktOutbox).Bucket(pk)
	if ob == nil || ob.Get(seq) == nil {
		return Message{}, false, nil
	}
	if err := ob.Delete(seq); err != nil {
		return Message{}, false, err
	}
	hb := tx.Bucket(bktHistory).Bucket(pk)
	if hb == nil {
		return Message{}, false, nil
	}
	v := hb.Get(seq)
	if v == nil {
		return Message{}, false, nil
	}
	var r msgRecord
	if err := json.Unmarshal(v, &r); err != nil {
		return Message{}, false, err
	}
	r.Status = StatusDelivered
	nv, err := json.Marshal(r)
	if err != nil {
		return Message{}, false, err
	}
	if err := hb.Put(seq, nv); err != nil {
		return Message{}, false, err
	}
	return r.message(), true, nil
}

// incomingResult is what became of an incoming message.
type incomingResult int

const (
	inStored    incomingResult = iota // new: stored, to be shown and acked
	inDuplicate                       // seen before: ack again, do not show
	inOverQuota                       // the peer's storage quota is used up: not stored, not acked
)

// addIncoming stores an incoming message and waits for the commit (tests).
func (s *store) addIncoming(m Message) (incomingResult, error) {
	ch := make(chan error, 1)
	var res incomingResult
	if !s.tryAddIncoming(m, 0, func(r incomingResult, err error) { res = r; ch <- err }) {
		return 0, errors.New("store queue full or closed")
	}
	return res, <-ch
}

// tryAddIncoming queues an incoming message unless the writer's queue is
// full (false; it never waits). The message is stored unless its ID was
// seen from p before (a duplicate) or storing its text would take p's
// stored bytes above quota (0: none). done follows the commit. Writes are
// applied in submission order, so of two copies of a message queued
// together the second is the duplicate.
func (s *store) tryAddIncoming(m Message, quota uint64, done func(res incomingResult, err error)) bool {
	id, err := parseID(m.ID)
	if err != nil {
		return false
	}
	var res incomingResult
	return s.trySubmit(writeOp{done: func(err error) { done(res, err) }, apply: func(tx *bolt.Tx) error {
		res = inStored
		pk := []byte(m.Peer)
		sb, err := tx.Bucket(bktSeen).CreateBucketIfNotExists(pk)
		if err != nil {
			return err
		}
		ids, err := sb.CreateBucketIfNotExists(bktIDs)
		if err != nil {
			return err
		}
		if ids.Get(id) != nil {
			res = inDuplicate
			return nil
		}
		used := getU64(sb.Get(keyBytes))
		if quota > 0 && used+uint64(len(m.Text)) > quota {
			res = inOverQuota
			return nil
		}
		if err := s.markSeen(sb, ids, id); err != nil {
			return err
		}
		if err := sb.Put(keyBytes, u64(used+uint64(len(m.Text)))); err != nil {
			return err
		}
		return appendHistory(tx, m)
	}})
}

// markSeen adds id to a peer's seen set and forgets the oldest IDs beyond
// maxSeen. The count lives in seen/<peer>/n so this stays O(1).
func (s *store) markSeen(sb, ids *bolt.Bucket, id []byte) error {
	order, err := sb.CreateBucketIfNotExists(bktOrder)
	if err != nil {
		return err
	}
	seq, err := order.NextSequence()
	if err != nil {
		return err
	}
	if err := ids.Put(id, u64(seq)); err != nil {
		return err
	}
	if err := order.Put(u64(seq), id); err != nil {
		return err
	}
	n := getU64(sb.Get(keyCount)) + 1
	if s.maxSeen > 0 {
		for n > uint64(s.maxSeen) {
			k, v := order.Cursor().First()
			if k == nil {
				break
			}
			k, v = append([]byte{}, k...), append([]byte{}, v...)
			if err := ids.Delete(v); err != nil {
				return err
			}
			if err := order.Delete(k); err != nil {
				return err
			}
			n--
		}
	}
	return sb.Put(keyCount, u64(n))
}

func getU64(v []byte) uint64 {
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

// appendHistory appends m to its peer's history.
func appendHistory(tx *bolt.Tx, m Message) error {
	hb, err := tx.Bucket(bktHistory).CreateBucketIfNotExists([]byte(m.Peer))
	if err != nil {
		return err
	}
	hseq, err := hb.NextSequence()
	if err != nil {
		return err
	}
	v, err := json.Marshal(recordOf(m))
	if err != nil {
		return err
	}
	return hb.Put(u64(hseq), v)
}

// relations returns the user's allowed and blocked peers.
func (s *store) relations() (allowed, blocked map[peer.ID]bool, err error) {
	allowed, blocked = map[peer.ID]bool{}, map[peer.ID]bool{}
	err = s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bktPeers).ForEach(func(k, v []byte) error {
			switch string(v) {
			case relAllowed:
				allowed[peer.ID(k)] = true
			case relBlocked:
				blocked[peer.ID(k)] = true
			}
			return nil
		})
	})
	return allowed, blocked, err
}

// setRelation records the user's decision about p and drops p's request;
// with relAllowed the request becomes an incoming message in the history
// (returned, ok) as if it had just arrived.
func (s *store) setRelation(p peer.ID, rel string) (req Message, ok bool, err error) {
	err = s.submitWait(func(tx *bolt.Tx) error {
		ok = false
		if err := tx.Bucket(bktPeers).Put([]byte(p), []byte(rel)); err != nil {
			return err
		}
		rb := tx.Bucket(bktRequests)
		v := rb.Get([]byte(p))
		if v == nil {
			return nil
		}
		var r msgRecord
		jerr := json.Unmarshal(v, &r)
		if err := rb.Delete([]byte(p)); err != nil {
			return err
		}
		if rel != relAllowed || jerr != nil {
			return nil
		}
		req = r.message()
		id, err := parseID(req.ID)
		if err != nil {
			return nil
		}
		sb, err := tx.Bucket(bktSeen).CreateBucketIfNotExists([]byte(p))
		if err != nil {
			return err
		}
		ids, err := sb.CreateBucketIfNotExists(bktIDs)
		if err != nil {
			return err
		}
		if ids.Get(id) != nil {
			return nil
		}
		if err := s.markSeen(sb, ids, id); err != nil {
			return err
		}
		ok = true
		return appendHistory(tx, req)
	})
	return req, ok, err
}

// requestResult is what became of a stranger's message.
type requestResult int

const (
	reqStored requestResult = iota // now the stranger's request: show it, ack it
	reqSame                        // the request already held (a resend): ack it again
	reqHeld                        // the stranger has another request waiting: not stored, not acked
)

// tryAddRequest queues a stranger's message as its request unless it
// already has one. Beyond maxRequests the oldest request is dropped. It
// never waits (false: queue full).
func (s *store) tryAddRequest(m Message, maxRequests int, done func(res requestResult, err error)) bool {
	var res requestResult
	return s.trySubmit(writeOp{done: func(err error) { done(res, err) }, apply: func(tx *bolt.Tx) error {
		res = reqHeld
		rb, ob := tx.Bucket(bktRequests), tx.Bucket(bktReqOrder)
		pk := []byte(m.Peer)
		if v := rb.Get(pk); v != nil {
			var r msgRecord
			if json.Unmarshal(v, &r) == nil && r.ID == m.ID {
				res = reqSame
			}
			return nil
		}
		v, err := json.Marshal(recordOf(m))
		if err != nil {
			return err
		}
		if err := rb.Put(pk, v); err != nil {
			return err
		}
		seq, err := ob.NextSequence()
		if err != nil {
			return err
		}
		if err := ob.Put(u64(seq), pk); err != nil {
			return err
		}
		// Bound the requests: drop the oldest (entries whose request was
		// already allowed, blocked or replaced are skipped).
		held := 0
		c := rb.Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			held++
		}
		for ; held > maxRequests; held-- {
			k, p := ob.Cursor().First()
			if k == nil {
				break
			}
			k, p = append([]byte{}, k...), append([]byte{}, p...)
			if err := ob.Delete(k); err != nil {
				return err
			}
			if rb.Get(p) == nil {
				held++ // a stale entry: its request already went
			}
			if err := rb.Delete(p); err != nil {
				return err
			}
		}
		res = reqStored
		return nil
	}})
}

// requests returns the pending requests, oldest first.
func (s *store) requests() ([]Message, error) {
	var out []Message
	err := s.db.View(func(tx *bolt.Tx) error {
		rb := tx.Bucket(bktRequests)
		seen := map[string]bool{}
		return tx.Bucket(bktReqOrder).ForEach(func(_, p []byte) error {
			if seen[string(p)] {
				return nil
			}
			seen[string(p)] = true
			var r msgRecord
			if v := rb.Get(p); v != nil && json.Unmarshal(v, &r) == nil {
				out = append(out, r.message())
			}
			return nil
		})
	})
	return out, err
}

// historyPeers returns the peers with a history.
func (s *store) historyPeers() (map[peer.ID]bool, error) {
	out := map[peer.ID]bool{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bktHistory).ForEachBucket(func(k []byte) error {
			out[peer.ID(k)] = true
			return nil
		})
	})
	return out, err
}

// history returns the last limit messages exchanged with p, oldest first
// (limit <= 0: all).
func (s *store) history(p peer.ID, limit int) ([]Message, error) {
	var out []Message
	err := s.db.View(func(tx *bolt.Tx) error {
		hb := tx.Bucket(bktHistory).Bucket([]byte(p))
		if hb == nil {
			return nil
		}
		c := hb.Cursor()
		for k, v := c.Last(); k != nil && (limit <= 0 || len(out) < limit); k, v = c.Prev() {
			var r msgRecord
			if err := json.Unmarshal(v, &r); err != nil {
				continue
			}
			out = append(out, r.message())
		}
		return nil
	})
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, err
}
