package transfer

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/multiformats/go-multiaddr"
)

// ProtocolID is the file-transfer protocol.
const ProtocolID protocol.ID = "/p2p-messaging/file/2.0.0"

// Timeouts that are not configurable.
const (
	requestTimeout = 10 * time.Second // the first message of a stream, an offer or cancel exchange
	finishTimeout  = 10 * time.Minute // a served fetch stream waiting for the recipient's next request
	dialTimeout    = 15 * time.Second
	ioBufSize      = 256 << 10
)

// State is the state of a transfer, as shown to the user.
type State string

// Transfer states.
const (
	StateHashing       State = "hashing"        // sender: hashing the file before the offer leaves (bytes: hashed so far)
	StateOffered       State = "offered"        // sender: waiting for the recipient; recipient: waiting for /accept
	StateWaiting       State = "waiting"        // the peer is not reachable now; retried
	StateWaitingDirect State = "waiting_direct" // only a relayed connection: waiting for a direct connection
	StateActive        State = "active"         // chunks are flowing
	StateVerifying     State = "verifying"      // recipient: checking the whole file
	StateDone          State = "done"
	StateFailed        State = "failed"
	StateRejected      State = "rejected"
)

func (st State) terminal() bool {
	return st == StateDone || st == StateFailed || st == StateRejected
}

// Limits bound what a peer can make the service spend. Zero values mean
// the defaults (DefaultLimits).
type Limits struct {
	// MaxFileSize is the largest offer taken (default and ceiling:
	// MaxFileSize, 1 TiB).
	MaxFileSize int64
	// MaxPendingPerPeer and MaxPending bound the offers waiting for a
	// decision, per peer (default 8) and in all (default 64), across
	// restarts (they are kept in the state directory).
	MaxPendingPerPeer int
	MaxPending        int
	// OfferTTL is how long an offer waits for a decision before it
	// expires (default 7 days): it is dropped and the sender told.
	OfferTTL time.Duration
	// MaxServePerPeer bounds the fetch streams served to one peer at once
	// (default 4).
	MaxServePerPeer int
	// MaxBadChunks is how many chunks failing their hash a sender may send
	// in one transfer before it is cut off (default 3); each is asked for
	// again.
	MaxBadChunks int
	// StallTimeout ends a fetch attempt during which no byte moved for
	// this long (default 30s); MaxStalls such attempts in a row fail the
	// transfer (default 3).
	StallTimeout time.Duration
	MaxStalls    int
	// ProgressInterval is the minimum time between two progress events of
	// one transfer (default 250ms).
	ProgressInterval time.Duration
	// RetryMin and RetryMax bound the backoff between fetch attempts
	// (default 1s to 30s); a new connection to the peer retries at once.
	RetryMin, RetryMax time.Duration
}

// DefaultLimits returns the default limits.
func DefaultLimits() Limits {
	return Limits{
		MaxFileSize:       MaxFileSize,
		MaxPendingPerPeer: 8,
		MaxPending:        64,
		OfferTTL:          7 * 24 * time.Hour,
		MaxServePerPeer:   4,
		MaxBadChunks:      3,
		StallTimeout:      30 * time.Second,
		MaxStalls:         3,
		ProgressInterval:  250 * time.Millisecond,
		RetryMin:          time.Second,
		RetryMax:          30 * time.Second,
	}
}

func (l *Limits) setDefaults() error {
	d := DefaultLimits()
	if l.MaxFileSize <= 0 {
		l.MaxFileSize = d.MaxFileSize
	}
	if l.MaxFileSize > MaxFileSize {
		return fmt.Errorf("max file size %d above the protocol's %d", l.MaxFileSize, MaxFileSize)
	}
	setInt := func(v *int, def int) {
		if *v <= 0 {
			*v = def
		}
	}
	setInt(&l.MaxPendingPerPeer, d.MaxPendingPerPeer)
	setInt(&l.MaxPending, d.MaxPending)
	setInt(&l.MaxServePerPeer, d.MaxServePerPeer)
	setInt(&l.MaxBadChunks, d.MaxBadChunks)
	setInt(&l.MaxStalls, d.MaxStalls)
	setDur := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	setDur(&l.OfferTTL, d.OfferTTL)
	setDur(&l.StallTimeout, d.StallTimeout)
	setDur(&l.ProgressInterval, d.ProgressInterval)
	setDur(&l.RetryMin, d.RetryMin)
	setDur(&l.RetryMax, d.RetryMax)
	if l.RetryMax < l.RetryMin {
		return fmt.Errorf("retry max %s below retry min %s", l.RetryMax, l.RetryMin)
	}
	return nil
}

