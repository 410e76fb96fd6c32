package rendezvous

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/core/record"
	"github.com/libp2p/go-msgio/pbio"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/p2p-messaging/p2p-messaging/rendezvous/pb"
)

// newTestHost starts a libp2p host listening on loopback TCP only.
func newTestHost(t testing.TB) host.Host {
	t.Helper()
	h, err := libp2p.New(
		libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
		libp2p.DisableRelay(),
	)
	require.NoError(t, err)
	t.Cleanup(func() { h.Close() })
	return h
}

// startServer starts a server on a fresh host.
func startServer(t testing.TB, opts ...ServerOption) (*Server, host.Host) {
	t.Helper()
	h := newTestHost(t)
	s, err := NewServer(h, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s, h
}

func connect(t testing.TB, from, to host.Host) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, from.Connect(ctx, peer.AddrInfo{ID: to.ID(), Addrs: to.Addrs()}))
}

// signedRecord returns h's own signed peer record, as a client registers it.
func signedRecord(t testing.TB, h host.Host) []byte {
	t.Helper()
	return sealRecord(t, h, h.ID())
}

// sealRecord signs with h's key a record naming id.
func sealRecord(t testing.TB, h host.Host, id peer.ID) []byte {
	t.Helper()
	rec := peer.PeerRecordFromAddrInfo(peer.AddrInfo{ID: id, Addrs: h.Addrs()})
	env, err := record.Seal(rec, h.Peerstore().PrivKey(h.ID()))
	require.NoError(t, err)
	b, err := env.Marshal()
	require.NoError(t, err)
	return b
}

// rawStream speaks the wire format directly, as an independent client would.
type rawStream struct {
	t testing.TB
	s network.Stream
	r pbio.Reader
	w pbio.Writer
}

func openRaw(t testing.TB, from host.Host, to peer.ID, proto protocol.ID) *rawStream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := from.NewStream(ctx, to, proto)
	require.NoError(t, err)
	require.NoError(t, s.SetDeadline(time.Now().Add(20*time.Second)))
	t.Cleanup(func() { s.Reset() })
	return &rawStream{t: t, s: s, r: pbio.NewDelimitedReader(s, 16<<20), w: pbio.NewDelimitedWriter(s)}
}

func (r *rawStream) send(m proto.Message) {
	r.t.Helper()
	require.NoError(r.t, r.w.WriteMsg(m))
}

func (r *rawStream) recv() *pb.Message {
	r.t.Helper()
	var m pb.Message
	require.NoError(r.t, r.r.ReadMsg(&m))
	return &m
}

func (r *rawStream) register(ns string, rec []byte, ttl uint64) *pb.Message_RegisterResponse {
	r.t.Helper()
	reg := &pb.Message_Register{Ns: proto.String(ns), SignedPeerRecord: rec}
	if ttl != 0 {
		reg.Ttl = proto.Uint64(ttl)
	}
	reg.ClaimProof = testClaimProof(r.t, r.s.Conn().LocalPeer(), ns) // claim_test.go
	r.send(&pb.Message{Type: pb.Message_REGISTER.Enum(), Register: reg})
	m := r.recv()
	require.Equal(r.t, pb.Message_REGISTER_RESPONSE, m.GetType())
	require.NotNil(r.t, m.RegisterResponse)
	require.NotNil(r.t, m.RegisterResponse.Status, "status must always be written")
	return m.RegisterResponse
}

func (r *rawStream) discover(ns string, limit uint64, cookie []byte) *pb.Message_DiscoverResponse {
	r.t.Helper()
	d := &pb.Message_Discover{Cookie: cookie}
	if ns != "" {
		d.Ns = proto.String(ns)
	}
	if limit != 0 {
		d.Limit = proto.Uint64(limit)
	}
	r.send(&pb.Message{Type: pb.Message_DISCOVER.Enum(), Discover: d})
	m := r.recv()
	require.Equal(r.t, pb.Message_DISCOVER_RESPONSE, m.GetType())
	require.NotNil(r.t, m.DiscoverResponse)
	require.NotNil(r.t, m.DiscoverResponse.Status, "status must always be written")
	return m.DiscoverResponse
}

func (r *rawStream) unregister(ns string) {
	r.t.Helper()
	r.send(&pb.Message{Type: pb.Message_UNREGISTER.Enum(), Unregister: &pb.Message_Unregister{Ns: proto.String(ns)}})
}

// peersOf lists the peer IDs in a discover response.
func peersOf(t testing.TB, resp *pb.Message_DiscoverResponse) []peer.ID {
	t.Helper()
	var ids []peer.ID
	for _, r := range resp.Registrations {
		_, rec, err := record.ConsumeEnvelope(r.SignedPeerRecord, peer.PeerRecordEnvelopeDomain)
		require.NoError(t, err)
		ids = append(ids, rec.(*peer.PeerRecord).PeerID)
	}
	return ids
}

var ioEOF = io.EOF

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

type hostLike = host.Host

// newUnmanagedHost is newTestHost without per-test cleanup, for fuzz
// targets that share hosts across iterations.
func newUnmanagedHost(t testing.TB) host.Host {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay())
	require.NoError(t, err)
	return h
}

// fakePeer is a key pair and its signed peer record, without a host.
type fakePeer struct {
	id  peer.ID
	rec []byte
}

func newFakePeer(t testing.TB) fakePeer {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(nil)
	require.NoError(t, err)
	id, err := peer.IDFromPrivateKey(k)
	require.NoError(t, err)
	addr := ma.StringCast("/ip4/127.0.0.1/tcp/4001")
	env, err := record.Seal(peer.PeerRecordFromAddrInfo(peer.AddrInfo{ID: id, Addrs: []ma.Multiaddr{addr}}), k)
	require.NoError(t, err)
	b, err := env.Marshal()
	require.NoError(t, err)
	return fakePeer{id: id, rec: b}
}

// inject registers fake peers directly in the store, as if they had
// registered over the wire.
func inject(t testing.TB, s *Server, ns string, peers ...fakePeer) {
	t.Helper()
	now := s.cfg.now().UnixNano()
	for _, p := range peers {
		res := s.st.register(p.id, ns, p.rec, int64(DefaultTTL), now, false, &s.lim)
		require.Equal(t, StatusOK, res.status, res.text)
	}
}

func fakePeers(t testing.TB, n int) []fakePeer {
	ps := make([]fakePeer, n)
	for i := range ps {
		ps[i] = newFakePeer(t)
	}
	return ps
}

func ids(ps []fakePeer) []peer.ID {
	out := make([]peer.ID, len(ps))
	for i, p := range ps {
		out[i] = p.id
	}
	return out
}
