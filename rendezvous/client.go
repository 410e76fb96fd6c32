package rendezvous

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/discovery"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/core/record"
	"github.com/libp2p/go-libp2p/p2p/host/eventbus"
	"github.com/libp2p/go-msgio/pbio"
	ma "github.com/multiformats/go-multiaddr"
	"google.golang.org/protobuf/proto"

	"github.com/p2p-messaging/p2p-messaging/rendezvous/pb"
)

// Client defaults.
const (
	// DefaultRequestTimeout bounds one request/response exchange on a stream
	// when the caller's context has no earlier deadline.
	DefaultRequestTimeout = 20 * time.Second
	// DefaultDialTimeout bounds connecting to a server.
	DefaultDialTimeout = 10 * time.Second
	// DefaultRetryMin and DefaultRetryMax bound the backoff between attempts
	// to reach a server that failed (kept registrations, watches).
	DefaultRetryMin = time.Second
	DefaultRetryMax = 30 * time.Second
	// DefaultWatchBuffer is the capacity of the channel Watch returns.
	DefaultWatchBuffer = 256
	// DefaultCloseTimeout bounds the best-effort UNREGISTER of kept
	// registrations in Close.
	DefaultCloseTimeout = 2 * time.Second

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

var (
	// ErrClientClosed is returned by calls on a closed Client.
	ErrClientClosed = errors.New("rendezvous: client closed")
	// ErrUnknownServer is returned by single-server calls for a peer that is
	// not one of the client's servers.
	ErrUnknownServer = errors.New("rendezvous: unknown server")
)

// ClientOption configures a Client.
type ClientOption func(*clientConfig) error

type clientConfig struct {
	logger         *slog.Logger
	requestTimeout time.Duration
	dialTimeout    time.Duration
	retryMin       time.Duration
	retryMax       time.Duration
	watchBuffer    int
	closeTimeout   time.Duration
	claims         claimOptions // client_claim.go
}

// WithClientLogger sets the client's logger (default: discard).
func WithClientLogger(l *slog.Logger) ClientOption {
	return func(c *clientConfig) error {
		if l == nil {
			return errors.New("nil logger")
		}
		c.logger = l
		return nil
	}
}

// WithRequestTimeout bounds one request/response exchange and one dial.
func WithRequestTimeout(request, dial time.Duration) ClientOption {
	return func(c *clientConfig) error {
		if request <= 0 || dial <= 0 {
			return fmt.Errorf("request timeout %v and dial timeout %v must be positive", request, dial)
		}
		c.requestTimeout, c.dialTimeout = request, dial
		return nil
	}
}

// WithRetryBackoff sets the exponential backoff used to reach a server
// again after a failure (kept registrations and watches).
func WithRetryBackoff(lo, hi time.Duration) ClientOption {
	return func(c *clientConfig) error {
		if lo <= 0 || hi < lo {
			return fmt.Errorf("invalid retry backoff [%v, %v]", lo, hi)
		}
		c.retryMin, c.retryMax = lo, hi
		return nil
	}
}

// WithWatchBuffer sets the capacity of the channels Watch returns.
func WithWatchBuffer(n int) ClientOption {
	return func(c *clientConfig) error {
		if n < 1 {
			return fmt.Errorf("watch buffer %d must be positive", n)
		}
		c.watchBuffer = n
		return nil
	}
}

// WithCloseTimeout bounds the best-effort UNREGISTER of kept registrations
// when the client closes; 0 skips it.
func WithCloseTimeout(d time.Duration) ClientOption {
	return func(c *clientConfig) error {
		if d < 0 {
			return fmt.Errorf("close timeout %v is negative", d)
		}
		c.closeTimeout = d
		return nil
	}
}

// Client talks to one or more rendezvous servers on behalf of a host. It is
// safe for concurrent use. It implements go-libp2p's discovery.Discovery.
type Client struct {
	h     host.Host
	cfg   clientConfig
	log   *slog.Logger
	order []peer.ID
	srv   map[peer.ID]*serverConn

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
	sub    event.Subscription

	mu      sync.Mutex
	closed  bool
	kept    map[string]*keeper
	watches map[*watcher]struct{}

	proofs proofCache // claim proofs per namespace (client_claim.go)
}

var _ discovery.Discovery = (*Client)(nil)

// NewClient returns a client of the given rendezvous servers. It does not
// connect yet: servers are dialled on demand, and their connections are
// protected in the host's connection manager.
func NewClient(h host.Host, servers []peer.AddrInfo, opts ...ClientOption) (*Client, error) {
	cfg := clientConfig{
		logger:         slog.New(slog.DiscardHandler),
		requestTimeout: DefaultRequestTimeout,
		dialTimeout:    DefaultDialTimeout,
		retryMin:       DefaultRetryMin,
		retryMax:       DefaultRetryMax,
		watchBuffer:    DefaultWatchBuffer,
		closeTimeout:   DefaultCloseTimeout,
	}
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, fmt.Errorf("rendezvous client: %w", err)
		}
	}
	if h == nil {
		return nil, errors.New("rendezvous client: nil host")
	}
	c := &Client{
		h:       h,
		cfg:     cfg,
		log:     cfg.logger,
		srv:     make(map[peer.ID]*serverConn),
		kept:    make(map[string]*keeper),
		watches: make(map[*watcher]struct{}),
	}
	for _, s := range servers {
		if s.ID == "" {
			return nil, errors.New("rendezvous client: server without peer ID")
		}
		if s.ID == h.ID() {
			return nil, fmt.Errorf("rendezvous client: server %s is this host", s.ID)
		}
		if sc, ok := c.srv[s.ID]; ok {
			sc.info.Addrs = mergeAddrs(sc.info.Addrs, s.Addrs)
			continue
		}
		c.order = append(c.order, s.ID)
		c.srv[s.ID] = &serverConn{c: c, info: peer.AddrInfo{ID: s.ID, Addrs: slices.Clone(s.Addrs)}}
	}
	if len(c.order) == 0 {
		return nil, errors.New("rendezvous client: no servers")
	}
	sub, err := h.EventBus().Subscribe([]any{
		new(event.EvtLocalAddressesUpdated),
		new(event.EvtPeerConnectednessChanged),
	}, eventbus.Name("rendezvous-client"))
	if err != nil {
		return nil, fmt.Errorf("rendezvous client: subscribe to host events: %w", err)
	}
	c.sub = sub
	for _, id := range c.order {
		sc := c.srv[id]
		h.Peerstore().AddAddrs(id, sc.info.Addrs, peerstore.PermanentAddrTTL)
		h.ConnManager().Protect(id, connProtectTag)
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.wg.Add(1)
	go c.handleEvents()
	return c, nil
}

