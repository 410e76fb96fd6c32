package rendezvous

import (
	"context"
	"fmt"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/stretchr/testify/require"
)

// ---- helpers (prefixed ct: client tests) ----

func ctHost(t *testing.T, key crypto.PrivKey, listen string) host.Host {
	t.Helper()
	if listen == "" {
		listen = "/ip4/127.0.0.1/tcp/0"
	}
	opts := []libp2p.Option{
		libp2p.NoTransports,
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.ListenAddrStrings(listen),
		libp2p.DisableRelay(),
		libp2p.DisableMetrics(),
	}
	if key != nil {
		opts = append(opts, libp2p.Identity(key))
	}
	h, err := libp2p.New(opts...)
	require.NoError(t, err)
	t.Cleanup(func() { h.Close() })
	return h
}

type ctServer struct {
	t    *testing.T
	key  crypto.PrivKey
	h    host.Host
	s    *Server
	addr ma.Multiaddr
}

func ctLimits() Limits {
	l := DefaultLimits()
	l.MinTTL = time.Second
	return l
}

// ctStartServer starts a rendezvous server on a fresh host with a fresh data
// dir. listen "" picks a free loopback port.
func ctStartServer(t *testing.T, key crypto.PrivKey, listen string, opts ...ServerOption) *ctServer {
	t.Helper()
	if key == nil {
		var err error
		key, _, err = crypto.GenerateEd25519Key(nil)
		require.NoError(t, err)
	}
	h := ctHost(t, key, listen)
	opts = append([]ServerOption{WithDataDir(t.TempDir()), WithLimits(ctLimits())}, opts...)
	s, err := NewServer(h, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return &ctServer{t: t, key: key, h: h, s: s, addr: h.Addrs()[0]}
}

func (s *ctServer) info() peer.AddrInfo {
	return peer.AddrInfo{ID: s.h.ID(), Addrs: s.h.Addrs()}
}

// stop shuts the server and its host down, as a crashed daemon would.
func (s *ctServer) stop() {
	require.NoError(s.t, s.s.Close())
	require.NoError(s.t, s.h.Close())
}

// restart brings the server back on the same identity and address with a
// fresh (empty) data dir.
func (s *ctServer) restart() *ctServer {
	s.t.Helper()
	var ns *ctServer
	require.Eventually(s.t, func() bool {
		h, err := libp2p.New(libp2p.NoTransports, libp2p.Transport(tcp.NewTCPTransport),
			libp2p.ListenAddrs(s.addr), libp2p.DisableRelay(), libp2p.DisableMetrics(), libp2p.Identity(s.key))
		if err != nil {
			return false // the port may take a moment to free up
		}
		s.t.Cleanup(func() { h.Close() })
		srv, err := NewServer(h, WithDataDir(s.t.TempDir()), WithLimits(ctLimits()))
		require.NoError(s.t, err)
		s.t.Cleanup(func() { srv.Close() })
		ns = &ctServer{t: s.t, key: s.key, h: h, s: srv, addr: s.addr}
		return true
	}, 10*time.Second, 20*time.Millisecond)
	return ns
}

func ctClient(t *testing.T, h host.Host, servers []*ctServer, opts ...ClientOption) *Client {
	t.Helper()
	infos := make([]peer.AddrInfo, len(servers))
	for i, s := range servers {
		infos[i] = s.info()
	}
	opts = append([]ClientOption{WithRetryBackoff(20*time.Millisecond, 200*time.Millisecond)}, opts...)
	c, err := NewClient(h, infos, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

func ctCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func ctIDs(regs []Registration) []peer.ID {
	ids := make([]peer.ID, len(regs))
	for i, r := range regs {
		ids[i] = r.Peer.ID
	}
	return ids
}

func ctHasAddr(addrs []ma.Multiaddr, a ma.Multiaddr) bool {
	return slices.ContainsFunc(addrs, a.Equal)
}

// ---- tests ----

func TestClientRegisterDiscoverUnregister(t *testing.T) {
	srv := ctStartServer(t, nil, "")
	alice := ctHost(t, nil, "")
	bob := ctHost(t, nil, "")
	ca := ctClient(t, alice, []*ctServer{srv})
	cb := ctClient(t, bob, []*ctServer{srv})
	ctx := ctCtx(t)

	require.Equal(t, []peer.ID{srv.h.ID()}, ca.Servers())
	require.NoError(t, ca.Register(ctx, "room", 10*time.Minute))

	regs, err := cb.Discover(ctx, "room", 0)
	require.NoError(t, err)
	require.Len(t, regs, 1)
	r := regs[0]
	require.Equal(t, "room", r.Namespace)
	require.Equal(t, alice.ID(), r.Peer.ID)
	require.True(t, ctHasAddr(r.Peer.Addrs, alice.Addrs()[0]), "addrs %v", r.Peer.Addrs)
	require.Greater(t, r.TTL, 9*time.Minute)
	require.LessOrEqual(t, r.TTL, 10*time.Minute)

	// Single-server calls.
	granted, err := cb.RegisterOn(ctx, srv.h.ID(), "room", 0)
	require.NoError(t, err)
	require.Equal(t, DefaultTTL, granted)
	regs, err = ca.Discover(ctx, "room", 0)
	require.NoError(t, err)
	require.ElementsMatch(t, []peer.ID{alice.ID(), bob.ID()}, ctIDs(regs))
	require.NoError(t, cb.UnregisterOn(ctx, srv.h.ID(), "room"))

	require.NoError(t, ca.Unregister(ctx, "room"))
	regs, err = cb.Discover(ctx, "room", 0)
	require.NoError(t, err)
	require.Empty(t, regs)

	_, err = ca.RegisterOn(ctx, bob.ID(), "room", 0)
	require.ErrorIs(t, err, ErrUnknownServer)
}

func TestClientStatusErrors(t *testing.T) {
	srv := ctStartServer(t, nil, "")
	alice := ctHost(t, nil, "")
	mallory := ctHost(t, nil, "")
	ca := ctClient(t, alice, []*ctServer{srv})
	cm := ctClient(t, mallory, []*ctServer{srv})
	ctx := ctCtx(t)

	nick := UserNamespacePrefix + "alice"
	require.NoError(t, ca.Register(ctx, nick, 0))
	err := cm.Register(ctx, nick, 0)
	var se *StatusError
	require.ErrorAs(t, err, &se)
	require.Equal(t, StatusNotAuthorized, se.Status)
	// Nothing is kept after a refusal.
	cm.mu.Lock()
	require.Empty(t, cm.kept)
	cm.mu.Unlock()

	_, err = cm.RegisterOn(ctx, srv.h.ID(), "room", MaxTTL+time.Hour)
	require.ErrorAs(t, err, &se)
	require.Equal(t, StatusInvalidTTL, se.Status)

	_, _, err = cm.DiscoverOn(ctx, srv.h.ID(), "room", 10, []byte("not a cookie"))
	require.ErrorAs(t, err, &se)
	require.Equal(t, StatusInvalidCookie, se.Status)

	// Client-side validation needs no round trip.
	require.Error(t, cm.Register(ctx, "", 0))
	require.Error(t, cm.Register(ctx, string(make([]byte, MaxNamespaceLen+1)), 0))
	require.Error(t, cm.Register(ctx, "room", -time.Second))

	// Once the holder leaves, the name stays leased to it (lease.go);
	// once it releases the name, the name is free.
	require.NoError(t, ca.Unregister(ctx, nick))
	require.ErrorAs(t, cm.Register(ctx, nick, 0), &se)
	require.Equal(t, StatusNotAuthorized, se.Status)
	require.NoError(t, ca.Release(ctx, nick))
	require.NoError(t, cm.Register(ctx, nick, 0))
}

func TestClientDiscoverOnPagination(t *testing.T) {
	srv := ctStartServer(t, nil, "")
	alice := ctHost(t, nil, "")
	ca := ctClient(t, alice, []*ctServer{srv})
	ctx := ctCtx(t)

	const n = 25
	want := map[string]bool{}
	for i := range n {
		ns := fmt.Sprintf("page/%02d", i)
		want[ns] = true
		_, err := ca.RegisterOn(ctx, srv.h.ID(), ns, 0)
		require.NoError(t, err)
	}

	seen := map[string]int{}
	var cookie []byte
	var sizes []int
	for range 10 {
		page, next, err := ca.DiscoverOn(ctx, srv.h.ID(), "", 10, cookie)
		require.NoError(t, err)
		require.NotEmpty(t, next, "an OK response always carries a cookie")
		cookie = next
		sizes = append(sizes, len(page))
		for _, r := range page {
			seen[r.Namespace]++
		}
		if len(page) == 0 {
			break
		}
	}
	require.Equal(t, []int{10, 10, 5, 0}, sizes)
	require.Len(t, seen, n)
	for ns, k := range seen {
		require.True(t, want[ns], ns)
		require.Equal(t, 1, k, "namespace %s seen %d times", ns, k)
	}

	// Incremental polling: the last cookie yields only what is new.
	_, err := ca.RegisterOn(ctx, srv.h.ID(), "page/new", 0)
	require.NoError(t, err)
	page, _, err := ca.DiscoverOn(ctx, srv.h.ID(), "", 10, cookie)
	require.NoError(t, err)
	require.Len(t, page, 1)
	require.Equal(t, "page/new", page[0].Namespace)

	// The merged call follows cookies and honours its limit.
	all, err := ca.Discover(ctx, "", 0)
	require.NoError(t, err)
	require.Len(t, all, n+1)
	some, err := ca.Discover(ctx, "", 7)
	require.NoError(t, err)
	require.Len(t, some, 7)
}

// A server that accepts the protocol and never answers: the caller's ctx
// must bound the read, not only the stream opening.
func TestClientContextBoundsRead(t *testing.T) {
	silent := ctHost(t, nil, "")
	handlerDone := make(chan struct{}, 16)
	testDone := make(chan struct{})
	defer close(testDone)
	for _, pid := range []protocol.ID{ProtocolID, WatchProtocolID} {
		silent.SetStreamHandler(pid, func(s network.Stream) {
			defer s.Reset()
			var b [1]byte
			if _, err := io.ReadFull(s, b[:]); err == nil {
				handlerDone <- struct{}{}
			}
			io.Copy(io.Discard, s)
			<-testDone
		})
	}
	alice := ctHost(t, nil, "")
	c, err := NewClient(alice, []peer.AddrInfo{{ID: silent.ID(), Addrs: silent.Addrs()}})
	require.NoError(t, err)
	defer c.Close()

	for _, call := range []struct {
		name string
		do   func(ctx context.Context) error
	}{
		{"discover", func(ctx context.Context) error {
			_, _, err := c.DiscoverOn(ctx, silent.ID(), "room", 0, nil)
			return err
		}},
		{"register", func(ctx context.Context) error { _, err := c.RegisterOn(ctx, silent.ID(), "room", 0); return err }},
		{"unregister", func(ctx context.Context) error { return c.UnregisterOn(ctx, silent.ID(), "room") }},
		{"register-kept", func(ctx context.Context) error { return c.Register(ctx, "room", 0) }},
	} {
		t.Run(call.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			start := time.Now()
			err := call.do(ctx)
			require.ErrorIs(t, err, context.DeadlineExceeded)
			require.Less(t, time.Since(start), 5*time.Second)
		})
	}

	drain := func() {
		for {
			select {
			case <-handlerDone:
			default:
				return
			}
		}
	}
	// A watch on a server that never answers ends with its ctx.
	drain()
	wctx, wcancel := context.WithCancel(context.Background())
	events, err := c.Watch(wctx, "room")
	require.NoError(t, err)
	<-handlerDone
	wcancel()
	for range events {
	}

	// Explicit cancellation too, from another goroutine.
	drain()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, _, err := c.DiscoverOn(ctx, silent.ID(), "room", 0, nil)
		errc <- err
	}()
	<-handlerDone // the request reached the server...
	cancel()      // ...which will never answer
	select {
	case err := <-errc:
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(5 * time.Second):
		t.Fatal("cancel did not unblock the read")
	}
}

func TestClientKeepaliveAfterServerRestart(t *testing.T) {
	srv := ctStartServer(t, nil, "")
	alice := ctHost(t, nil, "")
	bob := ctHost(t, nil, "")
	ca := ctClient(t, alice, []*ctServer{srv})
	cb := ctClient(t, bob, []*ctServer{srv})
	ctx := ctCtx(t)

	require.NoError(t, ca.Register(ctx, "room", time.Hour))
	srv.stop()
	srv2 := srv.restart() // same identity and address, empty store
	require.Equal(t, srv.h.ID(), srv2.h.ID())

	require.Eventually(t, func() bool {
		regs, err := cb.Discover(ctx, "room", 0)
		return err == nil && slices.Contains(ctIDs(regs), alice.ID())
	}, 15*time.Second, 50*time.Millisecond)
}

func TestClientReregisterOnAddressChange(t *testing.T) {
	srv := ctStartServer(t, nil, "")
	alice := ctHost(t, nil, "")
	bob := ctHost(t, nil, "")
	ca := ctClient(t, alice, []*ctServer{srv})
	cb := ctClient(t, bob, []*ctServer{srv})
	ctx := ctCtx(t)

	require.NoError(t, ca.Register(ctx, "room", time.Hour))
	before := alice.Addrs()
	require.NoError(t, alice.Network().Listen(ma.StringCast("/ip4/127.0.0.1/tcp/0")))
	var added ma.Multiaddr
	require.Eventually(t, func() bool {
		for _, a := range alice.Addrs() {
			if !ctHasAddr(before, a) {
				added = a
				return true
			}
		}
		return false
	}, 15*time.Second, 20*time.Millisecond)

	require.Eventually(t, func() bool {
		regs, err := cb.Discover(ctx, "room", 0)
		return err == nil && len(regs) == 1 && ctHasAddr(regs[0].Peer.Addrs, added)
	}, 15*time.Second, 20*time.Millisecond)
}

// A kept registration is refreshed before its TTL runs out: it is still
// listed well after a lifetime has passed.
func TestClientKeepaliveRefresh(t *testing.T) {
	srv := ctStartServer(t, nil, "")
	alice := ctHost(t, nil, "")
	ca := ctClient(t, alice, []*ctServer{srv})
	ctx := ctCtx(t)

	const ttl = 2 * time.Second
	start := time.Now()
	require.NoError(t, ca.Register(ctx, "room", ttl))
	lapsed := false
	require.Eventually(t, func() bool {
		regs, _, err := ca.DiscoverOn(ctx, srv.h.ID(), "room", 0, nil)
		if err != nil || len(regs) != 1 {
			lapsed = true
			return true
		}
		return time.Since(start) > 5*ttl/2
	}, 20*time.Second, 50*time.Millisecond)
	require.False(t, lapsed, "registration lapsed")
}

func TestClientBackoffMath(t *testing.T) {
	for _, tc := range []struct {
		granted, asked time.Duration
		r              float64
		want           time.Duration
	}{
		{time.Hour, 0, 0.5, 30 * time.Minute},
		{time.Hour, 0, 0, 27 * time.Minute},
		{time.Hour, 0, 1, 33 * time.Minute},
		{0, 10 * time.Minute, 0.5, 5 * time.Minute},
		{0, 0, 0.5, DefaultTTL / 2},
		{time.Millisecond, 0, 0.5, 100 * time.Millisecond},
	} {
		require.Equal(t, tc.want, refreshDelay(tc.granted, tc.asked, tc.r), "%+v", tc)
	}
	lo, hi := time.Second, 30*time.Second
	for _, tc := range []struct {
		n    int
		want time.Duration
	}{{1, time.Second}, {2, 2 * time.Second}, {3, 4 * time.Second}, {5, 16 * time.Second}, {6, 30 * time.Second}, {100, 30 * time.Second}} {
		require.Equal(t, tc.want, retryDelay(tc.n, lo, hi, 1), "n=%d", tc.n)
		require.Equal(t, tc.want*8/10, retryDelay(tc.n, lo, hi, 0), "n=%d", tc.n)
	}
}

// Many concurrent calls share the warm streams safely.
func TestClientConcurrentCalls(t *testing.T) {
	srv := ctStartServer(t, nil, "")
	alice := ctHost(t, nil, "")
	ca := ctClient(t, alice, []*ctServer{srv})
	ctx := ctCtx(t)
	require.NoError(t, ca.Register(ctx, "room", time.Hour))

	const workers, calls = 8, 20
	errc := make(chan error, workers)
	for w := range workers {
		go func() {
			for i := range calls {
				if i%5 == 0 {
					if _, err := ca.RegisterOn(ctx, srv.h.ID(), fmt.Sprintf("w%d", w), time.Hour); err != nil {
						errc <- err
						return
					}
				}
				regs, err := ca.Discover(ctx, "room", 0)
				if err != nil {
					errc <- err
					return
				}
				if len(regs) != 1 {
					errc <- fmt.Errorf("got %d registrations", len(regs))
					return
				}
			}
			errc <- nil
		}()
	}
	for range workers {
		require.NoError(t, <-errc)
	}
	sc := ca.srv[srv.h.ID()]
	sc.mu.Lock()
	idle := len(sc.idle)
	sc.mu.Unlock()
	require.LessOrEqual(t, idle, maxIdleStreams)
	require.Positive(t, idle, "streams are kept warm")
}

// BenchmarkClientDiscoverWarm measures one DISCOVER round trip on a warm
// stream over loopback TCP (one registration in the namespace).
func BenchmarkClientDiscoverWarm(b *testing.B) {
	key, _, err := crypto.GenerateEd25519Key(nil)
	require.NoError(b, err)
	sh, err := libp2p.New(libp2p.NoTransports, libp2p.Transport(tcp.NewTCPTransport),
		libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay(), libp2p.DisableMetrics(), libp2p.Identity(key))
	require.NoError(b, err)
	defer sh.Close()
	lim := DefaultLimits()
	lim.RequestRate, lim.RequestBurst = 1e9, 1<<30 // measure the path, not the rate limit
	srv, err := NewServer(sh, WithLimits(lim))
	require.NoError(b, err)
	defer srv.Close()
	ch, err := libp2p.New(libp2p.NoTransports, libp2p.Transport(tcp.NewTCPTransport),
		libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay(), libp2p.DisableMetrics())
	require.NoError(b, err)
	defer ch.Close()
	c, err := NewClient(ch, []peer.AddrInfo{{ID: sh.ID(), Addrs: sh.Addrs()}})
	require.NoError(b, err)
	defer c.Close()
	ctx := context.Background()
	_, err = c.RegisterOn(ctx, sh.ID(), "room", 0)
	require.NoError(b, err)
	b.ResetTimer()
	for b.Loop() {
		regs, _, err := c.DiscoverOn(ctx, sh.ID(), "room", 0, nil)
		if err != nil || len(regs) != 1 {
			b.Fatal(err, len(regs))
		}
	}
}

// Close unregisters kept registrations before it returns.
func TestClientCloseUnregisters(t *testing.T) {
	srv := ctStartServer(t, nil, "", WithDisconnectGrace(-1))
	alice := ctHost(t, nil, "")
	bob := ctHost(t, nil, "")
	ca := ctClient(t, alice, []*ctServer{srv})
	cb := ctClient(t, bob, []*ctServer{srv})
	ctx := ctCtx(t)

	require.NoError(t, ca.Register(ctx, "room", time.Hour))
	require.NoError(t, ca.Register(ctx, UserNamespacePrefix+"alice", time.Hour))
	require.NoError(t, ca.Close())
	require.NoError(t, ca.Close(), "Close is idempotent")
	for _, ns := range []string{"room", UserNamespacePrefix + "alice"} {
		regs, err := cb.Discover(ctx, ns, 0)
		require.NoError(t, err)
		require.Empty(t, regs, ns)
	}
	// The exclusive name stays leased to alice's key (lease.go).
	var se *StatusError
	require.ErrorAs(t, cb.Register(ctx, UserNamespacePrefix+"alice", time.Hour), &se)
	require.Equal(t, StatusNotAuthorized, se.Status)
}

// A server that caps pages below what the client asks: Discover keeps
// following the cookie.
func TestClientDiscoverFollowsServerCap(t *testing.T) {
	lim := ctLimits()
	lim.MaxDiscoverLimit = serverCapFloor
	srv := ctStartServer(t, nil, "", WithLimits(lim))
	alice := ctHost(t, nil, "")
	ca := ctClient(t, alice, []*ctServer{srv})
	ctx := ctCtx(t)

	const n = serverCapFloor + serverCapFloor/2
	for i := range n {
		_, err := ca.RegisterOn(ctx, srv.h.ID(), fmt.Sprintf("ns/%03d", i), time.Hour)
		require.NoError(t, err)
	}
	all, err := ca.Discover(ctx, "", 0)
	require.NoError(t, err)
	require.Len(t, all, n)
	seen := map[string]bool{}
	for _, r := range all {
		require.False(t, seen[r.Namespace], "duplicate %s", r.Namespace)
		seen[r.Namespace] = true
	}
}
