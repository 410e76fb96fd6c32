package rendezvous

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"
	ma "github.com/multiformats/go-multiaddr"
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
// for names under a claim prefix. It mends each of two refusals once and
// tries again: a record refused for its addresses (the server names the
// observed IP) is replaced by one with only the addresses that server
// accepts, from then on; a missing or weaker proof is computed at the
// difficulty the server names, if the client accepts to compute it.
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
	mendedAddrs, mendedProof := false, false
	for {
		granted, conn, err := sc.registerOnce(ctx, ns, ttl, proof)
		var se *StatusError
		if err == nil || !errors.As(err, &se) {
			return granted, conn, err
		}
		switch se.Status {
		case StatusInvalidSignedPeerRecord:
			if mendedAddrs || !sc.filter.learn(se.Text) {
				return granted, conn, err
			}
			mendedAddrs = true
			sc.c.log.Debug("server refused some of our addresses; registering those it accepts", "ns", ns, "peer", sc.info.ID, "err", se.Text)
		case StatusNotAuthorized:
			d, ok := claimDifficultyAsked(se.Text)
			if mendedProof || !ok || (proof != nil && d <= have) || d > sc.c.maxClaimDifficulty() {
				return granted, conn, err
			}
			mendedProof = true
			if proof, err = sc.c.proof(ctx, ns, d); err != nil {
				return 0, nil, fmt.Errorf("register %q on %s: %w", ns, sc.info.ID, err)
			}
			have = d
		default:
			return granted, conn, err
		}
	}
}

// addrFilter is what a server told this client about its addresses: once
// it refused a record for an address, only the addresses it accepts are
// registered there (judged as the server does, addrcheck.go, with the
// observed IP it named).
type addrFilter struct {
	mu       sync.Mutex
	on       bool
	observed netip.Addr // invalid: the server named none
}

// learn takes the observed IP from a refusal's status text; false if the
// text is not an address refusal or teaches nothing new.
func (f *addrFilter) learn(text string) bool {
	i := strings.Index(text, ObservedKey)
	if i < 0 {
		return false
	}
	rest := text[i+len(ObservedKey):]
	if j := strings.IndexAny(rest, "); "); j >= 0 {
		rest = rest[:j]
	}
	ip, _ := netip.ParseAddr(rest) // "unknown": none
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.on && f.observed == ip.Unmap() {
		return false
	}
	f.on, f.observed = true, ip.Unmap()
	return true
}

// record is this host's signed record for this server: the full one, or
// the filtered one once the server refused the full one.
func (sc *serverConn) record() ([]byte, error) {
	sc.filter.mu.Lock()
	on, observed := sc.filter.on, sc.filter.observed
	sc.filter.mu.Unlock()
	if !on {
		return sc.c.signedRecord()
	}
	var obs []netip.Addr
	if observed.IsValid() {
		obs = append(obs, observed)
	}
	p := addrPolicy{
		self:     sc.info.ID,
		observed: obs,
		ownIP: func(ip netip.Addr) bool {
			for _, a := range sc.info.Addrs {
				if own, _, ok := firstHost(a); ok && own == ip {
					return true
				}
			}
			return false
		},
		relayAt: func(peer.ID, netip.Addr) bool { return false },
	}
	var keep []ma.Multiaddr
	for _, a := range sc.c.h.Addrs() {
		if len(keep) < DefaultMaxRecordAddrs && p.check(a) == "" {
			keep = append(keep, a)
		}
	}
	key := sc.c.h.Peerstore().PrivKey(sc.c.h.ID())
	if key == nil {
		return nil, errors.New("host has no private key")
	}
	env, err := record.Seal(peer.PeerRecordFromAddrInfo(peer.AddrInfo{ID: sc.c.h.ID(), Addrs: keep}), key)
	if err != nil {
		return nil, fmt.Errorf("seal peer record: %w", err)
	}
	return env.Marshal()
}

// Release gives up this host's name ns on every server: it stops keeping
// ns alive, removes the registration and ends the lease that binds the
// name to this host's key under a server's exclusive prefix (an UNREGISTER
// carrying release_name; see the package doc, "Names"), so that another
// key may claim it. It fails only if no server could be reached.
func (c *Client) Release(ctx context.Context, ns string) error {
	return c.unregisterAll(ctx, ns, true)
}
