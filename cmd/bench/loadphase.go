package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
)

// runLoadPhases measures the echo baselines and the rendezvous daemon.
// All servers run and all clients stay connected for the whole phase, and
// each rendezvous measurement runs right after the baselines it is
// compared with, so that the machine's state (other load, caches) is as
// alike as possible between a result and its baseline.
func (b *bench) runLoadPhases(ctx context.Context, baselines, rdv bool) {
	sz := b.rep.Sizes
	echoOps := map[string][]io.ReadWriter{}
	echoSrv := map[string]*server{}
	if baselines {
		for _, kind := range []string{"tcp", "libp2p"} {
			srv, err := startChild(ctx, kind)
			if err != nil {
				b.fail(kind+" echo server", err)
				continue
			}
			defer srv.Close()
			b.logf("%s echo server %s pid %d; connecting %d clients", kind, srv.HostPort, srv.PID, b.cfg.Clients)
			rws, closeFn, err := b.echoClients(ctx, srv, kind)
			if err != nil {
				b.fail(kind+" echo clients", err)
				continue
			}
			defer closeFn()
			echoOps[kind], echoSrv[kind] = rws, srv
		}
	}
	var srv *server
	var cs []*rvClient
	if rdv {
		var err error
		srv, err = b.daemon(ctx, "load")
		if err != nil {
			b.fail("start daemon", err)
			rdv = false
		} else {
			defer srv.Close()
			b.logf("rendezvous daemon %s pid %d; connecting %d clients", srv.Addr, srv.PID, b.cfg.Clients)
			cs, err = b.rvClients(ctx, srv, b.cfg.Clients)
			if err != nil {
				b.fail("rendezvous clients", err)
				rdv = false
			} else {
				defer closeAll(cs)
				if _, err := each(cs, b.cfg.DialPar, func(_ int, c *rvClient) error { return c.register() }); err != nil {
					b.fail("initial registrations", err)
					rdv = false
				}
			}
		}
	}

	echo := func(suffix string, req, resp int, rate float64) {
		for _, kind := range []string{"tcp", "libp2p"} {
			rws, ok := echoOps[kind]
			if !ok || ctx.Err() != nil {
				continue
			}
			fns := make([]opFunc, len(rws))
			for i, rw := range rws {
				c := newEchoClient(rw, req, resp)
				fns[i] = func(*rand.Rand) error { return c.do() }
			}
			spec := b.spec(fns, rate)
			spec.Abort = func() {
				for _, rw := range rws {
					if c, ok := rw.(io.Closer); ok {
						c.Close()
					}
				}
			}
			b.measure(ctx, "baseline", kind+"-echo "+suffix, echoSrv[kind], spec)
		}
	}
	rv := func(name string, mix, rate float64, fresh bool) {
		if rdv && ctx.Err() == nil {
			spec := b.spec(b.rvOps(cs, mix, fresh), rate)
			spec.Abort = func() {
				for _, c := range cs {
					c.s.Reset()
				}
			}
			b.measure(ctx, "rendezvous", name, srv, spec)
		}
	}
	mixName := fmt.Sprintf("mix %.0f%% REGISTER", b.cfg.Mix*100)

	echo("discover-sized", sz.DiscoverReq, sz.DiscoverResp, 0)
	rv("DISCOVER", 0, 0, false)
	echo("register-sized", sz.RegisterReq, sz.RegisterResp, 0)
	rv("REGISTER", 1, 0, false)
	if rdv && ctx.Err() == nil {
		// Enough newly signed records for every REGISTER of a phase at up
		// to 20,000/s, so that no record is sent twice.
		per := max(2, int(20000*(b.cfg.Warmup+b.cfg.Duration).Seconds())/len(cs)+1)
		b.logf("signing %d peer records per client", per)
		if _, err := each(cs, b.cfg.DialPar, func(_ int, c *rvClient) error { return c.presign(per) }); err != nil {
			b.fail("sign records", err)
		} else {
			rv("REGISTER new record", 1, 0, true)
		}
		for _, c := range cs {
			c.fresh = nil
		}
	}
	if !b.cfg.Short {
		rv(mixName, b.cfg.Mix, 0, false)
	}
	for _, rate := range b.cfg.Rates {
		echo("discover-sized", sz.DiscoverReq, sz.DiscoverResp, rate)
		rv(mixName, b.cfg.Mix, rate, false)
	}
}