// Servers returns the client's servers, in the order given to NewClient.
func (c *Client) Servers() []peer.ID { return slices.Clone(c.order) }

// Close stops kept registrations (unregistering them on every server, best
// effort and bounded), ends watches, resets idle streams and waits for every
// goroutine of the client.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	kept := c.kept
	c.kept = nil
	watches := c.watches
	c.watches = nil
	c.mu.Unlock()

	for _, k := range kept {
		k.stop()
	}
	if len(kept) > 0 && c.cfg.closeTimeout > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), c.cfg.closeTimeout)
		var wg sync.WaitGroup
		for ns := range kept {
			for _, id := range c.order {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := c.srv[id].unregister(ctx, ns); err != nil {
						c.log.Debug("unregister on close", "ns", ns, "peer", id, "err", err)
					}
				}()
			}
		}
		wg.Wait()
		cancel()
	}
	for w := range watches {
		w.cancel()
	}
	c.cancel()
	c.sub.Close()
	c.wg.Wait()
	for _, id := range c.order {
		c.srv[id].resetIdle()
		c.h.ConnManager().Unprotect(id, connProtectTag)
	}
	return nil
}

func (c *Client) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

func (c *Client) server(id peer.ID) (*serverConn, error) {
	sc, ok := c.srv[id]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrUnknownServer, id)
	}
	return sc, nil
}

