package rendezvous

import (
	"encoding/binary"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/p2p-messaging/p2p-messaging/rendezvous/pb"
)

// TestRegisterStatus covers every REGISTER validation over the wire.
func TestRegisterStatus(t *testing.T) {
	_, sh := startServer(t)
	ch := newTestHost(t)
	other := newTestHost(t)
	connect(t, ch, sh)
	rs := openRaw(t, ch, sh.ID(), ProtocolID)
	good := signedRecord(t, ch)

	// A record whose envelope is signed by a key that is not the one named
	// in the record.
	otherKey, _, err := crypto.GenerateEd25519Key(nil)
	require.NoError(t, err)
	env, err := record.Seal(peer.PeerRecordFromAddrInfo(peer.AddrInfo{ID: ch.ID(), Addrs: ch.Addrs()}), otherKey)
	require.NoError(t, err)
	forged, err := env.Marshal()
	require.NoError(t, err)
	// A valid envelope that is not a peer record (wrong domain).
	wrongDomain := sealOtherDomain(t, ch)
	// A well-signed record of the registering peer with no addresses.
	env, err = record.Seal(peer.PeerRecordFromAddrInfo(peer.AddrInfo{ID: ch.ID()}), ch.Peerstore().PrivKey(ch.ID()))
	require.NoError(t, err)
	noAddrs, err := env.Marshal()
	require.NoError(t, err)

	tests := []struct {
		name   string
		ns     string
		rec    []byte
		ttl    uint64
		status pb.Message_ResponseStatus
		ttlOut uint64
	}{
		{"ok default ttl", "a", good, 0, pb.Message_OK, 7200},
		{"ok min ttl", "b", good, 120, pb.Message_OK, 120},
		{"ok max ttl", "c", good, 72 * 3600, pb.Message_OK, 72 * 3600},
		{"ok max namespace", strings.Repeat("n", 255), good, 0, pb.Message_OK, 7200},
		{"empty namespace", "", good, 0, pb.Message_E_INVALID_NAMESPACE, 0},
		{"namespace too long", strings.Repeat("n", 256), good, 0, pb.Message_E_INVALID_NAMESPACE, 0},
		{"namespace not utf8", "a\xff", good, 0, pb.Message_E_INVALID_NAMESPACE, 0},
		{"ttl below min", "d", good, 119, pb.Message_E_INVALID_TTL, 0},
		{"ttl above max", "d", good, 72*3600 + 1, pb.Message_E_INVALID_TTL, 0},
		{"ttl absurd", "d", good, math.MaxUint64, pb.Message_E_INVALID_TTL, 0},
		{"record missing", "d", nil, 0, pb.Message_E_INVALID_SIGNED_PEER_RECORD, 0},
		{"record garbage", "d", []byte("not an envelope"), 0, pb.Message_E_INVALID_SIGNED_PEER_RECORD, 0},
		{"record of another peer", "d", signedRecord(t, other), 0, pb.Message_E_INVALID_SIGNED_PEER_RECORD, 0},
		{"record naming me signed by another key", "d", forged, 0, pb.Message_E_INVALID_SIGNED_PEER_RECORD, 0},
		{"record naming another peer signed by me", "d", sealRecord(t, ch, other.ID()), 0, pb.Message_E_INVALID_SIGNED_PEER_RECORD, 0},
		{"envelope of another domain", "d", wrongDomain, 0, pb.Message_E_INVALID_SIGNED_PEER_RECORD, 0},
		{"record without addresses", "d", noAddrs, 0, pb.Message_E_INVALID_SIGNED_PEER_RECORD, 0},
		{"record too large", "d", make([]byte, DefaultMaxRecordSize+1), 0, pb.Message_E_INVALID_SIGNED_PEER_RECORD, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := rs.register(tt.ns, tt.rec, tt.ttl)
			require.Equal(t, tt.status, resp.GetStatus(), resp.GetStatusText())
			if tt.status == pb.Message_OK {
				require.Equal(t, tt.ttlOut, resp.GetTtl())
			} else {
				require.NotEmpty(t, resp.GetStatusText(), "a refusal explains itself")
			}
		})
	}
	// The reason names the problem.
	require.Contains(t, rs.register("d", noAddrs, 0).GetStatusText(), "no addresses")
}

// sealOtherDomain signs a valid envelope that is not a peer record.
func sealOtherDomain(t *testing.T, h interface {
	ID() peer.ID
}) []byte {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(nil)
	require.NoError(t, err)
	env, err := record.Seal(&testRecord{data: []byte("hello")}, k)
	require.NoError(t, err)
	b, err := env.Marshal()
	require.NoError(t, err)
	return b
}

type testRecord struct{ data []byte }

