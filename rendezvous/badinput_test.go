package rendezvous

import (
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/multiformats/go-varint"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/p2p-messaging/p2p-messaging/rendezvous/pb"
)

// readEnd reads until the server ends the stream and reports how.
func readEnd(t *testing.T, rs *rawStream) error {
	t.Helper()
	_, err := io.Copy(io.Discard, rs.s)
	if err == nil {
		return io.EOF
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the server must end the stream, not let it hang: %v", err)
	}
	return err
}

// isReset reports a stream reset by the server, whichever layer reports it
// (a reset seen by Write or CloseWrite comes straight from the muxer).
func isReset(err error) bool {
	return errors.Is(err, network.ErrReset) || (err != nil && strings.Contains(err.Error(), "stream reset"))
}

func frame(b []byte) []byte { return append(varint.ToUvarint(uint64(len(b))), b...) }

func mustMarshal(t *testing.T, m proto.Message) []byte {
	b, err := proto.Marshal(m)
	require.NoError(t, err)
	return b
}

// TestBadInput: each hostile input ends only its own stream, with a reset
// (or a clean close for an empty stream), and the server keeps serving the
// same peer and others.
func TestBadInput(t *testing.T) {
	s, sh := startServer(t)
	bad, good := newTestHost(t), newTestHost(t)
	connect(t, bad, sh)
	connect(t, good, sh)
	require.Equal(t, pb.Message_OK, openRaw(t, good, sh.ID(), ProtocolID).register("room", signedRecord(t, good), 0).GetStatus())

	tests := []struct {
		name  string
		input []byte
		reset bool
	}{
		{"empty stream", nil, false},
		{"4 GiB length prefix", varint.ToUvarint(1 << 32), true},
		{"length prefix just over the cap", varint.ToUvarint(MaxMessageSize + 1), true},
		{"overlong varint", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, true},
		{"truncated prefix", []byte{0x80}, true},
		{"truncated frame", append(varint.ToUvarint(100), make([]byte, 10)...), true},
		{"garbage protobuf", frame([]byte{0xff, 0xff, 0xff, 0xff, 0xff}), true},
		{"empty message (no type)", frame(nil), true},
		{"unknown message type", frame([]byte{0x08, 0x63}), true},
		{"response type as request", frame(mustMarshal(t, &pb.Message{Type: pb.Message_REGISTER_RESPONSE.Enum()})), true},
		{"discover response as request", frame(mustMarshal(t, &pb.Message{Type: pb.Message_DISCOVER_RESPONSE.Enum()})), true},
		{"good request then garbage", append(frame(mustMarshal(t, &pb.Message{
			Type:     pb.Message_DISCOVER.Enum(),
			Discover: &pb.Message_Discover{Ns: proto.String("room")},
		})), frame([]byte{0xff})...), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs := openRaw(t, bad, sh.ID(), ProtocolID)
			// The server may reset as soon as it has read enough, before
			// our write or half-close completes: those errors are expected.
			var err error
			if len(tt.input) > 0 {
				_, err = rs.s.Write(tt.input)
			}
			if err == nil {
				err = rs.s.CloseWrite()
			}
			if err == nil {
				err = readEnd(t, rs)
			}
			if tt.reset {
				require.True(t, isReset(err), "want a reset, got %v", err)
			} else {
				require.ErrorIs(t, err, io.EOF)
			}
			// Still serving the same peer and everyone else.
			require.Len(t, openRaw(t, bad, sh.ID(), ProtocolID).discover("room", 0, nil).Registrations, 1)
			require.Len(t, openRaw(t, good, sh.ID(), ProtocolID).discover("room", 0, nil).Registrations, 1)
		})
	}
	require.Equal(t, 1, s.Registrations())
}

