package main

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/p2p-messaging/p2p-messaging/internal/cli"
	"github.com/p2p-messaging/p2p-messaging/internal/dhtstore"
	"github.com/p2p-messaging/p2p-messaging/internal/logging"
	"github.com/p2p-messaging/p2p-messaging/internal/maddrs"
	"github.com/p2p-messaging/p2p-messaging/internal/paths"
	"github.com/p2p-messaging/p2p-messaging/internal/serverhost"
	"github.com/p2p-messaging/p2p-messaging/rendezvous"
	"github.com/p2p-messaging/p2p-messaging/rendezvous/mailbox"
)

// envPrefix prefixes the environment variable of every flag (internal/cli):
// -max-ttl is RENDEZVOUS_MAX_TTL.
const envPrefix = "RENDEZVOUS_"

// userNamespacePrefix is the chat's user-name prefix (chat.UserNamespacePrefix):
// the daemon serves the chat's naming scheme and makes it exclusive by default.
const userNamespacePrefix = "p2p-messaging/user/"

// defaultListen is where a daemon started without -listen accepts peers.
var defaultListen = []string{
	"/ip4/0.0.0.0/tcp/4001",
	"/ip4/0.0.0.0/udp/4001/quic-v1",
	"/ip6/::/tcp/4001",
	"/ip6/::/udp/4001/quic-v1",
}

// Defaults sized for a daemon serving at least 10,000 chat clients.
const (
	defaultConnsMax   = 16384
	defaultConnsPerIP = 64

	// The relay's defaults are serverhost.DefaultRelay*, shared with a
	// chat's embedded server.

	// The library's AutoNAT service answers 30 dial-back requests a minute,
	// far too few for thousands of clients checking their reachability.
	defaultAutonatRate    = 600
	defaultAutonatPerPeer = 3

	defaultDisconnectGrace = 2 * time.Second
	shutdownTimeout        = 10 * time.Second
)

// config is the daemon's parsed and validated configuration.
type config struct {
	listen    []ma.Multiaddr
	announce  []ma.Multiaddr
	dataDir   string
	bootstrap []peer.AddrInfo
	metrics   string // host:port, "" = off

	forcePublic bool
	logLevel    string
	logFormat   string

	limits          rendezvous.Limits
	exclusivePrefix string
	disconnectGrace time.Duration

	relay relayConfig

	connsMax   int
	connsPerIP int

	autonatRate    int // AutoNAT dial-backs per minute, all peers
	autonatPerPeer int // AutoNAT dial-backs per minute, one peer

	dht dhtstore.Limits // what the DHT server keeps on disk

	mailbox       bool           // serve the sealed mailbox (mailbox.go)
	mailboxLimits mailbox.Limits // its quotas
}

type relayConfig struct {
	enabled               bool
	infinite              bool
	maxReservations       int
	maxCircuits           int
	maxReservationsPerIP  int
	maxReservationsPerASN int
	reservationTTL        time.Duration
	limitDuration         time.Duration
	limitData             int64

	maxCircuitsPerSource   int // circuits one source peer may have to one destination
	maxCircuitsPerSourceIP int // circuits one source address may have to one destination
	reservationRatePerIP   int // new reservations a minute from one address
}

// byteSize is a flag value in bytes that also accepts KiB/MiB/GiB (and
// kB/MB/GB) suffixes.
type byteSize int64

