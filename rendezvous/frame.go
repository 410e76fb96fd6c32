package rendezvous

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/multiformats/go-varint"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/p2p-messaging/p2p-messaging/rendezvous/pb"
)

// frameSmall is the read buffer a server stream keeps for its whole life:
// enough for a DISCOVER request in one read, small enough that 10,000 idle
// streams cost little (a bufio.Reader would pin 4 KiB each).
const frameSmall = 128

// framePoolSize is the size of the pooled buffers that hold bodies larger
// than frameSmall (a REGISTER with its signed record) while one request is
// handled; larger bodies, up to MaxMessageSize, are allocated.
const framePoolSize = 4 << 10

var framePool = sync.Pool{New: func() any { b := make([]byte, framePoolSize); return &b }}

var errFrameTooLarge = fmt.Errorf("message larger than %d bytes", MaxMessageSize)

// frameReader reads varint-delimited frames from a stream. The length
// prefix is checked against MaxMessageSize before anything is allocated.
// A body is valid until done is called; done returns pooled memory, so an
// idle stream holds only the small buffer.
type frameReader struct {
	r          io.Reader
	start, end int
	small      [frameSmall]byte
	pooled     *[]byte
}

func newFrameReader(r io.Reader) *frameReader { return &frameReader{r: r} }

// fill reads more bytes into the empty small buffer.
func (f *frameReader) fill() error {
	for {
		n, err := f.r.Read(f.small[:])
		f.start, f.end = 0, n
		if n > 0 {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// ReadByte implements io.ByteReader for varint decoding.
func (f *frameReader) ReadByte() (byte, error) {
	if f.start == f.end {
		if err := f.fill(); err != nil {
			return 0, err
		}
	}
	b := f.small[f.start]
	f.start++
	return b, nil
}

// next returns the body of the next frame. io.EOF means the stream ended
// cleanly between frames; a frame cut short is io.ErrUnexpectedEOF.
func (f *frameReader) next() ([]byte, error) {
	f.done()
	n, err := varint.ReadUvarint(f)
	if err != nil {
		return nil, err
	}
	if n > MaxMessageSize {
		return nil, errFrameTooLarge
	}
	size := int(n)
	if f.end-f.start >= size {
		b := f.small[f.start : f.start+size]
		f.start += size
		return b, nil
	}
	if size > framePoolSize {
		return f.readLarge(size)
	}
	f.pooled = framePool.Get().(*[]byte)
	b := (*f.pooled)[:size]
	have := copy(b, f.small[f.start:f.end])
	f.start, f.end = 0, 0
	if _, err := io.ReadFull(f.r, b[have:]); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return b, nil
}

// readLarge reads a body of size bytes (above framePoolSize), growing its
// buffer with what actually arrives: a peer that announces 1 MiB and sends
// a trickle holds memory in proportion to what it sent, not to its claim.
func (f *frameReader) readLarge(size int) ([]byte, error) {
	b := make([]byte, 0, 2*framePoolSize)
	b = append(b, f.small[f.start:f.end]...)
	f.start, f.end = 0, 0
	for len(b) < size {
		if len(b) == cap(b) {
			b = append(b[:cap(b)], make([]byte, min(cap(b), size-cap(b)))...)[:len(b)]
		}
		n, err := f.r.Read(b[len(b):min(cap(b), size)])
		b = b[:len(b)+n]
		if err != nil && len(b) < size {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
	return b, nil
}

// done releases the body returned by next.
func (f *frameReader) done() {
	if f.pooled != nil {
		framePool.Put(f.pooled)
		f.pooled = nil
	}
}

// discoverReq is a DISCOVER decoded without allocating: ns and cookie
// alias the frame.
type discoverReq struct {
	ns     []byte
	limit  uint64
	cookie []byte
}

// parseDiscover decodes b as a Message that is a plain DISCOVER: a type of
// DISCOVER and/or a discover body, nothing else, no field repeated. ok is
// false for anything else, which the caller then decodes with proto
// (identical results for the messages accepted here).
func parseDiscover(b []byte) (d discoverReq, ok bool) {
	var sawType, sawBody bool
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return d, false
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.VarintType && !sawType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 || v != uint64(pb.Message_DISCOVER) {
				return d, false
			}
			b, sawType = b[n:], true
		case num == 5 && typ == protowire.BytesType && !sawBody:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 || !parseDiscoverBody(v, &d) {
				return d, false
			}
			b, sawBody = b[n:], true
		default:
			return d, false
		}
	}
	return d, sawType || sawBody
}

func parseDiscoverBody(b []byte, d *discoverReq) bool {
	var sawNS, sawLimit, sawCookie bool
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.BytesType && !sawNS:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return false
			}
			d.ns, b, sawNS = v, b[n:], true
		case num == 2 && typ == protowire.VarintType && !sawLimit:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return false
			}
			d.limit, b, sawLimit = v, b[n:], true
		case num == 3 && typ == protowire.BytesType && !sawCookie:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return false
			}
			d.cookie, b, sawCookie = v, b[n:], true
		default:
			return false
		}
	}
	return true
}
