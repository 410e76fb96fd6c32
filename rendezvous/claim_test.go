package rendezvous

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/p2p-messaging/p2p-messaging/rendezvous/pb"
)

// testClaimDifficulty keeps the proofs of raw test registrations cheap.
const testClaimDifficulty = 8

// testNameLimits are DefaultLimits with cheap claim proofs.
func testNameLimits() Limits {
	l := DefaultLimits()
	l.ClaimDifficulty = testClaimDifficulty
	return l
}

// testClaimProof is the proof rawStream.register attaches to a name under
// ctUserPrefix (nil elsewhere).
func testClaimProof(t testing.TB, id peer.ID, ns string) []byte {
	t.Helper()
	if !strings.HasPrefix(ns, ctUserPrefix) {
		return nil
	}
	p, err := ComputeClaimProof(context.Background(), id, ns, testClaimDifficulty)
	require.NoError(t, err)
	return p
}

// registerProof sends a REGISTER with exactly the given claim proof.
func (r *rawStream) registerProof(ns string, rec, proof []byte) *pb.Message_RegisterResponse {
	r.t.Helper()
	r.send(&pb.Message{Type: pb.Message_REGISTER.Enum(), Register: &pb.Message_Register{
		Ns: proto.String(ns), SignedPeerRecord: rec, ClaimProof: proof,
	}})
	m := r.recv()
	require.NotNil(r.t, m.RegisterResponse)
	return m.RegisterResponse
}

