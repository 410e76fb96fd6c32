package rendezvous

import (
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/time/rate"
)

// rateLimiter is a token bucket per peer. Buckets that have refilled
// completely carry no information and are dropped by sweep.
type rateLimiter struct {
	limit rate.Limit
	burst int

	mu    sync.Mutex
	peers map[peer.ID]*rate.Limiter
}

func newRateLimiter(perSecond float64, burst int) *rateLimiter {
	return &rateLimiter{limit: rate.Limit(perSecond), burst: burst, peers: make(map[peer.ID]*rate.Limiter)}
}

// allow takes one token from p's bucket, reporting whether there was one.
func (r *rateLimiter) allow(p peer.ID, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := r.peers[p]
	if l == nil {
		l = rate.NewLimiter(r.limit, r.burst)
		r.peers[p] = l
	}
	return l.AllowN(now, 1)
}

// sweep drops the buckets that are full again at now.
func (r *rateLimiter) sweep(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for p, l := range r.peers {
		if l.TokensAt(now) >= float64(r.burst) {
			delete(r.peers, p)
		}
	}
}

func (r *rateLimiter) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.peers)
}
