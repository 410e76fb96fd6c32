package main

import (
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/host/autonat"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	"github.com/libp2p/go-libp2p/p2p/protocol/identify"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	"github.com/libp2p/go-libp2p/x/rate"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/pbnjay/memory"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/p2p-messaging/p2p-messaging/rendezvous"
)

// dhtPrefix keeps the project's DHT apart from the public IPFS one.
const dhtPrefix protocol.ID = "/p2p-messaging"

// dhtProtocol is the DHT's wire protocol under dhtPrefix.
const dhtProtocol = dhtPrefix + "/kad/1.0.0"

// connWatermarks are the connection manager's low and high water marks: it
// starts trimming at 3/4 of -conns-max and trims down to 5/8, so the
// resource manager's hard limit is never the first thing clients meet.
func connWatermarks(connsMax int) (low, high int) {
	return connsMax * 5 / 8, connsMax * 3 / 4
}

// resourceLimits builds resource-manager limits for connsMax concurrent
// connections. The library defaults scale with memory and allow a few hundred
// inbound connections; a rendezvous daemon keeps one long-lived connection
// (and one watch stream) per client, so the system, transient, service and
// protocol scopes are raised to match.
func resourceLimits(connsMax, fdLimit int, lim rendezvous.Limits) (rcmgr.ConcreteLimitConfig, int64, int) {
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
		dhtProtocol, identify.ID, identify.IDPush, ping.ID, autonat.AutoNATProto,
	} {
		partial.Protocol[p] = wide(partial.Protocol[p])
	}
	// A peer normally holds one or two connections; the default of 8 stays,
	// but its streams must fit the server's per-peer watch cap.
	partial.PeerDefault.Streams = max(partial.PeerDefault.Streams, 1024)
	partial.PeerDefault.StreamsInbound = max(partial.PeerDefault.StreamsInbound, 1024)
	return partial.Build(base), memBudget, fds
}

// hostOptions assembles the libp2p options of the daemon host.
// The relay's ACL needs the host's network: call its attach once the host
// exists.
func hostOptions(c *config, key crypto.PrivKey, fdLimit int, reg prometheus.Registerer, log *slog.Logger) ([]libp2p.Option, *connmgr.BasicConnMgr, *relayACL, error) {
	limits, memBudget, fds := resourceLimits(c.connsMax, fdLimit, c.limits)
	perIP := []rcmgr.ConnLimitPerSubnet{{PrefixLength: 32, ConnCount: c.connsPerIP}}
	perIP6 := []rcmgr.ConnLimitPerSubnet{
		{PrefixLength: 56, ConnCount: c.connsPerIP},
		{PrefixLength: 48, ConnCount: c.connsPerIP * 8},
	}
	// New connections per second from one address: enough for a whole
	// office behind one NAT coming back at once, not a flood.
	burst := 2 * c.connsPerIP
	rps := math.Max(1, float64(c.connsPerIP)/16)
	connRate := &rate.Limiter{
		NetworkPrefixLimits: []rate.PrefixLimit{
			{Prefix: netip.MustParsePrefix("127.0.0.0/8"), Limit: rate.Limit{}},
			{Prefix: netip.MustParsePrefix("::1/128"), Limit: rate.Limit{}},
		},
		SubnetRateLimiter: rate.SubnetLimiter{
			IPv4SubnetLimits: []rate.SubnetLimit{{PrefixLength: 32, Limit: rate.Limit{RPS: rps, Burst: burst}}},
			IPv6SubnetLimits: []rate.SubnetLimit{
				{PrefixLength: 56, Limit: rate.Limit{RPS: rps, Burst: burst}},
				{PrefixLength: 48, Limit: rate.Limit{RPS: rps * 4, Burst: burst * 4}},
			},
			GracePeriod: time.Minute,
		},
	}
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(limits),
		rcmgr.WithLimitPerSubnet(perIP, perIP6),
		rcmgr.WithConnRateLimiters(connRate),
	)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("resource manager: %w", err)
	}
	low, high := connWatermarks(c.connsMax)
	cm, err := connmgr.NewConnManager(low, high, connmgr.WithGracePeriod(time.Minute))
	if err != nil {
		_ = rm.Close()
		return nil, nil, nil, fmt.Errorf("connection manager: %w", err)
	}
	log.Info("resource limits",
		"conns_max", c.connsMax, "conns_per_ip", c.connsPerIP,
		"conn_low_water", low, "conn_high_water", high,
		"fd_limit", fdLimit, "fd_budget", fds, "memory_budget_mib", memBudget>>20)
	if fdLimit > 0 && fdLimit < c.connsMax {
		log.Warn("open file limit is below -conns-max; TCP clients beyond it will be refused",
			"fd_limit", fdLimit, "conns_max", c.connsMax)
	}

	opts := []libp2p.Option{
		libp2p.Identity(key),
		libp2p.ListenAddrs(c.listen...),
		libp2p.NoTransports,
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Transport(quic.NewTransport),
		libp2p.DefaultSecurity,
		libp2p.DefaultMuxers,
		libp2p.ResourceManager(rm),
		libp2p.ConnectionManager(cm),
		libp2p.PrometheusRegisterer(reg),
		libp2p.EnableNATService(),
		libp2p.AutoNATServiceRateLimit(c.autonatRate, c.autonatPerPeer, time.Minute),
		libp2p.EnableAutoNATv2(),
		libp2p.Ping(true),
		libp2p.UserAgent("p2p-messaging-rendezvous"),
	}
	if c.forcePublic {
		opts = append(opts, libp2p.ForceReachabilityPublic())
	}
	if len(c.announce) > 0 {
		announce := c.announce
		opts = append(opts, libp2p.AddrsFactory(func([]ma.Multiaddr) []ma.Multiaddr {
			return append([]ma.Multiaddr(nil), announce...)
		}))
	}
	// The daemon is a relay, never a relay client: no /p2p-circuit
	// transport or listen address.
	opts = append(opts, libp2p.DisableRelay())
	var acl *relayACL
	if c.relay.enabled {
		if acl, err = newRelayACL(c, log, reg); err != nil {
			_ = cm.Close()
			_ = rm.Close()
			return nil, nil, nil, err
		}
		opts = append(opts, libp2p.EnableRelayService(relayOptions(c, acl)...))
	}
	return opts, cm, acl, nil
}

// reachabilityName is for logs.
func reachabilityName(r network.Reachability) string {
	switch r {
	case network.ReachabilityPublic:
		return "public"
	case network.ReachabilityPrivate:
		return "private"
	}
	return "unknown"
}
