package serverhost

import (
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	relayv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	circuitproto "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/proto"
)

// Relay fairness defaults.
//
// The relay allows -relay-max-circuits (64) relayed connections per peer,
// counting a peer's circuits as source and as destination together. Without
// further limits 64 throwaway identities, one circuit each, took every
// circuit of a NATed user, and nobody else could reach that user through the
// relay. So circuits to one destination are also limited per source peer and
// per source address (an IPv4 address or an IPv6 /56): one address holds at
// most defaultRelayCircuitsPerSourceIP of a destination's circuits, and it
// takes 64/8 = 8 addresses, not 64 identities, to fill them.
//
// Reservations are limited per source address as well: the relay's own
// -relay-max-reservations-per-ip (for IPv4 addresses; the daemon applies the
// same number to IPv6 /56 prefixes), and a token bucket on new reservations
// per address (-relay-reservation-rate-per-ip a minute, bursting to the same
// number), so one address cannot grab every slot of a shared NAT in a second.
// Renewing a reservation one already holds is not rate limited.
const (
	DefaultRelayCircuitsPerSource   = 4
	DefaultRelayCircuitsPerSourceIP = 8
	DefaultRelayReservationRate     = 16 // new reservations a minute from one address
)

// RelayOptions sizes the circuit relay v2 service for chat: many peers,
// many behind one NAT, little data each. announced says that the operator
// announces the host's addresses, which reservations then carry as given.
func RelayOptions(r RelayConfig, acl *RelayACL, announced bool) []relayv2.Option {
	res := relayv2.DefaultResources()
	res.MaxReservations = r.MaxReservations
	res.MaxCircuits = r.MaxCircuits
	res.MaxReservationsPerIP = r.MaxReservationsPerIP
	res.MaxReservationsPerASN = r.MaxReservationsPerASN
	res.ReservationTTL = r.ReservationTTL
	res.Limit = &relayv2.RelayLimit{Duration: r.LimitDuration, Data: r.LimitData}
	opts := []relayv2.Option{relayv2.WithResources(res), relayv2.WithACL(acl)}
	if r.Infinite {
		opts = append(opts, relayv2.WithInfiniteLimits())
	}
	// Reservations tell clients the relay's addresses. By default only
	// public ones; addresses the operator announces are trusted as given.
	opts = append(opts, relayv2.WithReservationAddressFilter(func(a ma.Multiaddr) bool {
		return announced || manet.IsPublicAddr(a)
	}))
	return opts
}

// RelayACL is the relay's access control (relayv2.ACLFilter): it enforces
// the per-source circuit limits and the per-address reservation limits.
//
// The relay does not report which circuit ended, so the ACL ties each
// circuit it admits to the source's hop stream that asked for it: that
// stream stays open exactly as long as the relayed connection. A circuit
// counts while its hop stream is still among its connection's streams;
// circuits the relay refused after the ACL (no reservation, its own limits)
// end at once the same way. Reservations count while their peer stays
// connected (the relay drops a reservation on disconnect) and until they
// expire.
type RelayACL struct {
	perSource   int
	perSourceIP int
	rsvPerIP    int
	rsvRate     rate.Limit
	rsvBurst    int
	rsvTTL      time.Duration
	now         func() time.Time
	log         *slog.Logger
	refused     *prometheus.CounterVec

	// net is the host's network, set once the host exists.
	net atomic.Pointer[network.Network]

	mu       sync.Mutex
	circuits map[peer.ID][]*circuit // live circuits by destination
	assigned map[network.Stream]bool
	rsv      map[string]map[peer.ID]time.Time // reservation expiry by source address
	limiters map[string]*rate.Limiter         // new reservations by source address
	calls    int                              // since the last sweep
}

type circuit struct {
	src  peer.ID
	addr string // source address key (IPKey)
	hop  network.Stream
}

// sweepEvery is how many ACL calls pass between sweeps of the whole state,
// which drop ended circuits of destinations nobody dialled since and idle
// rate limiters.
const sweepEvery = 256

