package chat

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-msgio/pbio"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/p2p-messaging/p2p-messaging/chat/pb"
)

func encode(t testing.TB, frames ...*pb.Frame) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := pbio.NewDelimitedWriter(&buf)
	for _, f := range frames {
		require.NoError(t, w.WriteMsg(f))
	}
	return buf.Bytes()
}

func helloF(nick string) *pb.Frame {
	return &pb.Frame{Body: &pb.Frame_Hello{Hello: &pb.Hello{Nick: nick}}}
}

func msgF(id []byte, text string) *pb.Frame {
	return &pb.Frame{Body: &pb.Frame_Message{Message: &pb.Message{Id: id, SentUnixMs: 1700000000000, Text: text}}}
}

var id16 = bytes.Repeat([]byte{7}, IDLen)

// badUTF8Msg encodes a Message frame whose text is not UTF-8 (the protobuf
// library refuses to marshal one, so it is built by hand).
func badUTF8Msg(text string) []byte {
	var m []byte
	m = protowire.AppendTag(m, 1, protowire.BytesType)
	m = protowire.AppendBytes(m, id16)
	m = protowire.AppendTag(m, 3, protowire.BytesType)
	m = protowire.AppendString(m, text)
	var f []byte
	f = protowire.AppendTag(f, 2, protowire.BytesType)
	f = protowire.AppendBytes(f, m)
	return append(rawPrefix(uint64(len(f))), f...)
}

// rawPrefix is a length prefix with no body behind it.
func rawPrefix(n uint64) []byte { return binary.AppendUvarint(nil, n) }

// testNow is the receiver's clock in the frame tests.
var testNow = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

func msgAt(ms int64) *pb.Frame {
	return &pb.Frame{Body: &pb.Frame_Message{Message: &pb.Message{Id: id16, SentUnixMs: ms, Text: "hi"}}}
}

func TestValidateFrame(t *testing.T) {
	minMs := minSentTime.UnixMilli()
	maxMs := testNow.Add(maxClockSkew).UnixMilli()
	cases := []struct {
		name string
		f    *pb.Frame
		err  error
	}{
		{"hello", helloF("bob"), nil},
		{"hello bad nick", helloF("bob smith"), errBadNick},
		{"hello empty nick", helloF(""), errBadNick},
		{"hello long nick", helloF(strings.Repeat("a", MaxNickLen+1)), errBadNick},
		{"hello upper case nick", helloF("Bob"), errBadNick},
		{"hello full-width nick", helloF("ｂｏｂ"), errBadNick},
		{"hello cyrillic o", helloF("b\u043eb"), errBadNick},
		{"hello all cyrillic", helloF("\u0431\u043e\u0431"), nil},
		{"message", msgF(id16, "hi"), nil},
		{"message max text", msgF(id16, strings.Repeat("a", MaxTextLen)), nil},
		{"message text too long", msgF(id16, strings.Repeat("a", MaxTextLen+1)), errTextTooLong},
		{"message invalid utf8", &pb.Frame{Body: &pb.Frame_Message{Message: &pb.Message{Id: id16, SentUnixMs: minMs, Text: "a\xffb"}}}, errBadUTF8},
		{"message empty", msgF(id16, ""), errEmptyText},
		{"message short id", msgF(id16[:3], "hi"), errBadID},
		{"message sent 2^62", msgAt(1 << 62), errBadSentTime},
		{"message sent max int64", msgAt(math.MaxInt64), errBadSentTime},
		{"message sent min int64", msgAt(math.MinInt64), errBadSentTime},
		{"message sent zero", msgAt(0), errBadSentTime},
		{"message sent -1", msgAt(-1), errBadSentTime},
		{"message sent before 2020", msgAt(minMs - 1), errBadSentTime},
		{"message sent 2020-01-01", msgAt(minMs), nil},
		{"message sent now", msgAt(testNow.UnixMilli()), nil},
		{"message sent now+24h", msgAt(maxMs), nil},
		{"message sent now+24h+1ms", msgAt(maxMs + 1), errBadSentTime},
		{"ack", &pb.Frame{Body: &pb.Frame_Ack{Ack: &pb.Ack{Id: id16}}}, nil},
		{"ack no id", &pb.Frame{Body: &pb.Frame_Ack{Ack: &pb.Ack{}}}, errBadID},
		{"ping", &pb.Frame{Body: &pb.Frame_Ping{Ping: &pb.Ping{Nonce: 1}}}, nil},
		{"ping zero", &pb.Frame{Body: &pb.Frame_Ping{Ping: &pb.Ping{}}}, nil},
		{"pong max", &pb.Frame{Body: &pb.Frame_Pong{Pong: &pb.Pong{Nonce: math.MaxUint64}}}, nil},
		{"empty", &pb.Frame{}, errNoBody},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := validateFrame(c.f, testNow)
			if c.err == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, c.err)
			// A Message with a valid id is refused alone; everything
			// else resets the stream.
			var bm *badMessageError
			alone := c.f.GetMessage() != nil && len(c.f.GetMessage().GetId()) == IDLen
			require.Equal(t, alone, errors.As(err, &bm), "refused alone: %v", err)
			require.Equal(t, alone, errors.Is(err, errBadMessage))
			if alone {
				require.Equal(t, id16, bm.ID)
			}
		})
	}
}