func (r *testRecord) Domain() string                 { return "rendezvous-test" }
func (r *testRecord) Codec() []byte                  { return []byte{0x03, 0x99} }
func (r *testRecord) MarshalRecord() ([]byte, error) { return r.data, nil }
func (r *testRecord) UnmarshalRecord(b []byte) error {
	r.data = b
	return nil
}

func TestDiscoverStatus(t *testing.T) {
	_, sh := startServer(t)
	ch := newTestHost(t)
	connect(t, ch, sh)
	rs := openRaw(t, ch, sh.ID(), ProtocolID)
	require.Equal(t, pb.Message_OK, rs.register("room", signedRecord(t, ch), 0).GetStatus())

	ok := rs.discover("room", 0, nil)
	require.Equal(t, pb.Message_OK, ok.GetStatus())
	future := appendCookie(nil, math.MaxUint64, "room")

	tests := []struct {
		name   string
		ns     string
		cookie []byte
		status pb.Message_ResponseStatus
	}{
		{"no cookie", "room", nil, pb.Message_OK},
		{"own cookie", "room", ok.Cookie, pb.Message_OK},
		{"all namespaces", "", nil, pb.Message_OK},
		{"namespace too long", strings.Repeat("n", 256), nil, pb.Message_E_INVALID_NAMESPACE},
		{"namespace not utf8", "\xff", nil, pb.Message_E_INVALID_NAMESPACE},
		{"cookie too short", "room", []byte{1, 2, 3}, pb.Message_E_INVALID_COOKIE},
		{"cookie of another namespace", "other", ok.Cookie, pb.Message_E_INVALID_COOKIE},
		{"namespaced cookie on all namespaces", "", ok.Cookie, pb.Message_E_INVALID_COOKIE},
		{"cookie from the future", "room", future, pb.Message_E_INVALID_COOKIE},
		{"cookie namespace not utf8", "room", append(binary.BigEndian.AppendUint64(nil, 1), 0xff), pb.Message_E_INVALID_COOKIE},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := rs.discover(tt.ns, 0, tt.cookie)
			require.Equal(t, tt.status, resp.GetStatus(), resp.GetStatusText())
			if tt.status == pb.Message_OK {
				require.Len(t, resp.Cookie, 8+len(tt.ns), "an OK response always carries a cookie")
				require.Equal(t, tt.ns, string(resp.Cookie[8:]))
			} else {
				require.NotEmpty(t, resp.GetStatusText())
				require.Empty(t, resp.Registrations)
			}
		})
	}
}

// TestDiscoverAbsurdLimit: limit 1<<63 is clamped, not trusted.
func TestDiscoverAbsurdLimit(t *testing.T) {
	_, sh := startServer(t)
	ch := newTestHost(t)
	connect(t, ch, sh)
	rs := openRaw(t, ch, sh.ID(), ProtocolID)
	require.Equal(t, pb.Message_OK, rs.register("room", signedRecord(t, ch), 0).GetStatus())
	for _, limit := range []uint64{1 << 63, math.MaxUint64, 1001} {
		resp := rs.discover("room", limit, nil)
		require.Equal(t, pb.Message_OK, resp.GetStatus())
		require.Len(t, resp.Registrations, 1)
	}
}

func TestExplicitZeroFields(t *testing.T) {
	// type and status are written even when zero (REGISTER=0, OK=0): read
	// the raw response bytes, not a decoded message.
	_, sh := startServer(t)
	ch := newTestHost(t)
	connect(t, ch, sh)
	rs := openRaw(t, ch, sh.ID(), ProtocolID)
	rs.send(&pb.Message{Type: pb.Message_DISCOVER.Enum(), Discover: &pb.Message_Discover{Ns: proto.String("x")}})
	m := rs.recv()
	require.NotNil(t, m.Type)
	require.NotNil(t, m.DiscoverResponse.Status)
	require.Equal(t, pb.Message_OK, m.DiscoverResponse.GetStatus())
	require.NotNil(t, m.DiscoverResponse.Cookie)
}

