package chat

import (
	"sort"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/multiformats/go-multiaddr"

	"github.com/p2p-messaging/p2p-messaging/internal/backoff"
)

// This file is presence and connections: the peer table, owned by one
// goroutine (run) and fed by closures on a channel, in the shape of
// go-libp2p-pubsub's processLoop. Nothing else touches a peerState. The
// loop never blocks: dials run in goroutines of their own and report back
// through the same channel, and events go to the non-blocking queue.

const (
	chatConnTag       = "p2p-messaging-chat" // connection manager tag of peers with a live chat stream
	chatConnValue     = 100
	maxChatDials      = 32                     // chat stream dials under way at once
	maxStreamsPerPeer = 4                      // live chat streams per peer; a new one retires the oldest
	maxAutoSessions   = 64                     // room members / contacts we connect to unasked
	maxBackoff        = time.Minute            // dial retry backoff cap
	relayGrace        = 3 * time.Second        // presence kept after a relayed stream ends without evidence of death
	graceRetry        = 250 * time.Millisecond // reconnect pace during a grace
	maxDialAddrs      = 8                      // addresses kept per peer from a registration or look-up
	tableTick         = time.Second            // retry scan
)

// ConnKind is how a peer is connected.
type ConnKind string

const (
	ConnDirect  ConnKind = "direct"
	ConnRelayed ConnKind = "relayed"
	ConnNone    ConnKind = "none"
)

// ConnInfo describes the best connection to a peer.
type ConnInfo struct {
	Kind      ConnKind
	Transport string // "tcp", "quic", ""
	IPVersion int    // 4, 6, 0
	Remote    multiaddr.Multiaddr
	Limited   bool
}

// PeerStatus is one known peer as Peers reports it.
type PeerStatus struct {
	Nick   string
	Peer   peer.ID
	Online bool
	Conn   ConnInfo
	RTT    time.Duration
	// Punch is why the last hole punch with the peer failed, in one short
	// phrase (nat.go), while the connection is not direct; "" otherwise.
	Punch string
}

// peerState is what the node knows about one remote peer. Owned by the
// peer table's loop.
type peerState struct {
	id      peer.ID
	nick    string // verified nick, "" until known
	streams map[*chatStream]struct{}
	active  *chatStream     // the one stream our messages go out on (sticky, for order)
	regs    map[string]bool // namespaces where rendezvous lists the peer
	dead    bool            // evidence it is gone (stream lost); cleared by new life
	online  bool            // last computed presence
	conn    ConnInfo        // last connection info announced
	dialing bool
	bo      *backoff.Backoff
	nextTry time.Time
	// graceUntil: a relayed connection to the peer ended without evidence
	// that the peer is gone (relay limit, a re-dial for hole punching);
	// until then it keeps its presence and failed reconnects are retried
	// quickly instead of counting as it being gone. Zero: no grace.
	graceUntil time.Time
	// punchRearms counts hole-punch re-arms (nat.go, bounded).
	punchRearms int
	// met: a chat stream to the peer came up, so the user knows it (by its
	// verified nick or by its peer ID).
	met bool
	// lastSeen: when presence last changed (contacts.go).
	lastSeen time.Time
}

// shown reports whether the user sees the peer's presence: a verified nick,
// or a peer met over a chat stream (shown by its ID).
func (ps *peerState) shown() bool { return ps.nick != "" || ps.met }

// name is how the peer is shown: its verified nick or its peer ID.
func (ps *peerState) name() string {
	if ps.nick != "" {
		return ps.nick
	}
	return ps.id.String()
}

type peerTable struct {
	n     *Node
	cmds  chan func()
	kickc chan struct{}

	peers map[peer.ID]*peerState // loop only

	// dials bounds the chat stream dials under way at once: a burst of
	// sends to many peers queues its dials instead of starting hundreds
	// of handshakes that then all miss their timeout.
	dials chan struct{}

	// Connections opened and closed, as the swarm reports them: the
	// notifiee must not block, so it only marks the peer and wakes the loop.
	connMu    sync.Mutex
	connDirty map[peer.ID]struct{}
	connWake  chan struct{}
}

func newPeerTable(n *Node) *peerTable {
	return &peerTable{
		n:         n,
		cmds:      make(chan func(), 256),
		kickc:     make(chan struct{}, 1),
		peers:     map[peer.ID]*peerState{},
		dials:     make(chan struct{}, maxChatDials),
		connDirty: map[peer.ID]struct{}{},
		connWake:  make(chan struct{}, 1),
	}
}

