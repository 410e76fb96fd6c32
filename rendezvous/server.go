package rendezvous

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/p2p-messaging/p2p-messaging/rendezvous/pb"
)

// ServiceName is the resource-manager service of the server's streams.
const ServiceName = "p2p-messaging.rendezvous"

// DefaultDisconnectGrace is how long a peer's registrations outlive its
// last connection to the server.
const DefaultDisconnectGrace = 2 * time.Second

// sweepInterval is how often expired registrations and idle rate limiters
// are freed, at the latest.
const sweepInterval = 30 * time.Second

// minSweepGap spaces the sweeps that readers trigger.
const minSweepGap = time.Second

// ServerOption configures a Server.
type ServerOption func(*serverConfig) error

type serverConfig struct {
	dataDir         string
	log             *slog.Logger
	reg             prometheus.Registerer
	limits          Limits
	exclusivePrefix string
	grace           time.Duration
	now             func() time.Time
	names           nameOptions // claim.go
}

// WithDataDir persists registrations and the cookie sequence in
// dir/rendezvous.db. "" (the default) keeps everything in memory.
func WithDataDir(dir string) ServerOption {
	return func(c *serverConfig) error { c.dataDir = dir; return nil }
}

// WithLogger sets the logger; by default the server logs nothing.
func WithLogger(l *slog.Logger) ServerOption {
	return func(c *serverConfig) error {
		if l == nil {
			return errors.New("nil logger")
		}
		c.log = l
		return nil
	}
}

// WithRegisterer registers the server's Prometheus metrics with r.
func WithRegisterer(r prometheus.Registerer) ServerOption {
	return func(c *serverConfig) error { c.reg = r; return nil }
}

// WithLimits replaces the default limits.
func WithLimits(l Limits) ServerOption {
	return func(c *serverConfig) error {
		if err := l.validate(); err != nil {
			return fmt.Errorf("invalid limits: %w", err)
		}
		c.limits = l
		return nil
	}
}

// WithExclusivePrefix makes namespaces starting with prefix exclusive: one
// peer holds each at a time. The default is UserNamespacePrefix; "" makes
// no namespace exclusive.
func WithExclusivePrefix(prefix string) ServerOption {
	return func(c *serverConfig) error { c.exclusivePrefix = prefix; return nil }
}

// WithDisconnectGrace sets how long after its last connection closes a
// peer's registrations are removed (default 2s). d < 0 keeps them until
// they expire or are unregistered.
func WithDisconnectGrace(d time.Duration) ServerOption {
	return func(c *serverConfig) error { c.grace = d; return nil }
}

// WithClock sets the clock used for registration lifetimes (tests).
func WithClock(now func() time.Time) ServerOption {
	return func(c *serverConfig) error {
		if now == nil {
			return errors.New("nil clock")
		}
		c.now = now
		return nil
	}
}

// Server serves the rendezvous protocol and its watch extension on a host.
type Server struct {
	h   host.Host
	lim Limits
	cfg serverConfig
	log *slog.Logger
	st  *regStore
	m   *serverMetrics
	rl  *rateLimiter
	// names holds the name leases (lease.go).
	names *nameTable
	// verify feeds the verifier pool.
	verify chan verifyJob

	ctx    context.Context
	cancel context.CancelFunc
	sub    event.Subscription
	wg     sync.WaitGroup

	mu      sync.Mutex
	closed  bool
	streams map[network.Stream]struct{}
	grace   map[peer.ID]*time.Timer
}

