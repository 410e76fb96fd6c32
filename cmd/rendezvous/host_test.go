package main

import (
	"testing"

	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/stretchr/testify/require"

	"github.com/p2p-messaging/p2p-messaging/internal/serverhost"
	"github.com/p2p-messaging/p2p-messaging/rendezvous"
)

func TestResourceLimitsSizedForTenThousandClients(t *testing.T) {
	limits, _, fds := serverhost.ResourceLimits(defaultConnsMax, 1<<20, rendezvous.DefaultLimits())
	p := limits.ToPartialLimitConfig()
	require.GreaterOrEqual(t, int(p.System.ConnsInbound), 10_000)
	require.GreaterOrEqual(t, int(p.System.Conns), 10_000)
	require.GreaterOrEqual(t, int(p.System.FD), 10_000)
	require.GreaterOrEqual(t, fds, 10_000)
	require.GreaterOrEqual(t, int(p.System.StreamsInbound), 20_000)
	require.GreaterOrEqual(t, int(p.Transient.ConnsInbound), 1_000)
	for _, proto := range []protocol.ID{rendezvous.ProtocolID, rendezvous.WatchProtocolID, dhtProtocol} {
		require.GreaterOrEqual(t, int(p.Protocol[proto].StreamsInbound), 10_000, proto)
	}
	low, high := serverhost.ConnWatermarks(defaultConnsMax)
	require.GreaterOrEqual(t, low, 10_000)
	require.Greater(t, high, low)
	require.Less(t, high, int(p.System.Conns))

	// Without an OS descriptor limit (Windows) descriptors follow conns.
	_, _, fds = serverhost.ResourceLimits(defaultConnsMax, 0, rendezvous.DefaultLimits())
	require.GreaterOrEqual(t, fds, defaultConnsMax)
}