func (b *byteSize) String() string {
	n := int64(*b)
	for _, u := range []struct {
		suffix string
		size   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.size && n%u.size == 0 {
			return strconv.FormatInt(n/u.size, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}

func (b *byteSize) Set(s string) error {
	v, err := parseByteSize(s)
	if err != nil {
		return err
	}
	*b = byteSize(v)
	return nil
}

func parseByteSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   int64
	}{
		{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
		{"kB", 1000}, {"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000},
		{"B", 1},
	}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("invalid size %q (want bytes, optionally with KiB, MiB or GiB)", s)
	}
	return n * mult, nil
}

// parseConfig reads flags from args and, for flags not given on the command
// line, from the environment (flag > env > default). getenv is os.LookupEnv
// outside tests.
func parseConfig(args []string, getenv func(string) (string, bool), stderr io.Writer) (*config, error) {
	fs := cli.New("rendezvous", envPrefix, stderr)

	def := rendezvous.DefaultLimits()
	var (
		listen    = fs.String("listen", strings.Join(defaultListen, ","), "comma-separated multiaddrs to listen on")
		announce  = fs.String("announce", "", "comma-separated multiaddrs to announce instead of the listen addresses (e.g. the public address behind a port forward)")
		dataDir   = fs.String("data-dir", "", "directory for the identity key, the registration store and the addrs file (default: "+defaultDataDirHelp()+")")
		bootstrap = fs.String("bootstrap", "", "comma-separated /p2p multiaddrs of other rendezvous daemons (DHT bootstrap); this daemon's own address is ignored")
		metrics   = fs.String("metrics", "", "host:port to serve Prometheus /metrics and /healthz on (empty: off)")

		forcePublic = fs.Bool("force-public", false, "consider this host publicly reachable at once; the relay service only starts when the host is public, so a daemon on a public IP wants this")
		logLevel    = fs.String("log-level", "info", "log level: debug, info, warn or error")
		logFormat   = fs.String("log-format", "text", "log format: text or json")

		defaultTTL   = fs.Duration("default-ttl", def.DefaultTTL, "registration TTL when a REGISTER carries none")
		minTTL       = fs.Duration("min-ttl", def.MinTTL, "shortest registration TTL accepted (whole seconds)")
		maxTTL       = fs.Duration("max-ttl", def.MaxTTL, "longest registration TTL accepted (whole seconds)")
		maxRegs      = fs.Int("max-registrations", def.MaxRegistrations, "total registrations held; beyond it REGISTER answers E_UNAVAILABLE")
		maxRegsPeer  = fs.Int("max-registrations-per-peer", def.MaxRegistrationsPerPeer, "registrations one peer may hold")
		maxDiscover  = fs.Int("max-discover-limit", def.MaxDiscoverLimit, "most registrations in one DISCOVER response (at most 1000)")
		rate         = fs.Float64("rate", def.RequestRate, "per-peer request rate (requests per second, token bucket)")
		burst        = fs.Int("burst", def.RequestBurst, "per-peer request burst (token bucket size)")
		streamTO     = fs.Duration("stream-timeout", def.StreamTimeout, "deadline for each request on a rendezvous stream")
		maxWatches   = fs.Int("max-watches", def.MaxWatches, "total watch subscriptions")
		maxWatchPeer = fs.Int("max-watches-per-peer", def.MaxWatchesPerPeer, "watch subscriptions one peer may hold")
		exclusive    = fs.String("exclusive-prefix", userNamespacePrefix, "namespace prefix under which one peer at a time may register (empty: none)")
		grace        = fs.Duration("disconnect-grace", defaultDisconnectGrace, "unregister a peer's registrations this long after its last connection closes (negative: never)")

		leaseDur      = fs.Duration("name-lease", def.LeaseDuration, "how long a name under -exclusive-prefix stays bound to the key that last registered it (its owner is away meanwhile)")
		maxNames      = fs.Int("max-names", def.MaxNames, "names (leases) held in total; a new claim beyond it is E_UNAVAILABLE")
		namesPerPeer  = fs.Int("max-names-per-peer", def.MaxNamesPerPeer, "names one key may hold")
		claimDiff     = fs.Int("claim-difficulty", def.ClaimDifficulty, "proof of work of a new name, in leading zero bits of its claim hash (0: none; 19 costs about 100 ms)")
		claimBurst    = fs.Int("claim-burst", def.ClaimBurst, "new names claimed at once from one IPv4 address or IPv6 /56")
		claimInterval = fs.Duration("claim-interval", def.ClaimInterval, "then one new name per this interval from one address")
		holderShare   = fs.Float64("holder-share", def.HolderShare, "share of -max-registrations only name holders may fill, so strangers cannot lock them out")
		holderQuota   = fs.Int("holder-quota", def.HolderQuota, "registrations (its names not counted) one name holder may have in that share")
		recordAddrs   = fs.Int("max-record-addrs", def.MaxRecordAddrs, "addresses in one signed peer record")

		relayOn          = fs.Bool("relay", true, "serve circuit relay v2 (starts once the host is publicly reachable)")
		relayInfinite    = fs.Bool("relay-infinite", false, "no duration or data limit on relayed connections (they are then not marked limited)")
		relayMaxRes      = fs.Int("relay-max-reservations", serverhost.DefaultRelayMaxReservations, "relay reservations held at once")
		relayMaxCircuits = fs.Int("relay-max-circuits", serverhost.DefaultRelayMaxCircuits, "relayed connections open at once per peer")
		relayPerIP       = fs.Int("relay-max-reservations-per-ip", serverhost.DefaultRelayMaxReservationsPerIP, "relay reservations from one IP address (many peers share one NAT)")
		relayPerASN      = fs.Int("relay-max-reservations-per-asn", serverhost.DefaultRelayMaxReservations, "relay reservations from one autonomous system")
		relayTTL         = fs.Duration("relay-reservation-ttl", serverhost.DefaultRelayReservationTTL, "lifetime of a relay reservation (clients refresh it)")
		relayDuration    = fs.Duration("relay-limit-duration", serverhost.DefaultRelayLimitDuration, "longest life of one relayed connection")
		relayData        = byteSize(serverhost.DefaultRelayLimitData)
		relayPerSource   = fs.Int("relay-max-circuits-per-source", serverhost.DefaultRelayCircuitsPerSource, "relayed connections one source peer may have open to one destination; beyond it CONNECT is refused (PERMISSION_DENIED)")
		relayPerSourceIP = fs.Int("relay-max-circuits-per-source-ip", serverhost.DefaultRelayCircuitsPerSourceIP, "relayed connections one source IPv4 address or IPv6 /56 may have open to one destination, so a few identities cannot take a user's -relay-max-circuits")
		relayRsvRate     = fs.Int("relay-reservation-rate-per-ip", serverhost.DefaultRelayReservationRate, "new relay reservations per minute from one IPv4 address or IPv6 /56 (bursting to the same number); renewals are not limited")

		connsMax       = fs.Int("conns-max", defaultConnsMax, "most concurrent connections (resource manager); the connection manager trims from 3/4 of it down to 5/8")
		autonatRate    = fs.Int("autonat-rate", defaultAutonatRate, "AutoNAT dial-back requests served per minute (all peers); 0: unlimited")
		autonatPerPeer = fs.Int("autonat-rate-per-peer", defaultAutonatPerPeer, "AutoNAT dial-back requests served per minute for one peer")
		connsPerIP     = fs.Int("conns-per-ip", defaultConnsPerIP, "most concurrent connections from one IPv4 address or IPv6 /56 (loopback is unlimited)")

		dhtProviders        = fs.Int("dht-max-provider-records", dhtstore.DefaultMaxProviders, "DHT provider records (ADD_PROVIDER) kept on disk in total; beyond it new records are dropped until old ones expire (48 h)")
		dhtProvidersPerPeer = fs.Int("dht-max-provider-records-per-peer", dhtstore.DefaultMaxProvidersPerPeer, "DHT provider records kept for one providing peer; refreshes of its stored records are always accepted")
		dhtValues           = fs.Int("dht-max-value-records", dhtstore.DefaultMaxValues, "DHT value records (PUT_VALUE: /pk, /ipns) kept on disk in total")
	)
	mbox := mailboxFlags(fs)
	fs.Var(&relayData, "relay-limit-data", "most data relayed per direction on one relayed connection, a `size` in bytes or with KiB, MiB or GiB")

	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: rendezvous [flags]\n\n"+
			"Rendezvous daemon for p2p-messaging: rendezvous server, circuit relay v2,\n"+
			"AutoNAT and a Kademlia DHT server. Every flag can also be set through the\n"+
			"environment variable shown in brackets; a flag on the command line wins.\n\n")
		fs.PrintDefaults()
	}

	if err := fs.Parse(args, getenv); err != nil {
		return nil, err
	}

	c := &config{
		metrics:         strings.TrimSpace(*metrics),
		forcePublic:     *forcePublic,
		exclusivePrefix: *exclusive,
		disconnectGrace: *grace,
		connsMax:        *connsMax,
		connsPerIP:      *connsPerIP,
		autonatRate:     *autonatRate,
		autonatPerPeer:  *autonatPerPeer,
		dht: dhtstore.Limits{
			MaxProviders:        *dhtProviders,
			MaxProvidersPerPeer: *dhtProvidersPerPeer,
			MaxValues:           *dhtValues,
		},
		relay: relayConfig{
			enabled:               *relayOn,
			infinite:              *relayInfinite,
			maxReservations:       *relayMaxRes,
			maxCircuits:           *relayMaxCircuits,
			maxReservationsPerIP:  *relayPerIP,
			maxReservationsPerASN: *relayPerASN,
			reservationTTL:        *relayTTL,
			limitDuration:         *relayDuration,
			limitData:             int64(relayData),

			maxCircuitsPerSource:   *relayPerSource,
			maxCircuitsPerSourceIP: *relayPerSourceIP,
			reservationRatePerIP:   *relayRsvRate,
		},
	}
	var err error
	if _, err = logging.ParseLevel(*logLevel); err != nil {
		return nil, fmt.Errorf("-log-level: %w", err)
	}
	c.logLevel = *logLevel
	if c.logFormat, err = logging.ParseFormat(*logFormat); err != nil {
		return nil, fmt.Errorf("-log-format: %w", err)
	}
	if c.listen, err = maddrs.Parse(*listen); err != nil {
		return nil, fmt.Errorf("-listen: %w", err)
	}
	if len(c.listen) == 0 {
		return nil, errors.New("-listen: no address given")
	}
	for _, a := range c.listen {
		if _, err := a.ValueForProtocol(ma.P_P2P); err == nil {
			return nil, fmt.Errorf("-listen: %s: a listen address has no /p2p component", a)
		}
	}
	if c.announce, err = maddrs.Parse(*announce); err != nil {
		return nil, fmt.Errorf("-announce: %w", err)
	}
	if c.bootstrap, err = parseBootstrap(*bootstrap); err != nil {
		return nil, fmt.Errorf("-bootstrap: %w", err)
	}
	if c.dataDir = strings.TrimSpace(*dataDir); c.dataDir == "" {
		if c.dataDir, err = paths.DaemonDataDir(); err != nil {
			return nil, fmt.Errorf("default data dir: %w (set -data-dir)", err)
		}
	}
	if c.dataDir, err = filepath.Abs(c.dataDir); err != nil {
		return nil, fmt.Errorf("-data-dir: %w", err)
	}

	l := def
	l.DefaultTTL, l.MinTTL, l.MaxTTL = *defaultTTL, *minTTL, *maxTTL
	l.MaxRegistrations, l.MaxRegistrationsPerPeer = *maxRegs, *maxRegsPeer
	l.MaxDiscoverLimit = *maxDiscover
	l.RequestRate, l.RequestBurst = *rate, *burst
	l.StreamTimeout = *streamTO
	l.MaxWatches, l.MaxWatchesPerPeer = *maxWatches, *maxWatchPeer
	l.LeaseDuration, l.MaxNames, l.MaxNamesPerPeer = *leaseDur, *maxNames, *namesPerPeer
	l.ClaimDifficulty, l.ClaimBurst, l.ClaimInterval = *claimDiff, *claimBurst, *claimInterval
	l.HolderShare, l.HolderQuota = *holderShare, *holderQuota
	l.MaxRecordAddrs = *recordAddrs
	c.limits = l
	c.mailbox, c.mailboxLimits = mbox.config()

	if err := c.validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// validate catches bad values before anything starts. Limits that belong to
// a library (rendezvous.Limits, dhtstore.Limits) are checked by that
// library's Validate, the same check its constructor makes.
func (c *config) validate() error {
	var errs []error
	positive := func(name string, v int64) {
		if v <= 0 {
			errs = append(errs, fmt.Errorf("-%s must be positive, got %d", name, v))
		}
	}
	positiveDur := func(name string, d time.Duration) {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("-%s must be positive, got %v", name, d))
		}
	}
	// The rendezvous flags (-default-ttl … -max-watches-per-peer) are the
	// server's Limits: the library checks them.
	if err := c.limits.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("rendezvous limits: %w", err))
	}
	if len(c.exclusivePrefix) > rendezvous.MaxNamespaceLen {
		errs = append(errs, fmt.Errorf("-exclusive-prefix is longer than %d bytes", rendezvous.MaxNamespaceLen))
	}
	r := c.relay
	positive("relay-max-reservations", int64(r.maxReservations))
	positive("relay-max-circuits", int64(r.maxCircuits))
	positive("relay-max-reservations-per-ip", int64(r.maxReservationsPerIP))
	positive("relay-max-reservations-per-asn", int64(r.maxReservationsPerASN))
	positiveDur("relay-reservation-ttl", r.reservationTTL)
	positiveDur("relay-limit-duration", r.limitDuration)
	positive("relay-limit-data", r.limitData)
	positive("relay-max-circuits-per-source", int64(r.maxCircuitsPerSource))
	positive("relay-max-circuits-per-source-ip", int64(r.maxCircuitsPerSourceIP))
	positive("relay-reservation-rate-per-ip", int64(r.reservationRatePerIP))
	if c.connsMax < 64 {
		errs = append(errs, fmt.Errorf("-conns-max must be at least 64, got %d", c.connsMax))
	}
	positive("conns-per-ip", int64(c.connsPerIP))
	if c.autonatRate < 0 {
		errs = append(errs, fmt.Errorf("-autonat-rate must not be negative, got %d", c.autonatRate))
	}
	positive("autonat-rate-per-peer", int64(c.autonatPerPeer))
	// -dht-max-* are the DHT store's Limits, checked by the store.
	if err := c.dht.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("dht limits: %w", err))
	}
	if err := c.mailboxLimits.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("mailbox limits: %w", err))
	}
	return errors.Join(errs...)
}

