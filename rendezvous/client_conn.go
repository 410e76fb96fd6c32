package rendezvous

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-msgio/pbio"

	"github.com/p2p-messaging/p2p-messaging/rendezvous/pb"
)

// Server connections and request streams of the client.
const (
	// connProtectTag protects server connections in the connection manager.
	connProtectTag = "rendezvous"
	// maxIdleStreams is how many warm request streams are kept per server.
	maxIdleStreams = 4
	// maxIdleAge drops a warm stream that sat unused for longer (the server
	// may have timed it out).
	maxIdleAge = 30 * time.Second
	// maxDiscoverPages caps pagination against a server that never ends.
	maxDiscoverPages = 1000
	// serverCapFloor: a short page with at least this many registrations may
	// be a server-side cap on the page size rather than the end, so the
	// client asks once more. Below it, a short page ends the listing.
	serverCapFloor = 100
)

type serverConn struct {
	c    *Client
	info peer.AddrInfo

	mu   sync.Mutex
	idle []*reqStream

	filter addrFilter // client_claim.go
}

// reqStream is a request stream to a server, reusable for sequential
// requests.
type reqStream struct {
	s    network.Stream
	r    pbio.ReadCloser
	w    pbio.WriteCloser
	used time.Time
}

func (sc *serverConn) connect(ctx context.Context) error {
	h := sc.c.h
	if h.Network().Connectedness(sc.info.ID) == network.Connected {
		return nil
	}
	dctx, cancel := context.WithTimeout(ctx, sc.c.cfg.dialTimeout)
	defer cancel()
	// Our own backoff governs retries; don't let the swarm's dial backoff
	// hide a server that just came back.
	dctx = network.WithForceDirectDial(dctx, "rendezvous server")
	h.Peerstore().AddAddrs(sc.info.ID, sc.info.Addrs, peerstore.PermanentAddrTTL)
	return h.Connect(dctx, sc.info)
}

func (sc *serverConn) openStream(ctx context.Context, pid protocol.ID) (network.Stream, error) {
	if err := sc.connect(ctx); err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	s, err := sc.c.h.NewStream(ctx, sc.info.ID, pid)
	if err != nil {
		return nil, fmt.Errorf("open stream: %w", err)
	}
	return s, nil
}

func (sc *serverConn) take() *reqStream {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	for len(sc.idle) > 0 {
		rs := sc.idle[len(sc.idle)-1]
		sc.idle = sc.idle[:len(sc.idle)-1]
		if time.Since(rs.used) < maxIdleAge && !rs.s.Conn().IsClosed() {
			return rs
		}
		rs.s.Reset()
	}
	return nil
}

func (sc *serverConn) put(rs *reqStream) {
	rs.used = time.Now()
	sc.mu.Lock()
	if sc.c.ctx.Err() == nil && len(sc.idle) < maxIdleStreams {
		sc.idle = append(sc.idle, rs)
		rs = nil
	}
	sc.mu.Unlock()
	if rs != nil {
		rs.s.Close()
	}
}

func (sc *serverConn) resetIdle() {
	sc.mu.Lock()
	idle := sc.idle
	sc.idle = nil
	sc.mu.Unlock()
	for _, rs := range idle {
		rs.s.Reset()
	}
}

// roundTrip sends req and reads one response into resp, on a warm stream
// when one is idle (retrying once on a fresh stream if the warm one turns
// out to be dead) or on a new one. It returns the connection used.
func (sc *serverConn) roundTrip(ctx context.Context, req, resp *pb.Message) (network.Conn, error) {
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		rs := sc.take()
		reused := rs != nil
		if rs == nil {
			s, err := sc.openStream(ctx, ProtocolID)
			if err != nil {
				return nil, err
			}
			rs = &reqStream{s: s, r: newReader(s), w: newWriter(s)}
		}
		conn := rs.s.Conn()
		ok, err := sc.exchange(ctx, rs, req, resp)
		if err == nil {
			if ok {
				sc.put(rs)
			}
			return conn, nil
		}
		rs.s.Reset()
		if reused && ctx.Err() == nil && sc.c.ctx.Err() == nil {
			// The warm stream was stale (server timeout or restart): drop the
			// other idle ones too and try on a fresh stream.
			sc.resetIdle()
			continue
		}
		return nil, err
	}
}

