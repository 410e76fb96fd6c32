package chat

import (
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/time/rate"
)

// peerLimits is a token bucket per peer, kept for at most max peers: a new
// peer past max restarts the map (memory stays bounded whatever number of
// identities a remote makes up; the buckets forgotten then start full).
// Every per-peer rate of the node's protocols is one: chat frames (dm.go),
// room authors (room.go), history and proof requests (roomsync.go,
// roomproof.go), peer exchange (pex.go). Safe for concurrent use.
type peerLimits struct {
	limit rate.Limit
	burst int
	max   int

	mu sync.Mutex
	m  map[peer.ID]*rate.Limiter
}

func newPeerLimits(limit rate.Limit, burst, max int) *peerLimits {
	return &peerLimits{limit: limit, burst: burst, max: max, m: map[peer.ID]*rate.Limiter{}}
}

// allow takes a token from p's bucket now.
func (pl *peerLimits) allow(p peer.ID) bool { return pl.allowAt(p, time.Now()) }

// allowAt takes a token from p's bucket at time now.
func (pl *peerLimits) allowAt(p peer.ID, now time.Time) bool {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	l := pl.m[p]
	if l == nil {
		if len(pl.m) >= pl.max {
			clear(pl.m)
		}
		l = rate.NewLimiter(pl.limit, pl.burst)
		pl.m[p] = l
	}
	return l.AllowN(now, 1)
}
