package rendezvous

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"github.com/p2p-messaging/p2p-messaging/rendezvous/pb"
)

// WatchKind says what a WatchEvent reports.
type WatchKind int

const (
	// WatchRegistered: a peer appeared, or its addresses changed.
	WatchRegistered WatchKind = iota
	// WatchUnregistered: no server lists the peer any more.
	WatchUnregistered
	// WatchSynced: the initial snapshots are in (sent once).
	WatchSynced
)

func (k WatchKind) String() string {
	switch k {
	case WatchRegistered:
		return "registered"
	case WatchUnregistered:
		return "unregistered"
	case WatchSynced:
		return "synced"
	}
	return fmt.Sprintf("WatchKind(%d)", int(k))
}

// WatchEvent is one change in a watched namespace, merged over servers.
type WatchEvent struct {
	Kind WatchKind
	// Registration is the peer's merged registration (addresses from every
	// server listing it). For WatchUnregistered, the last one seen.
	Registration Registration
	// Server is the server whose news caused the event ("" for WatchSynced).
	Server peer.ID
}

// Watch subscribes to ns on every server and merges what they push: a peer
// is present while any server lists it. The first events describe the
// current members, then one WatchSynced follows once every server has sent
// its snapshot (or failed to), then changes as they happen. A server whose
// watch breaks keeps its peers listed (no spurious departures) until it is
// back, resubscribed and reconciled with its new snapshot, until a live
// server reports their departure, or until their TTL runs out. The channel
// is closed when ctx is done or the client closes.
func (c *Client) Watch(ctx context.Context, ns string) (<-chan WatchEvent, error) {
	if err := checkNamespace(ns); err != nil {
		return nil, fmt.Errorf("watch %q: %w", ns, err)
	}
	wctx, cancel := context.WithCancel(ctx)
	w := &watcher{
		c:       c,
		ns:      ns,
		ctx:     wctx,
		cancel:  cancel,
		out:     make(chan WatchEvent, c.cfg.watchBuffer),
		updates: make(chan watchUpdate),
		wake:    make(map[peer.ID]chan struct{}, len(c.order)),
	}
	for _, id := range c.order {
		w.wake[id] = make(chan struct{}, 1)
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		cancel()
		return nil, fmt.Errorf("watch %q: %w", ns, ErrClientClosed)
	}
	c.watches[w] = struct{}{}
	c.wg.Add(1 + len(c.order))
	c.mu.Unlock()
	for _, id := range c.order {
		go w.serverLoop(c.srv[id])
	}
	go w.merge()
	return w.out, nil
}

type watcher struct {
	c      *Client
	ns     string
	ctx    context.Context
	cancel context.CancelFunc
	out    chan WatchEvent
	// updates carries server news to the merge goroutine (unbuffered: a
	// slow consumer slows the server streams, never loses state).
	updates chan watchUpdate
	wake    map[peer.ID]chan struct{}
}

