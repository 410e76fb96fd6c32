package chat

import (
	"bytes"
	"encoding/binary"
	"flag"
	"io"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/libp2p/go-msgio/pbio"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/p2p-messaging/p2p-messaging/chat/pb"
)

var updateGolden = flag.Bool("update", false, "rewrite testdata/golden/*.bin")

// goldenNow is the receiver's clock when the golden frames are decoded.
var goldenNow = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// goldenFrames are the frames whose wire bytes are pinned in
// testdata/golden/<name>.bin: the varint length prefix and the protobuf
// Frame, exactly as a chat stream carries them.
func goldenFrames() map[string]*pb.Frame {
	id := []byte{0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff}
	return map[string]*pb.Frame{
		"hello":         {Body: &pb.Frame_Hello{Hello: &pb.Hello{Nick: "alice"}}},
		"hello_unicode": {Body: &pb.Frame_Hello{Hello: &pb.Hello{Nick: "élodie"}}},
		"message": {Body: &pb.Frame_Message{Message: &pb.Message{
			Id: id, SentUnixMs: goldenNow.UnixMilli(), Text: "hello, bob",
		}}},
		"message_unicode": {Body: &pb.Frame_Message{Message: &pb.Message{
			Id: id, SentUnixMs: goldenNow.UnixMilli() - 1, Text: "grüße 👋",
		}}},
		// 300 bytes of text: the Message's own length and the frame's
		// length prefix both take two varint bytes.
		"message_long": {Body: &pb.Frame_Message{Message: &pb.Message{
			Id: id, SentUnixMs: minSentTime.UnixMilli(), Text: string(bytes.Repeat([]byte("0123456789"), 30)),
		}}},
		"ack":       {Body: &pb.Frame_Ack{Ack: &pb.Ack{Id: id}}},
		"ping":      {Body: &pb.Frame_Ping{Ping: &pb.Ping{Nonce: 42}}},
		"ping_zero": {Body: &pb.Frame_Ping{Ping: &pb.Ping{}}}, // proto3: an empty Ping body
		"pong":      {Body: &pb.Frame_Pong{Pong: &pb.Pong{Nonce: math.MaxUint64}}},
	}
}

// TestGoldenWire pins the chat frames' bytes both ways: the encoder the
// streams use (pbio's delimited writer) produces the golden bytes, and the
// stream's frame reader decodes them back to the same frame, accepted by
// validation and with nothing left over. Run with -update to regenerate
// after a deliberate change to the wire format.
func TestGoldenWire(t *testing.T) {
	for name, f := range goldenFrames() {
		t.Run(name, func(t *testing.T) {
			var buf bytes.Buffer
			require.NoError(t, pbio.NewDelimitedWriter(&buf).WriteMsg(f))
			got := buf.Bytes()

			path := filepath.Join("testdata", "golden", name+".bin")
			if *updateGolden {
				require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
				require.NoError(t, os.WriteFile(path, got, 0o644))
			}
			want, err := os.ReadFile(path)
			require.NoError(t, err)
			require.Equal(t, want, got, "encode(%s) differs from %s", name, path)

			// The prefix is the body's length as an unsigned varint.
			n, k := binary.Uvarint(want)
			require.Positive(t, k)
			require.Equal(t, uint64(len(want)-k), n)
			body, err := proto.MarshalOptions{Deterministic: true}.Marshal(f)
			require.NoError(t, err)
			require.Equal(t, body, want[k:])

			r := newFrameReader(bytes.NewReader(want))
			r.now = func() time.Time { return goldenNow }
			dec, err := r.next()
			require.NoError(t, err)
			require.True(t, proto.Equal(f, dec), "decode(%s) = %v, want %v", path, dec, f)
			_, err = r.next()
			require.ErrorIs(t, err, io.EOF)
		})
	}
}

// The golden files are all there is: none is left over from a frame that
// was renamed or removed.
func TestGoldenFilesKnown(t *testing.T) {
	names := goldenFrames()
	files, err := filepath.Glob(filepath.Join("testdata", "golden", "*.bin"))
	require.NoError(t, err)
	require.Len(t, files, len(names))
	for _, p := range files {
		_, ok := names[filepath.Base(p[:len(p)-len(".bin")])]
		require.True(t, ok, "stale golden file %s", p)
	}
}