// The receiver's clock moves the upper bound: a message sent 25 h ahead of
// the receiver is refused now and accepted two hours later.
func TestSentTimeFollowsClock(t *testing.T) {
	sent := testNow.Add(25 * time.Hour).UnixMilli()
	require.ErrorIs(t, checkSentTime(sent, testNow), errBadSentTime)
	require.NoError(t, checkSentTime(sent, testNow.Add(time.Hour)))
	// Every accepted time survives the conversions the node makes.
	for _, ms := range []int64{minSentTime.UnixMilli(), testNow.Add(maxClockSkew).UnixMilli()} {
		require.NoError(t, checkSentTime(ms, testNow))
		b, err := time.UnixMilli(ms).UTC().MarshalJSON()
		require.NoError(t, err)
		require.NotEmpty(t, b)
	}
	// What the issue reproduced: 2^62 ms does not survive them.
	_, err := time.UnixMilli(1 << 62).UTC().MarshalJSON()
	require.Error(t, err)
}

// A refused Message after the Hello is dropped inside the reader, which
// goes on with the next frame; before the Hello it is an error.
func TestFrameReaderDropsBadMessage(t *testing.T) {
	good := func(b byte) *pb.Frame {
		return &pb.Frame{Body: &pb.Frame_Message{Message: &pb.Message{Id: bytes.Repeat([]byte{b}, IDLen), SentUnixMs: testNow.UnixMilli(), Text: "ok"}}}
	}
	data := encode(t, helloF("mallory"), good(1), msgAt(1<<62), good(2),
		msgF(id16, strings.Repeat("a", MaxTextLen+1)), msgAt(minSentTime.UnixMilli()-1), good(3))
	r := newFrameReader(bytes.NewReader(data))
	r.now = func() time.Time { return testNow }
	var refused []error
	r.refused = func(e *badMessageError) { refused = append(refused, e) }
	f, err := r.next()
	require.NoError(t, err)
	require.Equal(t, "mallory", f.GetHello().GetNick())
	for _, b := range []byte{1, 2, 3} {
		f, err := r.next()
		require.NoError(t, err)
		require.Equal(t, bytes.Repeat([]byte{b}, IDLen), f.GetMessage().GetId())
	}
	_, err = r.next()
	require.ErrorIs(t, err, io.EOF)
	require.Equal(t, 3, r.nRefused)
	require.Len(t, refused, 3)
	require.ErrorIs(t, refused[0], errBadSentTime)
	require.ErrorIs(t, refused[1], errTextTooLong)
	require.ErrorIs(t, refused[2], errBadSentTime)
	require.Contains(t, refused[0].Error(), "0707070707070707")

	// Before the Hello, a bad Message is an error like any other.
	r = newFrameReader(bytes.NewReader(encode(t, msgAt(1<<62), helloF("mallory"))))
	_, err = r.next()
	require.ErrorIs(t, err, errBadMessage)

	n, err := DecodeFrames(data)
	require.NoError(t, err)
	require.Equal(t, 4, n)
}

func TestDecodeFramesLimits(t *testing.T) {
	n, err := DecodeFrames(encode(t, helloF("a"), msgF(id16, "x")))
	require.NoError(t, err)
	require.Equal(t, 2, n)

	// A prefix above MaxFrameSize fails before the body is read.
	n, err = DecodeFrames(append(encode(t, helloF("a")), rawPrefix(MaxFrameSize+1)...))
	require.ErrorIs(t, err, errFrameTooLarge)
	require.Equal(t, 1, n)

	// A frame of exactly MaxFrameSize is accepted by the reader (and then
	// rejected by validation because the text is too long).
	big := msgF(id16, strings.Repeat("a", MaxFrameSize-40))
	b := encode(t, big)
	require.LessOrEqual(t, proto.Size(big), MaxFrameSize)
	_, err = DecodeFrames(b)
	require.ErrorIs(t, err, errTextTooLong)

	// A stream cut inside a frame is not a clean end.
	_, err = DecodeFrames(b[:100])
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
	_, err = DecodeFrames([]byte("0"))
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
}

