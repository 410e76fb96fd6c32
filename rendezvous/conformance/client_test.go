package conformance

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/core/record"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/p2p-messaging/p2p-messaging/rendezvous/pb"
)

// Written from the spec (DESIGN.md), deliberately not imported from the
// rendezvous package.
const (
	rendezvousProto protocol.ID = "/rendezvous/1.0.0"
	watchProto      protocol.ID = "/p2p-messaging/rendezvous/watch/1.0.0"
	maxFrame                    = 4 << 20 // what this client accepts from the server
	ioTimeout                   = 10 * time.Second
)

// client is an independent rendezvous client: one real libp2p host on loopback.
type client struct {
	t    testing.TB
	h    host.Host
	priv crypto.PrivKey
}

func newClient(t testing.TB) *client {
	t.Helper()
	priv, _, err := crypto.GenerateEd25519Key(nil)
	require.NoError(t, err)
	h, err := libp2p.New(
		libp2p.Identity(priv),
		libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.DisableRelay(),
	)
	require.NoError(t, err)
	c := &client{t: t, h: h, priv: priv}
	t.Cleanup(func() { _ = h.Close() })
	return c
}

// newQUICClient is a client host that speaks QUIC only.
func newQUICClient(t testing.TB) *client {
	t.Helper()
	priv, _, err := crypto.GenerateEd25519Key(nil)
	require.NoError(t, err)
	h, err := libp2p.New(
		libp2p.Identity(priv),
		libp2p.ListenAddrStrings("/ip4/127.0.0.1/udp/0/quic-v1"),
		libp2p.Transport(quic.NewTransport),
		libp2p.DisableRelay(),
	)
	require.NoError(t, err)
	t.Cleanup(func() { _ = h.Close() })
	return &client{t: t, h: h, priv: priv}
}

func (c *client) id() peer.ID { return c.h.ID() }

// record is this host's own signed peer record (a marshalled envelope).
func (c *client) record() []byte {
	return sealRecord(c.t, c.priv, peer.AddrInfo{ID: c.h.ID(), Addrs: c.h.Addrs()})
}

// sealRecord signs a peer record for info with priv, whatever info.ID is.
func sealRecord(t testing.TB, priv crypto.PrivKey, info peer.AddrInfo) []byte {
	t.Helper()
	env, err := record.Seal(peer.PeerRecordFromAddrInfo(info), priv)
	require.NoError(t, err)
	b, err := env.Marshal()
	require.NoError(t, err)
	return b
}

// open connects to d and opens a raw stream on proto, bounded by ioTimeout.
func (c *client) open(d *daemon, proto protocol.ID) *rawStream {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	require.NoError(c.t, c.h.Connect(ctx, d.info), "connect to daemon")
	s, err := c.h.NewStream(ctx, d.info.ID, proto)
	require.NoError(c.t, err, "open %s stream", proto)
	require.NoError(c.t, s.SetDeadline(time.Now().Add(ioTimeout)))
	rs := &rawStream{t: c.t, s: s, r: bufio.NewReader(s)}
	c.t.Cleanup(func() { _ = s.Reset() })
	return rs
}

func (c *client) stream(d *daemon) *rawStream { return c.open(d, rendezvousProto) }

// rawStream frames messages itself: unsigned varint length + body.
type rawStream struct {
	t testing.TB
	s network.Stream
	r *bufio.Reader
}

func (rs *rawStream) extend() { _ = rs.s.SetDeadline(time.Now().Add(ioTimeout)) }

func (rs *rawStream) writeRaw(b []byte) {
	rs.t.Helper()
	rs.extend()
	_, err := rs.s.Write(b)
	require.NoError(rs.t, err, "write to stream")
}

func frame(body []byte) []byte {
	return append(binary.AppendUvarint(nil, uint64(len(body))), body...)
}

func (rs *rawStream) send(m proto.Message) {
	rs.t.Helper()
	b, err := proto.Marshal(m)
	require.NoError(rs.t, err)
	rs.writeRaw(frame(b))
}