// handleEvents routes host events to kept registrations and watches.
func (c *Client) handleEvents() {
	defer c.wg.Done()
	for {
		select {
		case <-c.ctx.Done():
			return
		case e, ok := <-c.sub.Out():
			if !ok {
				return
			}
			switch ev := e.(type) {
			case event.EvtLocalAddressesUpdated:
				c.log.Debug("local addresses changed; re-registering")
				c.forKeepers(func(k *keeper) { k.poke("", true) })
			case event.EvtPeerConnectednessChanged:
				if _, ok := c.srv[ev.Peer]; !ok {
					continue
				}
				// Connected: the server may have restarted and lost us.
				// NotConnected: reconnect now (then back off if it is down).
				c.forKeepers(func(k *keeper) { k.poke(ev.Peer, false) })
				if ev.Connectedness == network.Connected {
					c.forWatchers(func(w *watcher) { w.poke(ev.Peer) })
				}
			}
		}
	}
}

func (c *Client) forKeepers(f func(*keeper)) {
	c.mu.Lock()
	ks := make([]*keeper, 0, len(c.kept))
	for _, k := range c.kept {
		ks = append(ks, k)
	}
	c.mu.Unlock()
	for _, k := range ks {
		f(k)
	}
}

func (c *Client) forWatchers(f func(*watcher)) {
	c.mu.Lock()
	ws := make([]*watcher, 0, len(c.watches))
	for w := range c.watches {
		ws = append(ws, w)
	}
	c.mu.Unlock()
	for _, w := range ws {
		f(w)
	}
}

// signedRecord returns this host's signed peer record, marshalled: the one
// the host keeps in its peerstore (identify's), or a fresh one.
func (c *Client) signedRecord() ([]byte, error) {
	if cab, ok := peerstore.GetCertifiedAddrBook(c.h.Peerstore()); ok {
		if env := cab.GetPeerRecord(c.h.ID()); env != nil {
			return env.Marshal()
		}
	}
	key := c.h.Peerstore().PrivKey(c.h.ID())
	if key == nil {
		return nil, errors.New("host has no private key")
	}
	rec := peer.PeerRecordFromAddrInfo(peer.AddrInfo{ID: c.h.ID(), Addrs: c.h.Addrs()})
	env, err := record.Seal(rec, key)
	if err != nil {
		return nil, fmt.Errorf("seal peer record: %w", err)
	}
	return env.Marshal()
}

// ---- single-server calls ----

// RegisterOn registers this host under ns on one server, once (no refresh),
// and returns the TTL the server granted. ttl 0 asks for the server default.
func (c *Client) RegisterOn(ctx context.Context, server peer.ID, ns string, ttl time.Duration) (time.Duration, error) {
	sc, err := c.server(server)
	if err != nil {
		return 0, fmt.Errorf("register %q: %w", ns, err)
	}
	if c.isClosed() {
		return 0, fmt.Errorf("register %q on %s: %w", ns, server, ErrClientClosed)
	}
	granted, _, err := sc.register(ctx, ns, ttl)
	return granted, err
}

// UnregisterOn removes this host's registration under ns from one server.
// It returns once the server has processed the request.
func (c *Client) UnregisterOn(ctx context.Context, server peer.ID, ns string) error {
	sc, err := c.server(server)
	if err != nil {
		return fmt.Errorf("unregister %q: %w", ns, err)
	}
	if c.isClosed() {
		return fmt.Errorf("unregister %q on %s: %w", ns, server, ErrClientClosed)
	}
	return sc.unregister(ctx, ns)
}

