package chat

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	noise "github.com/libp2p/go-libp2p/p2p/security/noise"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	"github.com/multiformats/go-multiaddr"

	"github.com/p2p-messaging/p2p-messaging/internal/addrfile"
	"github.com/p2p-messaging/p2p-messaging/internal/dhtstore"
	"github.com/p2p-messaging/p2p-messaging/internal/identity"
	"github.com/p2p-messaging/p2p-messaging/internal/serverhost"
	"github.com/p2p-messaging/p2p-messaging/rendezvous"
)

// This file is the embedded server: the rendezvous service a chat runs for
// itself and its neighbours when no daemon is reachable (and, with -serve,
// always, with a circuit relay v2 and the DHT in server mode). It is the
// daemon's service on a libp2p host of its own inside the chat process: the
// same rendezvous.Server, the same limits and exclusive user namespace, the
// host built with internal/serverhost as the daemon's is. Being a separate
// peer, the chat's own client registers on it over loopback exactly as on a
// daemon, and other peers reach it at its own multiaddrs (which peer
// exchange hands out, pex.go). Its identity, registrations, name leases and
// DHT records live in DataDir/EmbedDirName.

// EmbedDirName is the embedded server's directory inside the chat's data dir.
const EmbedDirName = "server"

// Agents tell what a peer is (identify's agent version). A daemon's agent
// does not make it an authority (only the user's configuration does); an
// embedded server's marks it as just a chat's service.
const (
	DaemonAgent   = "p2p-messaging-rendezvous"
	EmbeddedAgent = "p2p-messaging-embedded"
	ChatAgent     = "p2p-messaging-chat"
)

// Sizing of an embedded server: a chat serves its neighbours, not a city.
const (
	embedConnsMax   = 1024
	embedConnsPerIP = 64
	embedFDBudget   = 2048
)

// EmbedConfig configures StartEmbedded.
type EmbedConfig struct {
	// Dir holds the server's key, store, DHT records and its last listen
	// addresses (reused on restart, so peers that kept them find it).
	Dir string
	// ListenAddrs default to the last ones used, else DefaultListenAddrs.
	ListenAddrs []multiaddr.Multiaddr
	// Bootstrap are DHT peers to start from.
	Bootstrap []peer.AddrInfo
	// Relay also serves circuit relay v2 with the daemon's limits
	// (serverhost.DefaultRelayConfig); the relay runs once the host is
	// publicly reachable (or Reachability is public).
	Relay        bool
	Reachability Reachability
	// AddrFile, when set, is written with the server's addresses (loopback
	// first) so that a chat started later on the machine finds it, and
	// removed by Close if it still holds them.
	AddrFile string
	Logger   *slog.Logger
}

// Embedded is a running embedded server.
type Embedded struct {
	Host   host.Host
	Server *rendezvous.Server
	DHT    *dht.IpfsDHT
	Relay  bool

	store    *dhtstore.Store
	acl      *serverhost.RelayACL
	addrFile string
	wrote    []multiaddr.Multiaddr
	log      *slog.Logger
}

