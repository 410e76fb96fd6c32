package chat

import (
	"context"
	"slices"
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
func (n *Node) punchWhenReady() {
	sub, err := n.h.EventBus().Subscribe(new(event.EvtLocalProtocolsUpdated))
	if err != nil {
		n.log.Warn("hole punching: cannot watch local protocols", "err", err)
		return
	}
	defer sub.Close()
	if slices.Contains(n.h.Mux().Protocols(), holepunch.Protocol) {
		n.redialRelayed()
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
				n.redialRelayed()
				return
			}
		}
	}
}

// redialRelayed closes the relay-only connections to every peer and dials
// each again through the same relay.
func (n *Node) redialRelayed() {
	for _, p := range n.h.Network().Peers() {
		n.redialPeer(p)
	}
}

// redialPeer replaces the connections to p with a new one through the same
// relay, if every connection to p is relayed. It reports whether it did.
func (n *Node) redialPeer(p peer.ID) bool {
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
	n.mu.Lock()
	ps := n.peer(p)
	if g := time.Now().Add(redialTimeout); g.After(ps.graceUntil) {
		ps.graceUntil = g
	}
	n.mu.Unlock()
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
		n.mu.Lock()
		if g := time.Now().Add(relayGrace); g.Before(ps.graceUntil) {
			ps.graceUntil = g
		}
		n.mu.Unlock()
		n.connect(p, false) // reopen the chat stream if we had one
	})
}

// punchAgain re-arms hole punching with p after an attempt that broke off
// (a protocol error: the stream was reset, often because the relayed
// connection under it was just replaced). go-libp2p runs one attempt per
// peer at a time and drops the trigger of a connection that arrives while
// one runs, so without this the pair could stay relayed. At most
// maxPunchRearms times per peer, after punchRearmDelay.
func (n *Node) punchAgain(p peer.ID) {
	n.mu.Lock()
	ps := n.peer(p)
	if ps.punchRearms >= maxPunchRearms {
		n.mu.Unlock()
		return
	}
	ps.punchRearms++
	n.mu.Unlock()
	n.spawn(func() {
		t := time.NewTimer(punchRearmDelay)
		defer t.Stop()
		select {
		case <-n.ctx.Done():
		case <-t.C:
			if n.redialPeer(p) {
				n.log.Debug("hole punch broke off: re-dialled through the relay", "peer", p)
			}
		}
	})
}