// DiscoverOn asks one server for one page of registrations under ns ("" for
// all namespaces), after cookie (nil for the start). It returns the server's
// cookie: pass it back for the next page, or later to get only registrations
// that are new since. limit 0 lets the server choose the page size.
func (c *Client) DiscoverOn(ctx context.Context, server peer.ID, ns string, limit int, cookie []byte) ([]Registration, []byte, error) {
	sc, err := c.server(server)
	if err != nil {
		return nil, nil, fmt.Errorf("discover %q: %w", ns, err)
	}
	if c.isClosed() {
		return nil, nil, fmt.Errorf("discover %q on %s: %w", ns, server, ErrClientClosed)
	}
	return sc.discover(ctx, ns, limit, cookie)
}

// ---- multi-server calls ----

type serverResult[T any] struct {
	server peer.ID
	val    T
	err    error
}

// onAll runs f on every server concurrently and returns the results in
// server order.
func onAll[T any](c *Client, f func(sc *serverConn) (T, error)) []serverResult[T] {
	res := make([]serverResult[T], len(c.order))
	var wg sync.WaitGroup
	for i, id := range c.order {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := f(c.srv[id])
			res[i] = serverResult[T]{server: id, val: v, err: err}
		}()
	}
	wg.Wait()
	return res
}

// Advertise registers this host under ns on every server, once. The TTL
// option is honoured (0: server default). It returns the shortest TTL
// granted, so a caller re-advertising before it ends stays listed
// everywhere. It fails only if no server accepted.
func (c *Client) Advertise(ctx context.Context, ns string, opts ...discovery.Option) (time.Duration, error) {
	var o discovery.Options
	if err := o.Apply(opts...); err != nil {
		return 0, fmt.Errorf("advertise %q: %w", ns, err)
	}
	if c.isClosed() {
		return 0, fmt.Errorf("advertise %q: %w", ns, ErrClientClosed)
	}
	res := onAll(c, func(sc *serverConn) (time.Duration, error) {
		d, _, err := sc.register(ctx, ns, o.Ttl)
		return d, err
	})
	var granted time.Duration
	var errs []error
	for _, r := range res {
		if r.err != nil {
			errs = append(errs, r.err)
			continue
		}
		if granted == 0 || r.val < granted {
			granted = r.val
		}
	}
	if granted == 0 && len(errs) > 0 {
		return 0, fmt.Errorf("advertise %q: %w", ns, errors.Join(errs...))
	}
	return granted, nil
}

// FindPeers discovers peers under ns on every server, merged. It honours
// the Limit option and leaves this host out. The channel is filled and
// closed before FindPeers returns.
func (c *Client) FindPeers(ctx context.Context, ns string, opts ...discovery.Option) (<-chan peer.AddrInfo, error) {
	var o discovery.Options
	if err := o.Apply(opts...); err != nil {
		return nil, fmt.Errorf("find peers %q: %w", ns, err)
	}
	limit := o.Limit
	if limit > 0 {
		limit++ // room for this host, dropped below
	}
	regs, err := c.Discover(ctx, ns, limit)
	if err != nil {
		return nil, err
	}
	out := make(chan peer.AddrInfo, len(regs))
	n := 0
	for _, r := range regs {
		if r.Peer.ID == c.h.ID() || (o.Limit > 0 && n >= o.Limit) {
			continue
		}
		out <- r.Peer
		n++
	}
	close(out)
	return out, nil
}

