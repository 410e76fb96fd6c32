package rendezvous

import (
	"log/slog"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/p2p-messaging/p2p-messaging/rendezvous/pb"
)

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

func TestClientParseDiscoverResponse(t *testing.T) {
	k1, id1 := ctKey(t)
	_, id2 := ctKey(t)
	good := &pb.Message_Register{Ns: proto.String("room"), Ttl: proto.Uint64(60),
		SignedPeerRecord: ctSignedRecord(t, k1, id1, "/ip4/127.0.0.1/tcp/4001")}
	forged := &pb.Message_Register{Ns: proto.String("room"), Ttl: proto.Uint64(60),
		SignedPeerRecord: ctSignedRecord(t, k1, id2, "/ip4/127.0.0.1/tcp/4002")}
	garbage := &pb.Message_Register{Ns: proto.String("room"), SignedPeerRecord: []byte("junk")}

	var m pb.Message
	require.NoError(t, proto.Unmarshal(ctDiscoverResponse(t, good, forged, garbage, nil), &m))
	regs, cookie, err := parseDiscoverResponse(&m, "room", slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	require.Equal(t, []byte("01234567room"), cookie)
	require.Len(t, regs, 1, "forged and garbage records are dropped")
	require.Equal(t, id1, regs[0].Peer.ID)
	require.Equal(t, "room", regs[0].Namespace)
	require.Equal(t, int64(60), int64(regs[0].TTL.Seconds()))

	// A server that omits ns (proto3 encoders, waku-org's server) in an
	// answer for one namespace: the registration belongs to the namespace
	// asked for. One naming another namespace is dropped. A record with no
	// addresses is a valid registration.
	k3, id3 := ctKey(t)
	noNS := &pb.Message_Register{Ttl: proto.Uint64(60), SignedPeerRecord: ctSignedRecord(t, k1, id1, "/ip4/127.0.0.1/tcp/4001")}
	elsewhere := &pb.Message_Register{Ns: proto.String("hall"), SignedPeerRecord: ctSignedRecord(t, k1, id1)}
	noAddrs := &pb.Message_Register{Ns: proto.String("room"), SignedPeerRecord: ctSignedRecord(t, k3, id3)}
	m.Reset()
	require.NoError(t, proto.Unmarshal(ctDiscoverResponse(t, noNS, elsewhere, noAddrs), &m))
	regs, _, err = parseDiscoverResponse(&m, "room", slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	require.Len(t, regs, 2)
	require.Equal(t, Registration{Namespace: "room", Peer: peer.AddrInfo{ID: id1, Addrs: regs[0].Peer.Addrs}, TTL: time.Minute}, regs[0])
	require.Len(t, regs[0].Peer.Addrs, 1)
	require.Equal(t, "room", regs[1].Namespace)
	require.Equal(t, id3, regs[1].Peer.ID)
	require.Empty(t, regs[1].Peer.Addrs)
	// Over all namespaces, each keeps its own (or none).
	regs, _, err = parseDiscoverResponse(&m, "", slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	require.Len(t, regs, 3)
	require.Equal(t, []string{"", "hall", "room"}, []string{regs[0].Namespace, regs[1].Namespace, regs[2].Namespace})

	// Non-OK status and wrong type.
	m = pb.Message{Type: pb.Message_DISCOVER_RESPONSE.Enum(), DiscoverResponse: &pb.Message_DiscoverResponse{
		Status: StatusInvalidCookie.Enum(), StatusText: proto.String("bad cookie")}}
	_, _, err = parseDiscoverResponse(&m, "room", slog.New(slog.DiscardHandler))
	var se *StatusError
	require.ErrorAs(t, err, &se)
	require.Equal(t, StatusInvalidCookie, se.Status)
	require.Equal(t, "bad cookie", se.Text)
	m = pb.Message{Type: pb.Message_REGISTER_RESPONSE.Enum()}
	_, _, err = parseDiscoverResponse(&m, "room", slog.New(slog.DiscardHandler))
	require.Error(t, err)

	// Huge TTLs do not overflow.
	require.Positive(t, durationFromSeconds(^uint64(0)))
}

// FuzzParseRegistrations feeds arbitrary bytes, as a DISCOVER_RESPONSE, to
// the client's decoder: it must never panic, and whatever it accepts is a
// registration whose record was signed by the peer it names.
func FuzzParseRegistrations(f *testing.F) {
	k1, id1 := ctKey(f)
	_, id2 := ctKey(f)
	rec := ctSignedRecord(f, k1, id1, "/ip4/127.0.0.1/tcp/4001", "/ip6/::1/udp/4001/quic-v1")
	f.Add(ctDiscoverResponse(f, &pb.Message_Register{Ns: proto.String("room"), Ttl: proto.Uint64(7200), SignedPeerRecord: rec}))
	f.Add(ctDiscoverResponse(f, &pb.Message_Register{Ns: proto.String("room"), SignedPeerRecord: ctSignedRecord(f, k1, id2)}))
	f.Add(ctDiscoverResponse(f))
	f.Add([]byte{})
	f.Add([]byte{0x08, 0x04, 0x32, 0x02, 0x18, 0x64})
	log := slog.New(slog.DiscardHandler)
	f.Fuzz(func(t *testing.T, data []byte) {
		var m pb.Message
		if proto.Unmarshal(data, &m) != nil {
			return
		}
		regs, _, err := parseDiscoverResponse(&m, "room", log)
		if err != nil {
			return
		}
		for _, r := range regs {
			if r.Peer.ID == "" || r.TTL < 0 {
				t.Fatalf("bad registration %+v", r)
			}
		}
		_ = mergeRegistrations(regs, regs)
	})
}

// FuzzParseWatchEvent does the same for pushed watch events.
func FuzzParseWatchEvent(f *testing.F) {
	k1, id1 := ctKey(f)
	rec := ctSignedRecord(f, k1, id1, "/ip4/127.0.0.1/tcp/4001")
	for _, ev := range []*pb.WatchEvent{
		{Kind: pb.WatchEvent_REGISTERED.Enum(), Ns: proto.String("room"),
			Registration: &pb.Message_Register{Ns: proto.String("room"), Ttl: proto.Uint64(60), SignedPeerRecord: rec}},
		{Kind: pb.WatchEvent_UNREGISTERED.Enum(), Ns: proto.String("room"), Peer: []byte(id1)},
		{Kind: pb.WatchEvent_SYNCED.Enum(), Ns: proto.String("room")},
		{Kind: pb.WatchEvent_ERROR.Enum(), Status: StatusUnavailable.Enum(), StatusText: proto.String("full")},
	} {
		b, err := proto.Marshal(ev)
		require.NoError(f, err)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var ev pb.WatchEvent
		if proto.Unmarshal(data, &ev) != nil {
			return
		}
		u, err := parseWatchEvent(&ev, "room")
		if err != nil {
			return
		}
		st := newWatchState("room", []peer.ID{"s"})
		u.server = "s"
		st.apply(watchUpdate{server: "s", kind: updSubscribed})
		st.apply(u)
		st.apply(watchUpdate{server: "s", kind: updSynced})
	})
}
