package chat

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/time/rate"

	"github.com/p2p-messaging/p2p-messaging/chat/pb"
	"github.com/p2p-messaging/p2p-messaging/rendezvous/mailbox"
)

// This file is the chat side of the sealed offline mailbox
// (rendezvous/mailbox): a message the recipient does not acknowledge
// directly within DepositAfter (at once when it is offline) is also
// deposited, sealed to it, on every daemon; the node fetches its own
// deposits from every daemon when it starts, when a daemon connection
// comes up, and when a daemon pushes a notice; what it fetched it stores
// like a message from a stream, then deletes on the daemon and
// acknowledges: directly if a stream to the sender is up, otherwise with a
// sealed receipt in the sender's mailbox. A receipt is an ack.

// Mailbox bounds that are not configurable.
const (
	mailboxTimeout   = 10 * time.Second // one daemon request
	mailboxFetchPage = 64               // deposits per FETCH
	// maxFetchPerRound bounds the deposits one fetch round takes, and
	// fetchRoundRate/fetchRoundBurst the rounds per daemon, so a hostile
	// daemon (endless pages, a storm of notices) costs a bounded amount.
	maxFetchPerRound = 4096
	fetchRoundRate   = 1 // per second
	fetchRoundBurst  = 5
	// maxDepositing bounds the deposits (messages and receipts) in flight.
	maxDepositing = 64
	// closeDepositWait bounds how long Close waits for deposits in flight
	// (and deposits the messages still waiting for their DepositAfter).
	closeDepositWait = 5 * time.Second
)

// bktDeposited: pending message IDs deposited (value: the daemons that
// took it, length-prefixed peer IDs), so a restart does not deposit a
// message again and a daemon that was away gets what it missed.
var bktDeposited = []byte("mailbox-deposited")

// mbox is the node's mailbox service. It holds no state beyond the
// deposited marks (in chat.db) and one fetch trigger per daemon.
type mbox struct {
	n       *Node
	cl      *mailbox.Client
	priv    crypto.PrivKey
	daemons []peer.ID
	enabled bool // a usable key and daemons
	deposit bool // !Config.NoDeposit

	kicks   map[peer.ID]chan struct{} // fetch triggers, one per daemon
	slots   chan struct{}             // deposits in flight
	stopNtf func()
	closing chan struct{} // closed when the node starts closing

	mu       sync.Mutex
	started  bool
	quitting bool             // close began
	closed   bool             // close is done waiting: nothing new starts
	inflight int              // deposits and fetch rounds Close waits for
	idle     chan struct{}    // closed when inflight drops to 0 while close waits
	catching map[peer.ID]bool // daemons whose missed deposits are being made
}

func newMailbox(n *Node) *mbox {
	mb := &mbox{n: n, cl: mailbox.NewClient(n.h, mailboxTimeout), deposit: !n.cfg.NoDeposit,
		kicks: map[peer.ID]chan struct{}{}, slots: make(chan struct{}, maxDepositing), closing: make(chan struct{})}
	mb.priv = n.h.Peerstore().PrivKey(n.h.ID())
	for _, d := range n.cfg.Rendezvous {
		if _, dup := mb.kicks[d.ID]; !dup {
			mb.daemons = append(mb.daemons, d.ID)
			mb.kicks[d.ID] = make(chan struct{}, 1)
		}
	}
	mb.enabled = len(mb.daemons) > 0 && mb.priv != nil && mb.priv.Type() == crypto.Ed25519
	if len(mb.daemons) > 0 && !mb.enabled {
		n.log.Warn("mailbox off: the node's key is not Ed25519")
	}
	return mb
}

// start begins fetching (now, on daemon connections and on notices) and
// deposits what the outbox held from before a restart.
func (mb *mbox) start() {
	if !mb.enabled {
		return
	}
	n := mb.n
	mb.mu.Lock()
	if mb.started || mb.quitting {
		mb.mu.Unlock()
		return
	}
	mb.started = true
	mb.stopNtf = mailbox.HandleNotices(n.h, mb.kick)
	mb.mu.Unlock()
	if sub, err := n.h.EventBus().Subscribe(new(event.EvtPeerConnectednessChanged)); err != nil {
		n.log.Warn("mailbox: subscribe to connections", "err", err)
	} else if !n.spawn(func() { mb.watchConns(sub) }) {
		sub.Close()
	}
	for _, d := range mb.daemons {
		if !n.spawn(func() { mb.fetchLoop(d) }) {
			return
		}
		mb.kick(d)
	}
	mb.depositBacklog("")
}

