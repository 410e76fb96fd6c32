package chat

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/core/record"
	"github.com/multiformats/go-varint"
	"golang.org/x/time/rate"
	"google.golang.org/protobuf/encoding/protowire"
)

// Peer exchange: a chat tells another which rendezvous servers, relays and
// DHT servers it knows, so that a node given one peer's address finds the
// services that peer uses, and a node restarted when all of them are gone
// starts from the peers it kept on disk (pexstore.go).
//
// # Wire format
//
// Protocol ID /p2p-messaging/pex/1.0.0. The asker opens a stream, writes
// nothing and closes its write side. The answerer writes one answer and
// closes the stream: an unsigned-varint length (at most MaxPexAnswer bytes)
// and that many bytes of a protobuf message
//
//	message Answer { repeated Entry entries = 1; }
//	message Entry  { uint32 kind = 1; bytes record = 2; }
//
// kind is 1 (a rendezvous server), 2 (a relay) or 3 (a DHT server); record
// is the peer's libp2p signed peer record (a signed envelope, domain
// libp2p-peer-record), at most MaxPexRecord bytes. At most MaxPexEntries
// entries; unknown fields are skipped, unknown kinds and records that do not
// verify are dropped one by one, a malformed message or an oversized one
// resets the stream. The signature proves the addresses belong to the peer;
// the kind is only the answerer's word, so the asker checks it by
// connecting (identify's protocols) and never takes a server learnt this
// way for an authority on names (names.go).
//
// # Limits
//
// The empty request must arrive within 2 s and the answer is written within
// PexTimeout; one peer gets at most a burst of 3 answers, then one every
// 10 s (the rate of at most maxPexPeers peers is tracked); at most 8 answers
// are written at once, beyond that a stream is reset. What is learnt is bounded too: MaxPexEntries per answer, 8
// addresses per peer.

// PexProtocolID is the peer-exchange protocol.
const PexProtocolID protocol.ID = "/p2p-messaging/pex/1.0.0"

// Peer-exchange limits.
const (
	MaxPexEntries = 32
	MaxPexRecord  = 2048
	MaxPexAnswer  = MaxPexEntries * (MaxPexRecord + 16)
	PexTimeout    = 10 * time.Second

	maxPexAddrs      = 8
	pexRequestWait   = 2 * time.Second
	maxPexPeers      = 256
	maxPexConcurrent = 8
	pexBurst         = 3
	pexEvery         = 10 * time.Second
)

// PexKind says what a peer-exchange entry claims to be.
type PexKind uint32

const (
	PexRendezvous PexKind = 1
	PexRelay      PexKind = 2
	PexDHT        PexKind = 3
)

func (k PexKind) String() string {
	switch k {
	case PexRendezvous:
		return "rendezvous"
	case PexRelay:
		return "relay"
	case PexDHT:
		return "dht"
	}
	return fmt.Sprintf("kind-%d", uint32(k))
}

// PexEntry is one peer a node tells about: what it claims the peer is, and
// the peer's signed record (Envelope, marshalled) with the addresses it
// proves.
type PexEntry struct {
	Kind     PexKind
	Peer     peer.AddrInfo
	Envelope []byte
}

var errPex = errors.New("malformed peer-exchange answer")

// encodePexAnswer marshals entries (the first MaxPexEntries with a record
// of at most MaxPexRecord bytes) into an answer body.
func encodePexAnswer(entries []PexEntry) []byte {
	var b []byte
	n := 0
	for _, e := range entries {
		if n == MaxPexEntries {
			break
		}
		if len(e.Envelope) == 0 || len(e.Envelope) > MaxPexRecord {
			continue
		}
		var eb []byte
		eb = protowire.AppendTag(eb, 1, protowire.VarintType)
		eb = protowire.AppendVarint(eb, uint64(e.Kind))
		eb = protowire.AppendTag(eb, 2, protowire.BytesType)
		eb = protowire.AppendBytes(eb, e.Envelope)
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendBytes(b, eb)
		n++
	}
	return b
}

