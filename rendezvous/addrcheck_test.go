package rendezvous

import (
	"net/netip"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/p2p-messaging/p2p-messaging/rendezvous/pb"
)

// recordWith signs with h's key a record of h listing addrs.
func recordWith(t testing.TB, h host.Host, addrs ...string) []byte {
	t.Helper()
	ms := make([]ma.Multiaddr, 0, len(addrs))
	for _, a := range addrs {
		ms = append(ms, ma.StringCast(a))
	}
	env, err := record.Seal(peer.PeerRecordFromAddrInfo(peer.AddrInfo{ID: h.ID(), Addrs: ms}), h.Peerstore().PrivKey(h.ID()))
	require.NoError(t, err)
	b, err := env.Marshal()
	require.NoError(t, err)
	return b
}

// recordFor is h's record listing ip (as seen by the server) on TCP 4001.
func recordFor(t testing.TB, h host.Host, ip string) []byte {
	t.Helper()
	a := netip.MustParseAddr(ip).Unmap()
	if a.Is4() {
		return recordWith(t, h, "/ip4/"+a.String()+"/tcp/4001")
	}
	return recordWith(t, h, "/ip6/"+a.String()+"/tcp/4001")
}

func TestAddrPolicy(t *testing.T) {
	self, err := peer.Decode("12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA")
	require.NoError(t, err)
	other, err := peer.Decode("12D3KooWPiYUNRLzyexvmN6A3ivLt3gXQ96VKeeGWpnLenDPXGqy")
	require.NoError(t, err)
	public := addrPolicy{
		self:     self,
		observed: []netip.Addr{netip.MustParseAddr("11.0.0.5"), netip.MustParseAddr("2a00:1:2:3::9")},
		ownIP:    func(ip netip.Addr) bool { return ip == netip.MustParseAddr("11.0.0.1") },
		relayAt: func(p peer.ID, ip netip.Addr) bool {
			return p == other && ip == netip.MustParseAddr("11.0.0.2")
		},
	}
	loop := public
	loop.observed = []netip.Addr{netip.MustParseAddr("127.0.0.1")}
	tests := []struct {
		addr string
		p    *addrPolicy
		ok   bool
		why  string
	}{
		{"/ip4/11.0.0.5/tcp/4001", &public, true, ""},
		{"/ip4/11.0.0.5/udp/4001/quic-v1", &public, true, ""},
		{"/ip6/2a00:1:2:3:aaaa::1/tcp/4001", &public, true, "same /64"},
		{"/ip4/11.0.0.6/tcp/4001", &public, false, "neither your observed address (observed=11.0.0.5)"},
		{"/ip4/8.8.8.8/tcp/53", &public, false, "is public and neither"},
		{"/ip6/2a00:1:2:4::9/tcp/4001", &public, false, "is public"},
		{"/ip4/11.0.0.1/tcp/4001/p2p/" + self.String() + "/p2p-circuit", &public, true, ""},
		{"/p2p/" + self.String() + "/p2p-circuit", &public, true, ""},
		{"/ip4/8.8.8.8/tcp/4001/p2p/" + self.String() + "/p2p-circuit", &public, false, "does not know relay"},
		{"/ip4/11.0.0.2/tcp/4001/p2p/" + other.String() + "/p2p-circuit", &public, true, "a relay this server is connected to there"},
		{"/ip4/11.0.0.3/tcp/4001/p2p/" + other.String() + "/p2p-circuit", &public, false, "does not know relay"},
		{"/p2p/" + other.String() + "/p2p-circuit", &public, true, "no IP to aim at"},
		{"/ip4/11.0.0.1/tcp/4001/p2p-circuit", &public, false, "without the relay's /p2p/<id>"},
		{"/dns4/example.com/tcp/4001", &public, false, "DNS name"},
		{"/dns4/example.com/tcp/4001/p2p/" + self.String() + "/p2p-circuit", &public, false, "DNS name"},
		{"/ip4/192.168.1.20/tcp/4001", &public, true, "private ranges reach only the dialer's own network"},
		{"/ip4/100.64.0.1/tcp/4001", &public, true, ""},
		{"/ip6/fd00::1/tcp/4001", &public, true, ""},
		{"/ip6/fe80::1/tcp/4001", &public, true, ""},
		{"/ip4/192.168.1.1/tcp/4001/p2p/" + other.String() + "/p2p-circuit", &public, true, ""},
		{"/ip4/127.0.0.1/tcp/4001", &public, false, "loopback address, but you are not on this server's host"},
		{"/ip6/::1/tcp/4001", &public, false, "loopback"},
		{"/ip4/127.0.0.1/tcp/4001", &loop, true, ""},
		{"/ip4/0.0.0.0/tcp/4001", &loop, false, "not an address one can dial"},
		{"/ip4/224.0.0.1/udp/9", &loop, false, "not an address one can dial"},
		{"/ip4/255.255.255.255/udp/9", &loop, false, "not an address one can dial"},
		{"/ip4/11.0.0.5/tcp/4001", &loop, false, "observed=127.0.0.1"},
	}
	for _, tt := range tests {
		why := tt.p.check(ma.StringCast(tt.addr))
		if tt.ok {
			require.Empty(t, why, "%s (%s)", tt.addr, tt.why)
		} else {
			require.Contains(t, why, tt.why, tt.addr)
		}
	}
	many := make([]ma.Multiaddr, 17)
	for i := range many {
		many[i] = ma.StringCast("/ip4/11.0.0.5/tcp/4001")
	}
	require.Empty(t, public.checkAddrs(many[:16], 16))
	require.Contains(t, public.checkAddrs(many, 16), "lists 17 addresses, more than 16")
}