// NewServer starts a rendezvous server on h: it loads the store (when a data
// dir is set) and registers the ProtocolID and WatchProtocolID handlers.
func NewServer(h host.Host, opts ...ServerOption) (*Server, error) {
	cfg := serverConfig{
		log:             slog.New(slog.DiscardHandler),
		limits:          DefaultLimits(),
		exclusivePrefix: UserNamespacePrefix,
		grace:           DefaultDisconnectGrace,
		now:             time.Now,
	}
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, fmt.Errorf("rendezvous server: %w", err)
		}
	}
	s := &Server{
		h:       h,
		lim:     cfg.limits,
		cfg:     cfg,
		log:     cfg.log,
		streams: make(map[network.Stream]struct{}),
		grace:   make(map[peer.ID]*time.Timer),
	}
	s.rl = newRateLimiter(cfg.limits.RequestRate, cfg.limits.RequestBurst)

	now := cfg.now()
	seq := uint64(max(now.UnixNano(), 0))
	var (
		p      *persister
		loaded []*regEntry
	)
	if cfg.dataDir != "" {
		var stored uint64
		var err error
		p, loaded, stored, err = openPersister(cfg.dataDir, now.UnixNano(), cfg.log)
		if err != nil {
			return nil, fmt.Errorf("rendezvous server: %w", err)
		}
		seq = max(seq, stored)
	}
	s.st = newStore(seq, p)
	s.st.load(loaded)
	// Name leases (lease.go).
	names, err := openNames(&cfg, &s.lim, s.st, loaded, now.UnixNano())
	if err != nil {
		if p != nil {
			p.close()
		}
		return nil, fmt.Errorf("rendezvous server: %w", err)
	}
	s.names = names

	m, err := newMetrics(cfg.reg, func() float64 { return float64(s.st.len()) }, func() float64 { return float64(s.st.watchCount()) })
	if err != nil {
		if p != nil {
			p.close()
		}
		names.close()
		return nil, fmt.Errorf("rendezvous server: %w", err)
	}
	s.m = m
	s.st.onRemove = func(reason string) {
		if reason != reasonReplaced {
			m.removals.WithLabelValues(reason).Inc()
		}
	}

	s.ctx, s.cancel = context.WithCancel(context.Background())
	if cfg.grace >= 0 {
		sub, err := h.EventBus().Subscribe(new(event.EvtPeerConnectednessChanged))
		if err != nil {
			s.cancel()
			if p != nil {
				p.close()
			}
			names.close()
			return nil, fmt.Errorf("rendezvous server: subscribe to connectedness events: %w", err)
		}
		s.sub = sub
		s.wg.Add(1)
		go s.watchConnectedness()
	}
	s.wg.Add(1)
	go s.sweeper()
	s.verify = make(chan verifyJob)
	for range runtime.GOMAXPROCS(0) {
		s.wg.Add(1)
		go s.verifier()
	}

	h.SetStreamHandler(ProtocolID, s.handleStream)
	h.SetStreamHandler(WatchProtocolID, s.handleWatch)
	s.log.Info("rendezvous server started", "registrations", len(loaded), "persistent", cfg.dataDir != "")
	return s, nil
}

// Close removes the stream handlers, ends open streams, stops the
// background goroutines and flushes and closes the store.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	for p, t := range s.grace {
		t.Stop()
		delete(s.grace, p)
	}
	streams := make([]network.Stream, 0, len(s.streams))
	for str := range s.streams {
		streams = append(streams, str)
	}
	s.mu.Unlock()

	s.h.RemoveStreamHandler(ProtocolID)
	s.h.RemoveStreamHandler(WatchProtocolID)
	for _, str := range streams {
		str.Reset()
	}
	s.cancel()
	if s.sub != nil {
		s.sub.Close()
	}
	s.wg.Wait()
	namesErr := s.names.close() // name leases (lease.go)
	if s.st.persist != nil {
		if err := s.st.persist.close(); err != nil {
			return fmt.Errorf("rendezvous server: close store: %w", errors.Join(err, namesErr))
		}
	}
	if namesErr != nil {
		return fmt.Errorf("rendezvous server: close names: %w", namesErr)
	}
	return nil
}

// Registrations returns the number of live registrations.
func (s *Server) Registrations() int { return s.st.len() }