// rawPexEntry is an entry as decoded, before its record is verified.
type rawPexEntry struct {
	kind   uint64
	record []byte
}

// decodePexAnswer parses an answer body. It fails on malformed protobuf,
// more than MaxPexEntries entries or an oversized record; it does not
// verify records (verifyPexEntries does).
func decodePexAnswer(b []byte) ([]rawPexEntry, error) {
	var out []rawPexEntry
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, errPex
		}
		b = b[n:]
		if num != 1 || typ != protowire.BytesType {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return nil, errPex
			}
			b = b[n:]
			continue
		}
		eb, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return nil, errPex
		}
		b = b[n:]
		if len(out) == MaxPexEntries {
			return nil, fmt.Errorf("%w: more than %d entries", errPex, MaxPexEntries)
		}
		e, err := decodePexEntry(eb)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

func decodePexEntry(b []byte) (rawPexEntry, error) {
	var e rawPexEntry
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return e, errPex
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return e, errPex
			}
			e.kind, b = v, b[n:]
		case num == 2 && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return e, errPex
			}
			if len(v) > MaxPexRecord {
				return e, fmt.Errorf("%w: record of %d bytes", errPex, len(v))
			}
			e.record, b = v, b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return e, errPex
			}
			b = b[n:]
		}
	}
	return e, nil
}

// verifyPexEntries keeps the entries of a known kind whose record is a
// valid signed peer record, one per peer, self left out, at most
// maxPexAddrs addresses each.
func verifyPexEntries(raw []rawPexEntry, self peer.ID) []PexEntry {
	var out []PexEntry
	seen := map[peer.ID]bool{}
	for _, r := range raw {
		k := PexKind(r.kind)
		if k != PexRendezvous && k != PexRelay && k != PexDHT {
			continue
		}
		_, rec, err := record.ConsumeEnvelope(r.record, peer.PeerRecordEnvelopeDomain)
		if err != nil {
			continue
		}
		pr, ok := rec.(*peer.PeerRecord)
		if !ok || pr.PeerID == "" || pr.PeerID == self || seen[pr.PeerID] || len(pr.Addrs) == 0 {
			continue
		}
		seen[pr.PeerID] = true
		addrs := pr.Addrs
		if len(addrs) > maxPexAddrs {
			addrs = addrs[:maxPexAddrs]
		}
		out = append(out, PexEntry{Kind: k, Peer: peer.AddrInfo{ID: pr.PeerID, Addrs: addrs}, Envelope: r.record})
	}
	return out
}

// pexService answers peer-exchange requests on a host with what known
// returns.
type pexService struct {
	h     host.Host
	log   *slog.Logger
	known func() []PexEntry
	sem   chan struct{}

	allowAll bool // tests: no per-peer rate

	mu      sync.Mutex
	closed  bool
	limits  *peerLimits
	streams map[network.Stream]struct{}
}

func newPexService(h host.Host, log *slog.Logger, known func() []PexEntry) *pexService {
	s := &pexService{h: h, log: log, known: known, sem: make(chan struct{}, maxPexConcurrent),
		limits: newPeerLimits(rate.Every(pexEvery), pexBurst, maxPexPeers), streams: map[network.Stream]struct{}{}}
	h.SetStreamHandler(PexProtocolID, s.handle)
	return s
}

// allow applies the per-peer rate.
func (s *pexService) allow(p peer.ID) bool {
	if s.allowAll {
		return true
	}
	return s.limits.allow(p)
}

func (s *pexService) track(str network.Stream, on bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if on {
		if s.closed {
			return false
		}
		s.streams[str] = struct{}{}
	} else {
		delete(s.streams, str)
	}
	return true
}