// Attack: a record with someone else's public address aims the lobby's
// dialers at it. The server refuses it; the honest record (the observed
// address, loopback when on loopback, private addresses, a relay address
// through this server) is accepted.
func TestRecordCannotAimTraffic(t *testing.T) {
	var src sourceMap
	_, sh := startServer(t, WithLimits(testNameLimits()), withObservedIP(src.observe))
	h := newTestHost(t)
	connect(t, h, sh)
	rs := openRaw(t, h, sh.ID(), ProtocolID)
	relay := "/p2p/" + sh.ID().String() + "/p2p-circuit"

	// On loopback, as the host really is.
	src.set(h.ID(), "127.0.0.1")
	require.Equal(t, pb.Message_OK, rs.register("room", signedRecord(t, h), 0).GetStatus())
	require.Equal(t, pb.Message_OK, rs.register("room", recordWith(t, h, "/ip4/127.0.0.1/tcp/4001", relay, sh.Addrs()[0].String()+relay), 0).GetStatus())
	resp := rs.register("room", recordWith(t, h, "/ip4/127.0.0.1/tcp/4001", "/ip4/93.184.216.34/tcp/80"), 0)
	require.Equal(t, pb.Message_E_INVALID_SIGNED_PEER_RECORD, resp.GetStatus())
	require.Contains(t, resp.GetStatusText(), "/ip4/93.184.216.34/tcp/80 is public and neither your observed address (observed=127.0.0.1)")

	// Seen from a public address.
	src.set(h.ID(), "11.0.0.5")
	honest := recordWith(t, h, "/ip4/11.0.0.5/tcp/4001", "/ip4/11.0.0.5/udp/4001/quic-v1",
		"/ip4/192.168.1.20/tcp/4001", relay)
	require.Equal(t, pb.Message_OK, rs.register("room", honest, 0).GetStatus(), "the honest record")
	for _, bad := range []string{"/ip4/11.0.0.6/tcp/22", "/ip4/127.0.0.1/tcp/4001", "/dns4/victim.example/tcp/80"} {
		resp := rs.register("room", recordWith(t, h, "/ip4/11.0.0.5/tcp/4001", bad), 0)
		require.Equal(t, pb.Message_E_INVALID_SIGNED_PEER_RECORD, resp.GetStatus(), bad)
		require.Contains(t, resp.GetStatusText(), bad)
	}
	resp = rs.register("room", recordWith(t, h, "/ip4/8.8.8.8/tcp/4001"+relay), 0)
	require.Equal(t, pb.Message_E_INVALID_SIGNED_PEER_RECORD, resp.GetStatus(), "a relay address through this server at someone else's IP")
	// The refusal left the honest registration in place.
	require.Len(t, rs.discover("room", 0, nil).Registrations, 1)

	// Too many addresses.
	addrs := make([]string, DefaultMaxRecordAddrs+1)
	for i := range addrs {
		addrs[i] = "/ip4/11.0.0.5/tcp/" + itoa(4000+i)
	}
	resp = rs.register("room", recordWith(t, h, addrs...), 0)
	require.Equal(t, pb.Message_E_INVALID_SIGNED_PEER_RECORD, resp.GetStatus())
	require.Contains(t, resp.GetStatusText(), "lists 17 addresses, more than 16")
	require.Equal(t, pb.Message_OK, rs.register("room", recordWith(t, h, addrs[:16]...), 0).GetStatus())
}

