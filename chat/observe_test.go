package chat

import (
	"testing"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/multiformats/go-multiaddr"
	"github.com/stretchr/testify/require"
)

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
		n := newNode(t, r, "obs", "", func(c *Config) { c.DisableDHT = false })
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
