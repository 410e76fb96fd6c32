package transfer

import (
	"context"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	"github.com/multiformats/go-multiaddr"
	"github.com/stretchr/testify/require"
)

// TestRelayedConnectionWaitsForDirect: over a limited relayed connection
// the offer goes through, the data does not: the recipient shows
// waiting_direct until a direct connection appears, then the file moves.
func TestRelayedConnectionWaitsForDirect(t *testing.T) {
	mk := func(opts ...libp2p.Option) host.Host {
		h, err := libp2p.New(append([]libp2p.Option{libp2p.DisableMetrics()}, opts...)...)
		require.NoError(t, err)
		t.Cleanup(func() { h.Close() })
		return h
	}
	listen := libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0")
	relay := mk(listen, libp2p.EnableRelayService(), libp2p.ForceReachabilityPublic())
	// The sender listens nowhere: the recipient cannot dial it directly
	// (as behind a NAT) and must wait.
	ha, hb := mk(libp2p.NoListenAddrs, libp2p.EnableRelay()), mk(listen, libp2p.EnableRelay())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ri := peer.AddrInfo{ID: relay.ID(), Addrs: relay.Addrs()}
	require.NoError(t, hb.Connect(ctx, ri))
	_, err := client.Reserve(ctx, hb, ri)
	require.NoError(t, err)
	require.NoError(t, ha.Connect(ctx, ri))
	circuit := multiaddr.StringCast("/p2p/" + relay.ID().String() + "/p2p-circuit")
	require.NoError(t, ha.Connect(ctx, peer.AddrInfo{ID: hb.ID(), Addrs: []multiaddr.Multiaddr{relay.Addrs()[0].Encapsulate(circuit)}}))
	for _, c := range ha.Network().ConnsToPeer(hb.ID()) {
		require.True(t, c.Stat().Limited, "only a limited relayed connection so far")
	}

	a, b := newSvc(t, ha, "", ""), newSvc(t, hb, "", "")
	src, content := randomFile(t, t.TempDir(), 2*DefaultChunkSize) // far above the relay's 128 KiB
	info, _ := offerAndAccept(t, a, b, src, "")
	b.rec.wait(t, waitFor, func(e Event) bool {
		s, ok := e.(StateEvent)
		return ok && s.ID == info.ID && s.State == StateWaitingDirect
	})
	require.Equal(t, StateWaitingDirect, b.List()[0].State)
	require.Zero(t, a.BytesSent(), "no data over the relay")

	// A direct connection (what a hole punch gives): the transfer starts
	// (the recipient's notification of the new connection wakes it).
	require.NoError(t, ha.Connect(network.WithForceDirectDial(ctx, "test"), peer.AddrInfo{ID: hb.ID(), Addrs: hb.Addrs()}))
	done := b.rec.wait(t, waitFor, isDone(info.ID, true)).(DoneEvent)
	requireFile(t, done.Path, content)
}
