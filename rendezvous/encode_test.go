package rendezvous

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
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

var updateGolden = flag.Bool("update", false, "rewrite testdata/*.bin golden files")

// goldenPeer is a fixed identity: ed25519 signatures are deterministic, so
// its signed record is the same bytes on every run.
func goldenPeer(t testing.TB) (peer.ID, []byte) {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(bytes.NewReader(bytes.Repeat([]byte{7}, 32)))
	require.NoError(t, err)
	id, err := peer.IDFromPrivateKey(k)
	require.NoError(t, err)
	rec := &peer.PeerRecord{
		PeerID: id,
		Addrs:  []ma.Multiaddr{ma.StringCast("/ip4/192.0.2.1/tcp/4001"), ma.StringCast("/ip6/2001:db8::1/udp/4001/quic-v1")},
		Seq:    1,
	}
	env, err := record.Seal(rec, k)
	require.NoError(t, err)
	b, err := env.Marshal()
	require.NoError(t, err)
	return id, b
}

func framed(t testing.TB, m proto.Message) []byte {
	t.Helper()
	return appendFrame(nil, m)
}

// TestGoldenWire pins the bytes of every message type, framed as on the
// wire. Run with -update to regenerate after a deliberate change.
func TestGoldenWire(t *testing.T) {
	id, rec := goldenPeer(t)

	// The DISCOVER_RESPONSE comes from the server's hand-written encoder.
	st := newStore(41, nil)
	lim := DefaultLimits()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	require.Equal(t, StatusOK, st.register(id, "room", rec, int64(2*time.Hour), now, false, &lim).status)
	var d discoverBuf
	status, _ := st.discover("room", nil, 10, now+int64(10*time.Second), &d)
	require.Equal(t, StatusOK, status)
	var e *regEntry
	for _, x := range st.byPeer[id] {
		e = x
	}

	cases := map[string][]byte{
		"register": framed(t, &pb.Message{
			Type:     pb.Message_REGISTER.Enum(),
			Register: &pb.Message_Register{Ns: proto.String("room"), SignedPeerRecord: rec, Ttl: proto.Uint64(7200)},
		}),
		"register_response_ok": framed(t, &pb.Message{
			Type:             pb.Message_REGISTER_RESPONSE.Enum(),
			RegisterResponse: &pb.Message_RegisterResponse{Status: StatusOK.Enum(), Ttl: proto.Uint64(7200)},
		}),
		"register_response_error": framed(t, &pb.Message{
			Type: pb.Message_REGISTER_RESPONSE.Enum(),
			RegisterResponse: &pb.Message_RegisterResponse{
				Status:     StatusInvalidTTL.Enum(),
				StatusText: proto.String("ttl 1 s is outside the allowed range 120..259200 s"),
			},
		}),
		"unregister": framed(t, &pb.Message{
			Type:       pb.Message_UNREGISTER.Enum(),
			Unregister: &pb.Message_Unregister{Ns: proto.String("room")},
		}),
		"discover": framed(t, &pb.Message{
			Type:     pb.Message_DISCOVER.Enum(),
			Discover: &pb.Message_Discover{Ns: proto.String("room"), Limit: proto.Uint64(10), Cookie: appendCookie(nil, 41, "room")},
		}),
		"discover_response": bytes.Clone(d.out),
		"discover_response_error": framed(t, &pb.Message{
			Type: pb.Message_DISCOVER_RESPONSE.Enum(),
			DiscoverResponse: &pb.Message_DiscoverResponse{
				Status:     StatusInvalidCookie.Enum(),
				StatusText: proto.String(errCookieNamespace.Error()),
			},
		}),
		"watch_request":            framed(t, &pb.WatchRequest{Ns: proto.String("room")}),
		"watch_event_registered":   registeredEvent(e, int64(2*time.Hour)),
		"watch_event_unregistered": unregisteredEvent(e),
		"watch_event_synced":       appendFrame(nil, &pb.WatchEvent{Kind: pb.WatchEvent_SYNCED.Enum(), Ns: proto.String("room")}),
		"watch_event_error": appendFrame(nil, &pb.WatchEvent{
			Kind: pb.WatchEvent_ERROR.Enum(), Ns: proto.String("room"),
			Status: StatusUnavailable.Enum(), StatusText: proto.String("too many watch subscriptions on this server"),
		}),
	}
	for name, got := range cases {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join("testdata", name+".bin")
			if *updateGolden {
				require.NoError(t, os.MkdirAll("testdata", 0o755))
				require.NoError(t, os.WriteFile(path, got, 0o644))
			}
			want, err := os.ReadFile(path)
			require.NoError(t, err)
			require.Equal(t, want, got)
		})
	}

	// The hand-written DISCOVER_RESPONSE is exactly what proto.Marshal
	// produces for the same message, with type and status present.
	var m pb.Message
	require.NoError(t, newReader(bytes.NewReader(d.out)).ReadMsg(&m))
	require.Equal(t, framed(t, &m), d.out)
	require.NotNil(t, m.Type)
	require.NotNil(t, m.DiscoverResponse.Status)
	require.Len(t, m.DiscoverResponse.Registrations, 1)
	require.True(t, proto.Equal(&pb.Message_Register{Ns: proto.String("room"), SignedPeerRecord: rec, Ttl: proto.Uint64(7190)},
		m.DiscoverResponse.Registrations[0]), "remaining ttl, own namespace")
	require.Equal(t, appendCookie(nil, 42, "room"), m.DiscoverResponse.Cookie)
}
