package rendezvous

// Helpers of the client tests, prefixed ct.

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/p2p-messaging/p2p-messaging/rendezvous/pb"
)

func ctHost(t *testing.T, key crypto.PrivKey, listen string) host.Host {
	t.Helper()
	if listen == "" {
		listen = "/ip4/127.0.0.1/tcp/0"
	}
	opts := []libp2p.Option{
		libp2p.NoTransports,
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.ListenAddrStrings(listen),
		libp2p.DisableRelay(),
		libp2p.DisableMetrics(),
	}
	if key != nil {
		opts = append(opts, libp2p.Identity(key))
	}
	h, err := libp2p.New(opts...)
	require.NoError(t, err)
	t.Cleanup(func() { h.Close() })
	return h
}

type ctServer struct {
	t    *testing.T
	key  crypto.PrivKey
	h    host.Host
	s    *Server
	addr ma.Multiaddr
}

// ctUserPrefix is an exclusive prefix, as the chat's user names use.
const ctUserPrefix = "p2p-messaging/user/"

func ctLimits() Limits {
	l := DefaultLimits()
	l.MinTTL = time.Second
	return l
}

// ctStartServer starts a rendezvous server on a fresh host with a fresh data
// dir. listen "" picks a free loopback port.
func ctStartServer(t *testing.T, key crypto.PrivKey, listen string, opts ...ServerOption) *ctServer {
	t.Helper()
	if key == nil {
		var err error
		key, _, err = crypto.GenerateEd25519Key(nil)
		require.NoError(t, err)
	}
	h := ctHost(t, key, listen)
	opts = append([]ServerOption{WithDataDir(t.TempDir()), WithLimits(ctLimits())}, opts...)
	s, err := NewServer(h, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return &ctServer{t: t, key: key, h: h, s: s, addr: h.Addrs()[0]}
}

func (s *ctServer) info() peer.AddrInfo {
	return peer.AddrInfo{ID: s.h.ID(), Addrs: s.h.Addrs()}
}

// stop shuts the server and its host down, as a crashed daemon would.
func (s *ctServer) stop() {
	require.NoError(s.t, s.s.Close())
	require.NoError(s.t, s.h.Close())
}

// restart brings the server back on the same identity and address with a
// fresh (empty) data dir.
func (s *ctServer) restart() *ctServer {
	s.t.Helper()
	var ns *ctServer
	require.Eventually(s.t, func() bool {
		h, err := libp2p.New(libp2p.NoTransports, libp2p.Transport(tcp.NewTCPTransport),
			libp2p.ListenAddrs(s.addr), libp2p.DisableRelay(), libp2p.DisableMetrics(), libp2p.Identity(s.key))
		if err != nil {
			return false // the port may take a moment to free up
		}
		s.t.Cleanup(func() { h.Close() })
		srv, err := NewServer(h, WithDataDir(s.t.TempDir()), WithLimits(ctLimits()))
		require.NoError(s.t, err)
		s.t.Cleanup(func() { srv.Close() })
		ns = &ctServer{t: s.t, key: s.key, h: h, s: srv, addr: s.addr}
		return true
	}, 10*time.Second, 20*time.Millisecond)
	return ns
}

func ctClient(t *testing.T, h host.Host, servers []*ctServer, opts ...ClientOption) *Client {
	t.Helper()
	infos := make([]peer.AddrInfo, len(servers))
	for i, s := range servers {
		infos[i] = s.info()
	}
	opts = append([]ClientOption{WithRetryBackoff(20*time.Millisecond, 200*time.Millisecond)}, opts...)
	c, err := NewClient(h, infos, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

func ctCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func ctIDs(regs []Registration) []peer.ID {
	ids := make([]peer.ID, len(regs))
	for i, r := range regs {
		ids[i] = r.Peer.ID
	}
	return ids
}

func ctHasAddr(addrs []ma.Multiaddr, a ma.Multiaddr) bool {
	return slices.ContainsFunc(addrs, a.Equal)
}

// ctSignedRecord returns a marshalled signed peer record for id, signed by
// key (which need not be id's: that is the forgery case).
func ctSignedRecord(t testing.TB, key crypto.PrivKey, id peer.ID, addrs ...string) []byte {
	t.Helper()
	ai := peer.AddrInfo{ID: id}
	for _, a := range addrs {
		ai.Addrs = append(ai.Addrs, ctAddrTB(t, a))
	}
	env, err := record.Seal(peer.PeerRecordFromAddrInfo(ai), key)
	require.NoError(t, err)
	b, err := env.Marshal()
	require.NoError(t, err)
	return b
}

func ctKey(t testing.TB) (crypto.PrivKey, peer.ID) {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(nil)
	require.NoError(t, err)
	id, err := peer.IDFromPrivateKey(k)
	require.NoError(t, err)
	return k, id
}

func ctAddrTB(t testing.TB, s string) ma.Multiaddr {
	t.Helper()
	a, err := ma.NewMultiaddr(s)
	require.NoError(t, err)
	return a
}

func ctDiscoverResponse(t testing.TB, regs ...*pb.Message_Register) []byte {
	t.Helper()
	b, err := proto.Marshal(&pb.Message{
		Type: pb.Message_DISCOVER_RESPONSE.Enum(),
		DiscoverResponse: &pb.Message_DiscoverResponse{
			Registrations: regs,
			Cookie:        []byte("01234567room"),
			Status:        StatusOK.Enum(),
		},
	})
	require.NoError(t, err)
	return b
}

func ctNext(t *testing.T, ch <-chan WatchEvent) WatchEvent {
	t.Helper()
	select {
	case ev, ok := <-ch:
		require.True(t, ok, "watch channel closed")
		return ev
	case <-time.After(15 * time.Second):
		t.Fatal("no watch event")
		return WatchEvent{}
	}
}

func ctAddr(t *testing.T, s string) ma.Multiaddr {
	t.Helper()
	a, err := ma.NewMultiaddr(s)
	require.NoError(t, err)
	return a
}