// Config configures a Service.
type Config struct {
	// StateDir holds the transfers' state (required): in/ and out/, one
	// JSON file and one hash list per transfer.
	StateDir string
	// DownloadDir is where Accept saves files when it is given no
	// directory (required).
	DownloadDir string
	Logger      *slog.Logger
	// Authorize decides whether an offer from p (claiming nick) is shown
	// to the user; it returns the name to show p by. nil refuses every
	// offer.
	Authorize func(ctx context.Context, p peer.ID, nick string) (string, error)
	// Events receives the events; it must not block. nil drops them.
	Events func(Event)
	Limits Limits
	// Now is the clock of offer expiry (default time.Now).
	Now func() time.Time
}

// Event is something a transfer reports.
type Event interface{ isTransferEvent() }

// OfferEvent: a peer offers a file (nothing is on disk yet).
type OfferEvent struct {
	ID   string
	Peer peer.ID
	From string // the name Authorize gave
	Name string // sanitised: the name it will be saved under (or a variant on collision)
	Size int64
	Hash string // SHA-256 of the content, hex
}

// ProgressEvent: bytes of size have arrived (recipient) or are known to
// have been sent (sender); at most one per ProgressInterval per transfer,
// and one when the last byte moved.
type ProgressEvent struct {
	ID       string
	Peer     peer.ID
	Incoming bool
	Bytes    int64
	Size     int64
}

// StateEvent: a transfer's state changed (waiting, waiting_direct, active,
// verifying).
type StateEvent struct {
	ID       string
	Peer     peer.ID
	Incoming bool
	State    State
	Reason   string
}

// DoneEvent: the transfer completed. On the recipient Path is the saved
// file (absolute) and Hash its verified SHA-256.
type DoneEvent struct {
	ID       string
	Peer     peer.ID
	Incoming bool
	Path     string
	Hash     string
}

// FailedEvent: the transfer ended without the file (a rejection
// included).
type FailedEvent struct {
	ID       string
	Peer     peer.ID
	Incoming bool
	Err      string
}

func (OfferEvent) isTransferEvent()    {}
func (ProgressEvent) isTransferEvent() {}
func (StateEvent) isTransferEvent()    {}
func (DoneEvent) isTransferEvent()     {}
func (FailedEvent) isTransferEvent()   {}

// Info describes one transfer (Service.List).
type Info struct {
	ID       string
	Peer     peer.ID
	Nick     string
	Incoming bool
	Name     string
	Size     int64
	Bytes    int64
	State    State
	Path     string // recipient: the saved file once done; sender: the source
	Hash     string
	Err      string
}

// Errors of the user-facing calls.
var (
	ErrClosed      = errors.New("file transfers closed")
	ErrUnknownID   = errors.New("no such transfer")
	ErrAmbiguousID = errors.New("ambiguous transfer id prefix")
	ErrNoSpace     = errors.New("not enough free disk space")
	ErrNotPending  = errors.New("transfer is not waiting for a decision")
)

// xfer is what both directions share; guarded by Service.mu.
type xfer struct {
	id        transferID
	peer      peer.ID
	nick      string
	name      string // sender: the offered name; recipient: sanitised
	size      int64
	chunkSize int
	fileHash  [hashLen]byte
	listHash  [hashLen]byte
	state     State
	bytes     int64
	path      string
	err       string
	lastProg  time.Time
	progBytes int64
	finished  time.Time // when it reached a terminal state
}

// maxFinished is how many finished transfers of each direction List keeps
// showing; older ones are forgotten.
const maxFinished = 64