func (s *pexService) handle(str network.Stream) {
	if !s.track(str, true) {
		str.Reset()
		return
	}
	defer s.track(str, false)
	remote := str.Conn().RemotePeer()
	// The rate first, so that one peer never holds more than its burst of
	// the shared slots.
	if !s.allow(remote) {
		s.log.Debug("peer exchange: rate limited", "peer", remote)
		str.Reset()
		return
	}
	select {
	case s.sem <- struct{}{}:
		defer func() { <-s.sem }()
	default:
		s.log.Debug("peer exchange: too many at once", "peer", remote)
		str.Reset()
		return
	}
	// The empty request is its write side closing: it comes at once, so a
	// slot is held at most pexRequestWait by an asker that never sends it.
	if err := str.SetReadDeadline(time.Now().Add(pexRequestWait)); err != nil {
		str.Reset()
		return
	}
	if err := str.SetWriteDeadline(time.Now().Add(PexTimeout)); err != nil {
		str.Reset()
		return
	}
	// The request is empty: anything the asker writes is a protocol error.
	var one [1]byte
	if n, err := io.ReadFull(str, one[:]); n > 0 || !errors.Is(err, io.EOF) {
		s.log.Debug("peer exchange: request not empty", "peer", remote, "err", err)
		str.Reset()
		return
	}
	body := encodePexAnswer(s.known())
	msg := append(varint.ToUvarint(uint64(len(body))), body...)
	if _, err := str.Write(msg); err != nil {
		s.log.Debug("peer exchange: write", "peer", remote, "err", err)
		str.Reset()
		return
	}
	str.Close()
}

func (s *pexService) close() {
	s.h.RemoveStreamHandler(PexProtocolID)
	s.mu.Lock()
	s.closed = true
	streams := make([]network.Stream, 0, len(s.streams))
	for str := range s.streams {
		streams = append(streams, str)
	}
	s.mu.Unlock()
	for _, str := range streams {
		str.Reset()
	}
}

// askPex asks p which servers it knows. The entries are verified.
func askPex(ctx context.Context, h host.Host, p peer.ID) ([]PexEntry, error) {
	ctx, cancel := context.WithTimeout(ctx, PexTimeout)
	defer cancel()
	str, err := h.NewStream(network.WithAllowLimitedConn(ctx, "pex"), p, PexProtocolID)
	if err != nil {
		return nil, fmt.Errorf("peer exchange with %s: %w", p, err)
	}
	stop := context.AfterFunc(ctx, func() { str.Reset() })
	defer stop()
	if err := str.SetDeadline(time.Now().Add(PexTimeout)); err != nil {
		str.Reset()
		return nil, err
	}
	if err := str.CloseWrite(); err != nil {
		str.Reset()
		return nil, fmt.Errorf("peer exchange with %s: %w", p, err)
	}
	raw, err := readPexAnswer(str)
	if err != nil {
		str.Reset()
		return nil, fmt.Errorf("peer exchange with %s: %w", p, err)
	}
	str.Close()
	return verifyPexEntries(raw, h.ID()), nil
}

// readPexAnswer reads one length-prefixed answer, refusing a prefix over
// MaxPexAnswer before reading the body, then expects the end of the stream.
func readPexAnswer(r io.Reader) ([]rawPexEntry, error) {
	br := &byteReader{r: r}
	size, err := varint.ReadUvarint(br)
	if err != nil {
		return nil, fmt.Errorf("%w: length: %v", errPex, err)
	}
	if size > MaxPexAnswer {
		return nil, fmt.Errorf("%w: %d bytes, more than %d", errPex, size, MaxPexAnswer)
	}
	body := make([]byte, size)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, fmt.Errorf("%w: body: %v", errPex, err)
	}
	var one [1]byte
	if n, _ := r.Read(one[:]); n > 0 {
		return nil, fmt.Errorf("%w: trailing bytes", errPex)
	}
	return decodePexAnswer(body)
}

type byteReader struct{ r io.Reader }

func (b *byteReader) ReadByte() (byte, error) {
	var one [1]byte
	_, err := io.ReadFull(b.r, one[:])
	return one[0], err
}
