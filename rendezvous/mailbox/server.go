package mailbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-msgio"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// ServiceName is the resource-manager service of the mailbox streams.
const ServiceName = "p2p-messaging.mailbox"

// Server-side bounds that are not configurable.
const (
	// notifyTimeout bounds one push notice (stream open and close).
	notifyTimeout = 5 * time.Second
	// maxNotifying bounds the push notices in flight at once.
	maxNotifying = 256
	// streamMemory is reserved per stream: the largest request.
	streamMemory = MaxRequestSize + 4096
	// maxRatePeers bounds the per-peer token buckets kept; past it the
	// full (idle) ones are dropped, and if none is, every peer shares a
	// fresh bucket until the sweep.
	maxRatePeers = 100_000
)

// Option configures a Server.
type Option func(*config) error

type config struct {
	dataDir string
	limits  Limits
	log     *slog.Logger
	reg     prometheus.Registerer
	now     func() time.Time
	sweep   time.Duration
}

// WithDataDir sets the directory of the deposit store (DBFileName);
// required.
func WithDataDir(dir string) Option {
	return func(c *config) error {
		if dir == "" {
			return errors.New("empty data dir")
		}
		c.dataDir = dir
		return nil
	}
}

// WithLimits replaces the default limits.
func WithLimits(l Limits) Option {
	return func(c *config) error {
		if err := l.Validate(); err != nil {
			return fmt.Errorf("invalid limits: %w", err)
		}
		c.limits = l
		return nil
	}
}

// WithLogger sets the logger; by default the server logs nothing.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) error {
		if l == nil {
			return errors.New("nil logger")
		}
		c.log = l
		return nil
	}
}

// WithRegisterer registers the server's Prometheus metrics with r.
func WithRegisterer(r prometheus.Registerer) Option {
	return func(c *config) error { c.reg = r; return nil }
}

// WithClock replaces time.Now (expiry and stored times).
func WithClock(now func() time.Time) Option {
	return func(c *config) error {
		if now == nil {
			return errors.New("nil clock")
		}
		c.now = now
		return nil
	}
}

// WithSweepInterval sets how often expired deposits are deleted (default
// a minute, or TTL/4 if that is shorter).
func WithSweepInterval(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("sweep interval must be positive, got %v", d)
		}
		c.sweep = d
		return nil
	}
}

// Server is the mailbox service on a daemon's host: it stores sealed
// deposits for recipients and hands each recipient its own.
type Server struct {
	h     host.Host
	cfg   config
	log   *slog.Logger
	store *store
	m     *metrics

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	closed    bool
	streams   map[network.Stream]struct{}
	notifying map[peer.ID]bool // true: another notice is due when this one ends
	rates     map[peer.ID]*rate.Limiter
	closeErr  error
}

// New opens the store and registers the ProtocolID handler on h.
func New(h host.Host, opts ...Option) (*Server, error) {
	cfg := config{limits: DefaultLimits(), log: slog.New(slog.DiscardHandler), now: time.Now}
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	if cfg.dataDir == "" {
		return nil, errors.New("mailbox: data dir required")
	}
	if cfg.sweep == 0 {
		cfg.sweep = min(time.Minute, cfg.limits.TTL/4)
		if cfg.sweep <= 0 {
			cfg.sweep = time.Millisecond
		}
	}
	st, err := openStore(filepath.Join(cfg.dataDir, DBFileName), cfg.limits)
	if err != nil {
		return nil, fmt.Errorf("mailbox: %w", err)
	}
	s := &Server{h: h, cfg: cfg, log: cfg.log, store: st,
		streams: map[network.Stream]struct{}{}, notifying: map[peer.ID]bool{}, rates: map[peer.ID]*rate.Limiter{}}
	s.m, err = newMetrics(cfg.reg, st)
	if err != nil {
		st.close()
		return nil, err
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	// Deposits that expired while the daemon was down go first.
	if _, err := st.sweep(cfg.now()); err != nil {
		s.log.Warn("mailbox: sweep expired deposits", "err", err)
	}
	s.wg.Add(1)
	go s.sweeper()
	h.SetStreamHandler(ProtocolID, s.handle)
	return s, nil
}

// Close removes the handler, resets the streams being served, waits for
// the goroutines and closes the store. It is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return s.closeErr
	}
	s.closed = true
	live := make([]network.Stream, 0, len(s.streams))
	for st := range s.streams {
		live = append(live, st)
	}
	s.mu.Unlock()
	s.h.RemoveStreamHandler(ProtocolID)
	s.cancel()
	for _, st := range live {
		st.Reset()
	}
	s.wg.Wait()
	err := s.store.close()
	s.m.unregister()
	s.mu.Lock()
	s.closeErr = err
	s.mu.Unlock()
	return err
}

