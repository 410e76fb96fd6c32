package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/p2p-messaging/p2p-messaging/internal/addrfile"
	"github.com/p2p-messaging/p2p-messaging/internal/backoff"
	"github.com/p2p-messaging/p2p-messaging/internal/dhtstore"
	"github.com/p2p-messaging/p2p-messaging/internal/identity"
	"github.com/p2p-messaging/p2p-messaging/internal/logging"
	"github.com/p2p-messaging/p2p-messaging/internal/paths"
	"github.com/p2p-messaging/p2p-messaging/internal/serverhost"
	"github.com/p2p-messaging/p2p-messaging/rendezvous"
	"github.com/p2p-messaging/p2p-messaging/rendezvous/mailbox"
)

// DHTDirName is the DHT server's record store (pebble) inside the data
// directory.
const DHTDirName = "dht"

// Bootstrap reconnection backoff.
const (
	bootstrapMinBackoff  = time.Second
	bootstrapMaxBackoff  = time.Minute
	bootstrapDialTimeout = 15 * time.Second
	bootstrapProtectTag  = "rendezvous-bootstrap"
)

// daemon is a running rendezvous daemon.
type daemon struct {
	cfg      *config
	log      *slog.Logger
	host     host.Host
	cm       *connmgr.BasicConnMgr
	kad      *dht.IpfsDHT
	dhtStore *dhtstore.Store
	relayACL *serverhost.RelayACL // nil without -relay
	server   *rendezvous.Server
	mailbox  *mailbox.Server // nil with -mailbox=false
	httpSrv  *http.Server
	httpDone chan struct{}
	addrFile string
	// wroteAddrs is set once this daemon wrote the addrs file, so a daemon
	// that fails to start never removes the file of one already running.
	wroteAddrs bool

	healthy atomic.Bool
	cancel  context.CancelFunc // stops the background goroutines
	wg      sync.WaitGroup
}

// startDaemon builds and starts everything; on error it undoes what it
// started. ctx only bounds startup; shutdown is explicit.
func startDaemon(ctx context.Context, c *config, stderr io.Writer) (_ *daemon, err error) {
	log, err := logging.New(stderr, c.logLevel, c.logFormat)
	if err != nil {
		return nil, err
	}
	d := &daemon{cfg: c, log: log, addrFile: filepath.Join(c.dataDir, paths.AddrFileName)}
	bg, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	var metricsLn net.Listener
	defer func() {
		if err != nil {
			if metricsLn != nil && d.httpSrv == nil {
				_ = metricsLn.Close()
			}
			d.close()
		}
	}()

	if err := os.MkdirAll(c.dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	key, created, err := identity.LoadOrCreate(filepath.Join(c.dataDir, identity.FileName))
	if err != nil {
		return nil, err
	}
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("derive peer id: %w", err)
	}
	log.Info("identity", "peer", id, "created", created, "key", filepath.Join(c.dataDir, identity.FileName))

	fdLimit, err := raiseFDLimit()
	if err != nil {
		log.Warn("cannot raise the open file limit", "err", err)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)

	opts, cm, acl, err := hostOptions(c, key, fdLimit, reg, log)
	if err != nil {
		return nil, err
	}
	d.cm = cm
	h, err := libp2p.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("start libp2p host: %w", err)
	}
	d.host = h
	if acl != nil {
		acl.Attach(h.Network())
		d.relayACL = acl
	}
	if n := len(h.Network().ListenAddresses()); n < len(c.listen) {
		log.Warn("some listen addresses failed", "requested", len(c.listen), "listening", n)
	}

	// The metrics listener opens before anything announces readiness, so a
	// bad -metrics address fails the start.
	if c.metrics != "" {
		metricsLn, err = net.Listen("tcp", c.metrics)
		if err != nil {
			return nil, fmt.Errorf("metrics listener: %w", err)
		}
	}

	bootstrap := slices.DeleteFunc(slices.Clone(c.bootstrap), func(ai peer.AddrInfo) bool { return ai.ID == id })
	// Provider and value records go to a bounded pebble store on disk, not
	// the library's unbounded in-memory map.
	dhtDir := filepath.Join(c.dataDir, DHTDirName)
	if d.dhtStore, err = dhtstore.Open(dhtDir, c.dht); err != nil {
		return nil, fmt.Errorf("open dht store in %s: is another daemon using this data dir? %w", dhtDir, err)
	}
	d.kad, err = dht.New(h,
		dht.Mode(dht.ModeServer),
		dht.Datastore(d.dhtStore),
		dht.ProtocolPrefix(dhtPrefix),
		dht.BootstrapPeers(bootstrap...),
	)
	if err != nil {
		return nil, fmt.Errorf("start dht: %w", err)
	}
	if err := d.kad.Bootstrap(ctx); err != nil {
		return nil, fmt.Errorf("bootstrap dht: %w", err)
	}

	d.server, err = rendezvous.NewServer(h,
		rendezvous.WithDataDir(c.dataDir),
		rendezvous.WithLogger(log),
		rendezvous.WithRegisterer(reg),
		rendezvous.WithLimits(c.limits),
		rendezvous.WithExclusivePrefix(c.exclusivePrefix),
		rendezvous.WithDisconnectGrace(c.disconnectGrace),
	)
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("start rendezvous server: store in %s is locked: is another daemon using this data dir? %w", c.dataDir, err)
		}
		return nil, fmt.Errorf("start rendezvous server: %w", err)
	}

	if err := d.startMailbox(reg, log); err != nil {
		return nil, err
	}

	if err := d.registerMetrics(reg, bootstrap); err != nil {
		return nil, err
	}

	if err := d.watchReachability(bg); err != nil {
		return nil, err
	}
	if !c.forcePublic && c.relay.enabled {
		log.Warn("relay service starts only once AutoNAT confirms public reachability; on a public IP use -force-public")
	}

	if err := d.connectBootstrap(bg, bootstrap); err != nil {
		return nil, err
	}

	if metricsLn != nil {
		d.serveHTTP(metricsLn, reg)
	}

	addrs := serverhost.LocalAddrs(h)
	for _, a := range addrs {
		log.Info("listening", "addr", a.String())
	}
	if len(c.announce) > 0 {
		for _, a := range h.Addrs() {
			log.Info("announcing", "addr", a.Encapsulate(ma.StringCast("/p2p/"+id.String())).String())
		}
	}
	if err := addrfile.Write(d.addrFile, addrs); err != nil {
		return nil, err
	}
	d.wroteAddrs = true
	d.healthy.Store(true)
	log.Info("ready", "peer", id.String(), "addrs_file", d.addrFile, "bootstrap", len(bootstrap),
		"force_public", c.forcePublic, "relay", c.relay.enabled)
	return d, nil
}

