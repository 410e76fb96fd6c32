package chat

import (
	"context"
	"net"
	"testing"
	"time"

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