// The claim hash, byte for byte as the package doc defines it.
func TestClaimHashInput(t *testing.T) {
	id, err := peer.Decode("12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA")
	require.NoError(t, err)
	ns := ctUserPrefix + "alice"
	nonce := []byte{0, 0, 0, 0, 0, 0, 0, 42}
	in := claimHashInput(nil, id, ns, nonce)
	want := append(append(append(append([]byte("p2p-messaging name claim"), []byte(id)...), 0), ns...), nonce...)
	require.Equal(t, want, in)
	sum := sha256.Sum256(in)
	// Computed independently (Python hashlib) from the doc's definition.
	require.Equal(t, "f6687df35d323bfc6947e1ba78afb313e6e27358cc7a70753105b0ba6a9665aa", hex.EncodeToString(sum[:]))
	require.False(t, CheckClaimProof(id, ns, nonce, 1), "0xf6 has no leading zero bit")
	require.Equal(t, 0, leadingZeroBits([32]byte{0x80}))
	require.Equal(t, 7, leadingZeroBits([32]byte{0x01}))
	require.Equal(t, 12, leadingZeroBits([32]byte{0, 0x08}))
	require.Equal(t, 256, leadingZeroBits([32]byte{}))

	for d := 0; d <= 12; d += 4 {
		p, err := ComputeClaimProof(context.Background(), id, ns, d)
		require.NoError(t, err)
		require.True(t, CheckClaimProof(id, ns, p, d))
		require.GreaterOrEqual(t, leadingZeroBits(sha256.Sum256(claimHashInput(nil, id, ns, p))), d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = ComputeClaimProof(ctx, id, ns, MaxClaimDifficulty)
	require.ErrorIs(t, err, context.Canceled)
	_, err = ComputeClaimProof(context.Background(), id, ns, MaxClaimDifficulty+1)
	require.Error(t, err)
	require.False(t, CheckClaimProof(id, ns, nil, 1))
	require.False(t, CheckClaimProof(id, ns, make([]byte, MaxClaimProofLen+1), 1))
	require.True(t, CheckClaimProof(id, ns, nil, 0))
}

func TestClaimDifficultyAsked(t *testing.T) {
	tests := []struct {
		text string
		d    int
		ok   bool
	}{
		{"needs a proof of work: claim-difficulty=19; see the doc", 19, true},
		{"claim-difficulty=7", 7, true},
		{"claim-difficulty=32", 32, true},
		{"claim-difficulty=33", 0, false},
		{"claim-difficulty=0", 0, false},
		{"claim-difficulty=", 0, false},
		{"claim-difficulty=99999999999999999999", 0, false},
		{"namespace is exclusive and held by another key", 0, false},
	}
	for _, tt := range tests {
		d, ok := claimDifficultyAsked(tt.text)
		require.Equal(t, tt.ok, ok, tt.text)
		require.Equal(t, tt.d, d, tt.text)
	}
}

// A new name needs a proof of work bound to (peer, name): none, a weak
// one, one for another name or another key, or an oversized one are
// refused with a text naming the difficulty; renewals need none.
func TestClaimProofRequired(t *testing.T) {
	lim := testNameLimits()
	lim.ClaimDifficulty = 12
	_, sh := startServer(t, nameServerOpts(WithLimits(lim))...)
	a, b := newTestHost(t), newTestHost(t)
	connect(t, a, sh)
	connect(t, b, sh)
	ra := openRaw(t, a, sh.ID(), ProtocolID)
	ns := ctUserPrefix + "pow"
	rec := signedRecord(t, a)
	ctx := context.Background()

	resp := ra.registerProof(ns, rec, nil)
	require.Equal(t, pb.Message_E_NOT_AUTHORIZED, resp.GetStatus())
	require.Contains(t, resp.GetStatusText(), "claim-difficulty=12")
	require.Contains(t, resp.GetStatusText(), "is missing")
	d, ok := claimDifficultyAsked(resp.GetStatusText())
	require.True(t, ok)
	require.Equal(t, 12, d)

	weak, err := ComputeClaimProof(ctx, a.ID(), ns, 4)
	require.NoError(t, err)
	for CheckClaimProof(a.ID(), ns, weak, 12) { // a lucky one: find a truly weak one
		weak = append(weak, 0)
	}
	otherNS, err := ComputeClaimProof(ctx, a.ID(), ns+"2", 12)
	require.NoError(t, err)
	otherKey, err := ComputeClaimProof(ctx, b.ID(), ns, 12)
	require.NoError(t, err)
	for name, p := range map[string][]byte{
		"weak": weak, "another name": otherNS, "another key": otherKey, "oversized": make([]byte, MaxClaimProofLen+1),
	} {
		if CheckClaimProof(a.ID(), ns, p, 12) {
			continue // by chance valid for this claim too
		}
		resp := ra.registerProof(ns, rec, p)
		require.Equal(t, pb.Message_E_NOT_AUTHORIZED, resp.GetStatus(), name)
		require.Contains(t, resp.GetStatusText(), "does not verify", name)
	}

	good, err := ComputeClaimProof(ctx, a.ID(), ns, 12)
	require.NoError(t, err)
	require.Equal(t, pb.Message_OK, ra.registerProof(ns, rec, good).GetStatus())
	require.Equal(t, pb.Message_OK, ra.registerProof(ns, rec, nil).GetStatus(), "a renewal needs no proof")
	// Another key asking for a held name is told it is held, not to work.
	resp = openRaw(t, b, sh.ID(), ProtocolID).registerProof(ns, signedRecord(t, b), otherKey)
	require.Equal(t, pb.Message_E_NOT_AUTHORIZED, resp.GetStatus())
	require.Contains(t, resp.GetStatusText(), "held by another key")
	// Outside the prefix no proof is asked.
	require.Equal(t, pb.Message_OK, ra.registerProof("p2p-messaging/room/x", rec, nil).GetStatus())
}

// sourceMap makes the server see each peer's connections as coming from
// the IP set for it.
type sourceMap struct {
	mu  sync.Mutex
	ips map[peer.ID]netip.Addr
}

func (m *sourceMap) set(p peer.ID, ip string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ips == nil {
		m.ips = make(map[peer.ID]netip.Addr)
	}
	m.ips[p] = netip.MustParseAddr(ip)
}

func (m *sourceMap) observe(c network.Conn) netip.Addr {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ips[c.RemotePeer()]
}

// Attack: one network mass-claims names with throwaway keys. New claims
// are a token bucket per IPv4 address and per IPv6 /56; past the burst a
// claim is E_UNAVAILABLE saying when the next is possible, other networks
// are unaffected, renewals are free, and a claim refused for its proof
// costs no token.
func TestClaimRatePerSource(t *testing.T) {
	clock := newFakeClock()
	lim := testNameLimits()
	lim.ClaimBurst, lim.ClaimInterval = 2, time.Minute
	var src sourceMap
	_, sh := startServer(t, nameServerOpts(WithLimits(lim), WithClock(clock.Now), withObservedIP(src.observe))...)
	claim := func(ip, nick string) *pb.Message_RegisterResponse {
		h := newTestHost(t)
		src.set(h.ID(), ip)
		connect(t, h, sh)
		return openRaw(t, h, sh.ID(), ProtocolID).register(ctUserPrefix+nick, recordFor(t, h, ip), 0)
	}

	// One key claiming a second name renews nothing: it is a claim too.
	first := newTestHost(t)
	src.set(first.ID(), "11.0.0.1")
	connect(t, first, sh)
	rf := openRaw(t, first, sh.ID(), ProtocolID)
	require.Equal(t, pb.Message_E_NOT_AUTHORIZED, rf.registerProof(ctUserPrefix+"v0", recordFor(t, first, "11.0.0.1"), nil).GetStatus())
	require.Equal(t, pb.Message_OK, rf.register(ctUserPrefix+"v0", recordFor(t, first, "11.0.0.1"), 0).GetStatus(), "the proofless try took no token")
	require.Equal(t, pb.Message_OK, claim("11.0.0.1", "v1").GetStatus())
	resp := claim("11.0.0.1", "v2")
	require.Equal(t, pb.Message_E_UNAVAILABLE, resp.GetStatus())
	require.Contains(t, resp.GetStatusText(), "too many new names claimed from your network (11.0.0.1/32), the next in 1m0s")
	for range 5 {
		require.Equal(t, pb.Message_OK, rf.register(ctUserPrefix+"v0", recordFor(t, first, "11.0.0.1"), 0).GetStatus(), "renewals are not claims")
	}
	require.Equal(t, pb.Message_OK, claim("11.0.0.2", "w1").GetStatus(), "another IPv4 address has its own bucket")
	require.Equal(t, pb.Message_OK, claim("::ffff:11.0.0.3", "w2").GetStatus(), "a mapped IPv4 address is that address")
	require.Equal(t, pb.Message_OK, claim("::ffff:11.0.0.3", "w3").GetStatus())
	require.Equal(t, pb.Message_E_UNAVAILABLE, claim("11.0.0.3", "w4").GetStatus())

	// IPv6: one bucket per /56.
	require.Equal(t, pb.Message_OK, claim("2001:db8:0:100::1", "x1").GetStatus())
	require.Equal(t, pb.Message_OK, claim("2001:db8:0:1ff:ffff::2", "x2").GetStatus())
	resp = claim("2001:db8:0:1aa::3", "x3")
	require.Equal(t, pb.Message_E_UNAVAILABLE, resp.GetStatus())
	require.Contains(t, resp.GetStatusText(), "2001:db8:0:100::/56")
	require.Equal(t, pb.Message_OK, claim("2001:db8:0:200::1", "x4").GetStatus(), "the next /56 is another network")

	// The bucket refills.
	clock.Advance(time.Minute)
	require.Equal(t, pb.Message_OK, claim("11.0.0.1", "v2").GetStatus())
	require.Equal(t, pb.Message_E_UNAVAILABLE, claim("11.0.0.1", "v3").GetStatus())
}

// The table of claiming networks is bounded (by MaxNames): a new network
// finding it full of buckets that have not refilled is refused.
func TestClaimSourcesBounded(t *testing.T) {
	clock := newFakeClock()
	lim := testNameLimits()
	lim.MaxNames, lim.ClaimBurst, lim.ClaimInterval = 2, 1, time.Minute
	var src sourceMap
	s, sh := startServer(t, nameServerOpts(WithLimits(lim), WithClock(clock.Now), withObservedIP(src.observe))...)
	h := newTestHost(t)
	connect(t, h, sh)
	rs := openRaw(t, h, sh.ID(), ProtocolID)
	for i, ip := range []string{"11.0.0.1", "11.0.0.2"} {
		src.set(h.ID(), ip)
		ns := ctUserPrefix + "s" + itoa(i)
		require.Equal(t, pb.Message_OK, rs.register(ns, recordFor(t, h, ip), 0).GetStatus())
		rs.send(releaseRequest(ns))
	}
	src.set(h.ID(), "11.0.0.3")
	resp := rs.register(ctUserPrefix+"s3", recordFor(t, h, "11.0.0.3"), 0)
	require.Equal(t, pb.Message_E_UNAVAILABLE, resp.GetStatus())
	require.Contains(t, resp.GetStatusText(), "too many networks")
	require.Equal(t, 2, s.names.claims.len())
	clock.Advance(time.Minute) // both buckets refill and are swept
	require.Equal(t, pb.Message_OK, rs.register(ctUserPrefix+"s3", recordFor(t, h, "11.0.0.3"), 0).GetStatus())
	require.Equal(t, 1, s.names.claims.len())
}

func TestClaimLimitsValidate(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*Limits)
	}{
		{"negative difficulty", func(l *Limits) { l.ClaimDifficulty = -1 }},
		{"difficulty above max", func(l *Limits) { l.ClaimDifficulty = MaxClaimDifficulty + 1 }},
		{"burst 0", func(l *Limits) { l.ClaimBurst = 0 }},
		{"interval 0", func(l *Limits) { l.ClaimInterval = 0 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := DefaultLimits()
			tt.mod(&l)
			require.Error(t, l.validate())
		})
	}
	l := DefaultLimits()
	l.ClaimDifficulty = 0
	require.NoError(t, l.validate(), "difficulty 0 asks for no proof")
}