// close runs before the node's context ends: the messages still waiting
// for their DepositAfter are deposited now, and close waits (at most
// closeDepositWait) for the deposits and fetch rounds in flight (and what
// they start: receipts), so a message sent or fetched just before
// quitting still reaches the mailboxes.
func (mb *mbox) close() {
	mb.mu.Lock()
	if mb.quitting {
		mb.mu.Unlock()
		return
	}
	mb.quitting = true
	close(mb.closing)
	var idle chan struct{}
	if mb.inflight > 0 {
		idle = make(chan struct{})
		mb.idle = idle
	}
	stopNtf := mb.stopNtf
	mb.mu.Unlock()
	if stopNtf != nil {
		stopNtf()
	}
	if idle != nil {
		t := time.NewTimer(closeDepositWait)
		select {
		case <-idle:
		case <-t.C:
			mb.n.log.Warn("mailbox: deposits still in flight at close")
		}
		t.Stop()
	}
	mb.mu.Lock()
	mb.closed = true
	mb.mu.Unlock()
}

// begin counts one operation Close waits for; false once Close is done
// waiting.
func (mb *mbox) begin() bool {
	mb.mu.Lock()
	defer mb.mu.Unlock()
	if mb.closed {
		return false
	}
	mb.inflight++
	return true
}

func (mb *mbox) end() {
	mb.mu.Lock()
	defer mb.mu.Unlock()
	mb.inflight--
	if mb.inflight == 0 && mb.idle != nil {
		close(mb.idle)
		mb.idle = nil
	}
}

// track runs f in a goroutine as an operation Close waits for.
func (mb *mbox) track(f func()) bool {
	if !mb.begin() {
		return false
	}
	if !mb.n.spawn(func() { defer mb.end(); f() }) {
		mb.end()
		return false
	}
	return true
}

// kick asks for a fetch from daemon d (a notice from anyone else is
// ignored: only our daemons hold our mail).
func (mb *mbox) kick(d peer.ID) {
	if ch, ok := mb.kicks[d]; ok {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

func (mb *mbox) watchConns(sub event.Subscription) {
	defer sub.Close()
	for {
		select {
		case <-mb.n.ctx.Done():
			return
		case e, ok := <-sub.Out():
			if !ok {
				return
			}
			if c := e.(event.EvtPeerConnectednessChanged); c.Connectedness == network.Connected {
				if _, ok := mb.kicks[c.Peer]; ok {
					mb.kick(c.Peer)
					mb.depositBacklog(c.Peer) // what it missed while away
				}
			}
		}
	}
}

// sent is called once a message's pending record is committed: unless it
// is acknowledged within DepositAfter (at once if the recipient is
// offline), it goes to the mailboxes.
func (mb *mbox) sent(o *outMsg) {
	if !mb.enabled || !mb.deposit {
		return
	}
	n := mb.n
	// Called from the store's writer (the commit callback): everything
	// that may wait runs in a goroutine of its own.
	mb.track(func() {
		wait := n.cfg.DepositAfter
		if online, _ := n.peers.status(o.m.Peer); !online {
			wait = 0
		}
		if wait > 0 {
			t := time.NewTimer(wait)
			defer t.Stop()
			select {
			case <-t.C:
			case <-mb.closing: // quitting: deposit what is still unacknowledged now
			case <-n.ctx.Done():
				return
			}
		}
		if n.out.isGone(o) {
			return // acknowledged directly
		}
		mb.depositMessage(o.m, mb.daemons)
	})
}

// marks returns, per pending message ID, the daemons known to hold it.
func (mb *mbox) marks() map[string][]peer.ID {
	out := map[string][]peer.ID{}
	_ = mb.n.db.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bktDeposited); b != nil {
			return b.ForEach(func(k, v []byte) error { out[hex.EncodeToString(k)] = decodeHolders(v); return nil })
		}
		return nil
	})
	return out
}

// Holders are stored as length-prefixed peer IDs.
func encodeHolders(ps []peer.ID) []byte {
	var b []byte
	for _, p := range ps {
		b = append(append(b, byte(len(p))), p...)
	}
	return b
}

func decodeHolders(b []byte) []peer.ID {
	var out []peer.ID
	for len(b) > 0 && len(b) >= 1+int(b[0]) {
		out = append(out, peer.ID(b[1:1+int(b[0])]))
		b = b[1+int(b[0]):]
	}
	return out
}