// connChanged is the swarm's notifiee: a connection to p opened or closed.
func (t *peerTable) connChanged(_ network.Network, c network.Conn) {
	t.connMu.Lock()
	t.connDirty[c.RemotePeer()] = struct{}{}
	t.connMu.Unlock()
	select {
	case t.connWake <- struct{}{}:
	default:
	}
}

// takeDirty returns the peers whose connections changed since last time.
func (t *peerTable) takeDirty() []peer.ID {
	t.connMu.Lock()
	defer t.connMu.Unlock()
	out := make([]peer.ID, 0, len(t.connDirty))
	for p := range t.connDirty {
		out = append(out, p)
	}
	clear(t.connDirty)
	return out
}

// do runs f on the loop. It waits only for room in the loop's queue,
// which the loop drains without blocking. After Close it drops f.
func (t *peerTable) do(f func()) {
	select {
	case t.cmds <- f:
	case <-t.n.ctx.Done():
	}
}

// call runs f on the loop and waits for it. It reports false (f not run)
// once the node is closing.
func (t *peerTable) call(f func()) bool {
	done := make(chan struct{})
	select {
	case t.cmds <- func() { f(); close(done) }:
	case <-t.n.ctx.Done():
		return false
	}
	select {
	case <-done:
		return true
	case <-t.n.ctx.Done():
		return false
	}
}

// kick asks for a retry scan.
func (t *peerTable) kick() {
	select {
	case t.kickc <- struct{}{}:
	default:
	}
}

func (t *peerTable) run() {
	n := t.n
	nb := &network.NotifyBundle{ConnectedF: t.connChanged, DisconnectedF: t.connChanged}
	n.h.Network().Notify(nb)
	defer n.h.Network().StopNotify(nb)
	tick := time.NewTicker(tableTick)
	defer tick.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case f := <-t.cmds:
			f()
		case <-t.connWake:
			for _, p := range t.takeDirty() {
				t.onConnsChanged(p)
			}
		case <-tick.C:
			t.scan(time.Now())
		case <-t.kickc:
			t.scan(time.Now())
		}
	}
}

// peer returns p's state, creating it. Loop only (or before run starts).
func (t *peerTable) peer(p peer.ID) *peerState {
	ps, ok := t.peers[p]
	if !ok {
		ps = &peerState{
			id:      p,
			streams: map[*chatStream]struct{}{},
			regs:    map[string]bool{},
			bo:      backoff.New(t.n.cfg.RetryInterval, maxBackoff),
		}
		t.peers[p] = ps
	}
	return ps
}

// relevant reports whether the node has a reason to track p: a contact, a
// member of a watched namespace, pending messages, or a live stream.
func (t *peerTable) relevant(ps *peerState) bool {
	return len(ps.regs) > 0 || len(ps.streams) > 0 || ps.dialing || !ps.graceUntil.IsZero() ||
		t.n.out.pending(ps.id) || t.n.names.hasTalked(ps.id)
}

// updatePresence recomputes p's presence and emits EventPresence on a
// change (only for peers whose nick is known). Loop only.
func (t *peerTable) updatePresence(ps *peerState) {
	online := len(ps.streams) > 0 || (!ps.dead && (len(ps.regs) > 0 || !ps.graceUntil.IsZero()))
	if online != ps.online {
		ps.online = online
		ps.lastSeen = time.Now()
		if ps.nick != "" {
			t.n.db.trySetLastSeen(ps.nick, ps.id, ps.lastSeen)
		}
		// The node's own shutdown ends every stream: that says nothing
		// about the peers, so no presence is reported for it.
		if ps.shown() && !t.n.isClosed() {
			t.n.log.Debug("presence", "peer", ps.id, "peer_nick", ps.nick, "online", online)
			t.n.ev.emit(EventPresence{Nick: ps.name(), Peer: ps.id, Online: online})
		}
	}
	t.updateConn(ps)
}

// updateConn emits EventConn when the best connection to p changed. An
// offline peer has no connection worth showing (a killed peer's QUIC
// connection lingers until its idle timeout). Loop only.
func (t *peerTable) updateConn(ps *peerState) {
	ci := ConnInfo{Kind: ConnNone}
	if ps.online {
		ci = connInfo(t.n.h.Network(), ps.id)
	}
	if !ps.shown() || sameConn(ps.conn, ci) || t.n.isClosed() {
		return
	}
	ps.conn = ci
	t.n.ev.emit(EventConn{Nick: ps.name(), Peer: ps.id, Conn: ci})
}