// Stats returns what the store holds.
func (s *Server) Stats() Stats { return s.store.stats() }

// Sweep deletes the deposits older than the TTL now (the server also does
// so periodically) and returns how many.
func (s *Server) Sweep() (int, error) { return s.store.sweep(s.cfg.now()) }

func (s *Server) sweeper() {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.sweep)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
			if _, err := s.Sweep(); err != nil {
				s.log.Warn("mailbox: sweep expired deposits", "err", err)
			}
			s.sweepRates(time.Now())
		}
	}
}

func (s *Server) track(st network.Stream) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.streams[st] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *Server) untrack(st network.Stream) {
	s.mu.Lock()
	delete(s.streams, st)
	s.mu.Unlock()
	s.wg.Done()
}

// handle serves one request on a stream: read it (size-capped), answer
// it, close. A stream that does not carry a well-formed request is reset.
func (s *Server) handle(st network.Stream) {
	if !s.track(st) {
		st.Reset()
		return
	}
	defer s.untrack(st)
	from := st.Conn().RemotePeer()
	log := s.log.With("peer", from)
	if err := st.Scope().SetService(ServiceName); err != nil {
		log.Debug("mailbox stream: resource scope", "err", err)
		st.Reset()
		return
	}
	if err := st.Scope().ReserveMemory(streamMemory, network.ReservationPriorityAlways); err != nil {
		log.Debug("mailbox stream: reserve memory", "err", err)
		st.Reset()
		return
	}
	defer st.Scope().ReleaseMemory(streamMemory)
	_ = st.SetDeadline(time.Now().Add(s.cfg.limits.StreamTimeout))

	rd := msgio.NewVarintReaderSize(st, MaxRequestSize)
	msg, err := rd.ReadMsg()
	var resp *response
	switch {
	case errors.Is(err, msgio.ErrMsgTooLarge):
		s.m.reject(StatusTooLarge)
		resp = &response{status: StatusTooLarge, text: fmt.Sprintf("request above %d bytes", MaxRequestSize)}
	case err != nil:
		log.Debug("mailbox stream reset: read", "err", err)
		st.Reset()
		return
	default:
		req, derr := decodeRequest(msg)
		defer rd.ReleaseMsg(msg) // req aliases msg
		if derr != nil {
			log.Debug("mailbox stream reset: decode", "err", derr)
			s.m.reject(StatusBadRequest)
			st.Reset()
			return
		}
		resp = s.serve(from, req)
	}
	if err := msgio.NewVarintWriter(st).WriteMsg(resp.marshal()); err != nil {
		log.Debug("mailbox stream reset: write", "err", err)
		st.Reset()
		return
	}
	st.Close()
}

// allow takes one token from p's bucket.
func (s *Server) allow(p peer.ID) bool {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.rates[p]
	if l == nil {
		if len(s.rates) >= maxRatePeers {
			s.sweepRatesLocked(now)
		}
		l = rate.NewLimiter(rate.Limit(s.cfg.limits.RequestRate), s.cfg.limits.RequestBurst)
		if len(s.rates) < maxRatePeers {
			s.rates[p] = l
		}
	}
	return l.AllowN(now, 1)
}

func (s *Server) sweepRates(now time.Time) {
	s.mu.Lock()
	s.sweepRatesLocked(now)
	s.mu.Unlock()
}

func (s *Server) sweepRatesLocked(now time.Time) {
	for p, l := range s.rates {
		if l.TokensAt(now) >= float64(s.cfg.limits.RequestBurst) {
			delete(s.rates, p)
		}
	}
}