func FuzzDecodeFrame(f *testing.F) {
	f.Add(encode(f, helloF("alice")))
	f.Add(encode(f, helloF("alice"), msgF(id16, "hi"), &pb.Frame{Body: &pb.Frame_Ack{Ack: &pb.Ack{Id: id16}}}))
	f.Add(encode(f, &pb.Frame{Body: &pb.Frame_Pong{Pong: &pb.Pong{Nonce: 9}}}))
	f.Add(rawPrefix(MaxFrameSize + 1))
	f.Add(rawPrefix(1 << 62))
	f.Add([]byte{0x05, 'h', 'e', 'l', 'l', 'o'})
	f.Add(badUTF8Msg("\xff\xfe"))
	f.Add([]byte{})
	f.Add(encode(f, helloF("alice"), msgAt(1<<62), msgF(id16, "after")))
	f.Add(encode(f, msgAt(-1), helloF("alice")))
	f.Fuzz(func(t *testing.T, data []byte) {
		n, err := DecodeFrames(data)
		if n < 0 {
			t.Fatal("negative count")
		}
		if err == nil && len(data) > 0 && n == 0 {
			t.Fatal("bytes consumed without a frame or an error")
		}
	})
}

// rawPeer is a plain libp2p host that speaks the chat protocol by hand.
func rawPeer(t testing.TB) host.Host {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics(), libp2p.ForceReachabilityPublic())
	require.NoError(t, err)
	t.Cleanup(func() { h.Close() })
	return h
}

func rawStream(t testing.TB, h host.Host, n *Node) network.Stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, h.Connect(ctx, peer.AddrInfo{ID: n.ID(), Addrs: n.h.Addrs()}))
	s, err := h.NewStream(ctx, n.ID(), ProtocolID)
	require.NoError(t, err)
	require.NoError(t, s.SetDeadline(time.Now().Add(10*time.Second)))
	return s
}

// expectReset reads until the stream ends and expects a reset (not a clean
// close). The node's Hello may or may not arrive before the reset.
func expectReset(t *testing.T, s network.Stream) {
	t.Helper()
	r := pbio.NewDelimitedReader(s, MaxFrameSize)
	var f pb.Frame
	for {
		err := r.ReadMsg(&f)
		if err == nil {
			continue // e.g. an Ack for a valid frame before the bad one
		}
		require.False(t, errors.Is(err, io.EOF), "want a reset, got a clean close")
		require.ErrorIs(t, err, network.ErrReset)
		return
	}
}

func TestInvalidFramesResetOneStream(t *testing.T) {
	alice := newNode(t, nil, "alice", "")
	raw := rawPeer(t)
	cases := []struct {
		name string
		data []byte
	}{
		{"oversized prefix", rawPrefix(MaxFrameSize + 1)},
		{"oversized after hello", append(encode(t, helloF("mallory")), rawPrefix(10<<20)...)},
		{"garbage", []byte{0x05, 'h', 'e', 'l', 'l', 'o'}},
		{"empty frame", rawPrefix(0)},
		{"first frame not hello", encode(t, msgF(id16, "hi"))},
		{"invalid utf8", append(encode(t, helloF("mallory")), badUTF8Msg("bad\xc3\x28")...)},
		{"bad id", encode(t, helloF("mallory"), msgF([]byte{1, 2, 3}, "hi"))},
		{"bad hello nick", encode(t, helloF("mal lory"))},
		{"hello nick not canonical", encode(t, helloF("Mallory"))},
		{"hello nick mixed script", encode(t, helloF("m\u0430llory"))},
		{"bad message before hello", encode(t, msgAt(1<<62), helloF("mallory"))},
		{"ack without id", encode(t, helloF("mallory"), &pb.Frame{Body: &pb.Frame_Ack{Ack: &pb.Ack{}}})},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := rawStream(t, raw, alice.Node)
			_, err := s.Write(c.data)
			require.NoError(t, err)
			expectReset(t, s)
		})
	}
	require.Zero(t, alice.rec.count(func(e Event) bool { _, ok := e.(EventMessage); return ok }))

	// The node keeps serving: a well-formed stream gets its message acked.
	s := rawStream(t, raw, alice.Node)
	_, err := s.Write(encode(t, helloF("mallory"), msgF(id16, "fine now")))
	require.NoError(t, err)
	r := pbio.NewDelimitedReader(s, MaxFrameSize)
	var f pb.Frame
	require.NoError(t, r.ReadMsg(&f))
	require.Equal(t, "alice", f.GetHello().GetNick())
	require.NoError(t, r.ReadMsg(&f))
	require.Equal(t, id16, f.GetAck().GetId())
	alice.rec.wait(t, 5*time.Second, isRequest("fine now"))

	// A duplicate is acknowledged again but not shown twice.
	_, err = s.Write(encode(t, msgF(id16, "fine now")))
	require.NoError(t, err)
	require.NoError(t, r.ReadMsg(&f))
	require.Equal(t, id16, f.GetAck().GetId())
	require.NoError(t, s.CloseWrite())
	for r.ReadMsg(&f) == nil {
	}
	require.Equal(t, 1, alice.rec.count(isRequest("fine now")))
}