// Discover lists registrations under ns ("" for all namespaces) on every
// server, following cookies page by page, merged and deduplicated by
// (namespace, peer): the longest remaining TTL wins and addresses are
// merged. limit <= 0 means all. It fails only if no server answered.
func (c *Client) Discover(ctx context.Context, ns string, limit int) ([]Registration, error) {
	if c.isClosed() {
		return nil, fmt.Errorf("discover %q: %w", ns, ErrClientClosed)
	}
	res := onAll(c, func(sc *serverConn) ([]Registration, error) {
		return sc.discoverAll(ctx, ns, limit)
	})
	var errs []error
	ok := false
	lists := make([][]Registration, 0, len(res))
	for _, r := range res {
		if r.err != nil {
			errs = append(errs, r.err)
			continue
		}
		ok = true
		lists = append(lists, r.val)
	}
	if !ok {
		return nil, fmt.Errorf("discover %q: %w", ns, errors.Join(errs...))
	}
	merged := mergeRegistrations(lists...)
	if limit > 0 && len(merged) > limit {
		merged = merged[:limit]
	}
	return merged, nil
}

// Register registers this host under ns on every server and keeps the
// registration alive in the background until Unregister or Close: it is
// refreshed before its TTL ends, and renewed at once when the host's
// addresses change or a server comes back. ttl 0 asks for the server
// default.
//
// It returns nil if at least one server accepted and none answered
// E_NOT_AUTHORIZED. On E_NOT_AUTHORIZED (an exclusive namespace held by
// another peer) it undoes the registrations that succeeded and returns the
// *StatusError; on any error nothing is kept.
func (c *Client) Register(ctx context.Context, ns string, ttl time.Duration) error {
	if err := checkNamespace(ns); err != nil {
		return fmt.Errorf("register %q: %w", ns, err)
	}
	if ttl < 0 {
		return fmt.Errorf("register %q: negative ttl %v", ns, ttl)
	}
	if c.isClosed() {
		return fmt.Errorf("register %q: %w", ns, ErrClientClosed)
	}
	type regResult struct {
		granted time.Duration
		conn    network.Conn
	}
	res := onAll(c, func(sc *serverConn) (regResult, error) {
		d, conn, err := sc.register(ctx, ns, ttl)
		return regResult{d, conn}, err
	})
	var denied error
	var errs []error
	accepted := 0
	for _, r := range res {
		var se *StatusError
		switch {
		case r.err == nil:
			accepted++
		case errors.As(r.err, &se) && se.Status == StatusNotAuthorized:
			if denied == nil {
				denied = r.err
			}
		default:
			errs = append(errs, r.err)
		}
	}
	if denied != nil || accepted == 0 {
		if accepted > 0 {
			uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.requestTimeout)
			onAll(c, func(sc *serverConn) (struct{}, error) {
				for _, r := range res {
					if r.server == sc.info.ID && r.err == nil {
						return struct{}{}, sc.unregister(uctx, ns)
					}
				}
				return struct{}{}, nil
			})
			cancel()
		}
		if denied != nil {
			return denied
		}
		return fmt.Errorf("register %q: %w", ns, errors.Join(errs...))
	}

	now := time.Now()
	state := make(map[peer.ID]*keptServer, len(res))
	for _, r := range res {
		st := &keptServer{}
		if r.err == nil {
			st.succeeded(now, r.val.granted, ttl, r.val.conn)
		} else {
			st.failed(now, c.cfg.retryMin, c.cfg.retryMax)
			c.log.Debug("register failed; will retry", "ns", ns, "peer", r.server, "err", r.err)
		}
		state[r.server] = st
	}
	k := newKeeper(c, ns, ttl, state)

	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		k.stop()
		return fmt.Errorf("register %q: %w", ns, ErrClientClosed)
	}
	old := c.kept[ns]
	c.kept[ns] = k
	c.mu.Unlock()
	if old != nil {
		old.stop()
	}
	return nil
}

// Unregister stops keeping ns alive and removes this host's registration
// under ns from every server. It fails only if no server could be reached.
// A name under a server's exclusive prefix stays leased to this host; see
// Release.
func (c *Client) Unregister(ctx context.Context, ns string) error {
	return c.unregisterAll(ctx, ns, false)
}