func TestNotAuthorizedExclusive(t *testing.T) {
	clock := newFakeClock()
	s, sh := startServer(t, WithClock(clock.Now), WithDisconnectGrace(10*time.Millisecond), WithLimits(testNameLimits()), WithExclusivePrefix(ctUserPrefix))
	a, b := newTestHost(t), newTestHost(t)
	connect(t, a, sh)
	connect(t, b, sh)
	ra := openRaw(t, a, sh.ID(), ProtocolID)
	rb := openRaw(t, b, sh.ID(), ProtocolID)
	ns := ctUserPrefix + "alice"

	require.Equal(t, pb.Message_OK, ra.register(ns, signedRecord(t, a), 120).GetStatus())
	resp := rb.register(ns, signedRecord(t, b), 0)
	require.Equal(t, pb.Message_E_NOT_AUTHORIZED, resp.GetStatus())
	require.Contains(t, resp.GetStatusText(), "exclusive")
	// The holder refreshing is fine; outside the prefix anyone may share.
	require.Equal(t, pb.Message_OK, ra.register(ns, signedRecord(t, a), 0).GetStatus())
	require.Equal(t, pb.Message_OK, ra.register("p2p-messaging/room/x", signedRecord(t, a), 0).GetStatus())
	require.Equal(t, pb.Message_OK, rb.register("p2p-messaging/room/x", signedRecord(t, b), 0).GetStatus())

	// Unregister, expiry and disconnect end the presence, not the name's
	// lease (lease.go): only the holder's release frees it.
	ra.unregister(ns)
	ra.discover(ns, 0, nil) // requests on a stream are handled in order
	require.Equal(t, pb.Message_E_NOT_AUTHORIZED, rb.register(ns, signedRecord(t, b), 120).GetStatus())
	require.Equal(t, pb.Message_OK, ra.register(ns, signedRecord(t, a), 120).GetStatus())
	clock.Advance(121 * time.Second)
	require.Equal(t, pb.Message_E_NOT_AUTHORIZED, rb.register(ns, signedRecord(t, b), 120).GetStatus())
	require.NoError(t, a.Network().ClosePeer(sh.ID()))
	require.Eventually(t, func() bool { return !s.st.hasPeer(a.ID()) }, 5*time.Second, 5*time.Millisecond)
	require.Equal(t, pb.Message_E_NOT_AUTHORIZED, rb.register(ns, signedRecord(t, b), 0).GetStatus())

	// Released by the holder.
	connect(t, a, sh)
	ra = openRaw(t, a, sh.ID(), ProtocolID)
	ra.send(releaseRequest(ns))
	ra.discover(ns, 0, nil)
	require.Equal(t, pb.Message_OK, rb.register(ns, signedRecord(t, b), 0).GetStatus())
	require.Equal(t, pb.Message_E_NOT_AUTHORIZED, ra.register(ns, signedRecord(t, a), 0).GetStatus())
}

// No namespace is exclusive by default, nor with an empty prefix.
func TestNotAuthorizedDisabledPrefix(t *testing.T) {
	for name, opts := range map[string][]ServerOption{"default": nil, "empty prefix": {WithExclusivePrefix("")}} {
		t.Run(name, func(t *testing.T) {
			_, sh := startServer(t, opts...)
			a, b := newTestHost(t), newTestHost(t)
			connect(t, a, sh)
			connect(t, b, sh)
			ns := ctUserPrefix + "alice"
			require.Equal(t, pb.Message_OK, openRaw(t, a, sh.ID(), ProtocolID).register(ns, signedRecord(t, a), 0).GetStatus())
			require.Equal(t, pb.Message_OK, openRaw(t, b, sh.ID(), ProtocolID).register(ns, signedRecord(t, b), 0).GetStatus())
		})
	}
}

// TestPerPeerCap: exactly MaxRegistrationsPerPeer fit; one more does not;
// re-registering an existing namespace does not count twice.
func TestPerPeerCap(t *testing.T) {
	s, sh := startServer(t)
	ch := newTestHost(t)
	connect(t, ch, sh)
	rs := openRaw(t, ch, sh.ID(), ProtocolID)
	rec := signedRecord(t, ch)
	for i := range MaxRegistrationsPerPeer {
		resp := rs.register(nsName(i), rec, 0)
		require.Equal(t, pb.Message_OK, resp.GetStatus(), "registration %d: %s", i, resp.GetStatusText())
	}
	require.Equal(t, MaxRegistrationsPerPeer, s.Registrations())
	resp := rs.register(nsName(MaxRegistrationsPerPeer), rec, 0)
	require.Equal(t, pb.Message_E_NOT_AUTHORIZED, resp.GetStatus())
	require.Equal(t, pb.Message_OK, rs.register(nsName(0), rec, 0).GetStatus(), "refresh at the cap")
	require.Equal(t, pb.Message_OK, rs.register(nsName(999), rec, 0).GetStatus(), "refresh at the cap")
	require.Equal(t, MaxRegistrationsPerPeer, s.Registrations())
	rs.unregister(nsName(5))
	require.Equal(t, pb.Message_OK, rs.register(nsName(MaxRegistrationsPerPeer), rec, 0).GetStatus())
	require.Equal(t, MaxRegistrationsPerPeer, s.Registrations())
}

func nsName(i int) string {
	return "ns-" + strings.Repeat("x", i%3) + string(rune('a'+i%26)) + "-" + itoa(i)
}