// Issue 13 item 8: a Message with sent_unix_ms = 2^62 was stored, failed
// its batch of writes (JSON time out of range) and was never acked, and one
// such frame every few good ones stalled them all. Now each bad message is
// dropped alone: the stream stays up, every good message around it is
// stored and acked, the bad ones are neither.
func TestBadMessageRefusedAlone(t *testing.T) {
	alice := newNode(t, nil, "alice", "", func(c *testConfig) {
		c.PingTimeout = time.Minute
		c.ReceiveBurst = 1000
	})
	raw := rawPeer(t)
	_, err := alice.Allow(raw.ID().String()) // a contact: its messages are taken
	require.NoError(t, err)
	s := rawStream(t, raw, alice.Node)
	defer s.Reset()

	const good = 200
	now := time.Now()
	bad := []*pb.Message{
		{SentUnixMs: 1 << 62, Text: "poison"},
		{SentUnixMs: now.Add(maxClockSkew + time.Hour).UnixMilli(), Text: "from the future"},
		{SentUnixMs: minSentTime.UnixMilli() - 1, Text: "from 2019"},
		{SentUnixMs: now.UnixMilli(), Text: strings.Repeat("a", MaxTextLen+1)},
		{SentUnixMs: now.UnixMilli()},
	}
	frames := []*pb.Frame{helloF("mallory")}
	goodIDs := map[string]bool{}
	for i := range good {
		id := bytes.Repeat([]byte{byte(i), byte(i >> 8), 1}, 6)[:IDLen]
		goodIDs[string(id)] = true
		frames = append(frames, &pb.Frame{Body: &pb.Frame_Message{Message: &pb.Message{Id: id, SentUnixMs: now.UnixMilli(), Text: "good"}}})
		b := proto.Clone(bad[i%len(bad)]).(*pb.Message)
		b.Id = bytes.Repeat([]byte{byte(i), byte(i >> 8), 2}, 6)[:IDLen]
		frames = append(frames, &pb.Frame{Body: &pb.Frame_Message{Message: b}})
	}
	go func() { _, _ = s.Write(encode(t, frames...)) }()

	r := pbio.NewDelimitedReader(s, MaxFrameSize)
	acked := map[string]bool{}
	for len(acked) < good {
		var f pb.Frame
		require.NoError(t, r.ReadMsg(&f), "after %d acks", len(acked))
		if id := f.GetAck().GetId(); id != nil {
			require.True(t, goodIDs[string(id)], "ack for a refused message %x", id)
			acked[string(id)] = true
		}
	}
	// The stream is still up and ends cleanly, with no ack for a bad one.
	require.NoError(t, s.CloseWrite())
	for {
		var f pb.Frame
		err := r.ReadMsg(&f)
		if err != nil {
			require.ErrorIs(t, err, io.EOF, "want a clean close")
			break
		}
		if id := f.GetAck().GetId(); id != nil {
			require.True(t, goodIDs[string(id)], "ack for a refused message %x", id)
		}
	}
	isMsg := func(e Event) bool { _, ok := e.(EventMessage); return ok }
	require.Eventually(t, func() bool { return alice.rec.count(isMsg) >= good }, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, good, alice.rec.count(isMsg))
	require.Equal(t, good, alice.rec.count(isMessage("good")))
}

