package rendezvous

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/bits"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	manet "github.com/multiformats/go-multiaddr/net"
	"golang.org/x/time/rate"

	"github.com/p2p-messaging/p2p-messaging/rendezvous/pb"
)

// Claim cost defaults (see the package doc, "Names").
const (
	// DefaultClaimDifficulty is the proof of work a new name costs: the
	// number of leading zero bits of the claim hash. 2^19 SHA-256 hashes
	// took 104 ms on average on one core of the build machine
	// (BenchmarkClaimProofDefault).
	DefaultClaimDifficulty = 19
	// MaxClaimDifficulty bounds the difficulty a server may ask and a
	// client computes.
	MaxClaimDifficulty = 32
	// DefaultClientClaimDifficulty is the most a Client computes when a
	// server asks (16 times the default cost).
	DefaultClientClaimDifficulty = 23
	// DefaultClaimBurst and DefaultClaimInterval shape the token bucket of
	// new claims per source network (an IPv4 address, an IPv6 /56): a
	// burst of 8, then one every 5 minutes.
	DefaultClaimBurst    = 8
	DefaultClaimInterval = 5 * time.Minute
	// MaxClaimProofLen bounds the claim_proof field, in bytes.
	MaxClaimProofLen = 64
)

// claimDomain starts every claim hash.
const claimDomain = "p2p-messaging name claim"

// ClaimDifficultyKey precedes the required difficulty in the status text
// of a REGISTER refused for a missing or weak proof.
const ClaimDifficultyKey = "claim-difficulty="

// Rejection reasons of claims (rendezvous_rejections_total).
const (
	rejectClaimProof = "claim_proof"
	rejectClaimRate  = "claim_rate"
)

// claimHashInput appends to b the bytes hashed for a claim of ns by id
// with nonce: claimDomain || id (binary) || 0x00 || ns || nonce.
func claimHashInput(b []byte, id peer.ID, ns string, nonce []byte) []byte {
	b = append(b, claimDomain...)
	b = append(b, id...)
	b = append(b, 0)
	b = append(b, ns...)
	return append(b, nonce...)
}

// leadingZeroBits counts the leading zero bits of h.
func leadingZeroBits(h [sha256.Size]byte) int {
	n := 0
	for _, x := range h {
		if x != 0 {
			return n + bits.LeadingZeros8(x)
		}
		n += 8
	}
	return n
}

// CheckClaimProof reports whether nonce proves a claim of ns by id at
// difficulty d: SHA-256(claimHashInput) has at least d leading zero bits.
func CheckClaimProof(id peer.ID, ns string, nonce []byte, d int) bool {
	if d <= 0 {
		return true
	}
	if len(nonce) == 0 || len(nonce) > MaxClaimProofLen {
		return false
	}
	return leadingZeroBits(sha256.Sum256(claimHashInput(nil, id, ns, nonce))) >= d
}

// ComputeClaimProof finds a nonce proving a claim of ns by id at
// difficulty d (1..MaxClaimDifficulty): 2^d hashes on average. It stops
// with ctx's error.
func ComputeClaimProof(ctx context.Context, id peer.ID, ns string, d int) ([]byte, error) {
	if d < 0 || d > MaxClaimDifficulty {
		return nil, fmt.Errorf("claim difficulty %d out of range 0..%d", d, MaxClaimDifficulty)
	}
	buf := claimHashInput(nil, id, ns, make([]byte, 8))
	nonce := buf[len(buf)-8:]
	for i := uint64(0); ; i++ {
		if i&0xffff == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		binary.BigEndian.PutUint64(nonce, i)
		if leadingZeroBits(sha256.Sum256(buf)) >= d {
			return append([]byte(nil), nonce...), nil
		}
	}
}

// claimDifficultyAsked returns the difficulty a refusal's status text
// asks for, if it asks for one.
func claimDifficultyAsked(text string) (int, bool) {
	i := strings.Index(text, ClaimDifficultyKey)
	if i < 0 {
		return 0, false
	}
	rest := text[i+len(ClaimDifficultyKey):]
	j := 0
	for j < len(rest) && j < 3 && rest[j] >= '0' && rest[j] <= '9' {
		j++
	}
	d, err := strconv.Atoi(rest[:j])
	if err != nil || d < 1 || d > MaxClaimDifficulty {
		return 0, false
	}
	return d, true
}

// ---- per-source claim rate ----