// The client attaches a proof: computed when a server asks (and cached),
// or from the first attempt under a claim prefix; a server asking for
// more than the client accepts to compute is refused.
func TestClientClaimProof(t *testing.T) {
	lim := ctLimits()
	lim.ClaimDifficulty = 10
	reg := prometheus.NewRegistry()
	srv := ctStartServer(t, nil, "", WithLimits(lim), WithExclusivePrefix(ctUserPrefix), WithRegisterer(reg))
	refusedForProof := func() float64 { return rejections(t, reg, rejectClaimProof) }
	ctx := ctCtx(t)

	asked := ctClient(t, ctHost(t, nil, ""), []*ctServer{srv})
	require.NoError(t, asked.Register(ctx, ctUserPrefix+"asked", 0))
	require.Equal(t, 1.0, refusedForProof(), "the first try carried no proof")
	e := asked.proofs.entry(ctUserPrefix + "asked")
	require.Equal(t, 10, e.d)
	require.True(t, CheckClaimProof(asked.h.ID(), ctUserPrefix+"asked", e.nonce, 10))

	pre := ctClient(t, ctHost(t, nil, ""), []*ctServer{srv}, WithClaimPrefix(ctUserPrefix))
	require.NoError(t, pre.Register(ctx, ctUserPrefix+"pre", 0))
	require.Equal(t, 1.0, refusedForProof(), "a claim prefix attaches the proof at once")
	require.Equal(t, DefaultClaimDifficulty, pre.proofs.entry(ctUserPrefix+"pre").d)

	_, err := NewClient(pre.h, nil, WithClaimPrefix(""))
	require.Error(t, err)
	_, err = NewClient(pre.h, nil, WithMaxClaimDifficulty(MaxClaimDifficulty+1))
	require.Error(t, err)

	lim.ClaimDifficulty = 20
	hard := ctStartServer(t, nil, "", WithLimits(lim), WithExclusivePrefix(ctUserPrefix))
	capped := ctClient(t, ctHost(t, nil, ""), []*ctServer{hard}, WithMaxClaimDifficulty(12))
	err = capped.Register(ctx, ctUserPrefix+"hard", 0)
	var se *StatusError
	require.ErrorAs(t, err, &se)
	require.Equal(t, StatusNotAuthorized, se.Status)
	require.Contains(t, se.Text, ClaimDifficultyKey+"20")
	require.Nil(t, capped.proofs.entry(ctUserPrefix+"hard").nonce, "nothing computed beyond the client's bound")
}