// shutdown stops the daemon gracefully: unhealthy first, then the
// rendezvous server (flushing the store), the DHT, the host and the HTTP
// server.
func (d *daemon) shutdown() error {
	d.log.Info("shutting down")
	d.healthy.Store(false)
	err := d.close()
	if err == nil {
		d.log.Info("stopped")
	} else {
		d.log.Error("shutdown", "err", err)
	}
	return err
}

// close releases everything that was started; safe on a partial daemon.
func (d *daemon) close() error {
	var errs []error
	d.cancel()
	if d.server != nil {
		if err := d.server.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close rendezvous server: %w", err))
		}
	}
	if err := d.closeMailbox(); err != nil {
		errs = append(errs, err)
	}
	if d.kad != nil {
		if err := d.kad.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close dht: %w", err))
		}
	}
	if d.host != nil {
		if err := d.host.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close host: %w", err))
		}
	} else if d.cm != nil {
		_ = d.cm.Close()
	}
	// After the DHT and the host: no handler may reach the store once it
	// is closed.
	if d.dhtStore != nil {
		if err := d.dhtStore.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close dht store: %w", err))
		}
	}
	d.wg.Wait()
	if d.httpSrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		if err := d.httpSrv.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("close metrics server: %w", err))
		}
		cancel()
		<-d.httpDone
	}
	if d.wroteAddrs {
		if err := os.Remove(d.addrFile); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove addrs file: %w", err))
		}
	}
	return errors.Join(errs...)
}