// forgetIfIdle drops a peer the node has no reason to track any more (a
// room member that left, never talked to), so it stops appearing in the
// presence list.
func (t *peerTable) forgetIfIdle(ps *peerState) {
	if t.relevant(ps) {
		return
	}
	if ps.online && ps.shown() && !t.n.isClosed() {
		t.n.ev.emit(EventPresence{Nick: ps.name(), Peer: ps.id, Online: false})
	}
	delete(t.peers, ps.id)
}

// streamUp registers a stream whose Hello exchange is done. It reports
// false once the node is closing.
func (t *peerTable) streamUp(cs *chatStream, nick string) bool {
	var retire []*chatStream
	ok := t.call(func() {
		ps := t.peer(cs.peer)
		if nick != "" {
			ps.nick = nick
		}
		ps.met = true
		ps.streams[cs] = struct{}{}
		if len(ps.streams) == 1 {
			// Over its high water mark the connection manager closes the
			// connections of least value first: a conversation's is worth
			// more than a GossipSub mesh link's (20).
			t.n.h.ConnManager().TagPeer(cs.peer, chatConnTag, chatConnValue)
		}
		if len(ps.streams) > maxStreamsPerPeer {
			// Bound what one peer can hold open: retire the least
			// recently active stream.
			var oldest *chatStream
			for o := range ps.streams {
				if o != cs && (oldest == nil || o.lastRecv.Load() < oldest.lastRecv.Load()) {
					oldest = o
				}
			}
			retire = append(retire, oldest)
		}
		ps.dead = false
		ps.graceUntil = time.Time{}
		ps.bo.Reset()
		ps.nextTry = time.Time{}
		// Messages stay on one stream while it lives, so they arrive in
		// order; they move only off a limited stream or off a stream that
		// ended.
		if ps.active == nil || (ps.active.relayed && !cs.relayed) || (ps.active.limited && !cs.limited) {
			t.setActive(ps, cs)
		}
		// A stream on a direct connection retires those over a relay.
		if !cs.relayed {
			for o := range ps.streams {
				if o != cs && o.relayed && (len(retire) == 0 || retire[0] != o) {
					retire = append(retire, o)
				}
			}
		}
		t.updatePresence(ps)
	})
	for _, o := range retire {
		t.n.log.Debug("retiring chat stream", "peer", cs.peer, "limited", o.limited)
		o.retire()
	}
	return ok
}

// setActive makes cs the stream p's messages go out on; its writer then
// (re)sends the whole outbox.
func (t *peerTable) setActive(ps *peerState, cs *chatStream) {
	if ps.active != nil {
		ps.active.active.Store(false)
	}
	ps.active = cs
	if cs != nil {
		cs.active.Store(true)
		cs.kick()
	}
}

// streamDown unregisters a finished stream. When it was the last one the
// peer counts as gone until it shows new life; a reconnect is tried at once.
func (t *peerTable) streamDown(cs *chatStream) {
	t.do(func() {
		ps := t.peer(cs.peer)
		delete(ps.streams, cs)
		if ps.active == cs {
			var next *chatStream
			for o := range ps.streams {
				if next == nil || (next.relayed && !o.relayed) ||
					(next.relayed == o.relayed && o.lastRecv.Load() > next.lastRecv.Load()) {
					next = o
				}
			}
			t.setActive(ps, next)
		}
		if len(ps.streams) == 0 {
			t.n.h.ConnManager().UntagPeer(cs.peer, chatConnTag)
			ps.nextTry = time.Time{}
			// A relayed stream also ends when the relay's per-connection
			// limit (time, bytes) runs out, or when either side replaces
			// the relayed connection to set up a hole punch: reconnect
			// first, and let a failed reconnect decide. Anything else
			// ending means the peer is gone.
			if !cs.relayed || cs.timedOut.Load() {
				ps.dead = true
			} else if g := time.Now().Add(relayGrace); g.After(ps.graceUntil) {
				ps.graceUntil = g
			}
			t.updatePresence(ps)
			t.forgetIfIdle(ps) // e.g. a stream of a peer retired as idle
			t.kick()
		}
	})
}

