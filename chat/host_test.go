package chat

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ipfs/go-datastore"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/holepunch"
	"github.com/multiformats/go-multiaddr"
	"github.com/stretchr/testify/require"
)

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
			only := func(cfg *testConfig) { cfg.ListenAddrs = []multiaddr.Multiaddr{multiaddr.StringCast(c.listen)} }
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

// Behind NAT the node learns its public TCP address only from identify's
// observation on its daemon connection, and go-libp2p counts that
// observation only if the connection's local address is a listen address,
// i.e. the dial reused the listen port. A dial made before the host listens
// (the DHT used to bootstrap from inside libp2p.New) leaves from an
// ephemeral port: its observation is dropped, the DCUtR handler never
// appears and hole punching never starts. Every TCP connection to a daemon
// must therefore leave from the node's listen port. The race lost about one
// start in two in the Docker test bed; several nodes make it show here.
func TestDaemonConnUsesListenPort(t *testing.T) {
	r := newRendezvous(t)
	for i := range 8 {
		n := newNode(t, r, fmt.Sprintf("obs%d", i), "", func(c *testConfig) { c.DisableDHT = false })
		var listenPort string
		for _, a := range n.h.Network().ListenAddresses() {
			if p, err := a.ValueForProtocol(multiaddr.P_TCP); err == nil {
				listenPort = p
			}
		}
		require.NotEmpty(t, listenPort)
		conns := n.h.Network().ConnsToPeer(r.info.ID)
		require.NotEmpty(t, conns, "node %d: not connected to the daemon after Start", i)
		for _, c := range conns {
			require.Equal(t, network.DirOutbound, c.Stat().Direction)
			p, err := c.LocalMultiaddr().ValueForProtocol(multiaddr.P_TCP)
			require.NoError(t, err)
			require.Equal(t, listenPort, p, "node %d: daemon connection from %s, listening on port %s", i, c.LocalMultiaddr(), listenPort)
		}
		require.NoError(t, n.Close())
	}
}

// A chat host that serves the DHT keeps others' records in a bounded store
// on disk: one peer's ADD_PROVIDER spam stops at its per-peer cap.
func TestHostDHTStoreIsBounded(t *testing.T) {
	n := newNode(t, nil, "server", "", func(c *testConfig) { c.DisableDHT = false })
	st := n.host.dhtStore
	require.NotNil(t, st, "the DHT keeps its records in the bounded store")
	for i := range chatDHTLimits.MaxProvidersPerPeer + 10 {
		key := datastore.NewKey(fmt.Sprintf("/providers/k%d/spammer", i))
		require.NoError(t, st.Put(t.Context(), key, []byte{1}))
	}
	require.Equal(t, chatDHTLimits.MaxProvidersPerPeer, st.Stats().Providers)
}

// The tracer counts punches from start to end, and wait (what Host.Close
// uses before closing the libp2p host) returns only once none is left.
func TestHolePunchTracerWaitsForPunchesInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tr := &hpTracer{log: slog.New(slog.DiscardHandler), attempts: map[peer.ID]int{}}
		a, b := peer.ID("a"), peer.ID("b")
		tr.wait(t.Context()) // nothing in flight: returns at once

		tr.Trace(&holepunch.Event{Remote: a, Evt: &holepunch.StartHolePunchEvt{}})
		tr.Trace(&holepunch.Event{Remote: b, Evt: &holepunch.StartHolePunchEvt{}})
		done := make(chan struct{})
		go func() {
			tr.wait(context.Background())
			close(done)
		}()
		ended := func() bool {
			synctest.Wait()
			select {
			case <-done:
				return true
			default:
				return false
			}
		}
		require.False(t, ended(), "wait returned with two punches in flight")
		tr.Trace(&holepunch.Event{Remote: a, Evt: &holepunch.EndHolePunchEvt{}})
		require.False(t, ended(), "wait returned with one punch in flight")
		tr.Trace(&holepunch.Event{Remote: b, Evt: &holepunch.EndHolePunchEvt{Success: true}})
		require.True(t, ended(), "wait did not return after the last punch ended")

		// A new punch after the drain gets a fresh channel.
		tr.Trace(&holepunch.Event{Remote: a, Evt: &holepunch.StartHolePunchEvt{}})
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		start := time.Now()
		tr.wait(ctx) // bounded: returns when ctx ends
		require.Equal(t, time.Second, time.Since(start))
	})
}