// track registers a stream so Close can end it; false if closing.
func (s *Server) track(str network.Stream) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.streams[str] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *Server) untrack(str network.Stream) {
	s.mu.Lock()
	delete(s.streams, str)
	s.mu.Unlock()
	s.wg.Done()
}

// handleStream serves one /rendezvous/1.0.0 stream: any number of
// sequential requests, each answered in order, until the peer closes its
// side. Anything undecodable resets the stream.
func (s *Server) handleStream(str network.Stream) {
	if !s.track(str) {
		str.Reset()
		return
	}
	defer s.untrack(str)
	if err := str.Scope().SetService(ServiceName); err != nil {
		s.log.Debug("rendezvous stream refused by resource manager", "peer", str.Conn().RemotePeer(), "err", err)
		str.Reset()
		return
	}
	remote := str.Conn().RemotePeer()
	bucket := s.rl.acquire(remote)
	defer s.rl.release(bucket)
	r := newFrameReader(str)
	defer r.done()
	var (
		req     pb.Message
		d       *discoverBuf // from discoverPool while a DISCOVER is answered
		buf     []byte       // small responses
		lastNS  string       // the namespace of the previous DISCOVER, reused when equal
		renewed time.Time
		reply   chan string // answers of the verifier pool
	)
	// The deadline bounds the wait for each request to at least
	// StreamTimeout after the previous answer, at most 1.5 times that.
	// Renewing it only when half the timeout has passed since the last
	// renewal saves a timer reset per request.
	half := s.lim.StreamTimeout / 2
	for {
		if now := time.Now(); now.Sub(renewed) >= half {
			if err := str.SetDeadline(now.Add(s.lim.StreamTimeout + half)); err != nil {
				str.Reset()
				return
			}
			renewed = now
		}
		body, err := r.next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				str.Close()
				return
			}
			s.m.reject(rejectMalformed)
			s.log.Debug("bad rendezvous request, resetting stream", "peer", remote, "err", err)
			str.Reset()
			return
		}
		start := time.Now()
		var (
			typ    pb.Message_MessageType
			status Status
			out    []byte
		)
		if dr, ok := parseDiscover(body); ok {
			// The common case, decoded without allocating.
			typ = pb.Message_DISCOVER
			if string(dr.ns) != lastNS {
				lastNS = string(dr.ns)
			}
			d = discoverPool.Get().(*discoverBuf)
			status, out, buf = s.answerDiscover(remote, bucket, lastNS, dr.limit, dr.cookie, d, buf)
			r.done()
		} else {
			err := proto.Unmarshal(body, &req)
			r.done()
			if err != nil {
				s.m.reject(rejectMalformed)
				s.log.Debug("bad rendezvous request, resetting stream", "peer", remote, "err", err)
				str.Reset()
				return
			}
			var ok bool
			typ, ok = requestType(&req)
			if !ok {
				s.m.reject(rejectMalformed)
				s.log.Debug("rendezvous request with neither type nor body, resetting stream", "peer", remote)
				str.Reset()
				return
			}
			switch typ {
			case pb.Message_REGISTER:
				if reply == nil {
					reply = make(chan string, 1)
				}
				resp := s.register(remote, str.Conn(), bucket, req.GetRegister(), reply)
				status = resp.GetStatus()
				buf = appendServerFrame(buf[:0], &pb.Message{
					Type:             pb.Message_REGISTER_RESPONSE.Enum(),
					RegisterResponse: resp,
				})
				out = buf
			case pb.Message_DISCOVER:
				dq := req.GetDiscover()
				d = discoverPool.Get().(*discoverBuf)
				status, out, buf = s.answerDiscover(remote, bucket, dq.GetNs(), dq.GetLimit(), dq.GetCookie(), d, buf)
			case pb.Message_UNREGISTER:
				s.unregister(remote, req.GetUnregister())
				req.Reset()
				s.m.requests[typ][StatusOK].Inc()
				s.m.latency[typ].Observe(time.Since(start).Seconds())
				continue
			default:
				s.m.reject(rejectMalformed)
				s.log.Debug("unexpected rendezvous message type, resetting stream", "peer", remote, "type", typ)
				str.Reset()
				return
			}
			req.Reset() // an idle stream keeps no record alive
		}
		if _, err := str.Write(out); err != nil {
			s.log.Debug("writing rendezvous response", "peer", remote, "err", err)
			str.Reset()
			return
		}
		s.m.requests[typ][status].Inc()
		s.m.latency[typ].Observe(time.Since(start).Seconds())
		if d != nil {
			putDiscoverBuf(d)
			d = nil
		}
	}
}