// wantStream makes sure p gets a stream: the active one is kicked, or a
// dial starts.
func (t *peerTable) wantStream(p peer.ID) {
	t.do(func() {
		ps := t.peer(p)
		if ps.active != nil {
			ps.active.kick()
			return
		}
		t.connect(ps, false)
	})
}

// connect opens a chat stream to ps (dialling if needed) in the
// background. With upgrade it opens a new stream even if one exists (to
// move off a limited connection). Loop only.
func (t *peerTable) connect(ps *peerState, upgrade bool) {
	n := t.n
	if ps.dialing || (len(ps.streams) > 0 && !upgrade) || ps.id == n.h.ID() {
		return
	}
	if !n.spawn(func() {
		var err error
		select {
		case t.dials <- struct{}{}:
			err = n.dm.open(ps.id)
			<-t.dials
		case <-n.ctx.Done():
			err = ErrClosed
		}
		t.do(func() { t.dialDone(ps, err) })
	}) {
		return
	}
	ps.dialing = true
}

func (t *peerTable) dialDone(ps *peerState, err error) {
	ps.dialing = false
	now := time.Now()
	if err == nil {
		ps.bo.Reset()
		return
	}
	t.n.log.Debug("open chat stream", "peer", ps.id, "err", err)
	ps.nextTry = now.Add(ps.bo.Next())
	if now.Before(ps.graceUntil) {
		ps.nextTry = now.Add(graceRetry)
	} else if len(ps.streams) == 0 && !ps.dead {
		ps.dead = true
		t.updatePresence(ps)
	}
}

// onConnsChanged reacts to a connection to p opening or closing. A direct
// connection appearing while the chat runs over a relay (a hole punch, a
// direct dial) moves the chat to a new stream on it; new life resets the
// peer's dial backoff.
func (t *peerTable) onConnsChanged(p peer.ID) {
	ps, known := t.peers[p]
	if !known {
		return
	}
	conns := t.n.h.Network().ConnsToPeer(p)
	if len(conns) > 0 {
		ps.bo.Reset()
		ps.nextTry = time.Time{}
	}
	if ps.active != nil && ps.active.relayed && hasDirect(conns) {
		t.n.log.Debug("direct connection: reopening chat stream", "peer", p)
		t.connect(ps, true)
	}
	if t.n.out.pending(p) {
		t.kick()
	}
	t.updateConn(ps)
}

// hasDirect reports whether one of conns is open and not through a relay.
func hasDirect(conns []network.Conn) bool {
	for _, c := range conns {
		if !c.IsClosed() && !isRelayed(c.RemoteMultiaddr()) {
			return true
		}
	}
	return false
}

// scan opens chat streams to the peers that need one: those with pending
// messages (with backoff), those in a grace, and room members and contacts
// the daemons list (for presence and quick sends), up to maxAutoSessions;
// it moves chats off relayed streams when a direct connection exists, and
// ends graces that ran out. Loop only.
func (t *peerTable) scan(now time.Time) {
	sessions := 0
	for _, ps := range t.peers {
		if len(ps.streams) > 0 {
			sessions++
		}
	}
	for _, p := range t.n.out.peers() {
		t.peer(p)
	}
	for id, ps := range t.peers {
		if !ps.graceUntil.IsZero() && !now.Before(ps.graceUntil) {
			// The grace ran out without a new stream: gone after all.
			ps.graceUntil = time.Time{}
			if len(ps.streams) == 0 {
				ps.dead = true
			}
			t.updatePresence(ps)
		}
		if ps.active != nil && ps.active.relayed && !ps.dialing && !now.Before(ps.nextTry) &&
			hasDirect(t.n.h.Network().ConnsToPeer(id)) {
			t.connect(ps, true)
		}
		if len(ps.streams) > 0 && len(ps.regs) == 0 && ps.graceUntil.IsZero() &&
			!t.n.out.pending(id) && !t.n.names.hasTalked(id) {
			// A session we opened for presence to a peer no longer in a
			// watched namespace (it moved while our dial was under way):
			// end it. Streams the peer opened are its own business.
			for cs := range ps.streams {
				if cs.outgoing {
					t.n.spawn(cs.retire) // closing a stream may wait on the network: not on the loop
				}
			}
		}
		if len(ps.streams) > 0 || ps.dialing || now.Before(ps.nextTry) || id == t.n.h.ID() {
			continue
		}
		switch {
		case t.n.out.pending(id) || !ps.graceUntil.IsZero():
			t.connect(ps, false)
		case len(ps.regs) > 0 && sessions < maxAutoSessions:
			t.connect(ps, false)
			sessions++
		}
	}
}

