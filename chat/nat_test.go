package chat

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	"github.com/multiformats/go-multiaddr"
	"github.com/stretchr/testify/require"

	"github.com/p2p-messaging/p2p-messaging/rendezvous"
)

// relayedPair starts a rendezvous daemon with a relay service and two nodes,
// alice (public) and bob (private, in another room so alice learns none of
// his direct addresses), connected only through the relay.
func relayedPair(t *testing.T, opts ...relay.Option) (alice, bob *tnode, ctx context.Context) {
	// Loopback relay addresses are fine in these tests.
	opts = append(opts, relay.WithReservationAddressFilter(func(multiaddr.Multiaddr) bool { return true }))
	rh, err := libp2p.New(
		libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
		libp2p.ForceReachabilityPublic(),
		libp2p.DisableMetrics(),
		libp2p.EnableRelayService(opts...),
	)
	require.NoError(t, err)
	srv, err := rendezvous.NewServer(rh, rendezvous.WithExclusivePrefix(UserNamespacePrefix))
	require.NoError(t, err)
	t.Cleanup(func() { srv.Close(); rh.Close() })
	r := &rdvServer{h: rh, srv: srv, info: peer.AddrInfo{ID: rh.ID(), Addrs: rh.Addrs()}}

	alice = newNode(t, r, "alice", "")
	bob = newNode(t, r, "bob", "", func(c *testConfig) {
		c.Reachability = ReachabilityPrivate
		c.Room = "elsewhere"
	})
	// AutoRelay does not announce loopback relay addresses; build the
	// circuit address by hand and wait for bob's reservation.
	circuit := r.info.Addrs[0].Encapsulate(multiaddr.StringCast("/p2p/" + rh.ID().String() + "/p2p-circuit"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	require.Eventually(t, func() bool {
		alice.h.Peerstore().ClearAddrs(bob.ID())
		return alice.h.Connect(ctx, peer.AddrInfo{ID: bob.ID(), Addrs: []multiaddr.Multiaddr{circuit}}) == nil
	}, 20*time.Second, 50*time.Millisecond, "no relayed connection")
	return alice, bob, ctx
}

func connsOf(from, to *tnode) []string {
	var out []string
	for _, c := range from.h.Network().ConnsToPeer(to.ID()) {
		out = append(out, fmt.Sprintf("%s %s limited=%v", c.Stat().Direction, c.RemoteMultiaddr(), c.Stat().Limited))
	}
	return out
}

// Once hole punching becomes possible, relay-only peers are re-dialled
// through the relay (a fresh inbound relayed connection for the other side
// to punch from), the chat goes on, and presence does not flap.
func TestRedialRelayed(t *testing.T) {
	// Infinite limits: the relayed connection is not limited, the case
	// where a stream ending would otherwise count as the peer being gone.
	alice, bob, ctx := relayedPair(t, relay.WithInfiniteLimits())
	m, err := alice.Send(ctx, bob.ID().String(), "before")
	require.NoError(t, err)
	alice.rec.wait(t, 10*time.Second, isDelivered(m.ID))
	old := bob.h.Network().ConnsToPeer(alice.ID())
	require.Len(t, old, 1)
	require.True(t, isRelayed(old[0].RemoteMultiaddr()))

	alice.nat.redialRelayed()
	// On loopback the peers may also dial each other directly (behind NAT
	// only the relay gets through); either way the old connection is
	// replaced by one bob received.
	require.Eventually(t, func() bool {
		inbound := false
		for _, c := range bob.h.Network().ConnsToPeer(alice.ID()) {
			if c == old[0] {
				return false
			}
			inbound = inbound || c.Stat().Direction == network.DirInbound
		}
		return inbound
	}, 10*time.Second, 20*time.Millisecond, "old relayed connection not replaced: %v", connsOf(bob, alice))
	m2, err := alice.Send(ctx, bob.ID().String(), "after")
	require.NoError(t, err)
	bob.rec.wait(t, 10*time.Second, isMessage("after"))
	alice.rec.wait(t, 10*time.Second, isDelivered(m2.ID))
	require.Zero(t, alice.rec.count(func(e Event) bool {
		p, ok := e.(EventPresence)
		return ok && p.Peer == bob.ID() && !p.Online
	}), "bob never shown offline while re-dialled")
	require.Zero(t, bob.rec.count(func(e Event) bool {
		p, ok := e.(EventPresence)
		return ok && p.Peer == alice.ID() && !p.Online
	}), "alice never shown offline on the other side either")
}

// Text works over a relayed connection (limited or not), and when a direct
// connection appears the chat moves to a new stream on it.
func TestRelayedThenDirect(t *testing.T) {
	for _, c := range []struct {
		name    string
		limited bool
		opts    []relay.Option
	}{
		{"limited relay", true, nil},
		{"unlimited relay", false, []relay.Option{relay.WithInfiniteLimits()}},
	} {
		t.Run(c.name, func(t *testing.T) { testRelayedThenDirect(t, c.limited, c.opts...) })
	}
}

func testRelayedThenDirect(t *testing.T, limited bool, opts ...relay.Option) {
	alice, bob, ctx := relayedPair(t, opts...)
	direct := bob.h.Addrs()
	m, err := alice.Send(ctx, bob.ID().String(), "over the relay")
	require.NoError(t, err)
	bob.rec.wait(t, 10*time.Second, isMessage("over the relay"))
	alice.rec.wait(t, 10*time.Second, isDelivered(m.ID))
	_, _, cs := alice.peers.streams(bob.ID())
	require.NotNil(t, cs)
	require.True(t, cs.relayed, "first stream runs on the relayed connection")
	require.Equal(t, limited, cs.limited)
	alice.rec.wait(t, 5*time.Second, func(e Event) bool {
		c, ok := e.(EventConn)
		return ok && c.Peer == bob.ID() && c.Conn.Kind == ConnRelayed && c.Conn.Limited == limited
	})

	// A direct connection appears (as after a hole punch).
	var directLoop []multiaddr.Multiaddr
	for _, a := range direct {
		if !isRelayed(a) {
			directLoop = append(directLoop, a)
		}
	}
	require.NoError(t, alice.h.Connect(network.WithForceDirectDial(ctx, "test"), peer.AddrInfo{ID: bob.ID(), Addrs: directLoop}))
	alice.rec.wait(t, 10*time.Second, func(e Event) bool {
		c, ok := e.(EventConn)
		return ok && c.Peer == bob.ID() && c.Conn.Kind == ConnDirect && !c.Conn.Limited
	})
	require.Eventually(t, func() bool {
		total, relayed, _ := alice.peers.streams(bob.ID())
		return total > 0 && relayed == 0
	}, 10*time.Second, 20*time.Millisecond, "chat did not move off the relayed stream")
	m2, err := alice.Send(ctx, bob.ID().String(), "now direct")
	require.NoError(t, err)
	bob.rec.wait(t, 10*time.Second, isMessage("now direct"))
	alice.rec.wait(t, 10*time.Second, isDelivered(m2.ID))
	back, err := bob.Send(ctx, "alice", "direct back")
	require.NoError(t, err)
	alice.rec.wait(t, 10*time.Second, isMessage("direct back"))
	bob.rec.wait(t, 10*time.Second, isDelivered(back.ID))
	require.Equal(t, 1, bob.rec.count(isMessage("over the relay")), "no duplicate after the move")
}

// A failed hole punch shows in Peers as one phrase while the connection is
// relayed, a success clears it, and the notes stay bounded: a remote with
// many identities fills them, the notes of peers we are connected to stay.
func TestPunchFailureInPeers(t *testing.T) {
	alice, bob, ctx := relayedPair(t)
	m, err := alice.Send(ctx, bob.ID().String(), "hello")
	require.NoError(t, err)
	alice.rec.wait(t, 10*time.Second, isDelivered(m.ID))
	em, err := bob.h.EventBus().Emitter(new(EventHolePunch))
	require.NoError(t, err)
	defer em.Close()

	punchOf := func() string {
		for _, p := range bob.Peers() {
			if p.Peer == alice.ID() {
				require.Equal(t, ConnRelayed, p.Conn.Kind)
				return p.Punch
			}
		}
		return "alice not listed"
	}
	require.Empty(t, punchOf())
	require.NoError(t, em.Emit(EventHolePunch{Peer: alice.ID(), Attempts: 3,
		Err: "failed to dial: dial tcp4 11.2.0.3:4001: i/o timeout"}))
	const timeout = "timeout: no answer through the NATs (symmetric NAT or firewall)"
	// The event the user gets carries the same reason.
	bob.rec.wait(t, 5*time.Second, func(e Event) bool {
		h, ok := e.(EventHolePunch)
		return ok && h.Peer == alice.ID() && h.Reason == timeout
	})
	require.Equal(t, timeout, punchOf())
	// A later attempt cut short keeps the more telling reason.
	require.NoError(t, em.Emit(EventHolePunch{Peer: alice.ID(), Err: "protocol: failed to read CONNECT message from remote peer: stream reset"}))
	bob.rec.wait(t, 5*time.Second, func(e Event) bool {
		h, ok := e.(EventHolePunch)
		return ok && h.Peer == alice.ID() && h.Attempts == 0 && h.Reason == timeout
	})
	require.Equal(t, "timeout: no answer through the NATs (symmetric NAT or firewall)", punchOf())

	// Strangers' failures fill the notes up to the bound.
	for i := range maxPunchNotes + 40 {
		require.NoError(t, em.Emit(EventHolePunch{Peer: peer.ID(fmt.Sprintf("stranger-%d", i)), Err: "protocol: stream reset"}))
	}
	require.Eventually(t, func() bool {
		return bob.rec.count(func(e Event) bool { _, ok := e.(EventHolePunch); return ok }) == maxPunchNotes+42
	}, 10*time.Second, 10*time.Millisecond)
	bob.nat.mu.Lock()
	notes := len(bob.nat.failed)
	bob.nat.mu.Unlock()
	require.LessOrEqual(t, notes, maxPunchNotes)
	require.NotEmpty(t, punchOf(), "the connected peer's note survives eviction")

	require.NoError(t, em.Emit(EventHolePunch{Peer: alice.ID(), Success: true, Attempts: 1}))
	require.Eventually(t, func() bool { return punchOf() == "" }, 5*time.Second, 10*time.Millisecond)
}

func TestPunchReason(t *testing.T) {
	none := map[string]bool{}
	for err, want := range map[string]string{
		"protocol: failed to open hole-punching stream: failed to negotiate protocol: protocols not supported: [/libp2p/dcutr]": "peer not ready to punch (no public address learned)",
		"protocol: aborting hole punch initiation as we have no public address":                                                 "no public address learned",
		"protocol: didn't receive any public addresses in CONNECT":                                                              "peer has no public address",
		"protocol: failed to read CONNECT message from remote peer: stream reset":                                               "punch broke off (relayed connection ended)",
		"failed to dial: context deadline exceeded":                                                                             "timeout: no answer through the NATs (symmetric NAT or firewall)",
		"timeout: no recent network activity":                                                                                   "timeout: no answer through the NATs (symmetric NAT or firewall)",
		"dial tcp4 11.2.0.3:4001: connect: connection refused":                                                                  "refused by the other side",
		"something new": "punch failed",
	} {
		require.Equal(t, want, punchReason(EventHolePunch{Err: err}, none), err)
	}
	// Our own NAT found endpoint dependent names the cause.
	require.Equal(t, "symmetric NAT detected", punchReason(EventHolePunch{Err: "failed to dial: context deadline exceeded"}, map[string]bool{"quic": true}))
	require.Equal(t, "no public address learned", punchReason(EventHolePunch{Err: "protocol: aborting hole punch initiation as we have no public address"}, map[string]bool{"tcp": true}))
}
