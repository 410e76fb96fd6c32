package chat

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	"github.com/libp2p/go-libp2p/p2p/protocol/holepunch"
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

// noDirect is what two NATs in the way do to alice and bob: no direct
// connection between them, in either direction; the relay gets through.
type noDirect struct{ a, b peer.ID }

func (g *noDirect) pair(p peer.ID) bool { return p == g.a || p == g.b }

func (g *noDirect) InterceptPeerDial(peer.ID) bool { return true }
func (g *noDirect) InterceptAddrDial(p peer.ID, a multiaddr.Multiaddr) bool {
	return !g.pair(p) || isRelayed(a)
}
func (g *noDirect) InterceptAccept(network.ConnMultiaddrs) bool { return true }
func (g *noDirect) InterceptSecured(_ network.Direction, p peer.ID, c network.ConnMultiaddrs) bool {
	return !g.pair(p) || isRelayed(c.RemoteMultiaddr())
}
func (g *noDirect) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) { return true, 0 }

// gatedNode is a private chat node whose host refuses direct connections
// with the other of the gate's pair, in a room of its own.
func gatedNode(t *testing.T, r *rdvServer, nick string, key crypto.PrivKey, gate *noDirect) *tnode {
	h, err := libp2p.New(
		libp2p.Identity(key),
		libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
		libp2p.ForceReachabilityPrivate(),
		libp2p.DisableMetrics(),
		libp2p.EnableAutoRelayWithStaticRelays([]peer.AddrInfo{r.info}),
		libp2p.ConnectionGater(gate),
	)
	require.NoError(t, err)
	dir := t.TempDir()
	n, err := New(h, Config{Nick: nick, Room: "room-" + nick, DataDir: dir, Rendezvous: []peer.AddrInfo{r.info},
		Logger: testLogger().With("node", nick), PingInterval: time.Second, PingTimeout: 3 * time.Second,
		RetryInterval: 200 * time.Millisecond})
	require.NoError(t, err)
	tn := &tnode{Node: n, host: &Host{Host: h, punches: &hpTracer{attempts: map[peer.ID]int{}}}, rec: newRecorder(n.Events()), dir: dir}
	t.Cleanup(func() { tn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, n.Start(ctx))
	tn.rec.wait(t, 10*time.Second, func(e Event) bool { _, ok := e.(EventReady); return ok })
	return tn
}

// Two peers that dial each other through the relay at about the same time
// end up with one relayed connection each way; DCUtR would then run from
// both sides and each run's stream could go over the connection the other
// side refuses. The node keeps one direction (the larger peer ID decides),
// and the chat goes on over what is left.
func TestOneRelayedDirection(t *testing.T) {
	rh, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.ForceReachabilityPublic(), libp2p.DisableMetrics(),
		libp2p.EnableRelayService(relay.WithInfiniteLimits(), relay.WithReservationAddressFilter(func(multiaddr.Multiaddr) bool { return true })))
	require.NoError(t, err)
	srv, err := rendezvous.NewServer(rh, rendezvous.WithExclusivePrefix(UserNamespacePrefix))
	require.NoError(t, err)
	t.Cleanup(func() { srv.Close(); rh.Close() })
	r := &rdvServer{h: rh, srv: srv, info: peer.AddrInfo{ID: rh.ID(), Addrs: rh.Addrs()}}
	ka, _, err := crypto.GenerateEd25519Key(nil)
	require.NoError(t, err)
	kb, _, err := crypto.GenerateEd25519Key(nil)
	require.NoError(t, err)
	ida, _ := peer.IDFromPrivateKey(ka)
	idb, _ := peer.IDFromPrivateKey(kb)
	gate := &noDirect{a: ida, b: idb}
	alice := gatedNode(t, r, "alice", ka, gate)
	bob := gatedNode(t, r, "bob", kb, gate)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)

	// Both hold a reservation (AutoRelay does not announce loopback
	// circuit addresses; the dials below build them by hand).
	circuit := func(to peer.ID) peer.AddrInfo {
		a := r.info.Addrs[0].Encapsulate(multiaddr.StringCast("/p2p/" + rh.ID().String() + "/p2p-circuit"))
		return peer.AddrInfo{ID: to, Addrs: []multiaddr.Multiaddr{a}}
	}
	lctx := network.WithAllowLimitedConn(ctx, "test")
	require.Eventually(t, func() bool {
		if alice.h.Connect(lctx, circuit(bob.ID())) != nil || bob.h.Connect(lctx, circuit(alice.ID())) != nil {
			return false
		}
		_ = alice.h.Network().ClosePeer(bob.ID())
		return true
	}, 20*time.Second, 50*time.Millisecond, "no reservations")

	// Both dial at once, until a connection each way exists at the same
	// time (a dial may find the other's connection already there).
	both := make(chan struct{}, 1)
	alice.h.Network().Notify(&network.NotifyBundle{ConnectedF: func(nw network.Network, c network.Conn) {
		if c.RemotePeer() != bob.ID() {
			return
		}
		seen := map[network.Direction]bool{}
		for _, c := range nw.ConnsToPeer(bob.ID()) {
			seen[c.Stat().Direction] = true
		}
		if len(seen) == 2 {
			select {
			case both <- struct{}{}:
			default:
			}
		}
	}})
	for i := 0; len(both) == 0; i++ {
		require.Less(t, i, 50, "no two relayed connections at once in 50 tries")
		require.NoError(t, alice.h.Network().ClosePeer(bob.ID()))
		start := make(chan struct{})
		var wg sync.WaitGroup
		for _, d := range []struct {
			from *tnode
			to   peer.ID
		}{{alice, bob.ID()}, {bob, alice.ID()}} {
			wg.Go(func() {
				<-start
				_ = d.from.h.Connect(lctx, circuit(d.to))
			})
		}
		close(start)
		wg.Wait()
	}
	dirs := func(from, to *tnode) map[network.Direction]int {
		out := map[network.Direction]int{}
		for _, c := range from.h.Network().ConnsToPeer(to.ID()) {
			require.True(t, isRelayed(c.RemoteMultiaddr()), "direct connection through the gate: %v", connsOf(from, to))
			out[c.Stat().Direction]++
		}
		return out
	}
	require.Eventually(t, func() bool {
		a, b := dirs(alice, bob), dirs(bob, alice)
		return len(a) == 1 && len(b) == 1
	}, 10*time.Second, 20*time.Millisecond, "relayed connections both ways: alice %v, bob %v", connsOf(alice, bob), connsOf(bob, alice))
	// The larger peer ID kept the connections the other dialled: it is
	// the side that punches.
	larger, smaller := alice, bob
	if alice.ID() < bob.ID() {
		larger, smaller = bob, alice
	}
	require.Equal(t, []network.Direction{network.DirInbound}, slices.Collect(maps.Keys(dirs(larger, smaller))))

	// The chat goes on over what is left.
	m, err := alice.Send(ctx, bob.ID().String(), "after")
	require.NoError(t, err)
	bob.rec.wait(t, 10*time.Second, isMessage("after"))
	alice.rec.wait(t, 10*time.Second, isDelivered(m.ID))
	back, err := bob.Send(ctx, "alice", "back")
	require.NoError(t, err)
	alice.rec.wait(t, 10*time.Second, isMessage("back"))
	bob.rec.wait(t, 10*time.Second, isDelivered(back.ID))

	// A broken-off punch is not re-armed by the side that dialled every
	// relayed connection: the other side punches from them.
	require.True(t, smaller.nat.theirPunch(larger.ID()))
	require.False(t, larger.nat.theirPunch(smaller.ID()))

	// A connection whose DCUtR coordination stream is open is one a run is
	// under way on (oneDirection then keeps it).
	// (A handler for the DCUtR protocol makes the node re-dial its
	// relayed peers, as when hole punching becomes ready: the stream is
	// opened once the connection is back.)
	require.False(t, punching(smaller.h.Network().ConnsToPeer(larger.ID())[0]))
	held := make(chan struct{})
	t.Cleanup(func() { close(held) })
	larger.h.SetStreamHandler(holepunch.Protocol, func(s network.Stream) {
		<-held
		_ = s.Reset()
	})
	var st network.Stream
	require.Eventually(t, func() bool {
		st, err = smaller.h.NewStream(lctx, larger.ID(), holepunch.Protocol)
		return err == nil
	}, 10*time.Second, 50*time.Millisecond, "no DCUtR stream: %v", err)
	require.True(t, punching(st.Conn()))
	_, err = st.Write([]byte{0}) // the initiator's CONNECT would follow at once
	require.NoError(t, err)
	require.Eventually(t, func() bool { return slices.ContainsFunc(larger.h.Network().ConnsToPeer(smaller.ID()), punching) },
		5*time.Second, 10*time.Millisecond, "the receiving side sees the stream")
	require.NoError(t, st.Reset())
	require.Eventually(t, func() bool { return !punching(st.Conn()) }, 5*time.Second, 10*time.Millisecond)

}
