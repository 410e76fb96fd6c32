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
	"time"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	"github.com/p2p-messaging/p2p-messaging/chat/pb"
)

// Frame validation errors. A frame that fails validation resets the stream,
// except a Message refused for its content (see badMessageError), which is
// dropped alone.
var (
	errNoBody        = errors.New("frame has no known body")
	errBadID         = errors.New("message id must be 16 bytes")
	errBadUTF8       = errors.New("text is not valid UTF-8")
	errTextTooLong   = errors.New("text too long")
	errEmptyText     = errors.New("empty text")
	errBadNick       = errors.New("invalid nick")
	errFrameTooLarge = errors.New("frame too large")
	errBadSentTime   = errors.New("sent time out of range")
	// errBadMessage matches (errors.Is) every *badMessageError.
	errBadMessage = errors.New("message refused")
)

// Bounds of Message.sent_unix_ms, checked against the receiver's clock:
// a message claims to be sent no earlier than minSentTime (2020-01-01 UTC,
// before this protocol existed) and no later than maxClockSkew after the
// receiver's now. Everything in that range converts to time.Time, JSON and
// the store without error.
var minSentTime = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)

const maxClockSkew = 24 * time.Hour

// badMessageError is a Message frame that decoded well and has a valid id
// but whose content is refused: sent time out of range, text empty or too
// long (text that is not UTF-8 already fails protobuf decoding, which resets
// the stream). Its bytes were read whole, so the stream is still in step;
// the frame reader drops the message (never stored, never acknowledged) and
// goes on with the next frame, so one bad message never costs the stream or
// the messages around it. The sender, getting no Ack, keeps it in its outbox.
type badMessageError struct {
	ID  []byte // IDLen bytes
	Err error  // the reason: errBadSentTime, errTextTooLong, ...
}

func (e *badMessageError) Error() string {
	return fmt.Sprintf("message %x refused: %v", e.ID, e.Err)
}

func (e *badMessageError) Unwrap() error { return e.Err }

func (e *badMessageError) Is(target error) bool { return target == errBadMessage }

// checkSentTime checks a Message's sent_unix_ms against now (see
// minSentTime and maxClockSkew).
func checkSentTime(ms int64, now time.Time) error {
	lo := minSentTime.UnixMilli()
	hi := now.Add(maxClockSkew).UnixMilli()
	if ms < lo || ms > hi {
		return fmt.Errorf("%w: %d ms, want %d..%d (%s to the receiver's clock + %s)",
			errBadSentTime, ms, lo, hi, minSentTime.Format(time.DateOnly), maxClockSkew)
	}
	return nil
}

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

// validateFrame checks every field of a decoded frame against the
// protocol's rules, with now as the receiver's clock:
//
//   - Hello: the nick is canonical (ValidNick).
//   - Message: the id is IDLen bytes (else the stream resets: an unknown id
//     cannot even be refused); then, returned as a *badMessageError, the
//     sent time lies in [2020-01-01, now+24h] and the text is 1 to
//     MaxTextLen bytes of UTF-8.
//   - Ack: the id is IDLen bytes.
//   - Ping, Pong: any nonce.
func validateFrame(f *pb.Frame, now time.Time) error {
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
		if err := checkSentTime(m.GetSentUnixMs(), now); err != nil {
			return &badMessageError{ID: m.GetId(), Err: err}
		}
		if err := validateText(m.GetText()); err != nil {
			return &badMessageError{ID: m.GetId(), Err: err}
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
//
// Once a Hello has been read, a Message refused for its content (a
// *badMessageError) is dropped inside next, reported to refused, and the
// reader goes on with the next frame: the stream stays up and the messages
// around the bad one are delivered. Before the Hello, and for every other
// invalid frame, next returns the error and the stream is to be reset.
type frameReader struct {
	r     *bufio.Reader
	buf   []byte
	hello bool // a Hello has been returned

	// now is the receiver's clock for the sent-time check (time.Now by
	// default; tests set it).
	now func() time.Time
	// refused, if set, is told of each message dropped (for a log line or a
	// per-peer count); it must not block.
	refused func(*badMessageError)
	// nRefused counts the messages dropped so far.
	nRefused int
}

func newFrameReader(r io.Reader) *frameReader {
	return &frameReader{r: bufio.NewReaderSize(r, 4096), now: time.Now}
}

// next reads and validates one frame. It returns io.EOF only at a clean end
// between frames; a stream cut inside a frame gives io.ErrUnexpectedEOF.
func (fr *frameReader) next() (*pb.Frame, error) {
	for {
		f, err := fr.read()
		var bm *badMessageError
		if fr.hello && errors.As(err, &bm) {
			fr.nRefused++
			if fr.refused != nil {
				fr.refused(bm)
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		if f.GetHello() != nil {
			fr.hello = true
		}
		return f, nil
	}
}

// read reads and validates one frame, whatever the error.
func (fr *frameReader) read() (*pb.Frame, error) {
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
	if err := validateFrame(f, fr.now()); err != nil {
		return nil, err
	}
	return f, nil
}

// DecodeFrames decodes a byte stream of frames, as a chat stream carries,
// until it ends or a frame is invalid, with the rules of a chat stream's
// reader (time.Now as the clock; a refused Message after the Hello is
// skipped and not counted). It returns the number of valid frames and the
// error that stopped decoding (nil at a clean end). It exists for fuzzing
// and tools.
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