// unregisterAll is Unregister, and with release Release (client_claim.go).
func (c *Client) unregisterAll(ctx context.Context, ns string, release bool) error {
	if err := checkNamespace(ns); err != nil {
		return fmt.Errorf("unregister %q: %w", ns, err)
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return fmt.Errorf("unregister %q: %w", ns, ErrClientClosed)
	}
	k := c.kept[ns]
	delete(c.kept, ns)
	c.mu.Unlock()
	if k != nil {
		k.stop()
	}
	res := onAll(c, func(sc *serverConn) (struct{}, error) {
		return struct{}{}, sc.sendUnregister(ctx, ns, release)
	})
	var errs []error
	for _, r := range res {
		if r.err != nil {
			errs = append(errs, r.err)
		}
	}
	if len(errs) == len(res) {
		if release {
			return fmt.Errorf("release %q: %w", ns, errors.Join(errs...))
		}
		return fmt.Errorf("unregister %q: %w", ns, errors.Join(errs...))
	}
	return nil
}

// ---- per-server connection and requests ----

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
	if err := checkNamespace(ns); err != nil {
		return 0, nil, wrap(err)
	}
	if ttl < 0 {
		return 0, nil, wrap(fmt.Errorf("negative ttl %v", ttl))
	}
	spr, err := sc.record() // client_claim.go: the addresses this server accepts
	if err != nil {
		return 0, nil, wrap(err)
	}
	reg := &pb.Message_Register{Ns: proto.String(ns), SignedPeerRecord: spr, ClaimProof: proof}
	if ttl > 0 {
		reg.Ttl = proto.Uint64(ttlSeconds(ttl))
	}
	req := &pb.Message{Type: pb.Message_REGISTER.Enum(), Register: reg}
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

// unregister sends UNREGISTER on a stream of its own and half-closes it;
// the server's end of the stream confirms the request was processed
// (UNREGISTER has no response).
func (sc *serverConn) unregister(ctx context.Context, ns string) error {
	return sc.sendUnregister(ctx, ns, false)
}

// sendUnregister is unregister; release also gives up the name's lease
// (client_claim.go).
func (sc *serverConn) sendUnregister(ctx context.Context, ns string, release bool) error {
	wrap := func(err error) error { return fmt.Errorf("unregister %q on %s: %w", ns, sc.info.ID, err) }
	if err := checkNamespace(ns); err != nil {
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
	req := &pb.Message{
		Type:       pb.Message_UNREGISTER.Enum(),
		Unregister: &pb.Message_Unregister{Ns: proto.String(ns)},
	}
	if release {
		req = releaseRequest(ns)
	}
	if err := newWriter(s).WriteMsg(req); err != nil {
		s.Reset()
		return wrap(ctxOr(ctx, err))
	}
	if err := s.CloseWrite(); err != nil {
		s.Reset()
		return wrap(ctxOr(ctx, err))
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
			return wrap(ctxOr(ctx, err))
		}
	}
	s.Reset()
	return wrap(errors.New("server kept talking after unregister"))
}

func (sc *serverConn) discover(ctx context.Context, ns string, limit int, cookie []byte) ([]Registration, []byte, error) {
	wrap := func(err error) error { return fmt.Errorf("discover %q on %s: %w", ns, sc.info.ID, err) }
	if len(ns) > MaxNamespaceLen {
		return nil, nil, wrap(errInvalidNamespace)
	}
	if limit < 0 {
		return nil, nil, wrap(fmt.Errorf("negative limit %d", limit))
	}
	d := &pb.Message_Discover{Cookie: cookie}
	if ns != "" {
		d.Ns = proto.String(ns)
	}
	if limit > 0 {
		d.Limit = proto.Uint64(uint64(limit))
	}
	req := &pb.Message{Type: pb.Message_DISCOVER.Enum(), Discover: d}
	var resp pb.Message
	if _, err := sc.roundTrip(ctx, req, &resp); err != nil {
		return nil, nil, wrap(err)
	}
	regs, next, err := parseDiscoverResponse(&resp, sc.c.log)
	if err != nil {
		return nil, nil, wrap(err)
	}
	return regs, next, nil
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

// ---- decoding ----

var errInvalidNamespace = fmt.Errorf("namespace must be 1 to %d bytes", MaxNamespaceLen)

func checkNamespace(ns string) error {
	if len(ns) == 0 || len(ns) > MaxNamespaceLen {
		return errInvalidNamespace
	}
	return nil
}

func isStatus(err error) bool {
	var se *StatusError
	return errors.As(err, &se)
}

// parseDiscoverResponse checks a DISCOVER_RESPONSE and decodes its
// registrations. Registrations whose signed record is invalid are dropped
// (logged at Debug); a non-OK status is a *StatusError.
func parseDiscoverResponse(m *pb.Message, log *slog.Logger) ([]Registration, []byte, error) {
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
		if err != nil {
			log.Debug("dropping invalid registration", "ns", r.GetNs(), "err", err)
			continue
		}
		regs = append(regs, reg)
	}
	return regs, dr.Cookie, nil
}