// finishedLocked notes that x reached a terminal state and forgets the
// oldest finished transfers past maxFinished; the caller holds s.mu.
func (s *Service) finishedLocked(x *xfer) {
	x.finished = time.Now()
	prune := func(n int, oldest func() (transferID, bool), drop func(transferID)) {
		for ; n > maxFinished; n-- {
			id, ok := oldest()
			if !ok {
				return
			}
			drop(id)
		}
	}
	countIn, countOut := 0, 0
	for _, in := range s.in {
		if in.state.terminal() {
			countIn++
		}
	}
	for _, o := range s.out {
		if o.state.terminal() {
			countOut++
		}
	}
	prune(countIn, func() (transferID, bool) {
		var best *incoming
		for _, in := range s.in {
			if in.state.terminal() && !in.running && (best == nil || in.finished.Before(best.finished)) {
				best = in
			}
		}
		if best == nil {
			return transferID{}, false
		}
		return best.id, true
	}, func(id transferID) { delete(s.in, id) })
	prune(countOut, func() (transferID, bool) {
		var best *outgoing
		for _, o := range s.out {
			if o.state.terminal() && (best == nil || o.finished.Before(best.finished)) {
				best = o
			}
		}
		if best == nil {
			return transferID{}, false
		}
		return best.id, true
	}, func(id transferID) { delete(s.out, id) })
}

func (x *xfer) chunks() int { return int(numChunks(x.size, x.chunkSize)) }

func (x *xfer) chunkLen(i int) int64 {
	off := int64(i) * int64(x.chunkSize)
	return min(int64(x.chunkSize), x.size-off)
}

func (x *xfer) idString() string { return hex.EncodeToString(x.id[:]) }

// Service runs ProtocolID on a host: it offers files, takes offers, and
// moves accepted files in checked chunks, resuming from the state it keeps
// on disk.
type Service struct {
	h   host.Host
	cfg Config
	lim Limits
	log *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	notif  *network.NotifyBundle
	sent   atomic.Int64
	recv   atomic.Int64

	mu      sync.Mutex
	closed  bool
	out     map[transferID]*outgoing
	in      map[transferID]*incoming
	streams map[network.Stream]struct{}
	serving map[peer.ID]int
}

// New starts the service on h: it loads the transfers kept in
// cfg.StateDir (accepted incoming ones resume by themselves) and registers
// the stream handler.
func New(h host.Host, cfg Config) (*Service, error) {
	if cfg.StateDir == "" || cfg.DownloadDir == "" {
		return nil, errors.New("transfer: state dir and download dir required")
	}
	if err := cfg.Limits.setDefaults(); err != nil {
		return nil, fmt.Errorf("transfer: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	for _, d := range []string{filepath.Join(cfg.StateDir, "in"), filepath.Join(cfg.StateDir, "out")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("transfer: state dir: %w", err)
		}
	}
	s := &Service{
		h: h, cfg: cfg, lim: cfg.Limits, log: cfg.Logger,
		out:     map[transferID]*outgoing{},
		in:      map[transferID]*incoming{},
		streams: map[network.Stream]struct{}{},
		serving: map[peer.ID]int{},
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.loadOutgoing()
	resume := s.loadIncoming()
	s.notif = &network.NotifyBundle{ConnectedF: func(_ network.Network, c network.Conn) { s.kickPeer(c.RemotePeer()) }}
	h.Network().Notify(s.notif)
	h.SetStreamHandler(ProtocolID, s.handle)
	for _, in := range resume {
		s.startIncoming(in)
	}
	s.expireOffers()
	s.spawn(s.sweepOffers)
	return s, nil
}

// offerSweep is how often expired offers are looked for besides each
// offer, List, Accept and Reject.
const offerSweep = time.Minute

func (s *Service) sweepOffers() {
	t := time.NewTicker(offerSweep)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
			s.expireOffers()
		}
	}
}

// Close stops the service: the handler is removed, streams are reset,
// goroutines are awaited. The state on disk stays for the next start.
func (s *Service) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	streams := make([]network.Stream, 0, len(s.streams))
	for st := range s.streams {
		streams = append(streams, st)
	}
	s.mu.Unlock()
	s.h.RemoveStreamHandler(ProtocolID)
	s.h.Network().StopNotify(s.notif)
	s.cancel()
	for _, st := range streams {
		st.Reset()
	}
	s.wg.Wait()
	return nil
}

