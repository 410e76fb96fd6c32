package rendezvous

import (
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/time/rate"
)

// rateLimiter is a token bucket per peer. A stream resolves its peer's
// bucket once (acquire) and takes tokens from it without touching the map;
// sweep drops only buckets that no stream holds and that have refilled
// completely, so a peer never has two buckets at once.
type rateLimiter struct {
	limit rate.Limit
	burst int

	mu    sync.Mutex
	peers map[peer.ID]*bucket
}

// bucket is one peer's token bucket. refs counts the streams holding it
// and is guarded by rateLimiter.mu; lim has its own lock.
type bucket struct {
	lim  *rate.Limiter
	refs int
}

// allow takes one token, reporting whether there was one.
func (b *bucket) allow(now time.Time) bool { return b.lim.AllowN(now, 1) }

func newRateLimiter(perSecond float64, burst int) *rateLimiter {
	return &rateLimiter{limit: rate.Limit(perSecond), burst: burst, peers: make(map[peer.ID]*bucket)}
}

func (r *rateLimiter) get(p peer.ID) *bucket {
	b := r.peers[p]
	if b == nil {
		b = &bucket{lim: rate.NewLimiter(r.limit, r.burst)}
		r.peers[p] = b
	}
	return b
}

// acquire returns p's bucket and keeps it from being swept until release.
func (r *rateLimiter) acquire(p peer.ID) *bucket {
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.get(p)
	b.refs++
	return b
}

// release undoes one acquire.
func (r *rateLimiter) release(b *bucket) {
	r.mu.Lock()
	b.refs--
	r.mu.Unlock()
}

// allow takes one token from p's bucket, reporting whether there was one.
func (r *rateLimiter) allow(p peer.ID, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.get(p).allow(now)
}

// sweep drops the buckets that no stream holds and that are full again at
// now.
func (r *rateLimiter) sweep(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for p, b := range r.peers {
		if b.refs == 0 && b.lim.TokensAt(now) >= float64(r.burst) {
			delete(r.peers, p)
		}
	}
}

func (r *rateLimiter) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.peers)
}
