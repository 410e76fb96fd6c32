package rendezvous

// The merged view of one Watch over several servers, as a pure state
// machine: watchState.apply folds one server's news in and returns the
// events for the caller; expire is driven by the time passed in. No
// goroutines, channels or clocks: the watcher's merge goroutine owns one.

import (
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// updateKind says what one server reported.
type updateKind int

const (
	updSubscribed   updateKind = iota // a new stream: its snapshot follows
	updRegistered                     // reg
	updUnregistered                   // id
	updSynced                         // snapshot complete
	updDown                           // stream ended or could not start
)

// watchUpdate is one piece of news from one server, timed by the caller.
type watchUpdate struct {
	server peer.ID
	kind   updateKind
	reg    Registration
	id     peer.ID
	at     time.Time
}

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
		if u.kind != updSubscribed && u.kind != updDown {
			return nil
		}
		// A server added to the client after the watch began.
		srv = &watchServer{}
		st.servers[u.server] = srv
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