// connectBootstrap keeps a connection to every bootstrap daemon. One
// goroutine drains connectedness events (a subscriber that stops reading
// would stall the event bus) and wakes the dialer of the affected peer.
func (d *daemon) connectBootstrap(ctx context.Context, bootstrap []peer.AddrInfo) error {
	if len(bootstrap) == 0 {
		return nil
	}
	sub, err := d.host.EventBus().Subscribe(new(event.EvtPeerConnectednessChanged))
	if err != nil {
		return fmt.Errorf("subscribe to connectedness events: %w", err)
	}
	wake := make(map[peer.ID]chan struct{}, len(bootstrap))
	for _, ai := range bootstrap {
		wake[ai.ID] = make(chan struct{}, 1)
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		defer sub.Close()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-sub.Out():
				if !ok {
					return
				}
				if ch, ok := wake[e.(event.EvtPeerConnectednessChanged).Peer]; ok {
					select {
					case ch <- struct{}{}:
					default:
					}
				}
			}
		}
	}()
	for _, ai := range bootstrap {
		d.cm.Protect(ai.ID, bootstrapProtectTag)
		d.wg.Add(1)
		go d.keepConnected(ctx, ai, wake[ai.ID])
	}
	return nil
}

// keepConnected dials a bootstrap daemon and redials with the project's
// backoff (internal/backoff) whenever the connection is lost.
func (d *daemon) keepConnected(ctx context.Context, ai peer.AddrInfo, wake <-chan struct{}) {
	defer d.wg.Done()
	log := d.log.With("peer", ai.ID)
	retry := backoff.New(bootstrapMinBackoff, bootstrapMaxBackoff)
	for {
		if d.host.Network().Connectedness(ai.ID) == network.Connected {
			// Wait until the connection goes away.
			select {
			case <-ctx.Done():
				return
			case <-wake:
			}
			continue
		}
		dctx, cancel := context.WithTimeout(ctx, bootstrapDialTimeout)
		// Our own backoff paces the redials; the swarm's dial backoff
		// (seconds after any failure) would only delay a reconnect to a
		// daemon that just restarted. Direct dials only: never via a relay.
		dctx = network.WithForceDirectDial(dctx, "rendezvous bootstrap")
		err := d.host.Connect(dctx, ai)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			log.Info("connected to bootstrap daemon")
			retry.Reset()
			// Seed the DHT routing table from the new neighbour; the
			// result channel is buffered, nobody needs to read it.
			_ = d.kad.RefreshRoutingTable()
			continue
		}
		wait := retry.Next()
		log.Debug("bootstrap dial failed", "err", err, "retry_in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-wake: // it dialled us, or something changed
			t.Stop()
		}
	}
}

// watchReachability logs reachability changes (the relay service follows
// them).
func (d *daemon) watchReachability(ctx context.Context) error {
	sub, err := d.host.EventBus().Subscribe(new(event.EvtLocalReachabilityChanged))
	if err != nil {
		return fmt.Errorf("subscribe to reachability: %w", err)
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		defer sub.Close()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-sub.Out():
				if !ok {
					return
				}
				r := e.(event.EvtLocalReachabilityChanged).Reachability
				d.log.Info("reachability", "reachability", reachabilityName(r),
					"relay_service", d.cfg.relay.enabled && r == network.ReachabilityPublic)
			}
		}
	}()
	return nil
}

// registerMetrics adds the daemon's own gauges.
func (d *daemon) registerMetrics(reg prometheus.Registerer, bootstrap []peer.AddrInfo) error {
	net := d.host.Network()
	cs := []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "rendezvous_connected_peers",
			Help: "Peers with at least one open connection to the daemon.",
		}, func() float64 { return float64(len(net.Peers())) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "rendezvous_open_connections",
			Help: "Open connections to the daemon.",
		}, func() float64 { return float64(len(net.Conns())) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "rendezvous_dht_routing_table_peers",
			Help: "Peers in the DHT routing table.",
		}, func() float64 { return float64(d.kad.RoutingTable().Size()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "rendezvous_dht_provider_records",
			Help: "DHT provider records stored (bounded by -dht-max-provider-records).",
		}, func() float64 { return float64(d.dhtStore.Stats().Providers) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "rendezvous_dht_records_refused_total",
			Help: "DHT provider and value records dropped at a cap.",
		}, func() float64 { return float64(d.dhtStore.Stats().Refused) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "rendezvous_bootstrap_peers_connected",
			Help: "Bootstrap daemons (-bootstrap) currently connected.",
		}, func() float64 {
			n := 0
			for _, ai := range bootstrap {
				if net.Connectedness(ai.ID) == network.Connected {
					n++
				}
			}
			return float64(n)
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "rendezvous_healthy",
			Help: "1 while the daemon serves, 0 while it shuts down.",
		}, func() float64 {
			if d.healthy.Load() {
				return 1
			}
			return 0
		}),
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register daemon metrics: %w", err)
		}
	}
	return nil
}