// missing returns the daemons not in holders.
func (mb *mbox) missing(holders []peer.ID) []peer.ID {
	var out []peer.ID
	for _, d := range mb.daemons {
		if !slices.Contains(holders, d) {
			out = append(out, d)
		}
	}
	return out
}

// depositBacklog deposits the outbox's messages on the daemons that do not
// hold them yet (sent before a restart, or while a daemon was away), after
// DepositAfter (or at once when the node is closing); only is one daemon
// that just came up, or "" for all. Marks of messages that left the
// outbox are forgotten.
func (mb *mbox) depositBacklog(only peer.ID) {
	if !mb.deposit {
		return
	}
	n := mb.n
	marks := mb.marks()
	type job struct {
		m       Message
		targets []peer.ID
	}
	var todo []job
	pending := map[string]bool{}
	cutoff := time.Now().Add(-2 * n.cfg.DepositAfter)
	for _, p := range n.out.peers() {
		for _, m := range n.out.messages(p) {
			pending[m.ID] = true
			targets := mb.missing(marks[m.ID])
			if only != "" {
				if !slices.Contains(targets, only) || m.Time.After(cutoff) {
					continue // a fresh message: its own hand-off deposits it
				}
				targets = []peer.ID{only}
			}
			if len(targets) > 0 {
				todo = append(todo, job{m, targets})
			}
		}
	}
	var stale [][]byte
	for id := range marks {
		if !pending[id] {
			b, _ := hex.DecodeString(id)
			stale = append(stale, b)
		}
	}
	if len(stale) > 0 {
		_ = n.db.submitWait(func(tx *bolt.Tx) error {
			b := tx.Bucket(bktDeposited)
			if b == nil {
				return nil
			}
			for _, k := range stale {
				if err := b.Delete(k); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if len(todo) == 0 {
		return
	}
	if only != "" {
		// One catch-up per daemon at a time (a flapping connection).
		mb.mu.Lock()
		if mb.catching == nil {
			mb.catching = map[peer.ID]bool{}
		}
		busy := mb.catching[only]
		mb.catching[only] = true
		mb.mu.Unlock()
		if busy {
			return
		}
	}
	done := func() {
		if only != "" {
			mb.mu.Lock()
			delete(mb.catching, only)
			mb.mu.Unlock()
		}
	}
	if !mb.track(func() {
		defer done()
		if only == "" {
			// Give the streams that come up at start a chance first.
			t := time.NewTimer(n.cfg.DepositAfter)
			defer t.Stop()
			select {
			case <-t.C:
			case <-mb.closing:
			case <-n.ctx.Done():
				return
			}
		}
		for _, j := range todo {
			if n.ctx.Err() != nil {
				return
			}
			if n.out.get(j.m.Peer, j.m.ID) != nil {
				mb.depositMessage(j.m, j.targets)
			}
		}
	}) {
		done()
	}
}

// depositMessage seals m to its recipient and deposits it on targets in
// parallel; EventStored reports how many daemons now hold it.
func (mb *mbox) depositMessage(m Message, targets []peer.ID) {
	n := mb.n
	id, _ := hex.DecodeString(m.ID)
	box, err := mailbox.Seal(mb.priv, m.Peer, mailbox.Letter{Kind: mailbox.KindMessage, ID: id, Time: m.Time, Nick: n.cfg.Nick, Text: m.Text})
	if err != nil {
		n.log.Warn("mailbox: seal", "peer", m.Peer, "id", m.ID, "err", err)
		return
	}
	took := mb.depositOn(targets, m.Peer, box)
	if len(took) == 0 {
		return
	}
	var holders int
	if err := n.db.submitWait(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bktDeposited)
		if err != nil {
			return err
		}
		all := decodeHolders(b.Get(id))
		for _, d := range took {
			if !slices.Contains(all, d) {
				all = append(all, d)
			}
		}
		holders = len(all)
		return b.Put(id, encodeHolders(all))
	}); err != nil {
		if !errors.Is(err, ErrClosed) {
			n.log.Warn("mailbox: store deposited mark", "id", m.ID, "err", err)
		}
		holders = len(took)
	}
	n.ev.emit(EventStored{ID: m.ID, To: m.To, Daemons: holders})
}

// depositAll deposits box for to on every daemon and returns how many
// took it.
func (mb *mbox) depositAll(to peer.ID, box []byte) int {
	return len(mb.depositOn(mb.daemons, to, box))
}

// depositOn deposits box for to on daemons in parallel and returns those
// that took it.
func (mb *mbox) depositOn(daemons []peer.ID, to peer.ID, box []byte) []peer.ID {
	n := mb.n
	select {
	case mb.slots <- struct{}{}:
	case <-n.ctx.Done():
		return nil
	}
	defer func() { <-mb.slots }()
	var wg sync.WaitGroup
	oks := make([]bool, len(daemons))
	for i, d := range daemons {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(n.ctx, mailboxTimeout)
			defer cancel()
			if _, err := mb.cl.Deposit(ctx, d, to, box); err != nil {
				n.log.Info("mailbox: deposit refused or failed", "daemon", d, "to", to, "err", err)
				return
			}
			oks[i] = true
		}()
	}
	wg.Wait()
	var took []peer.ID
	for i, ok := range oks {
		if ok {
			took = append(took, daemons[i])
		}
	}
	return took
}

// fetchLoop fetches from daemon d whenever it is kicked, at most
// fetchRoundRate rounds a second (bursts of fetchRoundBurst).
func (mb *mbox) fetchLoop(d peer.ID) {
	n := mb.n
	lim := rate.NewLimiter(fetchRoundRate, fetchRoundBurst)
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-mb.kicks[d]:
		}
		if err := lim.Wait(n.ctx); err != nil {
			return
		}
		if n.h.Network().Connectedness(d) != network.Connected {
			continue // the connection event kicks again
		}
		if !mb.begin() {
			return
		}
		mb.fetchFrom(d)
		mb.end()
	}
}