// readFrame reads one length-prefixed frame.
func (rs *rawStream) readFrame() ([]byte, error) {
	rs.extend()
	n, err := binary.ReadUvarint(rs.r)
	if err != nil {
		return nil, err
	}
	if n > maxFrame {
		return nil, fmt.Errorf("server frame of %d bytes", n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(rs.r, b); err != nil {
		return nil, fmt.Errorf("truncated frame: %w", err)
	}
	return b, nil
}

// recv reads one Message and returns it with its raw bytes.
func (rs *rawStream) recv() (*pb.Message, []byte) {
	rs.t.Helper()
	raw, err := rs.readFrame()
	require.NoError(rs.t, err, "read response frame")
	var m pb.Message
	require.NoError(rs.t, proto.Unmarshal(raw, &m), "response is not a valid Message: %x", raw)
	return &m, raw
}

// expectEnd asserts that the server ends the stream (EOF or reset) without
// sending a frame, within the stream deadline: a timeout means it hung.
func (rs *rawStream) expectEnd(what string) {
	rs.t.Helper()
	start := time.Now()
	raw, err := rs.readFrame()
	if err == nil {
		rs.t.Fatalf("%s: server answered %x instead of ending the stream", what, raw)
	}
	var ne interface{ Timeout() bool }
	if errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		rs.t.Fatalf("%s: stream still open after %v (hung): %v", what, time.Since(start), err)
	}
}

func (rs *rawStream) closeWrite() {
	rs.t.Helper()
	require.NoError(rs.t, rs.s.CloseWrite())
}

// ---- requests ----

type regReq struct {
	ns     *string
	ttl    *uint64
	record []byte // nil: absent
	proof  []byte // claim_proof (field 100); nil: absent
}

func regMsg(r regReq) *pb.Message {
	return &pb.Message{
		Type:     pb.Message_REGISTER.Enum(),
		Register: &pb.Message_Register{Ns: r.ns, Ttl: r.ttl, SignedPeerRecord: r.record, ClaimProof: r.proof},
	}
}

type discReq struct {
	ns     *string
	limit  *uint64
	cookie []byte
}

func discMsg(r discReq) *pb.Message {
	return &pb.Message{
		Type:     pb.Message_DISCOVER.Enum(),
		Discover: &pb.Message_Discover{Ns: r.ns, Limit: r.limit, Cookie: r.cookie},
	}
}

func unregMsg(ns string) *pb.Message {
	return &pb.Message{
		Type:       pb.Message_UNREGISTER.Enum(),
		Unregister: &pb.Message_Unregister{Ns: proto.String(ns)},
	}
}

// releaseMsg is an UNREGISTER that also gives up the name's lease.
func releaseMsg(ns string) *pb.Message {
	m := unregMsg(ns)
	m.Unregister.ReleaseName = proto.Bool(true)
	return m
}

// recvRegisterResponse reads a REGISTER_RESPONSE and checks its wire shape.
func (rs *rawStream) recvRegisterResponse() *pb.Message_RegisterResponse {
	rs.t.Helper()
	m, raw := rs.recv()
	checkRegisterResponseWire(rs.t, raw)
	return m.GetRegisterResponse()
}

// recvDiscoverResponse reads a DISCOVER_RESPONSE and checks its wire shape.
func (rs *rawStream) recvDiscoverResponse() *pb.Message_DiscoverResponse {
	rs.t.Helper()
	m, raw := rs.recv()
	checkDiscoverResponseWire(rs.t, raw)
	return m.GetDiscoverResponse()
}

// register sends REGISTER with this host's own record and the given ttl
// (0 = absent) on a fresh stream.
func (c *client) register(d *daemon, ns string, ttl uint64) *pb.Message_RegisterResponse {
	c.t.Helper()
	r := regReq{ns: proto.String(ns), record: c.record()}
	if ttl != 0 {
		r.ttl = proto.Uint64(ttl)
	}
	resp := c.registerReq(d, r)
	if bits, ok := claimDifficulty(resp); ok {
		// A new name: pay the claim's proof of work (claim_test.go).
		r.proof = claimProof(c.t, c.id(), ns, bits)
		resp = c.registerReq(d, r)
	}
	return resp
}

func (c *client) registerReq(d *daemon, r regReq) *pb.Message_RegisterResponse {
	c.t.Helper()
	rs := c.stream(d)
	rs.send(regMsg(r))
	resp := rs.recvRegisterResponse()
	_ = rs.s.Close()
	return resp
}

func (c *client) discover(d *daemon, r discReq) *pb.Message_DiscoverResponse {
	c.t.Helper()
	rs := c.stream(d)
	rs.send(discMsg(r))
	resp := rs.recvDiscoverResponse()
	_ = rs.s.Close()
	return resp
}

// mustRegister registers and requires OK.
func (c *client) mustRegister(d *daemon, ns string, ttl uint64) {
	c.t.Helper()
	resp := c.register(d, ns, ttl)
	require.Equal(c.t, pb.Message_OK, resp.GetStatus(), "register %q: %s", ns, resp.GetStatusText())
}

// discoverAll lists ns (limit 1000) and requires OK.
func (c *client) discoverNS(d *daemon, ns string) []*pb.Message_Register {
	c.t.Helper()
	resp := c.discover(d, discReq{ns: proto.String(ns), limit: proto.Uint64(1000)})
	require.Equal(c.t, pb.Message_OK, resp.GetStatus(), "discover %q: %s", ns, resp.GetStatusText())
	return resp.GetRegistrations()
}

// regPeer opens a registration's signed record and returns its peer ID.
func regPeer(t testing.TB, r *pb.Message_Register) peer.ID {
	t.Helper()
	_, rec, err := record.ConsumeEnvelope(r.GetSignedPeerRecord(), peer.PeerRecordEnvelopeDomain)
	require.NoError(t, err, "registration's signedPeerRecord must be a valid signed envelope")
	pr, ok := rec.(*peer.PeerRecord)
	require.True(t, ok, "signedPeerRecord must hold a peer record, got %T", rec)
	return pr.PeerID
}

func peersOf(t testing.TB, regs []*pb.Message_Register) map[peer.ID]*pb.Message_Register {
	t.Helper()
	m := make(map[peer.ID]*pb.Message_Register, len(regs))
	for _, r := range regs {
		m[regPeer(t, r)] = r
	}
	return m
}

// ---- raw wire inspection ----

type wireField struct {
	typ protowire.Type
	v   uint64 // varint value
	b   []byte // bytes value
}

// fields parses one protobuf message level into field number -> occurrences.
func fields(t testing.TB, b []byte) map[protowire.Number][]wireField {
	t.Helper()
	out := map[protowire.Number][]wireField{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		require.GreaterOrEqual(t, n, 0, "bad tag in %x", b)
		b = b[n:]
		f := wireField{typ: typ}
		switch typ {
		case protowire.VarintType:
			f.v, n = protowire.ConsumeVarint(b)
		case protowire.BytesType:
			f.b, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		require.GreaterOrEqual(t, n, 0, "bad field %d in %x", num, b)
		b = b[n:]
		out[num] = append(out[num], f)
	}
	return out
}

func requireVarint(t testing.TB, fs map[protowire.Number][]wireField, num protowire.Number, what string) uint64 {
	t.Helper()
	f := fs[num]
	require.Len(t, f, 1, "%s (field %d) must be written exactly once on the wire, even when zero", what, num)
	require.Equal(t, protowire.VarintType, f[0].typ, "%s (field %d) must be a varint", what, num)
	return f[0].v
}

func requireBytes(t testing.TB, fs map[protowire.Number][]wireField, num protowire.Number, what string) []byte {
	t.Helper()
	f := fs[num]
	require.Len(t, f, 1, "%s (field %d) must be present exactly once on the wire", what, num)
	require.Equal(t, protowire.BytesType, f[0].typ, "%s (field %d) must be length-delimited", what, num)
	return f[0].b
}

func checkRegisterResponseWire(t testing.TB, raw []byte) {
	t.Helper()
	top := fields(t, raw)
	require.EqualValues(t, pb.Message_REGISTER_RESPONSE, requireVarint(t, top, 1, "Message.type"))
	inner := fields(t, requireBytes(t, top, 3, "Message.registerResponse"))
	st := requireVarint(t, inner, 1, "RegisterResponse.status")
	if st == uint64(pb.Message_OK) {
		requireVarint(t, inner, 3, "RegisterResponse.ttl (OK response)")
	}
}

func checkDiscoverResponseWire(t testing.TB, raw []byte) {
	t.Helper()
	top := fields(t, raw)
	require.EqualValues(t, pb.Message_DISCOVER_RESPONSE, requireVarint(t, top, 1, "Message.type"))
	inner := fields(t, requireBytes(t, top, 6, "Message.discoverResponse"))
	st := requireVarint(t, inner, 3, "DiscoverResponse.status")
	if st != uint64(pb.Message_OK) {
		return
	}
	requireBytes(t, inner, 2, "DiscoverResponse.cookie (OK response)")
	for i, r := range inner[1] {
		require.Equal(t, protowire.BytesType, r.typ)
		rf := fields(t, r.b)
		ns := requireBytes(t, rf, 1, fmt.Sprintf("registrations[%d].ns", i))
		require.NotEmpty(t, ns, "registrations[%d].ns must name the registration's namespace", i)
		requireBytes(t, rf, 2, fmt.Sprintf("registrations[%d].signedPeerRecord", i))
		requireVarint(t, rf, 3, fmt.Sprintf("registrations[%d].ttl", i))
	}
}

func (c *client) connect(d *daemon) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	require.NoError(c.t, c.h.Connect(ctx, d.info))
}

// churn registers, discovers and re-registers rounds times on one stream,
// off the test goroutine (errors, not require).
func (c *client) churn(d *daemon, ns string, rounds int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*ioTimeout)
	defer cancel()
	s, err := c.h.NewStream(ctx, d.info.ID, rendezvousProto)
	if err != nil {
		return err
	}
	defer s.Reset()
	_ = s.SetDeadline(time.Now().Add(3 * ioTimeout))
	rs := &rawStream{s: s, r: bufio.NewReader(s)}
	rec := c.record()
	for i := 0; i < rounds; i++ {
		for _, m := range []*pb.Message{
			regMsg(regReq{ns: proto.String(ns), ttl: proto.Uint64(3600), record: rec}),
			discMsg(discReq{ns: proto.String(ns)}),
		} {
			b, err := proto.Marshal(m)
			if err != nil {
				return err
			}
			if _, err := s.Write(frame(b)); err != nil {
				return fmt.Errorf("round %d: write: %w", i, err)
			}
			raw, err := rs.readFrame()
			if err != nil {
				return fmt.Errorf("round %d: read: %w", i, err)
			}
			var resp pb.Message
			if err := proto.Unmarshal(raw, &resp); err != nil {
				return err
			}
			st := resp.GetRegisterResponse().GetStatus()
			if resp.GetType() == pb.Message_DISCOVER_RESPONSE {
				st = resp.GetDiscoverResponse().GetStatus()
			}
			if st != pb.Message_OK {
				return fmt.Errorf("round %d: %s: status %s", i, resp.GetType(), st)
			}
		}
	}
	return nil
}
