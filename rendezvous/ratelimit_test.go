package rendezvous

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestRateLimiterSweep(t *testing.T) {
	rl := newRateLimiter(10, 2)
	now := time.Unix(1000, 0)
	p := newFakePeer(t).id
	require.True(t, rl.allow(p, now))
	require.True(t, rl.allow(p, now))
	require.False(t, rl.allow(p, now))
	rl.sweep(now)
	require.Equal(t, 1, rl.len(), "a drained bucket is kept")
	rl.sweep(now.Add(time.Second))
	require.Equal(t, 0, rl.len(), "a full bucket is dropped")
}

// TestRateLimiterHeldBucket: a bucket a stream holds is never swept, so a
// peer cannot get a second, full bucket by waiting for a sweep.
func TestRateLimiterHeldBucket(t *testing.T) {
	rl := newRateLimiter(10, 2)
	now := time.Unix(1000, 0)
	p := newFakePeer(t).id
	b := rl.acquire(p)
	require.Same(t, b, rl.acquire(p), "one bucket per peer")
	rl.release(b)
	require.True(t, b.allow(now))
	rl.sweep(now.Add(time.Hour))
	require.Equal(t, 1, rl.len(), "a held bucket is kept even when full")
	require.True(t, b.allow(now))
	require.False(t, b.allow(now))
	require.False(t, rl.allow(p, now), "map lookups share the held bucket")
	rl.release(b)
	rl.sweep(now.Add(time.Hour))
	require.Equal(t, 0, rl.len(), "released and full: dropped")
}
