// Package serverhost is the construction the rendezvous daemon and a chat's
// embedded server share: resource-manager limits sized for a connection
// count, and the circuit relay v2 service with the daemon's fairness limits
// (per-source circuits, per-address reservations). cmd/rendezvous and
// chat's embedded server (chat/embed.go) both build their hosts with it, so
// a chat that serves others gives them the daemon's limits, not its own.
package serverhost

import (
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/host/autonat"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/protocol/identify"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
	"github.com/pbnjay/memory"

	"github.com/p2p-messaging/p2p-messaging/rendezvous"
)

// DHTPrefix keeps the project's DHT apart from the public IPFS one.
const DHTPrefix protocol.ID = "/p2p-messaging"

// DHTProtocol is the DHT's wire protocol under DHTPrefix.
const DHTProtocol = DHTPrefix + "/kad/1.0.0"

// Relay defaults, the daemon's: sized for a daemon serving at least 10,000
// chat clients.
const (
	DefaultRelayMaxReservations      = 16384
	DefaultRelayMaxCircuits          = 64
	DefaultRelayMaxReservationsPerIP = 128
	DefaultRelayReservationTTL       = time.Hour
	// Chat text is small: 1 MiB per direction and 10 minutes per relayed
	// connection carry thousands of messages, and hole punching usually
	// replaces the relayed connection within a second.
	DefaultRelayLimitDuration = 10 * time.Minute
	DefaultRelayLimitData     = 1 << 20
)

// RelayConfig sizes the relay service and its ACL.
type RelayConfig struct {
	Infinite              bool // no duration or data limit on relayed connections
	MaxReservations       int
	MaxCircuits           int
	MaxReservationsPerIP  int
	MaxReservationsPerASN int
	ReservationTTL        time.Duration
	LimitDuration         time.Duration
	LimitData             int64

	MaxCircuitsPerSource   int // circuits one source peer may have to one destination
	MaxCircuitsPerSourceIP int // circuits one source address may have to one destination
	ReservationRatePerIP   int // new reservations a minute from one address
}

// DefaultRelayConfig is the daemon's default relay.
func DefaultRelayConfig() RelayConfig {
	return RelayConfig{
		MaxReservations:        DefaultRelayMaxReservations,
		MaxCircuits:            DefaultRelayMaxCircuits,
		MaxReservationsPerIP:   DefaultRelayMaxReservationsPerIP,
		ReservationTTL:         DefaultRelayReservationTTL,
		LimitDuration:          DefaultRelayLimitDuration,
		LimitData:              DefaultRelayLimitData,
		MaxCircuitsPerSource:   DefaultRelayCircuitsPerSource,
		MaxCircuitsPerSourceIP: DefaultRelayCircuitsPerSourceIP,
		ReservationRatePerIP:   DefaultRelayReservationRate,
	}
}

// ConnWatermarks are the connection manager's low and high water marks: it
// starts trimming at 3/4 of connsMax and trims down to 5/8, so the resource
// manager's hard limit is never the first thing clients meet.
func ConnWatermarks(connsMax int) (low, high int) {
	return connsMax * 5 / 8, connsMax * 3 / 4
}

// ResourceLimits builds resource-manager limits for connsMax concurrent
// connections. The library defaults scale with memory and allow a few hundred
// inbound connections; a rendezvous daemon keeps one long-lived connection
// (and one watch stream) per client, so the system, transient, service and
// protocol scopes are raised to match.
func ResourceLimits(connsMax, fdLimit int, lim rendezvous.Limits) (rcmgr.ConcreteLimitConfig, int64, int) {
	memBudget := int64(memory.TotalMemory()) / 4
	if memBudget < 1<<30 {
		memBudget = 1 << 30
	}
	// Leave room for the store, the metrics listener and the logs. Without
	// an OS limit (Windows) size descriptors from the connection count.
	fds := fdLimit - 128
	if fdLimit <= 0 {
		fds = connsMax + connsMax/4
	}
	if fds < 256 {
		fds = 256
	}

	scaling := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&scaling)
	// The per-peer watch cap (-max-watches-per-peer) must be the server's,
	// not the resource manager's.
	rendezvous.SetResourceLimits(&scaling, lim)
	base := scaling.Scale(memBudget, fds)
	partial := base.ToPartialLimitConfig()

	streams := rcmgr.LimitVal(connsMax * 16)
	partial.System = rcmgr.ResourceLimits{
		Conns:           rcmgr.LimitVal(connsMax),
		ConnsInbound:    rcmgr.LimitVal(connsMax),
		ConnsOutbound:   rcmgr.LimitVal(max(connsMax/4, 1024)),
		Streams:         streams,
		StreamsInbound:  streams,
		StreamsOutbound: streams / 2,
		FD:              rcmgr.LimitVal(fds),
		Memory:          rcmgr.LimitVal64(memBudget),
	}
	// New connections are transient until their handshake completes: allow a
	// reconnect storm (every client returning after a daemon restart).
	partial.Transient = rcmgr.ResourceLimits{
		Conns:           rcmgr.LimitVal(max(connsMax/4, 512)),
		ConnsInbound:    rcmgr.LimitVal(max(connsMax/4, 512)),
		ConnsOutbound:   rcmgr.LimitVal(max(connsMax/8, 256)),
		Streams:         rcmgr.LimitVal(max(connsMax, 1024)),
		StreamsInbound:  rcmgr.LimitVal(max(connsMax, 1024)),
		StreamsOutbound: rcmgr.LimitVal(max(connsMax/2, 512)),
		FD:              rcmgr.LimitVal(max(fds/4, 64)),
		Memory:          rcmgr.LimitVal64(memBudget / 4),
	}
	allowlisted := partial.System
	partial.AllowlistedSystem = allowlisted
	partial.AllowlistedTransient = partial.Transient

	// Every service and protocol may be used by every client at once (a
	// watch stream per client, identify on every new connection, a circuit
	// per relayed pair).
	wide := func(r rcmgr.ResourceLimits) rcmgr.ResourceLimits {
		n := rcmgr.LimitVal(connsMax * 2)
		r.Streams, r.StreamsInbound, r.StreamsOutbound = max(r.Streams, n), max(r.StreamsInbound, n), max(r.StreamsOutbound, n)
		r.Memory = max(r.Memory, rcmgr.LimitVal64(memBudget/4))
		return r
	}
	partial.ServiceDefault = wide(partial.ServiceDefault)
	partial.ProtocolDefault = wide(partial.ProtocolDefault)
	for k, v := range partial.Service {
		partial.Service[k] = wide(v)
	}
	if partial.Protocol == nil {
		partial.Protocol = map[protocol.ID]rcmgr.ResourceLimits{}
	}
	for k, v := range partial.Protocol {
		partial.Protocol[k] = wide(v)
	}
	for _, p := range []protocol.ID{
		rendezvous.ProtocolID, rendezvous.WatchProtocolID,
		DHTProtocol, identify.ID, identify.IDPush, ping.ID, autonat.AutoNATProto,
	} {
		partial.Protocol[p] = wide(partial.Protocol[p])
	}
	// A peer normally holds one or two connections; the default of 8 stays,
	// but its streams must fit the server's per-peer watch cap.
	partial.PeerDefault.Streams = max(partial.PeerDefault.Streams, 1024)
	partial.PeerDefault.StreamsInbound = max(partial.PeerDefault.StreamsInbound, 1024)
	return partial.Build(base), memBudget, fds
}