// TestIdleStreamTimeout: a stream that sends nothing is reset after the
// stream timeout.
func TestIdleStreamTimeout(t *testing.T) {
	lim := DefaultLimits()
	lim.StreamTimeout = 50 * time.Millisecond
	_, sh := startServer(t, WithLimits(lim))
	ch := newTestHost(t)
	connect(t, ch, sh)
	rs := openRaw(t, ch, sh.ID(), ProtocolID)
	require.Equal(t, pb.Message_OK, rs.discover("room", 0, nil).GetStatus(), "the deadline is per request")
	require.ErrorIs(t, readEnd(t, rs), network.ErrReset)
}

// TestFloodOnePeer: a peer pipelining thousands of requests is answered
// E_UNAVAILABLE once over its budget while another peer is served.
func TestFloodOnePeer(t *testing.T) {
	_, sh := startServer(t)
	flooder, other := newTestHost(t), newTestHost(t)
	connect(t, flooder, sh)
	connect(t, other, sh)
	rs := openRaw(t, flooder, sh.ID(), ProtocolID)

	const n = 4000
	req := frame(mustMarshal(t, &pb.Message{
		Type:     pb.Message_DISCOVER.Enum(),
		Discover: &pb.Message_Discover{Ns: proto.String("room")},
	}))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range n {
			if _, err := rs.s.Write(req); err != nil {
				return
			}
		}
	}()
	counts := map[pb.Message_ResponseStatus]int{}
	for i := range n {
		m := rs.recv()
		counts[m.DiscoverResponse.GetStatus()]++
		if i == n/2 {
			// Mid-flood, another peer is served normally.
			ro := openRaw(t, other, sh.ID(), ProtocolID)
			require.Equal(t, pb.Message_OK, ro.register("room", signedRecord(t, other), 0).GetStatus())
			require.Equal(t, pb.Message_OK, ro.discover("room", 0, nil).GetStatus())
		}
	}
	wg.Wait()
	require.Greater(t, counts[pb.Message_E_UNAVAILABLE], n/4)
	require.GreaterOrEqual(t, counts[pb.Message_OK], DefaultRequestBurst)
	require.Equal(t, n, counts[pb.Message_OK]+counts[pb.Message_E_UNAVAILABLE])
}

// TestTypeOmitted: proto3-style encoders omit `type` when it is REGISTER
// (the enum's zero value); such requests are typed by their body and served.
func TestTypeOmitted(t *testing.T) {
	_, sh := startServer(t)
	c := newTestHost(t)
	connect(t, c, sh)
	rs := openRaw(t, c, sh.ID(), ProtocolID)

	rs.send(&pb.Message{Register: &pb.Message_Register{
		Ns: proto.String("room"), SignedPeerRecord: signedRecord(t, c), Ttl: proto.Uint64(3600),
	}})
	resp := rs.recv()
	require.Equal(t, pb.Message_REGISTER_RESPONSE, resp.GetType())
	require.Equal(t, pb.Message_OK, resp.GetRegisterResponse().GetStatus())

	rs.send(&pb.Message{Discover: &pb.Message_Discover{Ns: proto.String("room")}})
	require.Len(t, rs.recv().GetDiscoverResponse().GetRegistrations(), 1)

	rs.send(&pb.Message{Unregister: &pb.Message_Unregister{Ns: proto.String("room")}})
	require.Empty(t, rs.discover("room", 0, nil).GetRegistrations(), "UNREGISTER without type served")
}

// TestUnknownTypeWithBody: a type this server does not know is never guessed
// from the body, even a well-formed REGISTER body.
func TestUnknownTypeWithBody(t *testing.T) {
	_, sh := startServer(t)
	c := newTestHost(t)
	connect(t, c, sh)
	rs := openRaw(t, c, sh.ID(), ProtocolID)
	body := mustMarshal(t, &pb.Message{Register: &pb.Message_Register{
		Ns: proto.String("room"), SignedPeerRecord: signedRecord(t, c),
	}})
	_, err := rs.s.Write(frame(append([]byte{0x08, 42}, body...)))
	if err == nil {
		err = rs.s.CloseWrite()
	}
	if err == nil {
		err = readEnd(t, rs)
	}
	require.True(t, isReset(err), "want a reset, got %v", err)
}