// spawn runs f in a goroutine Close waits for, unless closing.
func (s *Service) spawn(f func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
	return true
}

func (s *Service) emit(ev Event) {
	if s.cfg.Events != nil {
		s.cfg.Events(ev)
	}
}

// track registers a stream so that Close can reset it; false when closing.
func (s *Service) track(st network.Stream) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.streams[st] = struct{}{}
	return true
}

func (s *Service) untrack(st network.Stream) {
	s.mu.Lock()
	delete(s.streams, st)
	s.mu.Unlock()
}

// handle serves one inbound stream: its first message says what it is.
func (s *Service) handle(st network.Stream) {
	if !s.track(st) {
		st.Reset()
		return
	}
	defer s.untrack(st)
	_ = st.SetDeadline(time.Now().Add(requestTimeout))
	br := bufio.NewReaderSize(st, 4096)
	m, err := readMessage(br)
	if err != nil {
		s.log.Debug("file stream: bad first message", "peer", st.Conn().RemotePeer(), "err", err)
		st.Reset()
		return
	}
	switch m := m.(type) {
	case offerMsg:
		s.handleOffer(st, m)
	case fetchMsg:
		s.serveFetch(st, br, m)
	case cancelMsg:
		s.handleCancel(st, m)
	default:
		s.log.Debug("file stream: unexpected first message", "peer", st.Conn().RemotePeer(), "type", fmt.Sprintf("%T", m))
		st.Reset()
	}
}

// answer writes a STATUS and ends the stream: Close when it was written,
// Reset otherwise.
func answer(st network.Stream, code byte, text string) {
	if len(text) > MaxTextLen {
		text = truncateUTF8(text, MaxTextLen)
	}
	if _, err := st.Write(encode(nil, statusMsg{Code: code, Text: text})); err != nil {
		st.Reset()
		return
	}
	st.Close()
}

// handleCancel: the peer rejected our offer, or gave up a transfer with
// us.
func (s *Service) handleCancel(st network.Stream, m cancelMsg) {
	p := st.Conn().RemotePeer()
	reason := m.Reason
	if reason == "" {
		reason = "cancelled"
	}
	s.mu.Lock()
	o := s.out[m.ID]
	in := s.in[m.ID]
	s.mu.Unlock()
	switch {
	case o != nil && o.peer == p:
		s.finishOutgoing(o, StateRejected, "cancelled by the recipient: "+reason)
	case in != nil && in.peer == p:
		in.cancelByPeer(s, "cancelled by the sender: "+reason)
	default:
		answer(st, StatusUnknown, "no such transfer")
		return
	}
	answer(st, StatusOK, "")
}

// DropPeer ends every unfinished transfer with p, both directions (e.g.
// the user blocked p): partial files and state go, fetch streams are
// reset, and p is told (best effort).
func (s *Service) DropPeer(p peer.ID, reason string) {
	s.mu.Lock()
	var ins []*incoming
	var outs []*outgoing
	for _, in := range s.in {
		if in.peer == p && !in.state.terminal() {
			ins = append(ins, in)
		}
	}
	for _, o := range s.out {
		if o.peer == p && !o.state.terminal() {
			outs = append(outs, o)
		}
	}
	s.mu.Unlock()
	for _, in := range ins {
		s.mu.Lock()
		running, stop := in.running, in.stop
		if running {
			in.cancelled = reason
		}
		s.mu.Unlock()
		if running {
			stop() // the run goroutine fails it and cleans up
		} else {
			s.failIncoming(in, reason)
		}
		s.notifyCancel(p, in.id, reason)
	}
	for _, o := range outs {
		s.finishOutgoing(o, StateFailed, reason)
		s.notifyCancel(p, o.id, reason)
	}
}

