// Package backoff is the one retry policy of the project: exponential
// delays that double from a minimum to a maximum, each shortened by up to a
// fifth at random so that many clients retrying after one outage spread out.
// It is go-libp2p's own p2p/discovery/backoff strategy with that jitter.
//
// A Backoff is not safe for concurrent use; each retry loop owns one.
package backoff

import (
	"math/rand"
	"time"

	lpbackoff "github.com/libp2p/go-libp2p/p2p/discovery/backoff"
)

// jitterFraction is the largest share of a delay that jitter removes.
const jitterFraction = 0.2

// Backoff yields the delays of one retry loop.
type Backoff struct {
	s lpbackoff.BackoffStrategy
}

// New returns a Backoff whose first delay is about lo and whose delays
// double up to hi. A lo that is not positive becomes 1 ms; a hi below lo
// becomes lo.
func New(lo, hi time.Duration) *Backoff {
	if lo <= 0 {
		lo = time.Millisecond
	}
	hi = max(hi, lo)
	f := lpbackoff.NewExponentialBackoff(lo, hi, belowJitter, lo, 2, 0, rand.NewSource(rand.Int63()))
	return &Backoff{s: f()}
}

// Next returns the delay before the next attempt and advances the policy.
func (b *Backoff) Next() time.Duration { return b.s.Delay() }

// Reset starts the policy again from min (after a success).
func (b *Backoff) Reset() { b.s.Reset() }

// belowJitter bounds d to [lo, hi] and removes up to jitterFraction of it,
// never going below lo.
func belowJitter(d, lo, hi time.Duration, rng *rand.Rand) time.Duration {
	d = min(max(d, lo), hi)
	cut := time.Duration(rng.Float64() * jitterFraction * float64(d))
	return max(d-cut, lo)
}