// StartEmbedded builds the server's host and starts the rendezvous server
// and the DHT server on it.
func StartEmbedded(ctx context.Context, cfg EmbedConfig) (_ *Embedded, err error) {
	if cfg.Dir == "" {
		return nil, errors.New("embedded server: dir required")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("service", "embedded-server")
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("embedded server: %w", err)
	}
	key, _, err := identity.LoadOrCreate(filepath.Join(cfg.Dir, identity.FileName))
	if err != nil {
		return nil, fmt.Errorf("embedded server: %w", err)
	}
	e := &Embedded{Relay: cfg.Relay, log: log}
	defer func() {
		if err != nil {
			e.Close()
		}
	}()

	lim := rendezvous.DefaultLimits()
	limits, _, _ := serverhost.ResourceLimits(embedConnsMax, embedFDBudget, lim)
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(limits),
		rcmgr.WithLimitPerSubnet(
			[]rcmgr.ConnLimitPerSubnet{{PrefixLength: 32, ConnCount: embedConnsPerIP}},
			[]rcmgr.ConnLimitPerSubnet{{PrefixLength: 56, ConnCount: embedConnsPerIP}}))
	if err != nil {
		return nil, fmt.Errorf("embedded server: resource manager: %w", err)
	}
	low, high := serverhost.ConnWatermarks(embedConnsMax)
	cm, err := connmgr.NewConnManager(low, high, connmgr.WithGracePeriod(time.Minute))
	if err != nil {
		_ = rm.Close()
		return nil, fmt.Errorf("embedded server: connection manager: %w", err)
	}
	opts := []libp2p.Option{
		libp2p.Identity(key),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Transport(quic.NewTransport),
		libp2p.Security(noise.ID, noise.New),
		libp2p.ResourceManager(rm),
		libp2p.ConnectionManager(cm),
		libp2p.DisableMetrics(),
		libp2p.EnableNATService(),
		libp2p.UserAgent(EmbeddedAgent),
		// Like the daemon: a relay, never a relay client.
		libp2p.DisableRelay(),
	}
	switch cfg.Reachability {
	case ReachabilityPublic:
		opts = append(opts, libp2p.ForceReachabilityPublic())
	case ReachabilityPrivate:
		opts = append(opts, libp2p.ForceReachabilityPrivate())
	}
	if cfg.Relay {
		if e.acl, err = serverhost.NewRelayACL(serverhost.DefaultRelayConfig(), log, nil); err != nil {
			_ = cm.Close()
			_ = rm.Close()
			return nil, fmt.Errorf("embedded server: %w", err)
		}
		opts = append(opts, libp2p.EnableRelayService(serverhost.RelayOptions(serverhost.DefaultRelayConfig(), e.acl, false)...))
	}
	listenFile := filepath.Join(cfg.Dir, listenFileName)
	if e.Host, err = newHostReusingPorts(opts, cfg.ListenAddrs, listenFile, log); err != nil {
		_ = cm.Close()
		_ = rm.Close()
		return nil, fmt.Errorf("embedded server: %w", err)
	}
	if e.acl != nil {
		e.acl.Attach(e.Host.Network())
	}

	if e.store, err = dhtstore.Open(filepath.Join(cfg.Dir, DHTDirName), chatDHTLimits); err != nil {
		return nil, fmt.Errorf("embedded server: dht store: %w", err)
	}
	boot := slices.DeleteFunc(slices.Clone(cfg.Bootstrap), func(ai peer.AddrInfo) bool { return ai.ID == e.Host.ID() })
	if e.DHT, err = dht.New(e.Host,
		dht.Mode(dht.ModeServer),
		dht.ProtocolPrefix(DHTPrefix),
		dht.BootstrapPeers(boot...),
		dht.Datastore(e.store),
	); err != nil {
		return nil, fmt.Errorf("embedded server: dht: %w", err)
	}
	if e.Server, err = rendezvous.NewServer(e.Host,
		rendezvous.WithDataDir(cfg.Dir),
		rendezvous.WithLogger(log),
		rendezvous.WithLimits(lim),
		rendezvous.WithExclusivePrefix(UserNamespacePrefix),
	); err != nil {
		return nil, fmt.Errorf("embedded server: %w", err)
	}
	if len(boot) > 0 {
		// Best effort: the routing table also fills from connections.
		_ = e.DHT.Bootstrap(ctx)
	}
	if cfg.AddrFile != "" {
		e.wrote = serverhost.LocalAddrs(e.Host)
		err := os.MkdirAll(filepath.Dir(cfg.AddrFile), 0o700)
		if err == nil {
			err = addrfile.Write(cfg.AddrFile, e.wrote)
		}
		if err != nil {
			log.Warn("cannot write the addrs file", "file", cfg.AddrFile, "err", err)
			e.wrote = nil
		} else {
			e.addrFile = cfg.AddrFile
		}
	}
	log.Info("embedded server started", "peer", e.Host.ID(), "addrs", e.Host.Addrs(), "relay", cfg.Relay)
	return e, nil
}

// Info is the server's address info.
func (e *Embedded) Info() peer.AddrInfo {
	return peer.AddrInfo{ID: e.Host.ID(), Addrs: e.Host.Addrs()}
}

// Close stops the rendezvous server (flushing its store), the DHT and the
// host, and removes the addrs file if it still holds this server's
// addresses. It is safe on a partly started server.
func (e *Embedded) Close() error {
	var errs []error
	if e.Server != nil {
		errs = append(errs, e.Server.Close())
	}
	if e.DHT != nil {
		errs = append(errs, e.DHT.Close())
	}
	if e.Host != nil {
		errs = append(errs, e.Host.Close())
	}
	if e.store != nil {
		errs = append(errs, e.store.Close())
	}
	if e.addrFile != "" {
		// Another chat may have taken the file over since.
		if cur, err := addrfile.Read(e.addrFile); err == nil && sameAddrList(cur, e.wrote) {
			if err := os.Remove(e.addrFile); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
		e.addrFile = ""
	}
	return errors.Join(errs...)
}

func sameAddrList(a, b []multiaddr.Multiaddr) bool {
	return slices.EqualFunc(a, b, func(x, y multiaddr.Multiaddr) bool { return x.Equal(y) })
}