func (w *watcher) poke(server peer.ID) {
	if ch, ok := w.wake[server]; ok {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

type updateKind int

const (
	updSubscribed   updateKind = iota // a new stream: its snapshot follows
	updRegistered                     // reg
	updUnregistered                   // id
	updSynced                         // snapshot complete
	updDown                           // stream ended or could not start
)

type watchUpdate struct {
	server peer.ID
	kind   updateKind
	reg    Registration
	id     peer.ID
	at     time.Time
}

func (w *watcher) send(u watchUpdate) bool {
	select {
	case w.updates <- u:
		return true
	case <-w.ctx.Done():
		return false
	}
}

// serverLoop keeps a watch stream open on one server, resubscribing with
// backoff (or at once when the server reconnects) after a failure.
func (w *watcher) serverLoop(sc *serverConn) {
	defer w.c.wg.Done()
	id := sc.info.ID
	failures := 0
	for {
		synced, err := w.subscribe(sc)
		if w.ctx.Err() != nil {
			return
		}
		if !w.send(watchUpdate{server: id, kind: updDown}) {
			return
		}
		var se *StatusError
		if errors.As(err, &se) && se.Status == StatusInvalidNamespace {
			w.c.log.Warn("watch refused", "ns", w.ns, "peer", id, "err", err)
			return
		}
		if synced {
			failures = 0
		}
		failures++
		delay := retryDelay(failures, w.c.cfg.retryMin, w.c.cfg.retryMax, rand.Float64())
		w.c.log.Debug("watch stream ended; resubscribing", "ns", w.ns, "peer", id, "err", err, "retry_in", delay)
		t := time.NewTimer(delay)
		select {
		case <-w.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-w.wake[id]:
			t.Stop()
		}
	}
}

// subscribe runs one watch stream until it fails or the watch ends. synced
// reports whether the server got as far as its SYNCED event.
func (w *watcher) subscribe(sc *serverConn) (synced bool, err error) {
	id := sc.info.ID
	// Drain a stale wake-up: this attempt serves it.
	select {
	case <-w.wake[id]:
	default:
	}
	s, err := sc.openStream(w.ctx, WatchProtocolID)
	if err != nil {
		return false, err
	}
	defer s.Reset() // a watch ends on error or cancellation, never cleanly
	stop := context.AfterFunc(w.ctx, func() { s.Reset() })
	defer stop()
	// The snapshot must start and finish in time; live events have no
	// deadline (the connection's keepalive catches dead servers).
	if err := s.SetDeadline(time.Now().Add(w.c.cfg.requestTimeout)); err != nil {
		return false, err
	}
	if err := newWriter(s).WriteMsg(&pb.WatchRequest{Ns: proto.String(w.ns)}); err != nil {
		return false, fmt.Errorf("watch %q on %s: %w", w.ns, id, err)
	}
	if !w.send(watchUpdate{server: id, kind: updSubscribed}) {
		return false, w.ctx.Err()
	}
	r := newReader(s)
	for {
		var ev pb.WatchEvent
		if err := r.ReadMsg(&ev); err != nil {
			return synced, fmt.Errorf("watch %q on %s: %w", w.ns, id, ctxOr(w.ctx, err))
		}
		u, err := parseWatchEvent(&ev, w.ns)
		if err != nil {
			var se *StatusError
			if errors.As(err, &se) {
				return synced, fmt.Errorf("watch %q on %s: %w", w.ns, id, err)
			}
			w.c.log.Debug("ignoring watch event", "ns", w.ns, "peer", id, "err", err)
			continue
		}
		u.server = id
		u.at = time.Now()
		if u.kind == updSynced && !synced {
			synced = true
			if err := s.SetDeadline(time.Time{}); err != nil {
				return synced, err
			}
		}
		if !w.send(u) {
			return synced, w.ctx.Err()
		}
	}
}

// parseWatchEvent decodes one pushed event for namespace ns. An ERROR event
// becomes a *StatusError; events for another namespace or with a bad record
// are errors the caller skips.
func parseWatchEvent(ev *pb.WatchEvent, ns string) (watchUpdate, error) {
	if ev.Ns != nil && ev.GetNs() != ns {
		return watchUpdate{}, fmt.Errorf("event for namespace %q", ev.GetNs())
	}
	switch ev.GetKind() {
	case pb.WatchEvent_REGISTERED:
		reg, err := parseRegistration(ev.Registration)
		if err != nil {
			return watchUpdate{}, err
		}
		if reg.Namespace == "" {
			reg.Namespace = ns
		}
		if reg.Namespace != ns {
			return watchUpdate{}, fmt.Errorf("registration for namespace %q", reg.Namespace)
		}
		return watchUpdate{kind: updRegistered, reg: reg}, nil
	case pb.WatchEvent_UNREGISTERED:
		id, err := peer.IDFromBytes(ev.Peer)
		if err != nil {
			return watchUpdate{}, fmt.Errorf("unregistered peer: %w", err)
		}
		return watchUpdate{kind: updUnregistered, id: id}, nil
	case pb.WatchEvent_SYNCED:
		return watchUpdate{kind: updSynced}, nil
	case pb.WatchEvent_ERROR:
		st := ev.GetStatus()
		if ev.Status == nil || st == StatusOK {
			st = StatusInternalError
		}
		return watchUpdate{}, &StatusError{Status: st, Text: ev.GetStatusText()}
	}
	return watchUpdate{}, fmt.Errorf("unknown event kind %d", ev.GetKind())
}

// ---- merging ----

type watchEntry struct {
	reg     Registration
	expires time.Time // zero: no TTL known
}

type watchedPeer struct {
	on    map[peer.ID]watchEntry // by server
	shown *Registration          // what the caller was last told
}

type watchServer struct {
	up       bool
	settled  bool                 // first snapshot done or first attempt failed
	snapshot map[peer.ID]struct{} // non-nil while a snapshot streams in
}

// watchState is the merged view; only the merge goroutine touches it.
type watchState struct {
	ns      string
	servers map[peer.ID]*watchServer
	peers   map[peer.ID]*watchedPeer
	synced  bool
}

func newWatchState(ns string, servers []peer.ID) *watchState {
	st := &watchState{ns: ns, servers: make(map[peer.ID]*watchServer), peers: make(map[peer.ID]*watchedPeer)}
	for _, id := range servers {
		st.servers[id] = &watchServer{}
	}
	return st
}

// apply folds one server update into the state and returns the events to
// deliver.
func (st *watchState) apply(u watchUpdate) []WatchEvent {
	srv := st.servers[u.server]
	if srv == nil {
		return nil
	}
	var evs []WatchEvent
	switch u.kind {
	case updSubscribed:
		srv.up = true
		srv.snapshot = make(map[peer.ID]struct{})
	case updRegistered:
		id := u.reg.Peer.ID
		if srv.snapshot != nil {
			srv.snapshot[id] = struct{}{}
		}
		p := st.peers[id]
		if p == nil {
			p = &watchedPeer{on: make(map[peer.ID]watchEntry)}
			st.peers[id] = p
		}
		e := watchEntry{reg: u.reg}
		if u.reg.TTL > 0 {
			e.expires = u.at.Add(u.reg.TTL)
		}
		p.on[u.server] = e
		evs = st.changed(id, u.server, evs)
	case updUnregistered:
		if srv.snapshot != nil {
			delete(srv.snapshot, u.id)
		}
		if p := st.peers[u.id]; p != nil {
			st.leave(p, u.server)
			evs = st.changed(u.id, u.server, evs)
		}
	case updSynced:
		if srv.snapshot != nil {
			// Reconcile: whoever this server listed before but not in its
			// new snapshot has left it.
			for id, p := range st.peers {
				if _, ok := p.on[u.server]; !ok {
					continue
				}
				if _, ok := srv.snapshot[id]; !ok {
					st.leave(p, u.server)
					evs = st.changed(id, u.server, evs)
				}
			}
			srv.snapshot = nil
		}
		srv.settled = true
		evs = st.maybeSynced(evs)
	case updDown:
		srv.up = false
		srv.snapshot = nil
		srv.settled = true
		evs = st.maybeSynced(evs)
	}
	return evs
}

// leave records that a live server no longer lists p. What servers that
// are down last said about p is older than this news, so it goes too: a
// peer that unregistered (from every server) departs at once, even while
// one of its servers is unreachable. A peer only a down server listed stays.
func (st *watchState) leave(p *watchedPeer, server peer.ID) {
	delete(p.on, server)
	for sid := range p.on {
		if !st.servers[sid].up {
			delete(p.on, sid)
		}
	}
}

func (st *watchState) maybeSynced(evs []WatchEvent) []WatchEvent {
	if st.synced {
		return evs
	}
	for _, s := range st.servers {
		if !s.settled {
			return evs
		}
	}
	st.synced = true
	return append(evs, WatchEvent{Kind: WatchSynced})
}

// changed recomputes peer id after news from server and appends the event
// the caller must see, if any.
func (st *watchState) changed(id, server peer.ID, evs []WatchEvent) []WatchEvent {
	p := st.peers[id]
	if p == nil {
		return evs
	}
	if len(p.on) == 0 {
		delete(st.peers, id)
		if p.shown != nil {
			evs = append(evs, WatchEvent{Kind: WatchUnregistered, Registration: *p.shown, Server: server})
		}
		return evs
	}
	var merged Registration
	first := true
	for _, e := range p.on {
		if first {
			merged = e.reg
			merged.Peer.Addrs = append(merged.Peer.Addrs[:0:0], e.reg.Peer.Addrs...)
			first = false
			continue
		}
		merged.Peer.Addrs = mergeAddrs(merged.Peer.Addrs, e.reg.Peer.Addrs)
		merged.TTL = max(merged.TTL, e.reg.TTL)
	}
	if p.shown == nil || !sameAddrs(p.shown.Peer.Addrs, merged.Peer.Addrs) {
		p.shown = &merged
		evs = append(evs, WatchEvent{Kind: WatchRegistered, Registration: merged, Server: server})
	} else {
		p.shown.TTL = merged.TTL
	}
	return evs
}

// expire drops entries of servers whose watch is down once their TTL has
// run out (a live server reports expiry itself), and returns the next
// expiry to wait for (zero if none).
func (st *watchState) expire(now time.Time) ([]WatchEvent, time.Time) {
	var evs []WatchEvent
	var next time.Time
	for id, p := range st.peers {
		for sid, e := range p.on {
			if st.servers[sid].up || e.expires.IsZero() {
				continue
			}
			if !e.expires.After(now) {
				delete(p.on, sid)
				evs = st.changed(id, sid, evs)
				continue
			}
			if next.IsZero() || e.expires.Before(next) {
				next = e.expires
			}
		}
	}
	return evs, next
}

func (st *watchState) anyDown() bool {
	for _, s := range st.servers {
		if !s.up {
			return true
		}
	}
	return false
}

// maxWatchQueue bounds events waiting for a slow consumer beyond the
// channel's buffer; past it, server streams are not read (back-pressure).
const maxWatchQueue = 1024

// merge owns the watch state: it folds server updates in and delivers
// events to the caller's channel, which it closes at the end.
func (w *watcher) merge() {
	defer w.c.wg.Done()
	defer close(w.out)
	defer func() {
		w.cancel()
		w.c.mu.Lock()
		delete(w.c.watches, w)
		w.c.mu.Unlock()
	}()
	st := newWatchState(w.ns, w.c.order)
	var queue []WatchEvent
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		var out chan WatchEvent
		var head WatchEvent
		if len(queue) > 0 {
			out, head = w.out, queue[0]
		}
		updates := w.updates
		if len(queue) >= maxWatchQueue {
			updates = nil
		}
		select {
		case <-w.ctx.Done():
			return
		case out <- head:
			queue = queue[1:]
		case u := <-updates:
			queue = append(queue, st.apply(u)...)
		case <-timer.C:
		}
		if !st.anyDown() {
			timer.Stop()
			continue
		}
		evs, next := st.expire(time.Now())
		queue = append(queue, evs...)
		if next.IsZero() {
			timer.Stop()
		} else {
			timer.Reset(time.Until(next))
		}
	}
}
