package rendezvous

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/p2p-messaging/p2p-messaging/internal/backoff"
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
	if err := checkNamespace(ns, MaxNamespaceLen); err != nil {
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
		wake:    make(map[peer.ID]chan struct{}),
	}
	// The servers and the watch's registration are taken under c.mu, as
	// AddServer adds to both under it: a server added meanwhile is either
	// in the snapshot or added to the watch, never neither nor both.
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		cancel()
		return nil, fmt.Errorf("watch %q: %w", ns, ErrClientClosed)
	}
	servers := c.servers()
	ids := make([]peer.ID, len(servers))
	for i, sc := range servers {
		ids[i] = sc.info.ID
		w.wake[sc.info.ID] = make(chan struct{}, 1)
	}
	w.initial = ids
	c.watches[w] = struct{}{}
	c.wg.Add(1 + len(servers))
	c.mu.Unlock()
	for _, sc := range servers {
		go w.serverLoop(sc)
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
	initial []peer.ID // the servers at the start

	wmu  sync.Mutex // wake grows by AddServer
	wake map[peer.ID]chan struct{}
}

func (w *watcher) wakeCh(server peer.ID) chan struct{} {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	return w.wake[server]
}

// addServer starts watching a server added to the client. The caller holds
// c.mu and has done c.wg.Add(1) for the loop.
func (w *watcher) addServer(sc *serverConn) {
	w.wmu.Lock()
	if _, ok := w.wake[sc.info.ID]; ok {
		w.wmu.Unlock()
		w.c.wg.Done()
		return
	}
	w.wake[sc.info.ID] = make(chan struct{}, 1)
	w.wmu.Unlock()
	go w.serverLoop(sc)
}

func (w *watcher) poke(server peer.ID) {
	if ch := w.wakeCh(server); ch != nil {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
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
	retry := backoff.New(w.c.cfg.retryMin, w.c.cfg.retryMax)
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
			retry.Reset()
		}
		delay := retry.Next()
		w.c.log.Debug("watch stream ended; resubscribing", "ns", w.ns, "peer", id, "err", err, "retry_in", delay)
		t := w.c.cfg.clock.NewTimer(delay)
		select {
		case <-w.ctx.Done():
			t.Stop()
			return
		case <-t.C():
		case <-w.wakeCh(id):
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
	case <-w.wakeCh(id):
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
	if err := newWriter(s).WriteMsg(watchRequest(w.ns)); err != nil {
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
		u.at = w.c.cfg.clock.Now()
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
	st := newWatchState(w.ns, w.initial)
	var queue []WatchEvent
	clock := w.c.cfg.clock
	timer := clock.NewTimer(time.Hour)
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
		case <-timer.C():
		}
		if !st.anyDown() {
			timer.Stop()
			continue
		}
		now := clock.Now()
		evs, next := st.expire(now)
		queue = append(queue, evs...)
		if next.IsZero() {
			timer.Stop()
		} else {
			timer.Reset(next.Sub(now))
		}
	}
}