// exchange runs one request on rs, bounded by the request timeout, the
// caller's ctx and the client's life. ok reports whether rs may be reused.
func (sc *serverConn) exchange(ctx context.Context, rs *reqStream, req, resp *pb.Message) (ok bool, err error) {
	// The request timeout is the stream's own bound; the caller's ctx (and
	// its deadline) bounds it through the reset below, so a ctx error is
	// reported as such.
	if err := rs.s.SetDeadline(time.Now().Add(sc.c.cfg.requestTimeout)); err != nil {
		return false, fmt.Errorf("set deadline: %w", err)
	}
	stopCtx := context.AfterFunc(ctx, func() { rs.s.Reset() })
	stopClient := context.AfterFunc(sc.c.ctx, func() { rs.s.Reset() })
	err = rs.w.WriteMsg(req)
	if err == nil {
		err = rs.r.ReadMsg(resp)
	}
	ctxAlive, clientAlive := stopCtx(), stopClient()
	switch {
	case err != nil && (!ctxAlive || ctx.Err() != nil):
		return false, ctx.Err()
	case err != nil && !clientAlive:
		return false, ErrClientClosed
	case err != nil:
		return false, err
	}
	if !ctxAlive || !clientAlive {
		return false, nil // answered, but the stream was reset meanwhile
	}
	if err := rs.s.SetDeadline(time.Time{}); err != nil {
		return false, nil
	}
	return true, nil
}

// registerOnce sends one REGISTER, with the claim proof when not nil
// (client_claim.go's register decides it).
func (sc *serverConn) registerOnce(ctx context.Context, ns string, ttl time.Duration, proof []byte) (time.Duration, network.Conn, error) {
	wrap := func(err error) error { return fmt.Errorf("register %q on %s: %w", ns, sc.info.ID, err) }
	if err := checkNamespace(ns, MaxNamespaceLen); err != nil {
		return 0, nil, wrap(err)
	}
	if ttl < 0 {
		return 0, nil, wrap(fmt.Errorf("negative ttl %v", ttl))
	}
	spr, err := sc.record() // client_claim.go: the addresses this server accepts
	if err != nil {
		return 0, nil, wrap(err)
	}
	req := registerRequest(ns, spr, ttl)
	req.Register.ClaimProof = proof
	var resp pb.Message
	conn, err := sc.roundTrip(ctx, req, &resp)
	if err != nil {
		return 0, nil, wrap(err)
	}
	if resp.GetType() != pb.Message_REGISTER_RESPONSE || resp.RegisterResponse == nil {
		return 0, nil, wrap(fmt.Errorf("unexpected response %s", resp.GetType()))
	}
	rr := resp.RegisterResponse
	if rr.GetStatus() != StatusOK {
		return 0, nil, wrap(&StatusError{Status: rr.GetStatus(), Text: rr.GetStatusText()})
	}
	granted := durationFromSeconds(rr.GetTtl())
	if rr.Ttl == nil {
		granted = ttl
		if granted == 0 {
			granted = DefaultTTL
		}
	}
	return granted, conn, nil
}

// unregister sends UNREGISTER on a stream of its own and half-closes it.
// UNREGISTER has no response in the spec: once the request is written, the
// server's end of the stream (a clean close, as ours does, or a reset, as
// others do) says nothing about whether it was processed, so only a failure
// to open the stream or to write the request is an error. Waiting for that
// end keeps the request ordered before the caller's next one; the caller's
// ctx bounds the wait.
func (sc *serverConn) unregister(ctx context.Context, ns string) error {
	return sc.sendUnregister(ctx, ns, false)
}

