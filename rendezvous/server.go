package rendezvous

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"github.com/p2p-messaging/p2p-messaging/rendezvous/pb"
)

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
		log:    slog.New(slog.DiscardHandler),
		limits: DefaultLimits(),
		grace:  DefaultDisconnectGrace,
		now:    time.Now,
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
	if err := checkNamespace(ns, s.lim.MaxNamespaceLen); err != nil {
		return s.reject(rejectNamespace, StatusInvalidNamespace, err.Error())
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

// checkRecord returns why b is not a signed peer record that remote may
// register, or "". The size was checked by checkRecordSize.
func (s *Server) checkRecord(remote peer.ID, b []byte) string {
	pr, err := parseRecord(b)
	switch {
	case err != nil:
		return err.Error()
	case pr.PeerID != remote:
		return "peer record names another peer than the one registering"
	case len(pr.Addrs) == 0:
		return "peer record has no addresses: nobody could reach the peer"
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
		if err := checkNamespace(ns, s.lim.MaxNamespaceLen); err != nil {
			s.m.reject(rejectNamespace)
			return StatusInvalidNamespace, err.Error()
		}
	}
	limit := s.lim.MaxDiscoverLimit
	if l := reqLimit; l > 0 && l < uint64(limit) {
		limit = int(l)
	}
	d.holder = s.leaseHolder(ns, now) // lease.go
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
