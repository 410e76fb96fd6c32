package rendezvous

import (
	"bytes"
	"encoding/binary"
	"io"
	"log/slog"
	"math"
	"runtime"
	"testing"
	"testing/iotest"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-varint"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/p2p-messaging/p2p-messaging/rendezvous/pb"
)

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
	withHolder := func(holder []byte, regs ...*pb.Message_Register) []byte {
		var m pb.Message
		require.NoError(f, proto.Unmarshal(ctDiscoverResponse(f, regs...), &m))
		m.DiscoverResponse.NameHolder = holder
		b, err := proto.Marshal(&m)
		require.NoError(f, err)
		return b
	}
	f.Add(withHolder([]byte(id1)))
	f.Add(withHolder([]byte(id2), &pb.Message_Register{Ns: proto.String("room"), Ttl: proto.Uint64(7200), SignedPeerRecord: rec}))
	f.Add(withHolder([]byte("junk")))
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
		// name_holder: absent is no holder; what is accepted is a valid
		// peer ID whose bytes are exactly the field's.
		holder, herr := parseNameHolder(&m)
		raw := m.GetDiscoverResponse().GetNameHolder()
		switch {
		case herr == nil && raw == nil && holder != "":
			t.Fatalf("holder %s from an absent field", holder)
		case herr == nil && raw != nil && (string(holder) != string(raw) || holder.Validate() != nil):
			t.Fatalf("holder %q accepted from %x", holder, raw)
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
		b := appendFrame(nil, m)
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
			b := appendFrame(nil, &m)
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

func TestCookie(t *testing.T) {
	c := appendCookie(nil, 0x0102030405060708, "room")
	require.Equal(t, append([]byte{1, 2, 3, 4, 5, 6, 7, 8}, "room"...), c, "8 bytes big-endian, then the namespace")

	tests := []struct {
		name   string
		cookie []byte
		ns     string
		seq    uint64
		err    error
	}{
		{"empty starts over", nil, "room", 0, nil},
		{"own namespace", c, "room", 0x0102030405060708, nil},
		{"all namespaces", appendCookie(nil, 9, ""), "", 9, nil},
		{"max seq", appendCookie(nil, math.MaxUint64, "x"), "x", math.MaxUint64, nil},
		{"short", []byte{1, 2, 3}, "room", 0, errCookieMalformed},
		{"seven bytes", make([]byte, 7), "", 0, errCookieMalformed},
		{"other namespace", c, "roo", 0, errCookieNamespace},
		{"namespace prefix", c, "rooms", 0, errCookieNamespace},
		{"namespaced cookie for all", c, "", 0, errCookieNamespace},
		{"bad utf8", append(binary.BigEndian.AppendUint64(nil, 1), 0xc3), "\xc3", 0, errCookieMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seq, err := parseCookie(tt.cookie, tt.ns)
			require.ErrorIs(t, err, tt.err)
			require.Equal(t, tt.seq, seq)
		})
	}
}

// TestFrameReader: frames split at every byte, a frame larger than the
// small buffer, a clean end, a cut-off frame and an oversized prefix.
func TestFrameReader(t *testing.T) {
	small := []byte("hello")
	large := bytes.Repeat([]byte{7}, 3000)
	huge := bytes.Repeat([]byte{9}, framePoolSize+10)
	var in []byte
	for _, b := range [][]byte{small, large, huge, {}} {
		in = append(in, varint.ToUvarint(uint64(len(b)))...)
		in = append(in, b...)
	}
	r := newFrameReader(iotest.OneByteReader(bytes.NewReader(in)))
	for _, want := range [][]byte{small, large, huge, {}} {
		got, err := r.next()
		require.NoError(t, err)
		require.Equal(t, want, got)
	}
	_, err := r.next()
	require.ErrorIs(t, err, io.EOF)
	r.done()

	_, err = newFrameReader(bytes.NewReader([]byte{10, 1, 2})).next()
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
	_, err = newFrameReader(bytes.NewReader([]byte{0x80})).next()
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
	_, err = newFrameReader(bytes.NewReader(varint.ToUvarint(MaxMessageSize + 1))).next()
	require.ErrorIs(t, err, errFrameTooLarge)

	// The largest frame, read in uneven pieces, comes back whole.
	max := bytes.Repeat([]byte{3}, MaxMessageSize)
	got, err := newFrameReader(iotest.HalfReader(bytes.NewReader(append(varint.ToUvarint(MaxMessageSize), max...)))).next()
	require.NoError(t, err)
	require.Equal(t, max, got)

	// A large claim followed by a trickle that stops is a truncated frame.
	_, err = newFrameReader(bytes.NewReader(append(varint.ToUvarint(MaxMessageSize), make([]byte, 10)...))).next()
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
}

// A peer announcing the largest frame and sending little makes the server
// hold memory for what arrived, not for the claim.
func TestFrameReaderGrowsWithData(t *testing.T) {
	in := append(varint.ToUvarint(MaxMessageSize), make([]byte, 1000)...)
	var m1, m2 runtime.MemStats
	runtime.ReadMemStats(&m1)
	_, err := newFrameReader(bytes.NewReader(in)).next()
	runtime.ReadMemStats(&m2)
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
	// Far below the 1 MiB claimed (headroom for anything else allocating).
	require.Less(t, m2.TotalAlloc-m1.TotalAlloc, uint64(256<<10))
}
