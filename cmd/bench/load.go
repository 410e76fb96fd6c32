package main

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"
)

// opFunc performs one request/response on a client's warm stream.
type opFunc func(rng *rand.Rand) error

// loadSpec describes one measured phase.
type loadSpec struct {
	Clients  []opFunc
	Warmup   time.Duration // run but do not record
	Duration time.Duration // recorded window
	// Rate is the total offered load in requests per second, spread evenly
	// over the clients (open loop, latency counted from the scheduled send
	// time so a stall is not hidden). Zero means closed loop: every client
	// sends its next request as soon as the previous answer arrives.
	Rate float64
	// OnStart and OnEnd are called when the recorded window starts and
	// ends (for /proc samples of the server).
	OnStart, OnEnd func()
	// Abort breaks every client's connection; it is called if the phase
	// is cancelled or the clients are still busy stallTimeout after the
	// window, so a stalled server cannot hang the benchmark.
	Abort func()
}

const stallTimeout = 30 * time.Second

// loadResult is what one phase measured.
type loadResult struct {
	Clients   int     `json:"clients"`
	Ops       int     `json:"ops"`
	Errors    int     `json:"errors"`
	OpsPerSec float64 `json:"ops_per_sec"`
	Latency   Summary `json:"latency"`
	FirstErr  string  `json:"first_error,omitempty"`
	Seconds   float64 `json:"seconds"`
}

// runLoad runs spec and returns what it measured.
func runLoad(ctx context.Context, spec loadSpec) loadResult {
	n := len(spec.Clients)
	begin := time.Now()
	winStart := begin.Add(spec.Warmup)
	winEnd := winStart.Add(spec.Duration)

	type out struct {
		lat    Latencies
		errs   int
		first  error
		counts int
	}
	outs := make([]out, n)
	var wg sync.WaitGroup
	var interval time.Duration
	if spec.Rate > 0 {
		interval = time.Duration(float64(n) / spec.Rate * float64(time.Second))
	}
	sampler := make(chan struct{})
	go func() {
		defer close(sampler)
		for _, at := range []struct {
			t time.Time
			f func()
		}{{winStart, spec.OnStart}, {winEnd, spec.OnEnd}} {
			t := time.NewTimer(time.Until(at.t))
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
			}
			if at.f != nil {
				at.f()
			}
		}
	}()
	for i, op := range spec.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o := &outs[i]
			rng := rand.New(rand.NewPCG(uint64(i), uint64(begin.UnixNano())))
			next := begin
			if interval > 0 {
				next = begin.Add(time.Duration(rng.Int64N(int64(interval))))
			}
			for ctx.Err() == nil {
				if interval > 0 {
					if d := time.Until(next); d > 0 {
						t := time.NewTimer(d)
						select {
						case <-t.C:
						case <-ctx.Done():
							t.Stop()
							return
						}
					}
				}
				start := time.Now()
				if start.After(winEnd) {
					return
				}
				sched := start
				if interval > 0 {
					sched = next
					next = next.Add(interval)
				}
				err := op(rng)
				done := time.Now()
				inWindow := !sched.Before(winStart) && !done.After(winEnd)
				if err != nil {
					if inWindow || o.first == nil {
						o.errs++
						if o.first == nil {
							o.first = err
						}
					}
					return // the stream is no longer trustworthy
				}
				if inWindow {
					o.lat.Add(done.Sub(sched))
					o.counts++
				}
			}
		}()
	}
	finished := make(chan struct{})
	go func() {
		wg.Wait()
		close(finished)
	}()
	stall := time.NewTimer(time.Until(winEnd.Add(stallTimeout)))
	defer stall.Stop()
	select {
	case <-finished:
	case <-ctx.Done():
	case <-stall.C:
	}
	select {
	case <-finished:
	default:
		if spec.Abort != nil {
			spec.Abort()
		}
		<-finished
	}
	<-sampler
	var all Latencies
	res := loadResult{Clients: n, Seconds: spec.Duration.Seconds()}
	for i := range outs {
		all.Merge(&outs[i].lat)
		res.Ops += outs[i].counts
		res.Errors += outs[i].errs
		if res.FirstErr == "" && outs[i].first != nil {
			res.FirstErr = outs[i].first.Error()
		}
	}
	res.Latency = all.Summarize()
	if spec.Duration > 0 {
		res.OpsPerSec = float64(res.Ops) / spec.Duration.Seconds()
	}
	return res
}