func FuzzChatStream(f *testing.F) {
	f.Add(encode(f, helloF("mallory"), msgF(id16, "hi")))
	f.Add(encode(f, helloF("mallory"), &pb.Frame{Body: &pb.Frame_Ping{Ping: &pb.Ping{Nonce: 3}}}))
	f.Add(encode(f, helloF("mallory"), &pb.Frame{Body: &pb.Frame_Ack{Ack: &pb.Ack{Id: id16}}}))
	f.Add(encode(f, helloF("mallory"), msgAt(1<<62), msgF(id16, "after")))
	f.Add(encode(f, helloF("Mallory")))
	f.Add(append(encode(f, helloF("mallory")), rawPrefix(MaxFrameSize+1)...))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	alice := newNode(f, nil, "alice", "")
	raw := rawPeer(f)
	hello := encode(f, helloF("mallory"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s := rawStream(t, raw, alice.Node)
		defer s.Reset()
		if _, err := s.Write(data); err == nil {
			_ = s.CloseWrite()
			r := pbio.NewDelimitedReader(s, MaxFrameSize)
			var fr pb.Frame
			for r.ReadMsg(&fr) == nil {
			}
		}
		// Whatever that did, the node still serves a new stream.
		s2 := rawStream(t, raw, alice.Node)
		defer s2.Reset()
		_, err := s2.Write(hello)
		require.NoError(t, err)
		var fr pb.Frame
		require.NoError(t, pbio.NewDelimitedReader(s2, MaxFrameSize).ReadMsg(&fr))
		require.Equal(t, "alice", fr.GetHello().GetNick())
	})
}

func TestHelloTimeout(t *testing.T) {
	alice := newNode(t, nil, "alice", "", func(c *testConfig) { c.HelloTimeout = 300 * time.Millisecond })
	raw := rawPeer(t)
	s := rawStream(t, raw, alice.Node)
	start := time.Now()
	expectReset(t, s) // we never send a Hello
	require.Less(t, time.Since(start), 5*time.Second)
}

func TestStreamsPerPeerBounded(t *testing.T) {
	// The raw peer never answers pings: keep the liveness timeout out of the way.
	alice := newNode(t, nil, "alice", "", func(c *testConfig) { c.PingTimeout = time.Minute })
	raw := rawPeer(t)
	var streams []network.Stream
	for i := range maxStreamsPerPeer + 3 {
		s := rawStream(t, raw, alice.Node)
		defer s.Reset()
		_, err := s.Write(encode(t, helloF("mallory")))
		require.NoError(t, err)
		var f pb.Frame
		require.NoError(t, pbio.NewDelimitedReader(s, MaxFrameSize).ReadMsg(&f), "stream %d", i)
		streams = append(streams, s)
		require.Eventually(t, func() bool {
			return alice.peers.streamCount(raw.ID()) == min(i+1, maxStreamsPerPeer)
		}, 5*time.Second, 10*time.Millisecond)
	}
	// The oldest streams were retired: reading them ends well before the
	// 10 s deadline rawStream set.
	start := time.Now()
	_, _ = io.ReadAll(streams[0])
	require.Less(t, time.Since(start), 5*time.Second)
}

// A message whose ack does not come is written again on the same stream.
func TestUnackedMessageResent(t *testing.T) {
	alice := newNode(t, nil, "alice", "", func(c *testConfig) {
		c.AckTimeout = 300 * time.Millisecond
		c.PingTimeout = time.Minute
	})
	raw := rawPeer(t)
	s := rawStream(t, raw, alice.Node)
	defer s.Reset()
	_, err := s.Write(encode(t, helloF("mallory")))
	require.NoError(t, err)
	r := pbio.NewDelimitedReader(s, MaxFrameSize)
	var f pb.Frame
	require.NoError(t, r.ReadMsg(&f))
	require.NotNil(t, f.GetHello())
	alice.rec.wait(t, 5*time.Second, isPresence(raw.ID().String(), true))

	m := send(t, alice, raw.ID().String(), "ack me")
	nextMessage := func() *pb.Message {
		for {
			var f pb.Frame
			require.NoError(t, r.ReadMsg(&f))
			if msg := f.GetMessage(); msg != nil {
				return msg
			}
		}
	}
	first := nextMessage()
	require.Equal(t, "ack me", first.GetText())
	again := nextMessage() // no ack sent: it comes again
	require.Equal(t, first.GetId(), again.GetId())
	_, err = s.Write(encode(t, &pb.Frame{Body: &pb.Frame_Ack{Ack: &pb.Ack{Id: again.GetId()}}}))
	require.NoError(t, err)
	alice.rec.wait(t, 5*time.Second, isDelivered(m.ID))
	require.Equal(t, 1, alice.rec.count(isDelivered(m.ID)))
}