// answerDiscover answers one DISCOVER: the framed response to write, from
// d.out when OK, else from buf (returned for reuse).
func (s *Server) answerDiscover(remote peer.ID, b *bucket, ns string, limit uint64, cookie []byte, d *discoverBuf, buf []byte) (Status, []byte, []byte) {
	status, text := s.discover(remote, b, ns, limit, cookie, d)
	if status == StatusOK {
		return status, d.out, buf
	}
	buf = appendServerFrame(buf[:0], &pb.Message{
		Type: pb.Message_DISCOVER_RESPONSE.Enum(),
		DiscoverResponse: &pb.Message_DiscoverResponse{
			Status:     status.Enum(),
			StatusText: proto.String(text),
		},
	})
	return status, buf, buf
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

// appendServerFrame appends m with its varint length prefix.
func appendServerFrame(b []byte, m proto.Message) []byte {
	size := proto.Size(m)
	b = protowire.AppendVarint(b, uint64(size))
	b, _ = proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(b, m)
	return b
}

func (s *Server) reject(reason string, status Status, text string) *pb.Message_RegisterResponse {
	s.m.reject(reason)
	return &pb.Message_RegisterResponse{Status: status.Enum(), StatusText: proto.String(text)}
}

// register validates and stores one REGISTER. reply receives the answer
// of the verifier pool.
func (s *Server) register(remote peer.ID, conn network.Conn, b *bucket, r *pb.Message_Register, reply chan string) *pb.Message_RegisterResponse {
	now := s.cfg.now()
	if !b.allow(now) {
		s.log.Debug("rate limited", "peer", remote)
		return s.reject(rejectRateLimit, StatusUnavailable, "too many requests, slow down")
	}
	ns := r.GetNs()
	if text := s.checkNamespace(ns); text != "" {
		return s.reject(rejectNamespace, StatusInvalidNamespace, text)
	}
	ttl := r.GetTtl()
	if ttl == 0 {
		ttl = uint64(s.lim.DefaultTTL / time.Second)
	}
	minTTL, maxTTL := uint64(s.lim.MinTTL/time.Second), uint64(s.lim.MaxTTL/time.Second)
	if ttl < minTTL || ttl > maxTTL {
		return s.reject(rejectTTL, StatusInvalidTTL,
			fmt.Sprintf("ttl %d s is outside the allowed range %d..%d s", ttl, minTTL, maxTTL))
	}
	rec := r.GetSignedPeerRecord()
	if text := s.checkRecordSize(rec); text != "" {
		s.log.Debug("invalid signed peer record", "peer", remote, "ns", ns, "err", text)
		return s.reject(rejectRecord, StatusInvalidSignedPeerRecord, text)
	}
	if known := s.st.knownRecord(remote, ns, rec); known != nil {
		// Byte-identical to a record this peer registered: it verified
		// then, and verifies the same now. Share the stored bytes.
		rec = known
	} else if text := s.verifyRecord(remote, rec, reply); text != "" {
		s.log.Debug("invalid signed peer record", "peer", remote, "ns", ns, "err", text)
		return s.reject(rejectRecord, StatusInvalidSignedPeerRecord, text)
	}
	// Records cannot aim traffic (addrcheck.go).
	if text := s.checkRecordAddrs(remote, conn, rec); text != "" {
		s.log.Debug("signed peer record refused for its addresses", "peer", remote, "ns", ns, "err", text)
		return s.reject(rejectRecordAddrs, StatusInvalidSignedPeerRecord, text)
	}
	exclusive := s.cfg.exclusivePrefix != "" && strings.HasPrefix(ns, s.cfg.exclusivePrefix)
	// Name leases (lease.go): the lease decides who may hold the name.
	var tk nameTicket
	if exclusive {
		var refused *pb.Message_RegisterResponse
		if tk, refused = s.admitName(remote, conn, r, now); refused != nil {
			return refused
		}
	}
	res := s.st.registerIn(remote, ns, rec, int64(ttl)*int64(time.Second), now.UnixNano(), exclusive,
		roomFor(exclusive), &s.lim) // reserve.go
	s.nameRegistered(tk, res.status == StatusOK, now, ttl)
	if res.status != StatusOK {
		s.log.Debug("registration refused", "peer", remote, "ns", ns, "status", res.status, "err", res.text)
		return s.reject(res.reason, res.status, res.text)
	}
	s.log.Debug("registered", "peer", remote, "ns", ns, "ttl", ttl)
	return &pb.Message_RegisterResponse{Status: StatusOK.Enum(), Ttl: proto.Uint64(ttl)}
}

// checkNamespace returns why ns is not a valid namespace, or "".
func (s *Server) checkNamespace(ns string) string {
	switch {
	case ns == "":
		return "namespace is empty"
	case len(ns) > s.lim.MaxNamespaceLen:
		return fmt.Sprintf("namespace is %d bytes, longer than %d", len(ns), s.lim.MaxNamespaceLen)
	case !utf8.ValidString(ns):
		return "namespace is not valid UTF-8"
	}
	return ""
}

// checkRecordSize returns why b cannot be a signed peer record, or "".
func (s *Server) checkRecordSize(b []byte) string {
	if len(b) == 0 {
		return "signed peer record is missing"
	}
	if len(b) > s.lim.MaxRecordSize {
		return fmt.Sprintf("signed peer record is %d bytes, larger than %d", len(b), s.lim.MaxRecordSize)
	}
	return ""
}

// verifyJob asks the verifier pool to check one record.
type verifyJob struct {
	remote peer.ID
	rec    []byte
	reply  chan<- string
}

// verifier checks signed records for the stream handlers. Signature
// verification needs a deep stack; doing it on a few long-lived
// goroutines, rather than on each stream's handler, keeps that stack
// growth from staying with every idle registered client.
func (s *Server) verifier() {
	defer s.wg.Done()
	for {
		select {
		case <-s.ctx.Done():
			return
		case j := <-s.verify:
			j.reply <- s.checkRecord(j.remote, j.rec)
		}
	}
}

// verifyRecord returns why rec is not a signed peer record of remote, or
// "", checked by the verifier pool. reply must be empty.
func (s *Server) verifyRecord(remote peer.ID, rec []byte, reply chan string) string {
	select {
	case s.verify <- verifyJob{remote: remote, rec: rec, reply: reply}:
		return <-reply
	case <-s.ctx.Done():
		return "server is closing"
	}
}

// checkRecord returns why b is not a signed peer record of remote, or "".
// The size was checked by checkRecordSize.
func (s *Server) checkRecord(remote peer.ID, b []byte) string {
	env, rec, err := record.ConsumeEnvelope(b, peer.PeerRecordEnvelopeDomain)
	if err != nil {
		return "signed peer record does not verify: " + err.Error()
	}
	pr, ok := rec.(*peer.PeerRecord)
	if !ok {
		return "signed envelope does not hold a peer record"
	}
	signer, err := peer.IDFromPublicKey(env.PublicKey)
	if err != nil || signer != pr.PeerID {
		return "peer record was not signed by the peer it names"
	}
	if pr.PeerID != remote {
		return "peer record names another peer than the one registering"
	}
	return ""
}

// discover answers one DISCOVER into d.out.
func (s *Server) discover(remote peer.ID, b *bucket, ns string, reqLimit uint64, cookie []byte, d *discoverBuf) (Status, string) {
	now := s.cfg.now()
	if !b.allow(now) {
		s.m.reject(rejectRateLimit)
		return StatusUnavailable, "too many requests, slow down"
	}
	if ns != "" {
		if text := s.checkNamespace(ns); text != "" {
			s.m.reject(rejectNamespace)
			return StatusInvalidNamespace, text
		}
	}
	limit := s.lim.MaxDiscoverLimit
	if l := reqLimit; l > 0 && l < uint64(limit) {
		limit = int(l)
	}
	status, text := s.st.discover(ns, cookie, limit, now.UnixNano(), d)
	if status != StatusOK {
		s.m.reject(rejectCookie)
		s.log.Debug("discover refused", "peer", remote, "ns", ns, "err", text)
	}
	return status, text
}

// unregister removes one registration; the spec sends no response.
func (s *Server) unregister(remote peer.ID, r *pb.Message_Unregister) {
	ns := r.GetNs()
	if r.GetReleaseName() {
		s.releaseName(remote, ns) // name leases (lease.go)
	}
	if s.st.unregister(remote, ns) {
		s.log.Debug("unregistered", "peer", remote, "ns", ns)
	}
}

// watchConnectedness removes the registrations of peers whose last
// connection closed and who did not come back within the grace period.
func (s *Server) watchConnectedness() {
	defer s.wg.Done()
	for {
		select {
		case <-s.ctx.Done():
			return
		case ev, ok := <-s.sub.Out():
			if !ok {
				return
			}
			e := ev.(event.EvtPeerConnectednessChanged)
			if e.Connectedness == network.Connected {
				s.mu.Lock()
				if t := s.grace[e.Peer]; t != nil {
					t.Stop()
					delete(s.grace, e.Peer)
				}
				s.mu.Unlock()
				continue
			}
			if e.Connectedness != network.NotConnected || !s.st.hasPeer(e.Peer) {
				continue
			}
			if s.cfg.grace == 0 {
				s.dropPeer(e.Peer)
				continue
			}
			p := e.Peer
			s.mu.Lock()
			if t := s.grace[p]; t != nil {
				t.Stop()
			}
			s.grace[p] = time.AfterFunc(s.cfg.grace, func() { s.graceOver(p) })
			s.mu.Unlock()
		}
	}
}

func (s *Server) graceOver(p peer.ID) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	delete(s.grace, p)
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	if s.h.Network().Connectedness(p) != network.NotConnected {
		return // came back (possibly only through a relay)
	}
	s.dropPeer(p)
}

func (s *Server) dropPeer(p peer.ID) {
	if n := s.st.removePeer(p, reasonDisconnect); n > 0 {
		s.log.Debug("peer disconnected, registrations removed", "peer", p, "registrations", n)
	}
}

// sweeper frees expired registrations periodically, and soon after a
// reader has skipped one (at most once per minSweepGap, since a sweep walks
// the whole index under the write lock).
func (s *Server) sweeper() {
	defer s.wg.Done()
	t := time.NewTicker(sweepInterval)
	defer t.Stop()
	var (
		last    time.Time
		delayed <-chan time.Time
	)
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		case <-delayed:
		case <-s.st.expiredSeen:
			if wait := minSweepGap - time.Since(last); wait > 0 {
				if delayed == nil {
					delayed = time.After(wait)
				}
				continue
			}
		}
		delayed = nil
		last = time.Now()
		now := s.cfg.now()
		if n := s.st.sweep(now.UnixNano()); n > 0 {
			s.log.Debug("expired registrations removed", "registrations", n)
		}
		s.rl.sweep(now)
		s.names.sweep(now.UnixNano()) // name leases (lease.go)
	}
}
