package rendezvous

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/discovery"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/record"
	"github.com/libp2p/go-libp2p/p2p/host/eventbus"
	ma "github.com/multiformats/go-multiaddr"
)

var (
	// ErrClientClosed is returned by calls on a closed Client.
	ErrClientClosed = errors.New("rendezvous: client closed")
	// ErrUnknownServer is returned by single-server calls for a peer that is
	// not one of the client's servers.
	ErrUnknownServer = errors.New("rendezvous: unknown server")
	// ErrNotYetRegistered is returned (wrapped, with each server's error) by
	// Register when no server accepted the registration, for reasons that
	// may pass (unreachable, E_UNAVAILABLE, a timeout): the client keeps it
	// and retries in the background until a server accepts it, Unregister
	// or Close. Match it with errors.Is.
	ErrNotYetRegistered = errors.New("rendezvous: no server accepted the registration yet; it is kept and retried")
)

// Client talks to one or more rendezvous servers on behalf of a host. It is
// safe for concurrent use. It implements go-libp2p's discovery.Discovery.
type Client struct {
	h   host.Host
	cfg clientConfig
	log *slog.Logger

	// order and srv grow by AddServer (client_add.go): read them through
	// servers() and server(), under smu.
	smu   sync.RWMutex
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
		clock:          systemClock{},
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

// Servers returns the client's servers, in the order given to NewClient,
// then those added by AddServer.
func (c *Client) Servers() []peer.ID {
	c.smu.RLock()
	defer c.smu.RUnlock()
	return slices.Clone(c.order)
}

// servers is a snapshot of the servers in order.
func (c *Client) servers() []*serverConn {
	c.smu.RLock()
	defer c.smu.RUnlock()
	out := make([]*serverConn, len(c.order))
	for i, id := range c.order {
		out[i] = c.srv[id]
	}
	return out
}

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
	servers := c.servers()
	if len(kept) > 0 && c.cfg.closeTimeout > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), c.cfg.closeTimeout)
		var wg sync.WaitGroup
		for ns := range kept {
			for _, sc := range servers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := sc.unregister(ctx, ns); err != nil {
						c.log.Debug("unregister on close", "ns", ns, "peer", sc.info.ID, "err", err)
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
	for _, sc := range servers {
		sc.resetIdle()
		c.h.ConnManager().Unprotect(sc.info.ID, connProtectTag)
	}
	return nil
}

func (c *Client) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

func (c *Client) server(id peer.ID) (*serverConn, error) {
	c.smu.RLock()
	sc, ok := c.srv[id]
	c.smu.RUnlock()
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
				if _, err := c.server(ev.Peer); err != nil {
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

// Single-server calls.

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

// NameInfo is one server's answer about a name: a namespace under the
// server's exclusive prefix (see the package doc, "Names").
type NameInfo struct {
	// Registrations lists the name's live registrations (its presence):
	// the holder's, when it is online.
	Registrations []Registration
	// Holder is the key holding the name's lease, also while it has no
	// registration; "" when the name is free, or the server does not
	// report leases (another implementation, or ns outside its exclusive
	// prefix).
	Holder peer.ID
}

// DiscoverNameOn asks one server about the name ns with a DISCOVER: up to
// limit registrations (0: the server's page size) and the lease holder the
// answer reports (name_holder). A malformed holder fails the call.
func (c *Client) DiscoverNameOn(ctx context.Context, server peer.ID, ns string, limit int) (NameInfo, error) {
	sc, err := c.server(server)
	if err != nil {
		return NameInfo{}, fmt.Errorf("discover %q: %w", ns, err)
	}
	if c.isClosed() {
		return NameInfo{}, fmt.Errorf("discover %q on %s: %w", ns, server, ErrClientClosed)
	}
	if ns == "" {
		return NameInfo{}, fmt.Errorf("discover name on %s: empty name", server)
	}
	regs, _, holder, err := sc.discoverPage(ctx, ns, limit, nil, true)
	if err != nil {
		return NameInfo{}, err
	}
	return NameInfo{Registrations: regs, Holder: holder}, nil
}

// Multi-server calls.

type serverResult[T any] struct {
	server peer.ID
	val    T
	err    error
}

// onAll runs f on every server concurrently and returns the results in
// server order.
func onAll[T any](c *Client, f func(sc *serverConn) (T, error)) []serverResult[T] {
	servers := c.servers()
	res := make([]serverResult[T], len(servers))
	var wg sync.WaitGroup
	for i, sc := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := f(sc)
			res[i] = serverResult[T]{server: sc.info.ID, val: v, err: err}
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
// *StatusError, and keeps nothing; so it does when no server accepted and
// one refused (E_INVALID_*: asking again would not help). When no server
// accepted for reasons that may pass (unreachable, E_UNAVAILABLE,
// E_INTERNAL_ERROR, a timeout, ctx ending), the registration is kept all
// the same, retried in the background with backoff, and the error wraps
// ErrNotYetRegistered.
func (c *Client) Register(ctx context.Context, ns string, ttl time.Duration) error {
	if err := checkNamespace(ns, MaxNamespaceLen); err != nil {
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
	var denied, refused error
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
		case isRefusal(r.err):
			if refused == nil {
				refused = r.err
			}
		default:
			errs = append(errs, r.err)
		}
	}
	if accepted == 0 && denied == nil && refused != nil {
		return refused
	}
	if denied != nil {
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
		return denied
	}

	now := c.cfg.clock.Now()
	state := make(map[peer.ID]*keptServer, len(res))
	for _, r := range res {
		st := newKeptServer(c)
		if r.err == nil {
			st.succeeded(now, r.val.granted, ttl, r.val.conn)
		} else {
			st.failed(now)
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
	if accepted == 0 {
		return fmt.Errorf("register %q: %w: %w", ns, ErrNotYetRegistered, errors.Join(errs...))
	}
	return nil
}

// Unregister stops keeping ns alive and removes this host's registration
// under ns from every server. It fails only if the request could be
// written to no server (UNREGISTER has no response: a server that resets
// the stream after reading it has done its part). A name under a server's
// exclusive prefix stays leased to this host; see Release.
func (c *Client) Unregister(ctx context.Context, ns string) error {
	return c.unregisterAll(ctx, ns, false)
}

// unregisterAll is Unregister, and with release Release (client_claim.go).
func (c *Client) unregisterAll(ctx context.Context, ns string, release bool) error {
	if err := checkNamespace(ns, MaxNamespaceLen); err != nil {
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
