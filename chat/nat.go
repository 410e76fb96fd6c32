package chat

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/holepunch"
	"github.com/multiformats/go-multiaddr"
)

const (
	// redialTimeout bounds one re-dial through the relay.
	redialTimeout = 15 * time.Second
	// maxPunchRearms bounds punchAgain per peer; punchRearmDelay lets the
	// broken attempt finish first.
	maxPunchRearms  = 2
	punchRearmDelay = time.Second
)

// This file is NAT traversal on top of go-libp2p's DCUtR: it reports hole
// punches as events and re-arms punching when go-libp2p would not.

type nat struct {
	n *Node

	mu sync.Mutex
	// failed: why the last hole punch with a peer failed, in one phrase
	// (punchReason); removed when a punch succeeds. At most maxPunchNotes.
	failed map[peer.ID]string
	// symmetric: the host found its own NAT endpoint dependent (go-libp2p's
	// EvtNATDeviceTypeChanged, per transport: "tcp", "quic").
	symmetric map[string]bool
}

func newNAT(n *Node) *nat {
	return &nat{n: n, failed: map[peer.ID]string{}, symmetric: map[string]bool{}}
}

// maxPunchNotes bounds the failure notes: one per peer that punched with
// us, and a remote can bring many identities through a relay.
const maxPunchNotes = 256

// run reports hole punches (EventHolePunch on the host's event bus; a
// Host from NewHost publishes them) and re-arms punching (punchWhenReady).
func (t *nat) run() {
	n := t.n
	sub, err := n.h.EventBus().Subscribe([]any{new(EventHolePunch), new(event.EvtNATDeviceTypeChanged)})
	if err != nil {
		n.log.Warn("hole punching: cannot watch hole punches", "err", err)
		return
	}
	defer sub.Close()
	n.spawn(t.punchWhenReady)
	nb := &network.NotifyBundle{ConnectedF: func(_ network.Network, c network.Conn) {
		if isRelayed(c.RemoteMultiaddr()) {
			n.spawn(func() { t.oneDirection(c.RemotePeer()) })
		}
	}}
	n.h.Network().Notify(nb)
	defer n.h.Network().StopNotify(nb)
	for {
		select {
		case <-n.ctx.Done():
			return
		case e, ok := <-sub.Out():
			if !ok {
				return
			}
			switch e := e.(type) {
			case event.EvtNATDeviceTypeChanged:
				t.natType(e)
			case EventHolePunch:
				e.Reason = t.note(e)
				n.ev.emit(e)
				if strings.HasPrefix(e.Err, "protocol: ") {
					t.punchAgain(e.Peer)
				}
			}
		}
	}
}

// punchWhenReady re-arms hole punching for peers met over a relay before
// this node could punch.
//
// go-libp2p (v0.51) starts a hole punch only from the receiving side of a
// relayed connection, and only if that connection appears after its
// hole-punch service is running; the service starts once the host knows a
// public address of its own, which it learns from identify a moment after
// start-up. Two chat peers behind NAT usually meet over the relay within
// that moment, and would then stay relayed for good. So when the DCUtR
// handler appears (EvtLocalProtocolsUpdated), every peer reached only
// through a relay is dialled again through the relay: the other side gets a
// fresh inbound relayed connection and punches from it. A side that is not
// ready yet does the same for us once it is, and then we punch.
func (t *nat) punchWhenReady() {
	n := t.n
	sub, err := n.h.EventBus().Subscribe(new(event.EvtLocalProtocolsUpdated))
	if err != nil {
		n.log.Warn("hole punching: cannot watch local protocols", "err", err)
		return
	}
	defer sub.Close()
	if slices.Contains(n.h.Mux().Protocols(), holepunch.Protocol) {
		t.redialRelayed()
		return
	}
	for {
		select {
		case <-n.ctx.Done():
			return
		case e, ok := <-sub.Out():
			if !ok {
				return
			}
			if slices.Contains(e.(event.EvtLocalProtocolsUpdated).Added, holepunch.Protocol) {
				n.log.Debug("hole punching ready: re-dialling relayed peers")
				t.redialRelayed()
				return
			}
		}
	}
}

