package transfer

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

// Message types (the first byte of every control message).
const (
	msgOffer  byte = 1
	msgFetch  byte = 2
	msgCancel byte = 3
	msgStatus byte = 4
	msgHashes byte = 5
	msgWant   byte = 6
	msgChunk  byte = 7
	msgDone   byte = 8
)

// Status codes in a STATUS message.
const (
	StatusOK       byte = 0
	StatusRefused  byte = 1 // the recipient does not take offers from this peer
	StatusBusy     byte = 2 // a per-peer or total limit is full
	StatusUnknown  byte = 3 // no such transfer for this peer
	StatusInvalid  byte = 4 // malformed or impossible request
	StatusTooLarge byte = 5 // size above the recipient's limit
)

// Wire limits.
const (
	// MaxMessageSize bounds one control message (its length prefix is
	// checked before anything is allocated).
	MaxMessageSize = 1024
	// MaxNameLen bounds the offered name in bytes.
	MaxNameLen = 255
	// MaxNickLen bounds the sender's nick claim.
	MaxNickLen = 64
	// MaxTextLen bounds STATUS and CANCEL texts.
	MaxTextLen = 256
	// MinChunkSize and MaxChunkSize bound the chunk size (a power of two).
	MinChunkSize = 64 << 10
	MaxChunkSize = 64 << 20
	// DefaultChunkSize is what the sender picks for files up to
	// MaxChunks of it.
	DefaultChunkSize = 1 << 20
	// MaxChunks bounds the chunks of one file (so the hash list is at most
	// 512 KiB).
	MaxChunks = 16384
	// MaxFileSize is the largest file the format can describe (1 TiB).
	MaxFileSize = int64(MaxChunks) * MaxChunkSize
)

const (
	idLen   = 16
	hashLen = 32
)

type transferID [idLen]byte

type offerMsg struct {
	ID        transferID
	Size      int64
	ChunkSize int
	FileHash  [hashLen]byte
	ListHash  [hashLen]byte
	Name      string
	Nick      string
}

type fetchMsg struct {
	ID   transferID
	Have int64 // bytes the recipient already holds (for the sender's progress)
}

type cancelMsg struct {
	ID     transferID
	Reason string
}

type statusMsg struct {
	Code byte
	Text string
}

type wantMsg struct {
	Start, Count uint32
}

type chunkMsg struct {
	Index, Length uint32
}

// hashesMsg announces Count chunk hashes that follow as raw bytes.
type hashesMsg struct {
	Count uint32
}

type doneMsg struct{}

var errMalformed = errors.New("malformed message")

// numChunks is the number of chunks of a file of size bytes.
func numChunks(size int64, chunkSize int) int64 {
	return (size + int64(chunkSize) - 1) / int64(chunkSize)
}

// chunkSizeFor picks the chunk size for a file: DefaultChunkSize, doubled
// until the file fits in MaxChunks chunks.
func chunkSizeFor(size int64) int {
	cs := DefaultChunkSize
	for numChunks(size, cs) > MaxChunks && cs < MaxChunkSize {
		cs *= 2
	}
	return cs
}

// validGeometry checks size and chunk size of an offer.
func validGeometry(size int64, chunkSize int) error {
	if chunkSize < MinChunkSize || chunkSize > MaxChunkSize || chunkSize&(chunkSize-1) != 0 {
		return fmt.Errorf("chunk size %d: not a power of two in [%d, %d]", chunkSize, MinChunkSize, MaxChunkSize)
	}
	if size < 0 || size > MaxFileSize {
		return fmt.Errorf("size %d: outside [0, %d]", size, MaxFileSize)
	}
	if numChunks(size, chunkSize) > MaxChunks {
		return fmt.Errorf("size %d in chunks of %d: more than %d chunks", size, chunkSize, MaxChunks)
	}
	return nil
}