// registered records that the daemons list p in ns (a watch event), with
// its addresses. A registration is not proof of life (the daemons keep a
// killed peer listed for a moment, and watches replay snapshots): a peer
// seen dying stays offline until a new stream to it comes up. Neither
// does it reset the dial backoff: anyone can register a record, so a
// re-registration must not make the node dial faster.
func (t *peerTable) registered(ns string, ai peer.AddrInfo) {
	t.do(func() {
		ps := t.peer(ai.ID)
		addAddrs(t.n.h.Peerstore(), ai)
		ps.regs[ns] = true
		t.updatePresence(ps)
		t.kick()
	})
}

// unregistered records that the daemons no longer list p in ns.
func (t *peerTable) unregistered(ns string, p peer.ID) {
	t.do(func() {
		ps, ok := t.peers[p]
		if !ok {
			return
		}
		delete(ps.regs, ns)
		t.updatePresence(ps)
		t.retireIfIdle(ps)
	})
}

// leftNamespace forgets every registration in ns (the node left the room).
func (t *peerTable) leftNamespace(ns string) {
	t.do(func() {
		for _, ps := range t.peers {
			if ps.regs[ns] {
				delete(ps.regs, ns)
				t.updatePresence(ps)
				t.retireIfIdle(ps)
			}
		}
	})
}

// listed returns the peers the daemons list in ns (rooms.go polls those
// outside a room's mesh).
func (t *peerTable) listed(ns string) []peer.ID {
	var out []peer.ID
	t.call(func() {
		for id, ps := range t.peers {
			if ps.regs[ns] {
				out = append(out, id)
			}
		}
	})
	return out
}

// retireIfIdle closes the streams to a peer the node only met through a
// namespace it no longer shares (nothing pending, no conversation with it),
// then forgets it.
func (t *peerTable) retireIfIdle(ps *peerState) {
	if len(ps.regs) > 0 || t.n.out.pending(ps.id) || t.n.names.hasTalked(ps.id) {
		return
	}
	for cs := range ps.streams {
		t.n.spawn(cs.retire) // closing a stream may wait on the network: not on the loop
		delete(ps.streams, cs)
	}
	t.n.h.ConnManager().UntagPeer(ps.id, chatConnTag)
	t.setActive(ps, nil)
	t.forgetIfIdle(ps)
}

// learnNick records p's verified nick.
func (t *peerTable) learnNick(p peer.ID, nick string) {
	t.do(func() {
		ps := t.peer(p)
		had := ps.nick
		ps.nick = nick
		ps.met = true
		if had != nick && ps.online {
			// Online but not announced under this nick yet.
			ps.lastSeen = time.Now()
			t.n.db.trySetLastSeen(nick, p, ps.lastSeen)
			t.n.ev.emit(EventPresence{Nick: nick, Peer: p, Online: true})
			t.updateConn(ps)
		}
	})
}

// graceFor keeps p's presence (and quick reconnects) for d while its
// relayed connections are replaced (nat.go): a long grace only extends the
// current one, a grace of at most relayGrace replaces it (the re-dial is
// over, the usual relayed-stream grace applies).
func (t *peerTable) graceFor(p peer.ID, d time.Duration) {
	t.do(func() {
		ps := t.peer(p)
		if g := time.Now().Add(d); g.After(ps.graceUntil) || d <= relayGrace {
			ps.graceUntil = g
		}
	})
}

// rearmPunch reports whether another hole-punch re-arm for p is allowed,
// counting it.
func (t *peerTable) rearmPunch(p peer.ID, limit int) bool {
	ok := false
	t.call(func() {
		ps := t.peer(p)
		if ps.punchRearms < limit {
			ps.punchRearms++
			ok = true
		}
	})
	return ok
}

// snapshot returns the online peers, sorted by nick.
func (t *peerTable) snapshot() []PeerStatus {
	var out []PeerStatus
	t.call(func() {
		for id, ps := range t.peers {
			if !ps.online || id == t.n.h.ID() {
				continue
			}
			nick := ps.nick
			if nick == "" {
				nick = id.String() // not verified; Send accepts a peer ID too
			}
			st := PeerStatus{Nick: nick, Peer: id, Online: true, Conn: connInfo(t.n.h.Network(), id)}
			if ps.active != nil {
				st.RTT = time.Duration(ps.active.rtt.Load())
			}
			out = append(out, st)
		}
	})
	for i := range out {
		if out[i].RTT == 0 && out[i].Conn.Kind != ConnNone {
			out[i].RTT = t.n.h.Peerstore().LatencyEWMA(out[i].Peer)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Nick != out[j].Nick {
			return out[i].Nick < out[j].Nick
		}
		return out[i].Peer < out[j].Peer
	})
	return out
}