// redialRelayed closes the relay-only connections to every peer and dials
// each again through the same relay.
func (t *nat) redialRelayed() {
	for _, p := range t.n.h.Network().Peers() {
		t.redialPeer(p)
	}
}

// redialPeer replaces the connections to p with a new one through the same
// relay, if every connection to p is relayed. It reports whether it did.
func (t *nat) redialPeer(p peer.ID) bool {
	n := t.n
	var relayAddrs []multiaddr.Multiaddr
	var conns []network.Conn
	for _, c := range n.h.Network().ConnsToPeer(p) {
		if !isRelayed(c.RemoteMultiaddr()) {
			return false
		}
		conns = append(conns, c)
		relayAddrs = append(relayAddrs, c.RemoteMultiaddr())
	}
	if len(conns) == 0 {
		return false
	}
	// The chat streams on these connections end; the peer keeps its
	// presence (and quick reconnects) while the re-dial runs.
	n.peers.graceFor(p, redialTimeout)
	return n.spawn(func() {
		for _, c := range conns {
			_ = c.Close()
		}
		ctx, cancel := context.WithTimeout(n.ctx, redialTimeout)
		defer cancel()
		if err := n.h.Connect(ctx, peer.AddrInfo{ID: p, Addrs: relayAddrs}); err != nil {
			n.log.Debug("re-dial through relay", "peer", p, "err", err)
		}
		// From here the usual relayed-stream grace applies.
		n.peers.graceFor(p, relayGrace)
		n.peers.wantStream(p) // reopen the chat stream if we had one
	})
}

// oneDirection keeps the relayed connections to p in one direction.
//
// Two peers that dial each other through a relay at about the same time
// (one sends a message, the other opens its stream to a contact or room
// member) end up with two relayed connections, one dialled by each. DCUtR
// then runs twice, once from each side's inbound connection, and each
// side's coordination stream goes over whichever connection its host
// picks; the receiving side resets a stream that arrives on a connection
// it did not dial (go-libp2p's direction check), so either run may fail,
// both may, and the two runs' dials clash. The side with the larger peer
// ID decides (both deciding could close one connection each, and then none
// would be left). Usually it closes the relayed connections it dialled,
// keeping those p dialled, before its own DCUtR run (which waits for
// identify on the inbound one) opens its stream, so that stream goes over
// the connection it received and p accepts it; p's run, started from a
// connection now closed, breaks off, and p does not re-arm it
// (theirPunch). But if p's run is already under way on a connection we
// dialled (its coordination stream is open on it), closing that would cut
// it off: then ours are kept and p's connections closed, and it is our run
// that breaks off and is not re-armed. The chat streams on the closed
// connections reopen on the one kept. Nothing is done once a direct
// connection exists.
func (t *nat) oneDirection(p peer.ID) {
	n := t.n
	if n.h.ID() < p {
		return
	}
	var ours, theirs []network.Conn
	for _, c := range n.h.Network().ConnsToPeer(p) {
		if !isRelayed(c.RemoteMultiaddr()) {
			return
		}
		if c.Stat().Direction == network.DirOutbound {
			ours = append(ours, c)
		} else {
			theirs = append(theirs, c)
		}
	}
	if len(ours) == 0 || len(theirs) == 0 {
		return
	}
	closing := ours
	if slices.ContainsFunc(ours, punching) {
		closing = theirs
	}
	for _, c := range closing {
		n.log.Debug("relayed connections both ways: closing one direction", "peer", p, "dir", c.Stat().Direction)
		_ = c.Close()
	}
}

// punching reports whether a DCUtR coordination stream is open on c.
func punching(c network.Conn) bool {
	return slices.ContainsFunc(c.GetStreams(), func(s network.Stream) bool { return s.Protocol() == holepunch.Protocol })
}

