package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"

	"github.com/p2p-messaging/p2p-messaging/rendezvous"
)

// daemon starts a fresh local daemon (or returns the one given by -addr).
func (b *bench) daemon(ctx context.Context, label string) (*server, error) {
	if b.cfg.Addr != "" {
		return remoteDaemon(b.cfg.Addr, b.cfg.DaemonPID)
	}
	if b.cfg.DaemonBin == "" {
		b.logf("building ./cmd/rendezvous")
		bin, err := buildDaemon(ctx, b.tmp)
		if err != nil {
			return nil, err
		}
		b.cfg.DaemonBin = bin
	}
	dir, err := mkdirTemp(b.tmp, "daemon-"+label+"-")
	if err != nil {
		return nil, err
	}
	// Every bench identity comes from one address: without room for their
	// nick claims the daemon would refuse all but the first few (its
	// per-network claim bucket); the claims' proof of work stays as it is.
	// Flags given in -daemon-args come later and win.
	args := append([]string{"-claim-burst", "1000000"}, b.cfg.DaemonArgs...)
	return startDaemon(ctx, b.cfg.DaemonBin, dir, args, b.log)
}

// rvClients connects n lightweight rendezvous clients, each with its own
// identity, connection and long-lived /rendezvous/1.0.0 stream.
// Every client ever created gets a nick of its own, so phases sharing one
// daemon (-addr) never collide on an exclusive namespace.
func (b *bench) rvClients(ctx context.Context, srv *server, n int) ([]*rvClient, error) {
	conns, streams, err := connectLite(ctx, srv, n, b.cfg.DialPar, b.cfg.RecordAddrs, rendezvous.ProtocolID)
	if err != nil {
		return nil, err
	}
	cs := make([]*rvClient, n)
	for i := range conns {
		cs[i] = wrapRVClient(conns[i], streams[i], b.nick(b.nicks+i))
	}
	b.nicks += n
	return cs, nil
}