// parseBootstrap parses /p2p multiaddrs and merges the addresses of one
// peer, sorted by peer ID.
func parseBootstrap(s string) ([]peer.AddrInfo, error) {
	infos, err := maddrs.ParsePeers(s)
	if err != nil {
		return nil, err
	}
	sort.Slice(infos, func(i, j int) bool { return infos[i].ID < infos[j].ID })
	return infos, nil
}

func defaultDataDirHelp() string {
	d, err := paths.DaemonDataDir()
	if err != nil {
		return "the user config dir's p2p-messaging/rendezvous"
	}
	return d
}

// shared is the relay part of the configuration in the form the shared
// host construction (internal/serverhost) takes.
func (r relayConfig) shared() serverhost.RelayConfig {
	return serverhost.RelayConfig{
		Infinite:               r.infinite,
		MaxReservations:        r.maxReservations,
		MaxCircuits:            r.maxCircuits,
		MaxReservationsPerIP:   r.maxReservationsPerIP,
		MaxReservationsPerASN:  r.maxReservationsPerASN,
		ReservationTTL:         r.reservationTTL,
		LimitDuration:          r.limitDuration,
		LimitData:              r.limitData,
		MaxCircuitsPerSource:   r.maxCircuitsPerSource,
		MaxCircuitsPerSourceIP: r.maxCircuitsPerSourceIP,
		ReservationRatePerIP:   r.reservationRatePerIP,
	}
}