// On a real loopback connection the observed address is 127.0.0.1.
func TestObservedIPLoopback(t *testing.T) {
	s, sh := startServer(t)
	h := newTestHost(t)
	connect(t, h, sh)
	conns := sh.Network().ConnsToPeer(h.ID())
	require.NotEmpty(t, conns)
	require.Equal(t, netip.MustParseAddr("127.0.0.1"), s.observedIP(conns[0]))
}

func TestRecordAddrsLimitValidate(t *testing.T) {
	l := DefaultLimits()
	l.MaxRecordAddrs = 0
	require.Error(t, l.validate())
}

// A client whose record the server refuses for an address registers, on
// that server and from then on, a record with only the addresses that
// server accepts (its observed address, private ones, relays through it).
func TestClientRegistersAcceptedAddrs(t *testing.T) {
	var src sourceMap
	reg := prometheus.NewRegistry()
	srv := ctStartServer(t, nil, "", WithLimits(ctLimits()), withObservedIP(src.observe), WithRegisterer(reg))
	extra := []ma.Multiaddr{
		ma.StringCast("/ip4/11.0.0.5/tcp/4001"),
		ma.StringCast("/ip4/8.8.8.8/tcp/4001"),
		ma.StringCast("/ip4/192.168.1.2/tcp/4001"),
		ma.StringCast("/p2p/" + srv.h.ID().String() + "/p2p-circuit"),
	}
	h, err := libp2p.New(
		libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
		libp2p.DisableRelay(),
		libp2p.AddrsFactory(func(as []ma.Multiaddr) []ma.Multiaddr { return append(as, extra...) }),
	)
	require.NoError(t, err)
	t.Cleanup(func() { h.Close() })
	src.set(h.ID(), "11.0.0.5")
	c := ctClient(t, h, []*ctServer{srv})
	ctx := ctCtx(t)

	require.NoError(t, c.Register(ctx, "room", time.Hour))
	regs, err := c.Discover(ctx, "room", 0)
	require.NoError(t, err)
	require.Len(t, regs, 1)
	var got []string
	for _, a := range regs[0].Peer.Addrs {
		got = append(got, a.String())
	}
	require.ElementsMatch(t, []string{"/ip4/11.0.0.5/tcp/4001", "/ip4/192.168.1.2/tcp/4001", "/p2p/" + srv.h.ID().String() + "/p2p-circuit"}, got,
		"loopback (the server sees 11.0.0.5) and someone else's 8.8.8.8 left out")
	require.Equal(t, 1.0, rejections(t, reg, rejectRecordAddrs))
	// Later registrations use the filtered record at once.
	_, err = c.RegisterOn(ctx, srv.h.ID(), "room2", time.Hour)
	require.NoError(t, err)
	require.Equal(t, 1.0, rejections(t, reg, rejectRecordAddrs))
}
