package rendezvous

// Everything this package reads from the wire is decoded and checked here:
// frames, the server's requests (with an allocation-free DISCOVER path),
// the client's responses and watch events, signed records, namespaces,
// cookies.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"
	"github.com/libp2p/go-msgio/pbio"
	"github.com/multiformats/go-varint"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/p2p-messaging/p2p-messaging/rendezvous/pb"
)

// checkNamespace says why ns is not a namespace of at most maxLen bytes
// (empty, too long, not UTF-8), or nil. The server (with its limit) and the
// client (with the spec's) apply the same rule.
func checkNamespace(ns string, maxLen int) error {
	switch {
	case ns == "":
		return errors.New("namespace is empty")
	case len(ns) > maxLen:
		return fmt.Errorf("namespace is %d bytes, longer than %d", len(ns), maxLen)
	case !utf8.ValidString(ns):
		return errors.New("namespace is not valid UTF-8")
	}
	return nil
}

// parseRecord verifies b as a signed peer record: a valid envelope in the
// peer-record domain, signed by the key of the peer the record names. It
// is the one record check of both sides: the server adds who may register
// it, the client takes the record as it is.
func parseRecord(b []byte) (*peer.PeerRecord, error) {
	env, rec, err := record.ConsumeEnvelope(b, peer.PeerRecordEnvelopeDomain)
	if err != nil {
		return nil, fmt.Errorf("signed peer record does not verify: %w", err)
	}
	pr, ok := rec.(*peer.PeerRecord)
	if !ok {
		return nil, errors.New("signed envelope does not hold a peer record")
	}
	signer, err := peer.IDFromPublicKey(env.PublicKey)
	if err != nil || signer != pr.PeerID {
		return nil, errors.New("peer record was not signed by the peer it names")
	}
	return pr, nil
}

// parseDiscoverResponse checks a DISCOVER_RESPONSE to a DISCOVER for ns
// ("" for all namespaces) and decodes its registrations. In an answer for
// one namespace, a registration without ns belongs to ns (servers that
// write proto3 omit it) and one naming another namespace is dropped.
// Registrations whose signed record is invalid are dropped too (logged at
// Debug); a non-OK status is a *StatusError.
func parseDiscoverResponse(m *pb.Message, ns string, log *slog.Logger) ([]Registration, []byte, error) {
	if m.GetType() != pb.Message_DISCOVER_RESPONSE || m.DiscoverResponse == nil {
		return nil, nil, fmt.Errorf("unexpected response %s", m.GetType())
	}
	dr := m.DiscoverResponse
	if dr.GetStatus() != StatusOK {
		return nil, nil, &StatusError{Status: dr.GetStatus(), Text: dr.GetStatusText()}
	}
	regs := make([]Registration, 0, len(dr.Registrations))
	for _, r := range dr.Registrations {
		reg, err := parseRegistration(r)
		if err == nil && ns != "" {
			if reg.Namespace == "" {
				reg.Namespace = ns
			} else if reg.Namespace != ns {
				err = fmt.Errorf("registration for namespace %q in an answer for %q", reg.Namespace, ns)
			}
		}
		if err != nil {
			log.Debug("dropping invalid registration", "ns", r.GetNs(), "err", err)
			continue
		}
		regs = append(regs, reg)
	}
	return regs, dr.Cookie, nil
}

// parseNameHolder decodes the name_holder extension of an OK
// DISCOVER_RESPONSE: "" when absent (a free name, or a server that does
// not report leases), an error when it is not a valid peer ID.
func parseNameHolder(m *pb.Message) (peer.ID, error) {
	b := m.GetDiscoverResponse().GetNameHolder()
	if b == nil {
		return "", nil
	}
	id, err := peer.IDFromBytes(b)
	if err != nil {
		return "", fmt.Errorf("name holder: %w", err)
	}
	return id, nil
}

// parseRegistration decodes one registration and verifies its signed peer
// record (parseRecord). A record with no addresses is valid.
func parseRegistration(r *pb.Message_Register) (Registration, error) {
	if r == nil {
		return Registration{}, errors.New("empty registration")
	}
	pr, err := parseRecord(r.SignedPeerRecord)
	if err != nil {
		return Registration{}, err
	}
	return Registration{
		Namespace: r.GetNs(),
		Peer:      peer.AddrInfo{ID: pr.PeerID, Addrs: pr.Addrs},
		TTL:       durationFromSeconds(r.GetTtl()),
	}, nil
}

func durationFromSeconds(s uint64) time.Duration {
	const maxSec = uint64(math.MaxInt64 / int64(time.Second))
	return time.Duration(min(s, maxSec)) * time.Second
}

// requestType is the type of a request. Encoders that omit zero-valued
// fields (proto3 style) drop `type` for REGISTER, the enum's zero value; such
// a request is typed by the body it carries. A message with neither a type
// nor a body is malformed (ok false).
func requestType(m *pb.Message) (typ pb.Message_MessageType, ok bool) {
	switch {
	case m.Type != nil:
		return m.GetType(), true
	case hasUnknownField(m.ProtoReflect().GetUnknown(), 1):
		// A type this version does not know (proto2 keeps unknown enum
		// values as unknown fields): never guess from the body.
		return 0, false
	case m.Register != nil:
		return pb.Message_REGISTER, true
	case m.Discover != nil:
		return pb.Message_DISCOVER, true
	case m.Unregister != nil:
		return pb.Message_UNREGISTER, true
	default:
		return 0, false
	}
}

