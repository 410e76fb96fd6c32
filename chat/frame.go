package chat

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	"github.com/p2p-messaging/p2p-messaging/chat/pb"
)

// Frame validation errors. A frame that fails validation resets the stream.
var (
	errNoBody        = errors.New("frame has no known body")
	errBadID         = errors.New("message id must be 16 bytes")
	errBadUTF8       = errors.New("text is not valid UTF-8")
	errTextTooLong   = errors.New("text too long")
	errEmptyText     = errors.New("empty text")
	errBadNick       = errors.New("invalid nick")
	errFrameTooLarge = errors.New("frame too large")
)

func newID() (string, error) {
	var b [IDLen]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("message id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

func parseID(s string) ([]byte, error) {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != IDLen {
		return nil, fmt.Errorf("message id %q: %w", s, errBadID)
	}
	return b, nil
}

// ValidNick reports whether s is a nick in canonical form: NormalizeNick
// accepts it and returns it unchanged (lower case, width-folded, NFC, 1 to
// MaxNickLen bytes of letters, digits, '-', '_' and '.', one script). A nick
// on the wire (Hello) and every nick the node compares must be in this form;
// what a user types ("Bob", "ｂｏｂ") goes through NormalizeNick first.
func ValidNick(s string) bool {
	n, err := NormalizeNick(s)
	return err == nil && n == s
}

// ValidRoom reports whether s can be used as a room name (same alphabet as a
// nick, up to MaxRoomLen bytes).
func ValidRoom(s string) bool { return validName(s, MaxRoomLen) }

func validName(s string, max int) bool {
	if s == "" || len(s) > max || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if !unicode.IsLetter(r) && !unicode.IsDigit(r) && r != '-' && r != '_' && r != '.' {
			return false
		}
	}
	return true
}

func validateText(text string) error {
	switch {
	case text == "":
		return errEmptyText
	case len(text) > MaxTextLen:
		return fmt.Errorf("%w: %d bytes, max %d", errTextTooLong, len(text), MaxTextLen)
	case !utf8.ValidString(text):
		return errBadUTF8
	}
	return nil
}

// validateFrame checks a decoded frame against the protocol's rules.
func validateFrame(f *pb.Frame) error {
	switch b := f.GetBody().(type) {
	case *pb.Frame_Hello:
		if nick := b.Hello.GetNick(); !ValidNick(nick) {
			if _, err := NormalizeNick(nick); err != nil {
				return fmt.Errorf("hello: %w", err)
			}
			return fmt.Errorf("hello: %w: %+q is not in canonical form", errBadNick, nick)
		}
	case *pb.Frame_Message:
		m := b.Message
		if len(m.GetId()) != IDLen {
			return fmt.Errorf("message: %w", errBadID)
		}
		if err := validateText(m.GetText()); err != nil {
			return fmt.Errorf("message: %w", err)
		}
	case *pb.Frame_Ack:
		if len(b.Ack.GetId()) != IDLen {
			return fmt.Errorf("ack: %w", errBadID)
		}
	case *pb.Frame_Ping, *pb.Frame_Pong:
	default:
		return errNoBody
	}
	return nil
}

// frameReader reads length-prefixed frames: an unsigned varint length, at
// most MaxFrameSize (checked before allocating), then a protobuf Frame.
type frameReader struct {
	r   *bufio.Reader
	buf []byte
}

func newFrameReader(r io.Reader) *frameReader {
	return &frameReader{r: bufio.NewReaderSize(r, 4096)}
}

// next reads and validates one frame. It returns io.EOF only at a clean end
// between frames; a stream cut inside a frame gives io.ErrUnexpectedEOF.
func (fr *frameReader) next() (*pb.Frame, error) {
	n, err := binary.ReadUvarint(fr.r)
	if err != nil {
		return nil, err
	}
	if n > MaxFrameSize {
		return nil, fmt.Errorf("%w: %d bytes, max %d", errFrameTooLarge, n, MaxFrameSize)
	}
	if uint64(cap(fr.buf)) < n {
		fr.buf = make([]byte, n)
	}
	buf := fr.buf[:n]
	if _, err := io.ReadFull(fr.r, buf); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	f := new(pb.Frame)
	if err := proto.Unmarshal(buf, f); err != nil {
		return nil, fmt.Errorf("decode frame: %w", err)
	}
	if err := validateFrame(f); err != nil {
		return nil, err
	}
	return f, nil
}

// DecodeFrames decodes a byte stream of frames, as a chat stream carries,
// until it ends or a frame is invalid. It returns the number of valid frames
// and the error that stopped decoding (nil at a clean end). It exists for
// fuzzing and tools.
func DecodeFrames(data []byte) (int, error) {
	r := newFrameReader(bytes.NewReader(data))
	n := 0
	for {
		_, err := r.next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return n, nil
			}
			return n, err
		}
		n++
	}
}