// NewRelayACL builds the relay's access control for r; reg (optional)
// gets its refusal counter.
func NewRelayACL(r RelayConfig, log *slog.Logger, reg prometheus.Registerer) (*RelayACL, error) {
	a := &RelayACL{
		perSource:   r.MaxCircuitsPerSource,
		perSourceIP: r.MaxCircuitsPerSourceIP,
		rsvPerIP:    r.MaxReservationsPerIP,
		rsvRate:     rate.Limit(float64(r.ReservationRatePerIP) / 60),
		rsvBurst:    r.ReservationRatePerIP,
		rsvTTL:      r.ReservationTTL,
		now:         time.Now,
		log:         log,
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rendezvous_relay_refused_total",
			Help: "Relay requests refused by the daemon's fairness limits, by reason.",
		}, []string{"reason"}),
		circuits: map[peer.ID][]*circuit{},
		assigned: map[network.Stream]bool{},
		rsv:      map[string]map[peer.ID]time.Time{},
		limiters: map[string]*rate.Limiter{},
	}
	if reg != nil {
		if err := reg.Register(a.refused); err != nil {
			return nil, fmt.Errorf("register relay metrics: %w", err)
		}
	}
	return a, nil
}

// SetClock replaces the ACL's clock (tests); call it before the relay uses
// the ACL.
func (a *RelayACL) SetClock(now func() time.Time) { a.now = now }

// Attach gives the ACL the host's network; until then it refuses all.
func (a *RelayACL) Attach(n network.Network) { a.net.Store(&n) }

func (a *RelayACL) network() network.Network {
	if p := a.net.Load(); p != nil {
		return *p
	}
	return nil
}

// IPKey names a source address: the IPv4 address, or the IPv6 /56 (what
// one home or small office usually gets).
func IPKey(addr ma.Multiaddr) (string, error) {
	ip, err := manet.ToIP(addr)
	if err != nil {
		return "", err
	}
	if ip4 := ip.To4(); ip4 != nil {
		return ip4.String(), nil
	}
	return (&net.IPNet{IP: ip.Mask(net.CIDRMask(56, 128)), Mask: net.CIDRMask(56, 128)}).String(), nil
}

func (a *RelayACL) deny(reason string, args ...any) bool {
	a.refused.WithLabelValues(reason).Inc()
	a.log.Debug("relay request refused", append([]any{"reason", reason}, args...)...)
	return false
}

// AllowConnect implements relayv2.ACLFilter.
func (a *RelayACL) AllowConnect(src peer.ID, srcAddr ma.Multiaddr, dest peer.ID) bool {
	n := a.network()
	if n == nil {
		return false
	}
	addr, err := IPKey(srcAddr)
	if err != nil {
		return a.deny("no_ip", "peer", src, "dest", dest)
	}
	// The hop streams of the connection this request came on; one of them
	// carries it.
	var hops []network.Stream
	for _, c := range n.ConnsToPeer(src) {
		if !c.RemoteMultiaddr().Equal(srcAddr) {
			continue
		}
		for _, s := range c.GetStreams() {
			if s.Protocol() == circuitproto.ProtoIDv2Hop && s.Stat().Direction == network.DirInbound {
				hops = append(hops, s)
			}
		}
	}

	a.mu.Lock()
	defer a.mu.Unlock()
	a.maybeSweep()
	live := a.liveCircuits(dest)
	bySrc, byAddr := 0, 0
	for _, c := range live {
		if c.src == src {
			bySrc++
		}
		if c.addr == addr {
			byAddr++
		}
	}
	if bySrc >= a.perSource {
		return a.deny("circuits_per_source", "peer", src, "dest", dest, "circuits", bySrc)
	}
	if byAddr >= a.perSourceIP {
		return a.deny("circuits_per_source_ip", "peer", src, "dest", dest, "ip", addr, "circuits", byAddr)
	}
	var hop network.Stream
	for _, s := range hops {
		if !a.assigned[s] {
			hop = s
			break
		}
	}
	if hop == nil {
		// Cannot happen while the relay asks from its stream handler;
		// refuse rather than admit a circuit that is never counted out.
		return a.deny("no_hop_stream", "peer", src, "dest", dest)
	}
	a.assigned[hop] = true
	a.circuits[dest] = append(live, &circuit{src: src, addr: addr, hop: hop})
	return true
}