// hasUnknownField reports whether the unknown-field bytes b hold field num.
func hasUnknownField(b []byte, num protowire.Number) bool {
	for len(b) > 0 {
		n, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return true // unparseable: treat as present, the message is bad anyway
		}
		if n == num {
			return true
		}
		b = b[l:]
		l = protowire.ConsumeFieldValue(n, typ, b)
		if l < 0 {
			return true
		}
		b = b[l:]
	}
	return false
}

// newReader returns a delimited protobuf reader capped at MaxMessageSize.
func newReader(r io.Reader) pbio.ReadCloser {
	return pbio.NewDelimitedReader(r, MaxMessageSize)
}

var (
	errCookieMalformed = errors.New("malformed cookie")
	errCookieNamespace = errors.New("cookie was issued for another namespace")
	errCookieFuture    = errors.New("cookie was not issued by this server")
)

// parseCookie returns the sequence number in cookie, checking that it was
// issued for ns. An empty cookie starts from the beginning.
func parseCookie(cookie []byte, ns string) (uint64, error) {
	if len(cookie) == 0 {
		return 0, nil
	}
	if len(cookie) < cookieSeqLen || !utf8.Valid(cookie[cookieSeqLen:]) {
		return 0, errCookieMalformed
	}
	if string(cookie[cookieSeqLen:]) != ns {
		return 0, errCookieNamespace
	}
	return binary.BigEndian.Uint64(cookie), nil
}

// readWatchRequest reads the one WatchRequest of a watch stream through r
// and returns its namespace.
func readWatchRequest(r *frameReader) (string, error) {
	body, err := r.next()
	if err != nil {
		return "", err
	}
	defer r.done()
	var req pb.WatchRequest
	if err := proto.Unmarshal(body, &req); err != nil {
		return "", err
	}
	return req.GetNs(), nil
}

// parseWatchEvent decodes one pushed event for namespace ns. An ERROR event
// becomes a *StatusError; events for another namespace or with a bad record
// are errors the caller skips.
func parseWatchEvent(ev *pb.WatchEvent, ns string) (watchUpdate, error) {
	if ev.Ns != nil && ev.GetNs() != ns {
		return watchUpdate{}, fmt.Errorf("event for namespace %q", ev.GetNs())
	}
	switch ev.GetKind() {
	case pb.WatchEvent_REGISTERED:
		reg, err := parseRegistration(ev.Registration)
		if err != nil {
			return watchUpdate{}, err
		}
		if reg.Namespace == "" {
			reg.Namespace = ns
		}
		if reg.Namespace != ns {
			return watchUpdate{}, fmt.Errorf("registration for namespace %q", reg.Namespace)
		}
		return watchUpdate{kind: updRegistered, reg: reg}, nil
	case pb.WatchEvent_UNREGISTERED:
		id, err := peer.IDFromBytes(ev.Peer)
		if err != nil {
			return watchUpdate{}, fmt.Errorf("unregistered peer: %w", err)
		}
		return watchUpdate{kind: updUnregistered, id: id}, nil
	case pb.WatchEvent_SYNCED:
		return watchUpdate{kind: updSynced}, nil
	case pb.WatchEvent_ERROR:
		st := ev.GetStatus()
		if ev.Status == nil || st == StatusOK {
			st = StatusInternalError
		}
		return watchUpdate{}, &StatusError{Status: st, Text: ev.GetStatusText()}
	}
	return watchUpdate{}, fmt.Errorf("unknown event kind %d", ev.GetKind())
}

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
	// max bounds a frame (MaxMessageSize unless set lower).
	max int
	// mem, when set, is the stream scope that bodies above framePoolSize
	// are reserved in while they are held; held is what is reserved.
	mem  network.ResourceScope
	held int
}

func newFrameReader(r io.Reader) *frameReader { return &frameReader{r: r, max: MaxMessageSize} }

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
	if n > uint64(f.max) {
		if f.max < MaxMessageSize {
			return nil, fmt.Errorf("message larger than %d bytes", f.max)
		}
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
	if err := f.reserve(2 * framePoolSize); err != nil {
		return nil, err
	}
	b := make([]byte, 0, 2*framePoolSize)
	b = append(b, f.small[f.start:f.end]...)
	f.start, f.end = 0, 0
	for len(b) < size {
		if len(b) == cap(b) {
			grow := min(cap(b), size-cap(b))
			if err := f.reserve(grow); err != nil {
				return nil, err
			}
			b = append(b[:cap(b)], make([]byte, grow)...)[:len(b)]
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

// reserve accounts n more bytes of a large body in the stream's scope.
func (f *frameReader) reserve(n int) error {
	if f.mem == nil {
		return nil
	}
	if err := f.mem.ReserveMemory(n, network.ReservationPriorityHigh); err != nil {
		return fmt.Errorf("reserve %d bytes for a large message: %w", n, err)
	}
	f.held += n
	return nil
}

// done releases the body returned by next.
func (f *frameReader) done() {
	if f.pooled != nil {
		framePool.Put(f.pooled)
		f.pooled = nil
	}
	if f.held > 0 {
		f.mem.ReleaseMemory(f.held)
		f.held = 0
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