// status returns p's presence and verified nick.
func (t *peerTable) status(p peer.ID) (online bool, nick string) {
	t.call(func() {
		if ps, ok := t.peers[p]; ok {
			online, nick = ps.online, ps.nick
		}
	})
	return online, nick
}

// streamCount returns the number of live chat streams to p (tests).
func (t *peerTable) streamCount(p peer.ID) int {
	total, _, _ := t.streams(p)
	return total
}

// streams returns the number of live chat streams to p, how many of them
// run over a relay, and the active one.
func (t *peerTable) streams(p peer.ID) (total, relayed int, active *chatStream) {
	t.call(func() {
		if ps, ok := t.peers[p]; ok {
			total, active = len(ps.streams), ps.active
			for cs := range ps.streams {
				if cs.relayed {
					relayed++
				}
			}
		}
	})
	return total, relayed, active
}

// Peers returns the peers known to be online (contacts and room members),
// with their connection and round-trip time, sorted by nick.
func (n *Node) Peers() []PeerStatus {
	ps := n.peers.snapshot()
	for i := range ps {
		ps[i].Punch = n.nat.failure(ps[i].Peer, ps[i].Conn)
	}
	return ps
}

// addAddrs keeps at most maxDialAddrs of ai's addresses for dialling: a
// record cannot make the node dial a long list of someone else's ports.
func addAddrs(ps peerstore.Peerstore, ai peer.AddrInfo) {
	addrs := ai.Addrs
	if len(addrs) > maxDialAddrs {
		addrs = addrs[:maxDialAddrs]
	}
	if len(addrs) > 0 {
		ps.AddAddrs(ai.ID, addrs, peerstore.AddressTTL)
	}
}

func sameConn(a, b ConnInfo) bool {
	if a.Kind != b.Kind || a.Transport != b.Transport || a.IPVersion != b.IPVersion || a.Limited != b.Limited {
		return false
	}
	if a.Remote == nil || b.Remote == nil {
		return a.Remote == nil && b.Remote == nil
	}
	return a.Remote.Equal(b.Remote)
}

// connInfo describes the best open connection to p.
func connInfo(nw network.Network, p peer.ID) ConnInfo {
	var best network.Conn
	for _, c := range nw.ConnsToPeer(p) {
		if c.IsClosed() {
			continue
		}
		if best == nil || betterConn(c, best) {
			best = c
		}
	}
	if best == nil {
		return ConnInfo{Kind: ConnNone}
	}
	return describeConn(best)
}

func isRelayed(a multiaddr.Multiaddr) bool {
	_, err := a.ValueForProtocol(multiaddr.P_CIRCUIT)
	return err == nil
}

func betterConn(a, b network.Conn) bool {
	al, bl := a.Stat().Limited, b.Stat().Limited
	if al != bl {
		return !al
	}
	ar, br := isRelayed(a.RemoteMultiaddr()), isRelayed(b.RemoteMultiaddr())
	if ar != br {
		return !ar
	}
	return a.Stat().Opened.After(b.Stat().Opened)
}

func describeConn(c network.Conn) ConnInfo {
	ra := c.RemoteMultiaddr()
	ci := ConnInfo{Kind: ConnDirect, Remote: ra, Limited: c.Stat().Limited}
	if isRelayed(ra) {
		ci.Kind = ConnRelayed
	}
	for _, comp := range ra {
		switch comp.Protocol().Code {
		case multiaddr.P_IP4:
			if ci.IPVersion == 0 {
				ci.IPVersion = 4
			}
		case multiaddr.P_IP6:
			if ci.IPVersion == 0 {
				ci.IPVersion = 6
			}
		case multiaddr.P_TCP:
			if ci.Transport == "" {
				ci.Transport = "tcp"
			}
		case multiaddr.P_QUIC_V1, multiaddr.P_QUIC:
			ci.Transport = "quic"
		case multiaddr.P_CIRCUIT:
			return ci
		}
	}
	return ci
}