// fetchFrom takes every deposit waiting on d, page by page: each page's
// messages are submitted to the store together (one group commit), then
// acknowledged (one receipt per sender and page) and deleted on d. What
// cannot be taken now (a stranger's held messages, the store's queue full,
// a sender over its quota) stays on d, and the next page starts after it,
// so it never blocks what came later; the next round tries it again.
func (mb *mbox) fetchFrom(d peer.ID) {
	n := mb.n
	var rejected int
	var firstErr error
	defer func() {
		// One warning per round, however many deposits did not open.
		if rejected > 0 {
			n.ev.emit(EventWarning{Text: fmt.Sprintf("rejected %d sealed deposit(s) from daemon %s: %v", rejected, d, firstErr), Peer: d})
		}
	}()
	var after []byte
	for seen := 0; n.ctx.Err() == nil && seen < maxFetchPerRound; {
		ctx, cancel := context.WithTimeout(n.ctx, mailboxTimeout)
		deps, more, err := mb.cl.FetchAfter(ctx, d, after, mailboxFetchPage)
		cancel()
		if err != nil {
			n.log.Info("mailbox: fetch", "daemon", d, "err", err)
			return
		}
		if len(deps) == 0 {
			return
		}
		seen += len(deps)
		after = deps[len(deps)-1].ID
		var done [][]byte
		var waits []*taking
		for _, dep := range deps {
			t, err := mb.take(dep)
			switch {
			case err != nil:
				if rejected == 0 {
					firstErr = err
				}
				rejected++
				done = append(done, dep.ID) // it will never open: delete it
			case t == nil:
				done = append(done, dep.ID) // handled (a receipt, ours, blocked)
			case t.res != nil:
				waits = append(waits, t)
			}
		}
		acks := map[peer.ID][][]byte{}
		for _, t := range waits {
			var ok bool
			select {
			case ok = <-t.res:
			case <-n.ctx.Done():
				return
			}
			if ok {
				done = append(done, t.dep)
				acks[t.from] = append(acks[t.from], t.id)
			}
		}
		for from, ids := range acks {
			mb.ack(from, ids)
		}
		if len(done) > 0 {
			ctx, cancel := context.WithTimeout(n.ctx, mailboxTimeout)
			_, err := mb.cl.Delete(ctx, d, done)
			cancel()
			if err != nil {
				n.log.Info("mailbox: delete", "daemon", d, "err", err)
				return
			}
		}
		if !more {
			return
		}
	}
}

// taking is a fetched message on its way into the store: res reports
// (once) whether it was stored or was a duplicate, i.e. is to be
// acknowledged and deleted.
type taking struct {
	dep  []byte // deposit ID
	from peer.ID
	id   []byte // message ID
	res  chan bool
}