// BenchmarkClaimProofDefault measures a claim at DefaultClaimDifficulty.
func BenchmarkClaimProofDefault(b *testing.B) {
	id, err := peer.Decode("12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA")
	require.NoError(b, err)
	start := time.Now()
	for i := 0; b.Loop(); i++ {
		_, err := ComputeClaimProof(context.Background(), id, ctUserPrefix+"bench"+itoa(i), DefaultClaimDifficulty)
		require.NoError(b, err)
	}
	b.ReportMetric(float64(time.Since(start).Milliseconds())/float64(b.N), "ms/claim")
}

// rejections reads rendezvous_rejections_total{reason} from reg.
func rejections(t *testing.T, reg *prometheus.Registry, reason string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != "rendezvous_rejections_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == reason {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// TestGoldenNamesWire pins the bytes of the name extensions: a REGISTER
// carrying claim_proof (field 100 of Register, tag a2 06), the refusal
// naming the difficulty, and an UNREGISTER with release_name (field 100 of
// Unregister, tag a0 06), and a DISCOVER_RESPONSE from the server's
// hand-written encoder naming the lease holder of an offline name
// (name_holder, field 100 of DiscoverResponse, tag a2 06). Run with
// -update to regenerate.
func TestGoldenNamesWire(t *testing.T) {
	id, rec := goldenPeer(t)
	ns := ctUserPrefix + "golden"
	proof, err := ComputeClaimProof(context.Background(), id, ns, 8)
	require.NoError(t, err)
	d := discoverBuf{holder: id}
	status, _ := newStore(41, nil).discover(ns, nil, 10, 0, &d)
	require.Equal(t, StatusOK, status)
	cases := map[string][]byte{
		"register_claim": framed(t, &pb.Message{
			Type:     pb.Message_REGISTER.Enum(),
			Register: &pb.Message_Register{Ns: proto.String(ns), SignedPeerRecord: rec, Ttl: proto.Uint64(7200), ClaimProof: proof},
		}),
		"register_response_claim": framed(t, &pb.Message{
			Type: pb.Message_REGISTER_RESPONSE.Enum(),
			RegisterResponse: &pb.Message_RegisterResponse{
				Status:     StatusNotAuthorized.Enum(),
				StatusText: proto.String("claiming a new name needs a proof of work (Register.claim_proof, field 100) and it is missing: claim-difficulty=19; see the rendezvous package doc"),
			},
		}),
		"unregister_release":       appendFrame(nil, releaseRequest(ns)),
		"discover_response_holder": bytes.Clone(d.out),
	}
	for name, got := range cases {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join("testdata", name+".bin")
			if *updateGolden {
				require.NoError(t, os.WriteFile(path, got, 0o644))
			}
			want, err := os.ReadFile(path)
			require.NoError(t, err)
			require.Equal(t, want, got)
		})
	}
	require.True(t, bytes.Contains(cases["register_claim"], append([]byte{0xa2, 0x06, byte(len(proof))}, proof...)))
	require.True(t, bytes.HasSuffix(cases["unregister_release"], []byte{0xa0, 0x06, 0x01}))
	require.True(t, bytes.HasSuffix(d.out, append([]byte{0xa2, 0x06, byte(len(id))}, id...)))
	// The hand-written answer is what proto.Marshal makes of it.
	var dm pb.Message
	require.NoError(t, newReader(bytes.NewReader(d.out)).ReadMsg(&dm))
	require.Equal(t, framed(t, &dm), d.out)
	require.Equal(t, []byte(id), dm.GetDiscoverResponse().GetNameHolder())
	require.Empty(t, dm.GetDiscoverResponse().GetRegistrations())
	// A server that knows neither field reads these as the spec's messages.
	var m pb.Message
	require.NoError(t, newReader(bytes.NewReader(cases["unregister_release"])).ReadMsg(&m))
	require.Equal(t, ns, m.GetUnregister().GetNs())
}