// parseRegistration decodes one registration and verifies its signed peer
// record: a valid envelope signed by the key of the peer it describes.
func parseRegistration(r *pb.Message_Register) (Registration, error) {
	if r == nil {
		return Registration{}, errors.New("empty registration")
	}
	env, rec, err := record.ConsumeEnvelope(r.SignedPeerRecord, peer.PeerRecordEnvelopeDomain)
	if err != nil {
		return Registration{}, fmt.Errorf("signed peer record: %w", err)
	}
	pr, ok := rec.(*peer.PeerRecord)
	if !ok {
		return Registration{}, errors.New("signed peer record: not a peer record")
	}
	signer, err := peer.IDFromPublicKey(env.PublicKey)
	if err != nil {
		return Registration{}, fmt.Errorf("signed peer record: %w", err)
	}
	if signer != pr.PeerID {
		return Registration{}, fmt.Errorf("signed peer record: record of %s signed by %s", pr.PeerID, signer)
	}
	return Registration{
		Namespace: r.GetNs(),
		Peer:      peer.AddrInfo{ID: pr.PeerID, Addrs: pr.Addrs},
		TTL:       durationFromSeconds(r.GetTtl()),
	}, nil
}

// mergeRegistrations deduplicates by (namespace, peer), keeping the longest
// TTL and the union of addresses, in order of first appearance.
func mergeRegistrations(lists ...[]Registration) []Registration {
	type key struct {
		ns string
		id peer.ID
	}
	idx := make(map[key]int)
	var out []Registration
	for _, l := range lists {
		for _, r := range l {
			k := key{r.Namespace, r.Peer.ID}
			i, ok := idx[k]
			if !ok {
				idx[k] = len(out)
				r.Peer.Addrs = slices.Clone(r.Peer.Addrs)
				out = append(out, r)
				continue
			}
			cur := &out[i]
			cur.Peer.Addrs = mergeAddrs(cur.Peer.Addrs, r.Peer.Addrs)
			cur.TTL = max(cur.TTL, r.TTL)
		}
	}
	return out
}

// mergeAddrs appends to a the addresses of b it lacks.
func mergeAddrs(a, b []ma.Multiaddr) []ma.Multiaddr {
	for _, x := range b {
		if x == nil {
			continue
		}
		if !slices.ContainsFunc(a, x.Equal) {
			a = append(a, x)
		}
	}
	return a
}

func sameAddrs(a, b []ma.Multiaddr) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.ContainsFunc(b, x.Equal) {
			return false
		}
	}
	return true
}

func ttlSeconds(d time.Duration) uint64 {
	s := uint64((d + time.Second - 1) / time.Second)
	return max(s, 1)
}

func durationFromSeconds(s uint64) time.Duration {
	const maxSec = uint64(math.MaxInt64 / int64(time.Second))
	return time.Duration(min(s, maxSec)) * time.Second
}

func ctxOr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}
