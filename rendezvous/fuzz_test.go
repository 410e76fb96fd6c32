package rendezvous

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/multiformats/go-varint"
	"google.golang.org/protobuf/proto"

	"github.com/p2p-messaging/p2p-messaging/rendezvous/pb"
)

// fuzzSeeds are framed inputs: valid requests, hostile prefixes, garbage.
func fuzzSeeds(f *testing.F) {
	_, rec := goldenPeer(f)
	msgs := []proto.Message{
		&pb.Message{Type: pb.Message_REGISTER.Enum(), Register: &pb.Message_Register{Ns: proto.String("room"), SignedPeerRecord: rec, Ttl: proto.Uint64(7200)}},
		&pb.Message{Type: pb.Message_DISCOVER.Enum(), Discover: &pb.Message_Discover{Ns: proto.String("room"), Limit: proto.Uint64(1 << 63), Cookie: appendCookie(nil, 1, "room")}},
		&pb.Message{Type: pb.Message_DISCOVER.Enum(), Discover: &pb.Message_Discover{}},
		&pb.Message{Type: pb.Message_UNREGISTER.Enum(), Unregister: &pb.Message_Unregister{Ns: proto.String("room")}},
		&pb.Message{Type: pb.Message_REGISTER_RESPONSE.Enum()},
	}
	var all []byte
	for _, m := range msgs {
		b := appendServerFrame(nil, m)
		f.Add(b)
		all = append(all, b...)
	}
	f.Add(all)
	f.Add([]byte{})
	f.Add(varint.ToUvarint(1 << 32))
	f.Add([]byte{0x05, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0x02, 0x08, 0x63})
	f.Add(append(varint.ToUvarint(100), 1, 2, 3))
}

// FuzzDecodeMessage runs the request decoder and the cookie parser on
// arbitrary bytes: no panic, and what decodes re-encodes stably.
func FuzzDecodeMessage(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		r := newReader(bytes.NewReader(data))
		for {
			var m pb.Message
			if err := r.ReadMsg(&m); err != nil {
				break
			}
			b := appendServerFrame(nil, &m)
			var again pb.Message
			if err := newReader(bytes.NewReader(b)).ReadMsg(&again); err != nil {
				t.Fatalf("re-decoding an encoded message: %v", err)
			}
			if !proto.Equal(&m, &again) {
				t.Fatal("message changed through encode/decode")
			}
			if d := m.GetDiscover(); d != nil {
				if seq, err := parseCookie(d.GetCookie(), d.GetNs()); err == nil && len(d.GetCookie()) > 0 {
					if !bytes.Equal(appendCookie(nil, seq, d.GetNs()), d.GetCookie()) {
						t.Fatal("cookie does not round-trip")
					}
				}
			}
		}
		var w pb.WatchRequest
		_ = newReader(bytes.NewReader(data)).ReadMsg(&w)

		// The server's frame reader sees the same frames as pbio, and its
		// allocation-free DISCOVER decoder agrees with proto.
		pr, fr := newReader(bytes.NewReader(data)), newFrameReader(bytes.NewReader(data))
		for {
			var want pb.Message
			werr := pr.ReadMsg(&want)
			body, err := fr.next()
			if err != nil {
				if werr == nil {
					t.Fatalf("frame reader failed where pbio did not: %v", err)
				}
				break
			}
			var got pb.Message
			if uerr := proto.Unmarshal(body, &got); (uerr == nil) != (werr == nil) || (uerr == nil && !proto.Equal(&got, &want)) {
				t.Fatalf("frame reader and pbio disagree: %v / %v", uerr, werr)
			}
			if dr, ok := parseDiscover(body); ok {
				typ, tok := requestType(&got)
				dq := got.GetDiscover()
				if werr != nil || !tok || typ != pb.Message_DISCOVER || string(dr.ns) != dq.GetNs() ||
					dr.limit != dq.GetLimit() || !bytes.Equal(dr.cookie, dq.GetCookie()) {
					t.Fatalf("fast DISCOVER decoding disagrees with proto: %+v vs %v (%v)", dr, &got, werr)
				}
			}
			fr.done()
			if werr != nil {
				break
			}
		}
	})
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