// sourceKey is the network a claim comes from: an IPv4 address, or the
// /56 of an IPv6 address (one customer's delegation). The zero Prefix
// stands for connections without an IP (all share it).
func sourceKey(ip netip.Addr) netip.Prefix {
	ip = ip.Unmap()
	switch {
	case ip.Is4():
		return netip.PrefixFrom(ip, 32)
	case ip.Is6():
		p, _ := ip.Prefix(56)
		return p
	}
	return netip.Prefix{}
}

// claimLimiter is a token bucket of new claims per source network. It
// holds at most max buckets; a bucket that has refilled is dropped by
// sweep, and a new source finding the table full is refused.
type claimLimiter struct {
	limit rate.Limit
	burst int
	max   int

	mu      sync.Mutex
	sources map[netip.Prefix]*rate.Limiter
}

func newClaimLimiter(l *NameLimits) *claimLimiter {
	return &claimLimiter{
		limit:   rate.Every(l.ClaimInterval),
		burst:   l.ClaimBurst,
		max:     l.MaxNames,
		sources: make(map[netip.Prefix]*rate.Limiter),
	}
}

// allow takes one claim token for src, or returns how long until the
// next one (0 with ok false: the table of sources is full).
func (c *claimLimiter) allow(src netip.Prefix, now time.Time) (ok bool, wait time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	b := c.sources[src]
	if b == nil {
		if len(c.sources) >= c.max {
			c.sweepLocked(now)
		}
		if len(c.sources) >= c.max {
			return false, 0
		}
		b = rate.NewLimiter(c.limit, c.burst)
		c.sources[src] = b
	}
	if b.AllowN(now, 1) {
		return true, 0
	}
	r := b.ReserveN(now, 1)
	wait = r.DelayFrom(now)
	r.CancelAt(now)
	return false, max(wait, time.Second)
}

func (c *claimLimiter) sweep(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sweepLocked(now)
}

func (c *claimLimiter) sweepLocked(now time.Time) {
	for k, b := range c.sources {
		if b.TokensAt(now) >= float64(c.burst) {
			delete(c.sources, k)
		}
	}
}

func (c *claimLimiter) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.sources)
}

// ---- server hooks ----

// nameOptions is the part of serverConfig that the name checks use.
type nameOptions struct {
	// observe returns the IP a connection comes from; nil: its remote
	// multiaddr's (tests map loopback connections to other addresses).
	observe func(network.Conn) netip.Addr
}

// withObservedIP makes the server see connections as coming from f(conn)
// (tests: loopback connections all come from 127.0.0.1).
func withObservedIP(f func(network.Conn) netip.Addr) ServerOption {
	return func(c *serverConfig) error { c.names.observe = f; return nil }
}

// observedIP is the IP conn comes from, or the zero Addr.
func (s *Server) observedIP(conn network.Conn) netip.Addr {
	if s.cfg.names.observe != nil {
		return s.cfg.names.observe(conn).Unmap()
	}
	ip, err := manet.ToIP(conn.RemoteMultiaddr())
	if err != nil {
		return netip.Addr{}
	}
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}

// claimCheck returns the checks a new claim of r's namespace by remote
// must pass: the proof of work, then a token of its source network's
// bucket (taken last, so a claim refused for its proof costs none).
func (s *Server) claimCheck(remote peer.ID, conn network.Conn, r *pb.Message_Register, now time.Time) func() *nameRefusal {
	return func() *nameRefusal {
		d := s.lim.ClaimDifficulty
		if proof := r.GetClaimProof(); !CheckClaimProof(remote, r.GetNs(), proof, d) {
			what := "is missing"
			if len(proof) > 0 {
				what = "does not verify"
			}
			return &nameRefusal{StatusNotAuthorized, fmt.Sprintf(
				"claiming a new name needs a proof of work (Register.claim_proof, field 100) and it %s: %s%d; see the rendezvous package doc",
				what, ClaimDifficultyKey, d), rejectClaimProof}
		}
		src := sourceKey(s.observedIP(conn))
		if ok, wait := s.names.claims.allow(src, now); !ok {
			if wait == 0 {
				return &nameRefusal{StatusUnavailable, "too many networks are claiming names, try again later", rejectClaimRate}
			}
			return &nameRefusal{StatusUnavailable, fmt.Sprintf(
				"too many new names claimed from your network (%s), the next in %v",
				src, wait.Round(time.Second)), rejectClaimRate}
		}
		return nil
	}
}
