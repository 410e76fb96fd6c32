package chat

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"strings"
	"testing"
	"time"

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

func TestValidNames(t *testing.T) {
	for _, ok := range []string{"alice", "bob_2", "élodie", "a.b-c"} {
		require.True(t, ValidNick(ok), ok)
	}
	for _, bad := range []string{"", "Bob", "a b", "a/b", "a\x00", string(make([]byte, MaxNickLen+1)), "\xff"} {
		require.False(t, ValidNick(bad), "%q", bad)
	}
}