// take opens one fetched deposit and handles it. It returns nil when the
// deposit is dealt with at once (a receipt, our own, a blocked sender's:
// delete it), an error when it does not open or is refused (delete it: it
// never will), or a taking whose res is nil when it cannot be taken now
// (keep it).
func (mb *mbox) take(dep mailbox.Deposit) (*taking, error) {
	n := mb.n
	l, err := mailbox.Open(mb.priv, dep.Box)
	if err != nil {
		return nil, err
	}
	from := l.From
	if from == n.h.ID() || n.names.isBlocked(from) {
		return nil, nil
	}
	switch l.Kind {
	case mailbox.KindReceipt:
		n.acked(from, l.ID)
		for _, id := range l.Acks {
			n.acked(from, id)
		}
		return nil, nil
	case mailbox.KindMessage:
	default:
		return nil, nil
	}
	if err := checkSentTime(l.Time.UnixMilli(), time.Now()); err != nil {
		return nil, fmt.Errorf("message from %s: %w", from, err)
	}
	name := n.names.nickOf(from)
	if name == "" {
		name = from.String()
		if l.Nick != "" && ValidNick(l.Nick) {
			if v, ok := n.names.identify(n.ctx, from, l.Nick); ok {
				name = v
			}
		}
	}
	m := Message{
		ID:     hex.EncodeToString(l.ID),
		From:   name,
		To:     n.cfg.Nick,
		Peer:   from,
		Text:   l.Text,
		Time:   l.Time,
		Status: StatusDelivered,
	}
	t := &taking{dep: dep.ID, from: from, id: l.ID, res: make(chan bool, 1)}
	var queued bool
	if n.names.isContact(from) {
		queued = n.db.tryAddIncoming(m, uint64(n.cfg.PeerQuota), func(r incomingResult, err error) {
			switch {
			case err != nil:
				n.log.Error("store incoming message", "peer", from, "err", err)
				t.res <- false
			case r == inOverQuota:
				n.names.warn(name, from, fmt.Sprintf("%s used up its storage quota (%d bytes): its messages are not taken", name, n.cfg.PeerQuota))
				t.res <- false
			case r == inStored:
				n.ev.emit(EventMessage{Message: m})
				n.names.talkedWith(from)
				t.res <- true
			default:
				t.res <- true // a duplicate: ack again, show once
			}
		})
	} else {
		queued = n.db.tryAddRequest(m, n.cfg.MaxRequests, func(r requestResult, err error) {
			switch {
			case err != nil:
				n.log.Error("store request", "peer", from, "err", err)
				t.res <- false
			case r == reqStored:
				n.ev.emit(EventRequest{Peer: from, Nick: m.From, Text: m.Text, ID: m.ID, Time: m.Time})
				t.res <- true
			case r == reqSame:
				t.res <- true
			default:
				t.res <- false // a stranger's later message: held until allowed
			}
		})
	}
	if !queued {
		t.res = nil
	}
	return t, nil
}

// ack acknowledges messages ids to their sender: on the active chat
// stream if one is up, otherwise as sealed receipts (up to 256 IDs each)
// in the sender's mailbox.
func (mb *mbox) ack(to peer.ID, ids [][]byte) {
	n := mb.n
	if _, _, cs := n.peers.streams(to); cs != nil {
		rest := ids[:0:0]
		for _, id := range ids {
			if !cs.queue(&pb.Frame{Body: &pb.Frame_Ack{Ack: &pb.Ack{Id: id}}}) {
				rest = append(rest, id)
			}
		}
		ids = rest
	}
	if len(ids) == 0 || !mb.deposit {
		return // without receipts the sender learns it when both are online (its resend is acked)
	}
	for len(ids) > 0 {
		k := min(len(ids), 1+mailbox.MaxAcks)
		chunk := ids[:k]
		ids = ids[k:]
		box, err := mailbox.Seal(mb.priv, to, mailbox.Letter{Kind: mailbox.KindReceipt, ID: chunk[0], Acks: chunk[1:], Time: time.Now(), Nick: n.cfg.Nick})
		if err != nil {
			n.log.Warn("mailbox: seal receipt", "peer", to, "err", err)
			return
		}
		mb.track(func() { mb.depositAll(to, box) })
	}
}

// isGone reports whether o left the outbox (acknowledged, or its store
// failed).
func (ob *outbox) isGone(o *outMsg) bool {
	ob.mu.Lock()
	defer ob.mu.Unlock()
	return o.gone
}

// messages returns p's unacknowledged messages, oldest first.
func (ob *outbox) messages(p peer.ID) []Message {
	ob.mu.Lock()
	defer ob.mu.Unlock()
	po := ob.byPeer[p]
	if po == nil {
		return nil
	}
	out := make([]Message, 0, po.l.Len())
	for e := po.l.Front(); e != nil; e = e.Next() {
		out = append(out, e.Value.(*outMsg).m)
	}
	return out
}
