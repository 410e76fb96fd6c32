package chat

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-msgio/pbio"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/p2p-messaging/p2p-messaging/chat/pb"
)

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

func randID(t testing.TB) []byte {
	t.Helper()
	b := make([]byte, IDLen)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return b
}

// barrier sends a Ping on s and reads until its Pong: every frame written
// before it has been handled by the node's reader.
func barrier(t *testing.T, s network.Stream, r pbio.ReadCloser, nonce uint64) (acks int) {
	t.Helper()
	_, err := s.Write(encode(t, &pb.Frame{Body: &pb.Frame_Ping{Ping: &pb.Ping{Nonce: nonce}}}))
	require.NoError(t, err)
	for {
		var f pb.Frame
		require.NoError(t, r.ReadMsg(&f))
		if f.GetAck() != nil {
			acks++
		}
		if f.GetPong().GetNonce() == nonce {
			return acks
		}
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

// Attack 5: a stranger (no verified nick, never written to) floods
// messages. Only its first message is kept, as its request; nothing
// reaches the history or the message events.
func TestStrangerFloodStoresOneRequest(t *testing.T) {
	victim := newNode(t, nil, "victim", "", func(c *testConfig) { c.PingTimeout = time.Minute })
	raw := rawPeer(t)
	s := rawStream(t, raw, victim.Node)
	defer s.Reset()
	r := pbio.NewDelimitedReader(s, MaxFrameSize)
	var f pb.Frame
	_, err := s.Write(encode(t, helloF("flood")))
	require.NoError(t, err)
	require.NoError(t, r.ReadMsg(&f))
	const n = 150 // under the receive burst: the gate, not the rate, stops them
	var frames []*pb.Frame
	for i := range n {
		frames = append(frames, msgF(randID(t), fmt.Sprintf("buy now %d", i)))
	}
	_, err = s.Write(encode(t, frames...))
	require.NoError(t, err)
	barrier(t, s, r, 1)
	require.NoError(t, victim.db.flush())
	acks := barrier(t, s, r, 2)
	_ = acks
	reqs, err := victim.Requests()
	require.NoError(t, err)
	require.Len(t, reqs, 1)
	require.Equal(t, "buy now 0", reqs[0].Text)
	h, err := victim.History(raw.ID().String(), 0)
	require.NoError(t, err)
	require.Empty(t, h)
	require.Zero(t, victim.rec.count(func(e Event) bool { _, ok := e.(EventMessage); return ok }))
	require.Equal(t, 1, victim.rec.count(func(e Event) bool { _, ok := e.(EventRequest); return ok }))
}

// Many strangers: the requests are bounded, the oldest dropped.
func TestRequestsAreBounded(t *testing.T) {
	victim := newNode(t, nil, "victim", "", func(c *testConfig) { c.MaxRequests = 5 })
	for i := range 8 {
		raw := rawPeer(t)
		s := rawStream(t, raw, victim.Node)
		r := pbio.NewDelimitedReader(s, MaxFrameSize)
		_, err := s.Write(encode(t, helloF("s"), msgF(randID(t), fmt.Sprintf("hello %d", i))))
		require.NoError(t, err)
		var f pb.Frame
		require.NoError(t, r.ReadMsg(&f)) // Hello
		require.NoError(t, r.ReadMsg(&f)) // the request's ack
		require.NotNil(t, f.GetAck())
		s.Reset()
	}
	reqs, err := victim.Requests()
	require.NoError(t, err)
	require.Len(t, reqs, 5)
	require.Equal(t, "hello 3", reqs[0].Text)
	require.Equal(t, "hello 7", reqs[4].Text)
}

// contactStream opens a raw chat stream to n from a peer n allowed, with
// the Hellos exchanged.
func contactStream(t *testing.T, n *tnode, nick string) (host.Host, network.Stream, pbio.ReadCloser) {
	t.Helper()
	raw := rawPeer(t)
	_, err := n.Allow(raw.ID().String())
	require.NoError(t, err)
	s := rawStream(t, raw, n.Node)
	t.Cleanup(func() { s.Reset() })
	r := pbio.NewDelimitedReader(s, MaxFrameSize)
	_, err = s.Write(encode(t, helloF(nick)))
	require.NoError(t, err)
	var f pb.Frame
	require.NoError(t, r.ReadMsg(&f))
	return raw, s, r
}

// Every peer, contacts included, has a receive rate: beyond its burst,
// messages are not taken (not acknowledged), and the stream stays up.
func TestReceiveRateThrottlesAContact(t *testing.T) {
	victim := newNode(t, nil, "victim", "", func(c *testConfig) {
		c.ReceiveRate, c.ReceiveBurst = 0.001, 5
		c.PingTimeout = time.Minute
	})
	raw, s, r := contactStream(t, victim, "fast")
	var frames []*pb.Frame
	for i := range 20 {
		frames = append(frames, msgF(randID(t), fmt.Sprintf("m%d", i)))
	}
	_, err := s.Write(encode(t, frames...))
	require.NoError(t, err)
	acks := barrier(t, s, r, 1)
	require.NoError(t, victim.db.flush())
	acks += barrier(t, s, r, 2)
	require.Equal(t, 5, acks)
	h, err := victim.History(raw.ID().String(), 0)
	require.NoError(t, err)
	require.Len(t, h, 5)
}

// A peer's stored bytes are bounded: past its quota its messages are not
// taken, with a warning, and the disk does not fill.
func TestPeerQuota(t *testing.T) {
	victim := newNode(t, nil, "victim", "", func(c *testConfig) {
		c.PeerQuota = 10
		c.PingTimeout = time.Minute
	})
	raw, s, r := contactStream(t, victim, "big")
	var frames []*pb.Frame
	for range 5 {
		frames = append(frames, msgF(randID(t), "aaaa"))
	}
	_, err := s.Write(encode(t, frames...))
	require.NoError(t, err)
	barrier(t, s, r, 1)
	require.NoError(t, victim.db.flush())
	acks := barrier(t, s, r, 2)
	h, err := victim.History(raw.ID().String(), 0)
	require.NoError(t, err)
	require.Len(t, h, 2, "10 bytes hold two 4-byte texts")
	require.LessOrEqual(t, acks, 2)
	victim.rec.wait(t, 5*time.Second, func(e Event) bool {
		w, ok := e.(EventWarning)
		return ok && w.Peer == raw.ID()
	})
}