// List returns the transfers of this run, both directions, oldest ID
// first within each direction (incoming first).
func (s *Service) List() []Info {
	s.expireOffers()
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Info, 0, len(s.in)+len(s.out))
	for _, in := range s.in {
		out = append(out, in.info(true))
	}
	for _, o := range s.out {
		out = append(out, o.info(false))
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Incoming != out[j].Incoming {
			return out[i].Incoming
		}
		return out[i].ID < out[j].ID
	})
	return out
}

func (x *xfer) info(incoming bool) Info {
	return Info{
		ID: x.idString(), Peer: x.peer, Nick: x.nick, Incoming: incoming, Name: x.name,
		Size: x.size, Bytes: x.bytes, State: x.state, Path: x.path,
		Hash: hex.EncodeToString(x.fileHash[:]), Err: x.err,
	}
}

// progress updates the byte count and emits a rate-limited event; the
// caller holds no lock.
func (s *Service) progress(x *xfer, incoming bool, bytes int64) {
	now := time.Now()
	s.mu.Lock()
	x.bytes = bytes
	send := bytes != x.progBytes && (now.Sub(x.lastProg) >= s.lim.ProgressInterval || bytes == x.size)
	if send {
		x.lastProg, x.progBytes = now, bytes
	}
	ev := ProgressEvent{ID: x.idString(), Peer: x.peer, Incoming: incoming, Bytes: bytes, Size: x.size}
	s.mu.Unlock()
	if send {
		s.emit(ev)
	}
}

// setState changes a live transfer's state and reports it; it does not
// touch a terminal state.
func (s *Service) setState(x *xfer, incoming bool, st State, reason string) {
	s.mu.Lock()
	if x.state == st || x.state.terminal() {
		s.mu.Unlock()
		return
	}
	x.state = st
	ev := StateEvent{ID: x.idString(), Peer: x.peer, Incoming: incoming, State: st, Reason: reason}
	s.mu.Unlock()
	s.emit(ev)
}

func newTransferID() (transferID, error) {
	var id transferID
	if _, err := rand.Read(id[:]); err != nil {
		return id, fmt.Errorf("transfer id: %w", err)
	}
	return id, nil
}

func parseID(s string) (transferID, bool) {
	var id transferID
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != idLen {
		return id, false
	}
	copy(id[:], b)
	return id, true
}

// findIncoming resolves a full id or a unique prefix of at least 4 hex
// digits among the incoming transfers; the caller holds s.mu.
func (s *Service) findIncoming(idOrPrefix string) (*incoming, error) {
	idOrPrefix = strings.ToLower(strings.TrimSpace(idOrPrefix))
	if id, ok := parseID(idOrPrefix); ok {
		if in := s.in[id]; in != nil {
			return in, nil
		}
		return nil, fmt.Errorf("transfer %s: %w", idOrPrefix, ErrUnknownID)
	}
	if len(idOrPrefix) < 4 {
		return nil, fmt.Errorf("transfer %q: %w", idOrPrefix, ErrUnknownID)
	}
	var found *incoming
	for _, in := range s.in {
		if strings.HasPrefix(in.idString(), idOrPrefix) {
			if found != nil {
				return nil, fmt.Errorf("transfer %s: %w", idOrPrefix, ErrAmbiguousID)
			}
			found = in
		}
	}
	if found == nil {
		return nil, fmt.Errorf("transfer %s: %w", idOrPrefix, ErrUnknownID)
	}
	return found, nil
}

// directConn reports whether the host has a connection to p that is not
// limited (a relayed connection with caps is limited).
func directConn(h host.Host, p peer.ID) (connected, direct bool) {
	for _, c := range h.Network().ConnsToPeer(p) {
		connected = true
		if !c.Stat().Limited && !isRelayed(c.RemoteMultiaddr()) {
			return true, true
		}
	}
	return connected, false
}

func isRelayed(a multiaddr.Multiaddr) bool {
	_, err := a.ValueForProtocol(multiaddr.P_CIRCUIT)
	return err == nil
}

// kickPeer wakes the waiting incoming transfers from p (a new connection).
func (s *Service) kickPeer(p peer.ID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, in := range s.in {
		if in.peer == p {
			select {
			case in.kick <- struct{}{}:
			default:
			}
		}
	}
}