// punchAgain re-arms hole punching with p after an attempt that broke off
// (a protocol error: the stream was reset, often because the relayed
// connection under it was just replaced). go-libp2p runs one attempt per
// peer at a time and drops the trigger of a connection that arrives while
// one runs, so without this the pair could stay relayed. At most
// maxPunchRearms times per peer, after punchRearmDelay.
func (t *nat) punchAgain(p peer.ID) {
	n := t.n
	if !n.peers.rearmPunch(p, maxPunchRearms) {
		return
	}
	n.spawn(func() {
		timer := time.NewTimer(punchRearmDelay)
		defer timer.Stop()
		select {
		case <-n.ctx.Done():
		case <-timer.C:
			if t.theirPunch(p) {
				return
			}
			if t.redialPeer(p) {
				n.log.Debug("hole punch broke off: re-dialled through the relay", "peer", p)
			}
		}
	})
}

// theirPunch reports whether every connection to p is a relayed one that
// we dialled: then p received it and is the side whose DCUtR punches from
// it, and our own attempt that broke off was a spare one (ours went over a
// connection p did not dial, so p refused it). Re-dialling would close the
// connection under p's punch in flight.
func (t *nat) theirPunch(p peer.ID) bool {
	conns := t.n.h.Network().ConnsToPeer(p)
	for _, c := range conns {
		if !isRelayed(c.RemoteMultiaddr()) || c.Stat().Direction != network.DirOutbound {
			return false
		}
	}
	return len(conns) > 0
}

func (t *nat) natType(e event.EvtNATDeviceTypeChanged) {
	tr := "tcp"
	if e.TransportProtocol == network.NATTransportUDP {
		tr = "quic"
	}
	t.mu.Lock()
	t.symmetric[tr] = e.NatDeviceType == network.NATDeviceTypeEndpointDependent
	t.mu.Unlock()
}

// note keeps why the punch with e.Peer failed, or forgets it on success,
// and returns the reason now kept ("" on success).
func (t *nat) note(e EventHolePunch) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e.Success {
		delete(t.failed, e.Peer)
		return ""
	}
	if _, ok := t.failed[e.Peer]; !ok && len(t.failed) >= maxPunchNotes {
		t.evictLocked()
	}
	why := punchReason(e, t.symmetric)
	if had, ok := t.failed[e.Peer]; ok && why == punchBrokeOff {
		// An attempt cut short says less than the one before it.
		return had
	}
	t.failed[e.Peer] = why
	return why
}

const punchBrokeOff = "punch broke off (relayed connection ended)"

// evictLocked makes room: notes of peers we no longer have a connection
// to go first, else any one.
func (t *nat) evictLocked() {
	nw := t.n.h.Network()
	for p := range t.failed {
		if len(nw.ConnsToPeer(p)) == 0 { // relayed (limited) ones count too
			delete(t.failed, p)
		}
	}
	for p := range t.failed {
		if len(t.failed) < maxPunchNotes {
			return
		}
		delete(t.failed, p)
	}
}

// failure is why there is no direct connection to p after a failed punch,
// "" if the connection is direct or no punch with p failed.
func (t *nat) failure(p peer.ID, c ConnInfo) string {
	if c.Kind == ConnDirect {
		return ""
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.failed[p]
}

// punchReason says in one short phrase why a hole punch failed, from the
// DCUtR error (go-libp2p's wording) and what the host knows of its NAT.
func punchReason(e EventHolePunch, symmetric map[string]bool) string {
	err := e.Err
	switch {
	case strings.Contains(err, "protocols not supported"):
		return "peer not ready to punch (no public address learned)"
	case strings.Contains(err, "we have no public address"):
		return "no public address learned"
	case strings.Contains(err, "don't have any public addresses"),
		strings.Contains(err, "didn't receive any public addresses"),
		strings.Contains(err, "contain at least one address"):
		return "peer has no public address"
	case strings.HasPrefix(err, "protocol: "):
		return punchBrokeOff
	}
	if symmetric["tcp"] || symmetric["quic"] {
		return "symmetric NAT detected"
	}
	switch lower := strings.ToLower(err); {
	case strings.Contains(lower, "deadline"), strings.Contains(lower, "timeout"), strings.Contains(lower, "timed out"):
		return "timeout: no answer through the NATs (symmetric NAT or firewall)"
	case strings.Contains(lower, "refused"), strings.Contains(lower, "reset"):
		return "refused by the other side"
	}
	return "punch failed"
}