// each runs f on every client, at most par at a time, and returns how many
// succeeded and the first error.
func each(cs []*rvClient, par int, f func(i int, c *rvClient) error) (int, error) {
	var ok atomic.Int64
	var first atomic.Pointer[error]
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(par, len(cs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(cs) {
					return
				}
				if err := f(i, cs[i]); err != nil {
					err = fmt.Errorf("client %d: %w", i, err)
					first.CompareAndSwap(nil, &err)
					continue
				}
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	if e := first.Load(); e != nil {
		return int(ok.Load()), *e
	}
	return int(ok.Load()), nil
}

var errEmptyDiscover = errors.New("discover returned no registration for a registered nick")

// rvOps builds the per-client operations: a fraction mix of REGISTER
// (re-registering the client's own nick, signature checked each time), the
// rest DISCOVER of a random other client's nick (a chat lookup).
func (b *bench) rvOps(cs []*rvClient, mix float64, fresh bool) []opFunc {
	n := len(cs)
	limit := uint64(b.cfg.DiscoverLimit)
	discs := make([][]byte, n)
	for i := range cs {
		discs[i] = frame(discoverMsg(cs[i].ns, limit))
	}
	ops := make([]opFunc, n)
	for i, c := range cs {
		ops[i] = func(rng *rand.Rand) error {
			if mix > 0 && (mix >= 1 || rng.Float64() < mix) {
				if fresh {
					return c.registerFresh()
				}
				return c.register()
			}
			got, err := c.discover(discs[rng.IntN(n)])
			if err != nil {
				return err
			}
			if got == 0 {
				return errEmptyDiscover
			}
			return nil
		}
	}
	return ops
}

// runCapacity holds connections on a fresh daemon and reads its memory at
// each step, then registers every client once.
func (b *bench) runCapacity(ctx context.Context) {
	srv, err := b.daemon(ctx, "capacity")
	if err != nil {
		b.fail("start daemon", err)
		return
	}
	defer srv.Close()
	base, haveProc := srv.sample()
	goBase, goErr := b.goStats(ctx, srv)
	if b.cfg.Addr != "" && haveProc {
		b.rep.Notes = append(b.rep.Notes, "-addr: the daemon served the earlier phases too, so its memory figures are relative to its state when the capacity phase began; start no other phase (-phases capacity) for clean ones")
	}
	if !haveProc {
		b.rep.Notes = append(b.rep.Notes, "daemon memory not available: pass -daemon-pid with -addr, or let the tool start the daemon")
	}
	b.rep.Memory = append(b.rep.Memory, memResult{
		Name: "idle", Server: "rendezvous", RSSBytes: base.RSSBytes, Available: haveProc,
	})
	var all []*rvClient
	defer func() { closeAll(all) }()
	discover := func(c *rvClient) error {
		_, err := c.discover(frame(discoverMsg(c.ns, 1)))
		return err
	}
	for _, step := range b.cfg.Capacity {
		if step <= len(all) {
			continue
		}
		b.logf("capacity: connecting up to %d clients", step)
		more, err := b.rvClients(ctx, srv, step-len(all))
		if err != nil {
			b.fail(fmt.Sprintf("capacity at %d connections", step), err)
			return
		}
		all = append(all, more...)
		// One request on every connection: all are served, and the server
		// has finished setting each one up before memory is read.
		held, err := each(all, b.cfg.DialPar, func(_ int, c *rvClient) error { return discover(c) })
		if err != nil {
			b.fail(fmt.Sprintf("capacity at %d connections", step), err)
		}
		s, _ := srv.sample()
		m := memResult{
			Name: "connected clients", Server: "rendezvous", Count: len(all), RSSBytes: s.RSSBytes, Held: held, Available: haveProc,
			Target: "< 64 KiB/conn",
		}
		if haveProc {
			m.PerItem = float64(s.RSSBytes-base.RSSBytes) / float64(len(all))
			m.Pass = boolp(m.PerItem < 64<<10 && held == len(all))
			if goErr == nil {
				if g, err := b.goStats(ctx, srv); err == nil {
					m.setGo(g, goBase, len(all))
				}
			}
			for _, bm := range b.rep.Memory {
				if bm.Server == "libp2p-echo" && bm.Count == m.Count && bm.PerItem > 0 {
					m.Baseline, m.Ratio = "libp2p-echo", m.PerItem/bm.PerItem
				}
			}
		}
		b.rep.Memory = append(b.rep.Memory, m)
		b.logf("capacity: %d connections answered %d, daemon RSS %.1f MiB", len(all), held, float64(s.RSSBytes)/(1<<20))
	}
	if len(all) == 0 {
		return
	}
	before, _ := srv.sample()
	goBefore, goErr := b.goStats(ctx, srv)
	ok, err := each(all, b.cfg.DialPar, func(_ int, c *rvClient) error { return c.register() })
	if err != nil {
		b.fail("capacity registrations", err)
	}
	s, _ := srv.sample()
	m := memResult{Name: "registrations", Server: "rendezvous", Count: ok, RSSBytes: s.RSSBytes, Available: haveProc,
		Note: "one per connected client, on top of the connections"}
	if haveProc && ok > 0 {
		m.PerItem = float64(s.RSSBytes-before.RSSBytes) / float64(ok)
	}
	if goErr == nil && ok > 0 {
		if g, err := b.goStats(ctx, srv); err == nil {
			m.setGo(g, goBefore, ok)
		}
	}
	b.rep.Memory = append(b.rep.Memory, m)
}

// runCapacityBaseline holds the same connection counts on the plain libp2p
// echo host (one open echo stream each), for the memory baseline.
func (b *bench) runCapacityBaseline(ctx context.Context) {
	srv, err := startChild(ctx, "libp2p")
	if err != nil {
		b.fail("libp2p echo server", err)
		return
	}
	defer srv.Close()
	base, haveProc := srv.sample()
	b.rep.Memory = append(b.rep.Memory, memResult{Name: "idle", Server: "libp2p-echo", RSSBytes: base.RSSBytes, Available: haveProc})
	var conns []*liteConn
	var clients []*echoClient
	defer func() { closeAll(conns) }()
	for _, step := range b.cfg.Capacity {
		if step <= len(conns) {
			continue
		}
		b.logf("capacity baseline: connecting up to %d clients", step)
		more, streams, err := connectLite(ctx, srv, step-len(conns), b.cfg.DialPar, b.cfg.RecordAddrs, EchoProtocolID)
		if err != nil {
			b.fail(fmt.Sprintf("baseline capacity at %d connections", step), err)
			return
		}
		conns = append(conns, more...)
		for _, s := range streams {
			clients = append(clients, newEchoClient(s, b.rep.Sizes.DiscoverReq, b.rep.Sizes.DiscoverResp))
		}
		var held atomic.Int64
		var next atomic.Int64
		var wg sync.WaitGroup
		for range min(b.cfg.DialPar, len(clients)) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := int(next.Add(1)) - 1
					if i >= len(clients) {
						return
					}
					if clients[i].do() == nil {
						held.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		s, _ := srv.sample()
		m := memResult{Name: "connected clients", Server: "libp2p-echo", Count: len(conns), RSSBytes: s.RSSBytes,
			Held: int(held.Load()), Available: haveProc}
		if haveProc {
			m.PerItem = float64(s.RSSBytes-base.RSSBytes) / float64(len(conns))
		}
		b.rep.Memory = append(b.rep.Memory, m)
	}
}

func (b *bench) goStats(ctx context.Context, srv *server) (goStats, error) {
	if srv.Metrics == "" {
		return goStats{}, errors.New("no metrics endpoint")
	}
	return scrapeGoStats(ctx, srv.Metrics)
}

func (m *memResult) setGo(now, base goStats, n int) {
	m.Go = &now
	m.GoroutinesPer = float64(now.Goroutines-base.Goroutines) / float64(n)
	m.HeapPerItem = float64(now.HeapInuse-base.HeapInuse) / float64(n)
	m.StackPerItem = float64(now.StackInuse-base.StackInuse) / float64(n)
}