// sendUnregister is unregister; release also gives up the name's lease
// (client_claim.go).
func (sc *serverConn) sendUnregister(ctx context.Context, ns string, release bool) error {
	wrap := func(err error) error { return fmt.Errorf("unregister %q on %s: %w", ns, sc.info.ID, err) }
	if err := checkNamespace(ns, MaxNamespaceLen); err != nil {
		return wrap(err)
	}
	s, err := sc.openStream(ctx, ProtocolID)
	if err != nil {
		return wrap(err)
	}
	if err := s.SetDeadline(time.Now().Add(sc.c.cfg.requestTimeout)); err != nil {
		s.Reset()
		return wrap(err)
	}
	stop := context.AfterFunc(ctx, func() { s.Reset() })
	defer stop()
	req := unregisterRequest(ns)
	if release {
		req = releaseRequest(ns)
	}
	if err := newWriter(s).WriteMsg(req); err != nil {
		s.Reset()
		return wrap(ctxOr(ctx, err))
	}
	if err := s.CloseWrite(); err != nil {
		// The request is out; a server that resets once it has read it
		// may already have ended the stream.
		s.Reset()
		if ctx.Err() != nil {
			return wrap(ctx.Err())
		}
		return nil
	}
	// Wait for the server to end the stream: it reads our UNREGISTER, then
	// our EOF, then closes. Anything it sends meanwhile is ignored.
	var m pb.Message
	r := newReader(s)
	for i := 0; i < 8; i++ {
		if err := r.ReadMsg(&m); err != nil {
			if errors.Is(err, io.EOF) {
				s.Close()
				return nil
			}
			s.Reset()
			if ctx.Err() != nil {
				return wrap(ctx.Err())
			}
			sc.c.log.Debug("unregister: server ended the stream with an error after the request", "ns", ns, "peer", sc.info.ID, "err", err)
			return nil
		}
	}
	s.Reset()
	return nil // it kept talking, but the request was delivered
}

func (sc *serverConn) discover(ctx context.Context, ns string, limit int, cookie []byte) ([]Registration, []byte, error) {
	regs, next, _, err := sc.discoverPage(ctx, ns, limit, cookie, false)
	return regs, next, err
}

// discoverPage asks for one page; with name, it also reads the answer's
// name_holder (decode.go), and a malformed one fails the answer.
func (sc *serverConn) discoverPage(ctx context.Context, ns string, limit int, cookie []byte, name bool) ([]Registration, []byte, peer.ID, error) {
	wrap := func(err error) error { return fmt.Errorf("discover %q on %s: %w", ns, sc.info.ID, err) }
	if ns != "" {
		if err := checkNamespace(ns, MaxNamespaceLen); err != nil {
			return nil, nil, "", wrap(err)
		}
	}
	if limit < 0 {
		return nil, nil, "", wrap(fmt.Errorf("negative limit %d", limit))
	}
	req := discoverRequest(ns, limit, cookie)
	var resp pb.Message
	if _, err := sc.roundTrip(ctx, req, &resp); err != nil {
		return nil, nil, "", wrap(err)
	}
	regs, next, err := parseDiscoverResponse(&resp, ns, sc.c.log)
	if err != nil {
		return nil, nil, "", wrap(err)
	}
	var holder peer.ID
	if name {
		if holder, err = parseNameHolder(&resp); err != nil {
			return nil, nil, "", wrap(err)
		}
	}
	return regs, next, holder, nil
}

// discoverAll follows cookies until the server has nothing more (or limit
// registrations were collected; limit <= 0 means all).
func (sc *serverConn) discoverAll(ctx context.Context, ns string, limit int) ([]Registration, error) {
	var all []Registration
	var cookie []byte
	for range maxDiscoverPages {
		ask := MaxDiscoverLimit
		if limit > 0 {
			ask = min(ask, limit-len(all))
		}
		page, next, err := sc.discover(ctx, ns, ask, cookie)
		if err != nil {
			if len(all) > 0 && !isStatus(err) && ctx.Err() == nil {
				// A later page failed: what we have is still true.
				sc.c.log.Debug("discover: later page failed", "ns", ns, "peer", sc.info.ID, "err", err)
				return all, nil
			}
			return nil, err
		}
		all = append(all, page...)
		cookie = next
		if len(page) == 0 || (limit > 0 && len(all) >= limit) {
			break
		}
		if len(page) < ask && len(page) < serverCapFloor {
			break
		}
		if len(cookie) == 0 {
			break
		}
	}
	return all, nil
}

// isRefusal reports a status that asking again will not change: anything
// but E_UNAVAILABLE (rate limit, server full) and E_INTERNAL_ERROR (the
// server's store failing). Unreachable servers and timeouts are transient.
func isRefusal(err error) bool {
	var se *StatusError
	return errors.As(err, &se) && se.Status != StatusUnavailable && se.Status != StatusInternalError
}

func isStatus(err error) bool {
	var se *StatusError
	return errors.As(err, &se)
}

func ctxOr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}
