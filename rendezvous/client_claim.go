package rendezvous

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
)

// claimOptions is the part of clientConfig about claiming names.
type claimOptions struct {
	prefixes      []string
	maxDifficulty int // 0: DefaultClientClaimDifficulty
}

// WithClaimPrefix tells the client that names under prefix are claimed
// (the server's exclusive prefix): a REGISTER of such a name carries a
// claim proof from the first attempt, computed once per name at
// DefaultClaimDifficulty (or what a server asked for) and cached. Without
// it the client computes a proof only when a server asks. It may be given
// several times.
func WithClaimPrefix(prefix string) ClientOption {
	return func(c *clientConfig) error {
		if prefix == "" || len(prefix) > MaxNamespaceLen {
			return fmt.Errorf("claim prefix must be 1 to %d bytes", MaxNamespaceLen)
		}
		c.claims.prefixes = append(c.claims.prefixes, prefix)
		return nil
	}
}

// WithMaxClaimDifficulty bounds the proof of work the client computes when
// a server asks for one (default DefaultClientClaimDifficulty, 23: about
// 2 s on one core); a server asking for more gets no proof, and the
// REGISTER fails with its E_NOT_AUTHORIZED.
func WithMaxClaimDifficulty(d int) ClientOption {
	return func(c *clientConfig) error {
		if d < 1 || d > MaxClaimDifficulty {
			return fmt.Errorf("max claim difficulty %d out of range 1..%d", d, MaxClaimDifficulty)
		}
		c.claims.maxDifficulty = d
		return nil
	}
}

// proofCache holds this host's claim proofs, one per namespace: a proof
// is bound to (peer ID, namespace) only, so it serves every server.
type proofCache struct {
	mu sync.Mutex
	m  map[string]*cachedProof
}

// cachedProof is computed under its own lock, so concurrent registrations
// of one name on several servers compute it once.
type cachedProof struct {
	mu    sync.Mutex
	d     int
	nonce []byte
}

func (pc *proofCache) entry(ns string) *cachedProof {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if pc.m == nil {
		pc.m = make(map[string]*cachedProof)
	}
	e := pc.m[ns]
	if e == nil {
		e = &cachedProof{}
		pc.m[ns] = e
	}
	return e
}

// proof returns a proof for ns of at least difficulty d, computing it
// when the cached one is weaker.
func (c *Client) proof(ctx context.Context, ns string, d int) ([]byte, error) {
	e := c.proofs.entry(ns)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.nonce != nil && e.d >= d {
		return e.nonce, nil
	}
	start := time.Now()
	nonce, err := ComputeClaimProof(ctx, c.h.ID(), ns, d)
	if err != nil {
		return nil, fmt.Errorf("claim proof: %w", err)
	}
	c.log.Debug("claim proof computed", "ns", ns, "difficulty", d, "took", time.Since(start))
	e.d, e.nonce = d, nonce
	return nonce, nil
}

// claimed reports whether ns lies under a claim prefix.
func (c *Client) claimed(ns string) bool {
	for _, p := range c.cfg.claims.prefixes {
		if strings.HasPrefix(ns, p) {
			return true
		}
	}
	return false
}

func (c *Client) maxClaimDifficulty() int {
	if d := c.cfg.claims.maxDifficulty; d > 0 {
		return d
	}
	return DefaultClientClaimDifficulty
}

// register sends a REGISTER (registerOnce, client.go), with a claim proof
// for names under a claim prefix; when the server refuses it for a missing
// or weaker proof and names a difficulty the client accepts to compute, it
// computes that and tries once more.
func (sc *serverConn) register(ctx context.Context, ns string, ttl time.Duration) (time.Duration, network.Conn, error) {
	var (
		proof []byte
		have  int
	)
	if sc.c.claimed(ns) {
		have = min(DefaultClaimDifficulty, sc.c.maxClaimDifficulty())
		var err error
		if proof, err = sc.c.proof(ctx, ns, have); err != nil {
			return 0, nil, fmt.Errorf("register %q on %s: %w", ns, sc.info.ID, err)
		}
	}
	granted, conn, err := sc.registerOnce(ctx, ns, ttl, proof)
	var se *StatusError
	if err == nil || !errors.As(err, &se) || se.Status != StatusNotAuthorized {
		return granted, conn, err
	}
	d, ok := claimDifficultyAsked(se.Text)
	if !ok || (proof != nil && d <= have) || d > sc.c.maxClaimDifficulty() {
		return granted, conn, err
	}
	if proof, err = sc.c.proof(ctx, ns, d); err != nil {
		return 0, nil, fmt.Errorf("register %q on %s: %w", ns, sc.info.ID, err)
	}
	return sc.registerOnce(ctx, ns, ttl, proof)
}

// Release gives up this host's name ns on every server: it stops keeping
// ns alive, removes the registration and ends the lease that binds the
// name to this host's key under a server's exclusive prefix (an UNREGISTER
// carrying release_name; see the package doc, "Names"), so that another
// key may claim it. It fails only if no server could be reached.
func (c *Client) Release(ctx context.Context, ns string) error {
	return c.unregisterAll(ctx, ns, true)
}