// encode appends the message, with its length prefix, to b.
func encode(b []byte, m any) []byte {
	var body []byte
	switch m := m.(type) {
	case offerMsg:
		body = append(body, msgOffer)
		body = append(body, m.ID[:]...)
		body = binary.BigEndian.AppendUint64(body, uint64(m.Size))
		body = binary.BigEndian.AppendUint32(body, uint32(m.ChunkSize))
		body = append(body, m.FileHash[:]...)
		body = append(body, m.ListHash[:]...)
		body = appendString(body, m.Name)
		body = appendString(body, m.Nick)
	case fetchMsg:
		body = append(body, msgFetch)
		body = append(body, m.ID[:]...)
		body = binary.BigEndian.AppendUint64(body, uint64(m.Have))
	case cancelMsg:
		body = append(body, msgCancel)
		body = append(body, m.ID[:]...)
		body = appendString(body, m.Reason)
	case statusMsg:
		body = append(body, msgStatus, m.Code)
		body = appendString(body, m.Text)
	case hashesMsg:
		body = append(body, msgHashes)
		body = binary.BigEndian.AppendUint32(body, m.Count)
	case wantMsg:
		body = append(body, msgWant)
		body = binary.BigEndian.AppendUint32(body, m.Start)
		body = binary.BigEndian.AppendUint32(body, m.Count)
	case chunkMsg:
		body = append(body, msgChunk)
		body = binary.BigEndian.AppendUint32(body, m.Index)
		body = binary.BigEndian.AppendUint32(body, m.Length)
	case doneMsg:
		body = append(body, msgDone)
	default:
		panic(fmt.Sprintf("transfer: encode %T", m))
	}
	b = binary.AppendUvarint(b, uint64(len(body)))
	return append(b, body...)
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// readMessage reads one length-prefixed control message from r. The
// prefix is checked against MaxMessageSize before the body is read.
func readMessage(r *bufio.Reader) (any, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, io.EOF
		}
		return nil, fmt.Errorf("read length: %w", err)
	}
	if n == 0 || n > MaxMessageSize {
		return nil, fmt.Errorf("message length %d: %w", n, errMalformed)
	}
	var buf [MaxMessageSize]byte
	body := buf[:n]
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, fmt.Errorf("read message: %w", io.ErrUnexpectedEOF)
	}
	return decode(body)
}

// decode parses one message body (without its length prefix).
func decode(body []byte) (any, error) {
	d := decoder{b: body}
	typ := d.byte()
	var m any
	switch typ {
	case msgOffer:
		var o offerMsg
		d.bytes(o.ID[:])
		o.Size = int64(d.u64())
		o.ChunkSize = int(d.u32())
		d.bytes(o.FileHash[:])
		d.bytes(o.ListHash[:])
		o.Name = d.string(MaxNameLen)
		o.Nick = d.string(MaxNickLen)
		m = o // the size and chunk size are checked by the handler, which answers

	case msgFetch:
		var f fetchMsg
		d.bytes(f.ID[:])
		f.Have = int64(d.u64())
		if d.err == nil && (f.Have < 0 || f.Have > MaxFileSize) {
			d.err = errMalformed
		}
		m = f
	case msgCancel:
		var c cancelMsg
		d.bytes(c.ID[:])
		c.Reason = d.string(MaxTextLen)
		m = c
	case msgStatus:
		var s statusMsg
		s.Code = d.byte()
		s.Text = d.string(MaxTextLen)
		m = s
	case msgHashes:
		h := hashesMsg{Count: d.u32()}
		if d.err == nil && h.Count > MaxChunks {
			d.err = fmt.Errorf("%d hashes: %w", h.Count, errMalformed)
		}
		m = h
	case msgWant:
		w := wantMsg{Start: d.u32(), Count: d.u32()}
		if d.err == nil && (w.Count == 0 || uint64(w.Start)+uint64(w.Count) > MaxChunks) {
			d.err = fmt.Errorf("want [%d,+%d): %w", w.Start, w.Count, errMalformed)
		}
		m = w
	case msgChunk:
		c := chunkMsg{Index: d.u32(), Length: d.u32()}
		if d.err == nil && (c.Index >= MaxChunks || c.Length > MaxChunkSize) {
			d.err = fmt.Errorf("chunk %d of %d bytes: %w", c.Index, c.Length, errMalformed)
		}
		m = c
	case msgDone:
		m = doneMsg{}
	default:
		return nil, fmt.Errorf("message type %d: %w", typ, errMalformed)
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%d trailing bytes: %w", len(d.b), errMalformed)
	}
	if d.err != nil {
		return nil, d.err
	}
	return m, nil
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if len(d.b) < n {
		d.err = fmt.Errorf("truncated: %w", errMalformed)
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte() byte {
	if v := d.take(1); v != nil {
		return v[0]
	}
	return 0
}

func (d *decoder) u32() uint32 {
	if v := d.take(4); v != nil {
		return binary.BigEndian.Uint32(v)
	}
	return 0
}

func (d *decoder) u64() uint64 {
	if v := d.take(8); v != nil {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

func (d *decoder) bytes(dst []byte) {
	if v := d.take(len(dst)); v != nil {
		copy(dst, v)
	}
}

func (d *decoder) string(max int) string {
	n := 0
	if v := d.take(2); v != nil {
		n = int(binary.BigEndian.Uint16(v))
	}
	if d.err == nil && n > max {
		d.err = fmt.Errorf("string of %d bytes (max %d): %w", n, max, errMalformed)
		return ""
	}
	v := d.take(n)
	if d.err == nil && !utf8.Valid(v) {
		d.err = fmt.Errorf("string not UTF-8: %w", errMalformed)
		return ""
	}
	return string(v)
}