// serve answers one decoded request from peer from.
func (s *Server) serve(from peer.ID, req *request) *response {
	if !s.allow(from) {
		s.m.reject(StatusRateLimited)
		return &response{status: StatusRateLimited, text: "too many requests; slow down"}
	}
	switch req.op {
	case OpDeposit:
		return s.deposit(from, req)
	case OpFetch:
		limit := int(min(req.limit, MaxFetch))
		if limit == 0 {
			limit = MaxFetch
		}
		deps, more, err := s.store.fetch(from, req.after, limit, MaxResponseSize-1024, s.cfg.now())
		if err != nil {
			s.log.Error("mailbox: fetch", "peer", from, "err", err)
			return &response{status: StatusInternal, text: "store error"}
		}
		s.m.fetched.Add(float64(len(deps)))
		return &response{status: StatusOK, deposits: deps, more: more}
	default: // OpDelete
		n, err := s.store.remove(from, req.ids)
		if err != nil {
			s.log.Error("mailbox: delete", "peer", from, "err", err)
			return &response{status: StatusInternal, text: "store error"}
		}
		s.m.deleted.Add(float64(n))
		return &response{status: StatusOK, count: uint64(n)}
	}
}

func (s *Server) deposit(from peer.ID, req *request) *response {
	fail := func(st Status, text string) *response {
		s.m.reject(st)
		s.log.Debug("mailbox: deposit refused", "peer", from, "status", st.String(), "why", text)
		return &response{status: st, text: text}
	}
	to, err := peer.IDFromBytes(req.recipient)
	if err != nil {
		return fail(StatusBadRecipient, "recipient is not a peer ID")
	}
	if _, err := MontgomeryKey(to); err != nil {
		return fail(StatusBadRecipient, "recipient has no Ed25519 key in its peer ID")
	}
	if len(req.box) > s.cfg.limits.MaxDepositSize {
		return fail(StatusTooLarge, fmt.Sprintf("deposit of %d bytes, at most %d", len(req.box), s.cfg.limits.MaxDepositSize))
	}
	if len(req.box) < boxOverhead || req.box[0] != boxVersion {
		return fail(StatusBadRequest, "not a sealed box")
	}
	c := cost(req.box)
	if st, text := s.store.reserve(from, to, c); st != StatusOK {
		return fail(st, text)
	}
	id, dup, err := s.store.put(from, to, req.box, s.cfg.now())
	if err != nil || dup {
		s.store.release(from, to, c)
	}
	if err != nil {
		s.log.Error("mailbox: store deposit", "peer", from, "err", err)
		return &response{status: StatusInternal, text: "store error"}
	}
	if dup {
		s.m.replays.Inc()
		return &response{status: StatusOK, id: id, text: "already held"}
	}
	s.m.deposits.Inc()
	s.notify(to)
	return &response{status: StatusOK, id: id}
}

// notify tells a connected recipient that something arrived: a stream on
// NotifyProtocolID that carries nothing. At most one notice per recipient
// is in flight (a deposit meanwhile sends one more after it) and at most
// maxNotifying in all; a recipient that is not connected fetches when it
// connects.
func (s *Server) notify(to peer.ID) {
	if s.h.Network().Connectedness(to) != network.Connected {
		return
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	if _, busy := s.notifying[to]; busy {
		s.notifying[to] = true
		s.mu.Unlock()
		return
	}
	if len(s.notifying) >= maxNotifying {
		s.mu.Unlock()
		s.m.notifySkipped.Inc()
		return
	}
	s.notifying[to] = false
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		for {
			s.sendNotice(to)
			s.mu.Lock()
			again := s.notifying[to] && !s.closed
			if !again {
				delete(s.notifying, to)
				s.mu.Unlock()
				return
			}
			s.notifying[to] = false
			s.mu.Unlock()
		}
	}()
}

func (s *Server) sendNotice(to peer.ID) {
	ctx, cancel := context.WithTimeout(s.ctx, notifyTimeout)
	defer cancel()
	st, err := s.h.NewStream(network.WithNoDial(ctx, "mailbox notice"), to, NotifyProtocolID)
	if err != nil {
		s.log.Debug("mailbox: notice", "peer", to, "err", err)
		return
	}
	_ = st.SetDeadline(time.Now().Add(notifyTimeout))
	stop := context.AfterFunc(ctx, func() { st.Reset() })
	defer stop()
	// The notice is the stream itself; wait for the recipient's close so
	// the stream is not torn down before the protocol negotiation lands.
	if err := st.CloseWrite(); err != nil {
		st.Reset()
		return
	}
	var b [1]byte
	if _, err := st.Read(b[:]); err == nil {
		st.Reset() // a notice carries nothing back
		return
	}
	st.Close()
	s.m.notices.Inc()
}