func itoa(i int) string {
	var b [20]byte
	n := len(b)
	for {
		n--
		b[n] = byte('0' + i%10)
		i /= 10
		if i == 0 {
			return string(b[n:])
		}
	}
}

func TestUnavailableTotalCap(t *testing.T) {
	lim := DefaultLimits()
	lim.MaxRegistrations = 2
	_, sh := startServer(t, WithLimits(lim))
	a, b := newTestHost(t), newTestHost(t)
	connect(t, a, sh)
	connect(t, b, sh)
	ra := openRaw(t, a, sh.ID(), ProtocolID)
	rb := openRaw(t, b, sh.ID(), ProtocolID)
	require.Equal(t, pb.Message_OK, ra.register("x", signedRecord(t, a), 0).GetStatus())
	require.Equal(t, pb.Message_OK, rb.register("x", signedRecord(t, b), 0).GetStatus())
	resp := ra.register("y", signedRecord(t, a), 0)
	require.Equal(t, pb.Message_E_UNAVAILABLE, resp.GetStatus())
	require.NotEmpty(t, resp.GetStatusText())
	require.Equal(t, pb.Message_OK, ra.register("x", signedRecord(t, a), 0).GetStatus(), "replacing is not growing")
	ra.unregister("x")
	ra.discover("x", 0, nil)
	require.Equal(t, pb.Message_OK, ra.register("y", signedRecord(t, a), 0).GetStatus())
}

// TestUnavailableRateLimit: a flooding peer is refused with E_UNAVAILABLE
// while another peer is served.
func TestUnavailableRateLimit(t *testing.T) {
	lim := DefaultLimits()
	lim.RequestRate = 0.001
	lim.RequestBurst = 5
	_, sh := startServer(t, WithLimits(lim))
	a, b := newTestHost(t), newTestHost(t)
	connect(t, a, sh)
	connect(t, b, sh)
	ra := openRaw(t, a, sh.ID(), ProtocolID)
	for range 5 {
		require.Equal(t, pb.Message_OK, ra.discover("x", 0, nil).GetStatus())
	}
	resp := ra.discover("x", 0, nil)
	require.Equal(t, pb.Message_E_UNAVAILABLE, resp.GetStatus())
	require.Equal(t, pb.Message_E_UNAVAILABLE, ra.register("x", signedRecord(t, a), 0).GetStatus())
	// A new stream from the same peer is limited too.
	require.Equal(t, pb.Message_E_UNAVAILABLE, openRaw(t, a, sh.ID(), ProtocolID).discover("x", 0, nil).GetStatus())

	rb := openRaw(t, b, sh.ID(), ProtocolID)
	require.Equal(t, pb.Message_OK, rb.register("x", signedRecord(t, b), 0).GetStatus())
	require.Equal(t, pb.Message_OK, rb.discover("x", 0, nil).GetStatus())
}

// TestRateLimitRefills under the injected clock.
func TestRateLimitRefills(t *testing.T) {
	clock := newFakeClock()
	lim := DefaultLimits()
	lim.RequestRate = 1
	lim.RequestBurst = 2
	_, sh := startServer(t, WithLimits(lim), WithClock(clock.Now))
	a := newTestHost(t)
	connect(t, a, sh)
	ra := openRaw(t, a, sh.ID(), ProtocolID)
	require.Equal(t, pb.Message_OK, ra.discover("x", 0, nil).GetStatus())
	require.Equal(t, pb.Message_OK, ra.discover("x", 0, nil).GetStatus())
	require.Equal(t, pb.Message_E_UNAVAILABLE, ra.discover("x", 0, nil).GetStatus())
	clock.Advance(time.Second)
	require.Equal(t, pb.Message_OK, ra.discover("x", 0, nil).GetStatus())
}

func TestInternalErrorWhenStoreFails(t *testing.T) {
	h := newTestHost(t)
	s, err := NewServer(h, WithDataDir(t.TempDir()))
	require.NoError(t, err)
	defer s.Close() // reports the broken store; nothing to check
	ch := newTestHost(t)
	connect(t, ch, h)
	rs := openRaw(t, ch, h.ID(), ProtocolID)
	require.Equal(t, pb.Message_OK, rs.register("a", signedRecord(t, ch), 0).GetStatus())

	// The disk goes away under the server.
	require.NoError(t, s.st.persist.db.Close())
	rec := signedRecord(t, ch)
	require.Eventually(t, func() bool {
		return rs.register("b", rec, 0).GetStatus() == pb.Message_E_INTERNAL_ERROR
	}, 5*time.Second, 10*time.Millisecond)
	// Reads keep working from memory.
	require.Equal(t, pb.Message_OK, rs.discover("a", 0, nil).GetStatus())
}
