package chat

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	"github.com/multiformats/go-multiaddr"
	"github.com/stretchr/testify/require"

	"github.com/p2p-messaging/p2p-messaging/rendezvous"
)

// A peer that stops answering (its network cut) goes offline after
// PingTimeout even though its connection stays up.
func TestPresenceOfflineWhenPeerGoesSilent(t *testing.T) {
	alice := newNode(t, nil, "alice", "")
	raw := rawPeer(t)
	s := rawStream(t, raw, alice.Node)
	defer s.Reset()
	_, err := s.Write(encode(t, helloF("silent")))
	require.NoError(t, err)
	alice.rec.wait(t, 5*time.Second, isPresence("silent", true))
	start := time.Now()
	// The raw peer never answers the pings.
	alice.rec.wait(t, 3*alice.cfg.PingTimeout, isPresence("silent", false))
	took := time.Since(start)
	t.Logf("offline after %s (ping timeout %s)", took, alice.cfg.PingTimeout)
	require.GreaterOrEqual(t, took, alice.cfg.PingTimeout-time.Second)
	require.Equal(t, network.Connected, alice.h.Network().Connectedness(raw.ID()), "the connection itself stayed up")
}

// With every rendezvous daemon gone, nicks still resolve through the DHT.
func TestResolveThroughDHT(t *testing.T) {
	boot, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.ForceReachabilityPublic(), libp2p.DisableMetrics())
	require.NoError(t, err)
	d, err := dht.New(boot, dht.Mode(dht.ModeServer), dht.ProtocolPrefix("/p2p-messaging"), dht.BootstrapPeers())
	require.NoError(t, err)
	t.Cleanup(func() { d.Close(); boot.Close() })
	bootInfo := peer.AddrInfo{ID: boot.ID(), Addrs: boot.Addrs()}
	withDHT := func(c *Config) {
		c.DisableDHT = false
		c.Rendezvous = []peer.AddrInfo{bootInfo} // a daemon with no rendezvous server: DHT only
	}
	alice := newNode(t, nil, "alice", "", withDHT)
	bob := newNode(t, nil, "bob", "", withDHT)
	var m Message
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		m, err = alice.Send(ctx, "bob", "found you in the DHT")
		return err == nil
	}, 30*time.Second, 200*time.Millisecond, "last error: %v", err)
	require.Equal(t, bob.ID(), m.Peer)
	bob.rec.wait(t, 10*time.Second, isMessage("found you in the DHT"))
	alice.rec.wait(t, 10*time.Second, isDelivered(m.ID))
}

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
	bob = newNode(t, r, "bob", "", func(c *Config) {
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

	alice.redialRelayed()
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

// Text works over a limited relayed connection, and when a direct
// connection appears the chat moves to a new stream on it.
func TestRelayedThenDirect(t *testing.T) {
	alice, bob, ctx := relayedPair(t)
	direct := bob.h.Addrs()
	m, err := alice.Send(ctx, bob.ID().String(), "over the relay")
	require.NoError(t, err)
	bob.rec.wait(t, 10*time.Second, isMessage("over the relay"))
	alice.rec.wait(t, 10*time.Second, isDelivered(m.ID))
	cs := alice.activeStream(bob.ID())
	require.NotNil(t, cs)
	require.True(t, cs.limited, "first stream runs on the limited relayed connection")
	alice.rec.wait(t, 5*time.Second, func(e Event) bool {
		c, ok := e.(EventConn)
		return ok && c.Peer == bob.ID() && c.Conn.Kind == ConnRelayed && c.Conn.Limited
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
		alice.mu.Lock()
		defer alice.mu.Unlock()
		ps := alice.peers[bob.ID()]
		if len(ps.streams) == 0 {
			return false
		}
		for s := range ps.streams {
			if s.limited {
				return false
			}
		}
		return true
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

func TestQUICAndIPv6(t *testing.T) {
	cases := []struct {
		name, listen, transport string
		ip                      int
	}{
		{"quic-v4", "/ip4/127.0.0.1/udp/0/quic-v1", "quic", 4},
		{"tcp-v6", "/ip6/::1/tcp/0", "tcp", 6},
		{"quic-v6", "/ip6/::1/udp/0/quic-v1", "quic", 6},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.ip == 6 {
				l, err := net.Listen("tcp6", "[::1]:0")
				if err != nil {
					t.Skip("no IPv6 loopback:", err)
				}
				l.Close()
			}
			r := newRendezvous(t)
			only := func(cfg *Config) { cfg.ListenAddrs = []multiaddr.Multiaddr{multiaddr.StringCast(c.listen)} }
			alice := newNode(t, r, "alice", "", only)
			bob := newNode(t, r, "bob", "", only)
			m := send(t, alice, "bob", "over "+c.name)
			bob.rec.wait(t, 10*time.Second, isMessage("over "+c.name))
			alice.rec.wait(t, 10*time.Second, isDelivered(m.ID))
			w, err := alice.Whois(context.Background(), "bob")
			require.NoError(t, err)
			require.Equal(t, ConnDirect, w.Conn.Kind)
			require.Equal(t, c.transport, w.Conn.Transport)
			require.Equal(t, c.ip, w.Conn.IPVersion)
		})
	}
}

func connsOf(from, to *tnode) []string {
	var out []string
	for _, c := range from.h.Network().ConnsToPeer(to.ID()) {
		out = append(out, fmt.Sprintf("%s %s limited=%v", c.Stat().Direction, c.RemoteMultiaddr(), c.Stat().Limited))
	}
	return out
}