// liveCircuits drops the ended circuits of dest and returns the rest. The
// caller holds mu.
func (a *RelayACL) liveCircuits(dest peer.ID) []*circuit {
	cs := a.circuits[dest]
	live := cs[:0]
	for _, c := range cs {
		if streamOpen(c.hop) {
			live = append(live, c)
		} else {
			delete(a.assigned, c.hop)
		}
	}
	clear(cs[len(live):])
	if len(live) == 0 {
		delete(a.circuits, dest)
		return nil
	}
	a.circuits[dest] = live
	return live
}

// streamOpen reports whether s is still one of its connection's streams
// (the swarm forgets a stream once it is closed both ways or reset).
func streamOpen(s network.Stream) bool {
	c := s.Conn()
	if c.IsClosed() {
		return false
	}
	for _, x := range c.GetStreams() {
		if x == s {
			return true
		}
	}
	return false
}

// AllowReserve implements relayv2.ACLFilter.
func (a *RelayACL) AllowReserve(p peer.ID, addr ma.Multiaddr) bool {
	n := a.network()
	if n == nil {
		return false
	}
	key, err := IPKey(addr)
	if err != nil {
		return a.deny("no_ip", "peer", p)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.maybeSweep()
	now := a.now()
	held := a.reservations(n, key, now)
	if _, ok := held[p]; ok {
		held[p] = now.Add(a.rsvTTL) // a renewal
		return true
	}
	if len(held) >= a.rsvPerIP {
		return a.deny("reservations_per_ip", "peer", p, "ip", key, "reservations", len(held))
	}
	lim := a.limiters[key]
	if lim == nil {
		lim = rate.NewLimiter(a.rsvRate, a.rsvBurst)
		a.limiters[key] = lim
	}
	if !lim.AllowN(now, 1) {
		return a.deny("reservation_rate_per_ip", "peer", p, "ip", key)
	}
	if held == nil {
		held = map[peer.ID]time.Time{}
		a.rsv[key] = held
	}
	held[p] = now.Add(a.rsvTTL)
	return true
}

// reservations drops the expired reservations from key and those of peers
// no longer connected, and returns the rest. The caller holds mu.
func (a *RelayACL) reservations(n network.Network, key string, now time.Time) map[peer.ID]time.Time {
	held := a.rsv[key]
	for p, exp := range held {
		if !exp.After(now) || n.Connectedness(p) != network.Connected {
			delete(held, p)
		}
	}
	if len(held) == 0 {
		delete(a.rsv, key)
		return nil
	}
	return held
}

// maybeSweep prunes the whole state every sweepEvery calls. The caller
// holds mu.
func (a *RelayACL) maybeSweep() {
	if a.calls++; a.calls < sweepEvery {
		return
	}
	a.calls = 0
	for dest := range a.circuits {
		a.liveCircuits(dest)
	}
	now := a.now()
	if n := a.network(); n != nil {
		for key := range a.rsv {
			a.reservations(n, key, now)
		}
	}
	for key, lim := range a.limiters {
		if lim.TokensAt(now) >= float64(a.rsvBurst) {
			delete(a.limiters, key)
		}
	}
}

// Counts reports live circuits to dest and reservations held from the
// address key, for tests and logs.
func (a *RelayACL) Counts(dest peer.ID, key string) (circuits, reservations int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	circuits = len(a.liveCircuits(dest))
	if n := a.network(); n != nil {
		reservations = len(a.reservations(n, key, a.now()))
	}
	return circuits, reservations
}
