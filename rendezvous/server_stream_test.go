package rendezvous

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
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

// TestOneRequestPerStream: the classic one-shot client opens a stream per
// request and closes it; the server closes its side cleanly.
func TestOneRequestPerStream(t *testing.T) {
	_, sh := startServer(t)
	ch := newTestHost(t)
	connect(t, ch, sh)
	for i := range 3 {
		rs := openRaw(t, ch, sh.ID(), ProtocolID)
		require.Equal(t, pb.Message_OK, rs.register("room", signedRecord(t, ch), 0).GetStatus())
		require.NoError(t, rs.s.CloseWrite())
		var b [1]byte
		_, err := rs.s.Read(b[:])
		require.ErrorIs(t, err, ioEOF, "request %d: server closes after the client's EOF", i)
	}
	// Many requests on one stream, mixing types.
	rs := openRaw(t, ch, sh.ID(), ProtocolID)
	for range 20 {
		require.Equal(t, pb.Message_OK, rs.register("room", signedRecord(t, ch), 0).GetStatus())
		require.Len(t, rs.discover("room", 0, nil).Registrations, 1)
		rs.unregister("room")
		require.Empty(t, rs.discover("room", 0, nil).Registrations)
	}
}

// FuzzServerStream feeds arbitrary bytes into a live server stream on
// loopback: the server must not crash, must end the stream, and must keep
// serving another peer.
func FuzzServerStream(f *testing.F) {
	fuzzSeeds(f)
	// Hosts live for the whole fuzz run; the per-test cleanup of the first
	// iteration would close them, so manage them here.
	var hosts []host.Host
	var srv *Server
	f.Cleanup(func() {
		if srv != nil {
			srv.Close()
		}
		for _, h := range hosts {
			h.Close()
		}
	})
	mk := func() host.Host {
		h := newUnmanagedHost(f)
		hosts = append(hosts, h)
		return h
	}
	sh, bad, good := mk(), mk(), mk()
	lim := DefaultLimits()
	lim.RequestRate = 1e9
	lim.RequestBurst = 1 << 30
	lim.StreamTimeout = 2 * time.Second
	var err error
	srv, err = NewServer(sh, WithLimits(lim), WithExclusivePrefix(""))
	if err != nil {
		f.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, h := range []host.Host{bad, good} {
		if err := h.Connect(ctx, sh.Peerstore().PeerInfo(sh.ID())); err != nil {
			f.Fatal(err)
		}
		h.Peerstore().AddAddrs(sh.ID(), sh.Addrs(), time.Hour)
	}
	goodRec := signedRecord(f, good)

	f.Fuzz(func(t *testing.T, data []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s, err := bad.NewStream(ctx, sh.ID(), ProtocolID)
		if err != nil {
			t.Fatalf("open stream: %v", err)
		}
		_ = s.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := s.Write(data); err == nil {
			_ = s.CloseWrite()
		}
		// The server answers what it can and ends the stream, in time.
		_, _ = io.Copy(io.Discard, s)
		s.Reset()

		g, err := good.NewStream(ctx, sh.ID(), ProtocolID)
		if err != nil {
			t.Fatalf("server stopped accepting streams: %v", err)
		}
		defer g.Reset()
		_ = g.SetDeadline(time.Now().Add(5 * time.Second))
		w, r := newWriter(g), newReader(g)
		if err := w.WriteMsg(&pb.Message{Type: pb.Message_REGISTER.Enum(), Register: &pb.Message_Register{
			Ns: proto.String("fuzz"), SignedPeerRecord: goodRec,
		}}); err != nil {
			t.Fatal(err)
		}
		var resp pb.Message
		if err := r.ReadMsg(&resp); err != nil {
			t.Fatalf("server stopped serving another peer: %v", err)
		}
		if resp.GetRegisterResponse().GetStatus() != StatusOK {
			t.Fatalf("good peer refused: %v", resp.GetRegisterResponse())
		}
	})
}
