package serverhost

import (
	"testing"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peer"
	manet "github.com/multiformats/go-multiaddr/net"
	"github.com/stretchr/testify/require"
)

// A host listening on every interface gets one address per interface, each
// with its peer ID, loopback first.
func TestLocalAddrs(t *testing.T) {
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/0.0.0.0/tcp/0", "/ip6/::/udp/0/quic-v1"))
	require.NoError(t, err)
	defer h.Close()
	addrs := LocalAddrs(h)
	require.NotEmpty(t, addrs)
	require.True(t, manet.IsIPLoopback(addrs[0]), "loopback first: %v", addrs)
	seen := map[string]bool{}
	for i, a := range addrs {
		ai, err := peer.AddrInfoFromP2pAddr(a)
		require.NoError(t, err)
		require.Equal(t, h.ID(), ai.ID)
		require.False(t, seen[a.String()], "duplicate %s", a)
		seen[a.String()] = true
		if i > 0 {
			require.LessOrEqual(t, addrRank(addrs[i-1]), addrRank(a), "order: %v", addrs)
		}
	}
}
