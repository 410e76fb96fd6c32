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
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	"github.com/libp2p/go-libp2p/x/rate"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/p2p-messaging/p2p-messaging/internal/serverhost"
)

// dhtPrefix keeps the project's DHT apart from the public IPFS one.
const dhtPrefix = serverhost.DHTPrefix

// dhtProtocol is the DHT's wire protocol under dhtPrefix.
const dhtProtocol = serverhost.DHTProtocol

// hostOptions assembles the libp2p options of the daemon host.
// The relay's ACL needs the host's network: call its attach once the host
// exists.
func hostOptions(c *config, key crypto.PrivKey, fdLimit int, reg prometheus.Registerer, log *slog.Logger) ([]libp2p.Option, *connmgr.BasicConnMgr, *serverhost.RelayACL, error) {
	limits, memBudget, fds := serverhost.ResourceLimits(c.connsMax, fdLimit, c.limits)
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
	low, high := serverhost.ConnWatermarks(c.connsMax)
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
	var acl *serverhost.RelayACL
	if c.relay.enabled {
		if acl, err = serverhost.NewRelayACL(c.relay.shared(), log, reg); err != nil {
			_ = cm.Close()
			_ = rm.Close()
			return nil, nil, nil, err
		}
		opts = append(opts, libp2p.EnableRelayService(serverhost.RelayOptions(c.relay.shared(), acl, len(c.announce) > 0)...))
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
