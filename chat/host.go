package chat

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/p2p/protocol/holepunch"
	noise "github.com/libp2p/go-libp2p/p2p/security/noise"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	"github.com/multiformats/go-multiaddr"

	"github.com/p2p-messaging/p2p-messaging/internal/dhtstore"
	"github.com/p2p-messaging/p2p-messaging/internal/identity"
)

// This file is the node assembly: the libp2p host a chat runs on, with its
// transports, security, NAT services and DHT. The chat protocol services
// (New) take any host.Host; this is the one cmd/chat builds.

// DHTPrefix keeps the project's DHT apart from the public IPFS one.
const DHTPrefix = "/p2p-messaging"

// DHTDirName is the directory, inside the data dir, of the DHT records a
// chat host keeps for others (Open).
const DHTDirName = "dht"

// DefaultListenAddrs are the addresses a host listens on when
// HostConfig.ListenAddrs is empty: TCP and QUIC on all IPv4 and IPv6
// interfaces.
var DefaultListenAddrs = []string{
	"/ip4/0.0.0.0/tcp/0",
	"/ip4/0.0.0.0/udp/0/quic-v1",
	"/ip6/::/tcp/0",
	"/ip6/::/udp/0/quic-v1",
}

// Reachability forces what the host believes about its own reachability.
type Reachability int

const (
	// ReachabilityAuto lets AutoNAT decide.
	ReachabilityAuto Reachability = iota
	// ReachabilityPublic forces public reachability (tests, servers).
	ReachabilityPublic
	// ReachabilityPrivate forces private reachability: the host takes relay
	// reservations at once and hole punches (test bed behind NAT).
	ReachabilityPrivate
)

func (r Reachability) String() string {
	switch r {
	case ReachabilityPublic:
		return "public"
	case ReachabilityPrivate:
		return "private"
	default:
		return "auto"
	}
}

// HostConfig configures NewHost.
type HostConfig struct {
	Key          crypto.PrivKey        // required: the node's identity
	ListenAddrs  []multiaddr.Multiaddr // default DefaultListenAddrs
	Daemons      []peer.AddrInfo       // static relays and DHT bootstrap peers
	Reachability Reachability
	DisableDHT   bool
	// DHTDir holds the records the DHT keeps for others when the host
	// serves it (bounded, on disk); required unless DisableDHT.
	DHTDir string
	// ListenFile keeps the ports the host listened on; at the next start
	// listen addresses with port 0 get them again (embed_listen.go).
	ListenFile string
	Logger     *slog.Logger
}

// The DHT records a chat host keeps for others when it is a DHT server: a
// chat serves a few peers' worth, bounded so that no peer can grow it.
var chatDHTLimits = dhtstore.Limits{MaxProviders: 10_000, MaxProvidersPerPeer: 64, MaxValues: 1_000}

// Host is a libp2p host assembled for the chat: TCP and QUIC, Noise,
// AutoNAT, AutoRelay with the daemons as static relays, hole punching whose
// outcomes are published on the host's event bus as EventHolePunch, and
// (unless disabled) a DHT client under DHTPrefix bootstrapped from the
// daemons.
type Host struct {
	host.Host
	// DHT is nil when disabled.
	DHT *dht.IpfsDHT
	// dhtStore holds what the DHT keeps for others.
	dhtStore *dhtstore.Store
	// Daemons are the configured daemons, with their addresses in the
	// peerstore for good.
	Daemons []peer.AddrInfo
	// punches counts the hole punches in flight, for Close.
	punches *hpTracer
}

// NewHost builds and starts the host.
func NewHost(cfg HostConfig) (*Host, error) {
	if cfg.Key == nil {
		return nil, errors.New("host: identity key required")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	listen := cfg.ListenAddrs
	if len(listen) == 0 {
		for _, s := range DefaultListenAddrs {
			listen = append(listen, multiaddr.StringCast(s))
		}
	}
	if cfg.ListenFile != "" {
		listen = reusableListenAddrs(cfg.ListenFile, listen, log)
	}
	tr := &hpTracer{log: log, attempts: map[peer.ID]int{}}
	opts := []libp2p.Option{
		libp2p.Identity(cfg.Key),
		libp2p.ListenAddrs(listen...),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Transport(quic.NewTransport),
		libp2p.Security(noise.ID, noise.New),
		libp2p.DisableMetrics(),
		libp2p.UserAgent(ChatAgent),
		libp2p.EnableHolePunching(holepunch.WithTracer(tr)),
	}
	if len(cfg.Daemons) > 0 {
		opts = append(opts, libp2p.EnableAutoRelayWithStaticRelays(cfg.Daemons))
	}
	switch cfg.Reachability {
	case ReachabilityPublic:
		opts = append(opts, libp2p.ForceReachabilityPublic())
	case ReachabilityPrivate:
		opts = append(opts, libp2p.ForceReachabilityPrivate())
	}
	h, err := libp2p.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("create host: %w", err)
	}
	em, err := h.EventBus().Emitter(new(EventHolePunch))
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("hole-punch emitter: %w", err)
	}
	tr.setEmitter(em)
	if cfg.ListenFile != "" {
		if err := saveListenAddrs(cfg.ListenFile, h); err != nil {
			log.Warn("cannot keep the listen ports for the next start", "err", err)
		}
	}
	for _, ai := range cfg.Daemons {
		h.Peerstore().AddAddrs(ai.ID, ai.Addrs, peerstore.PermanentAddrTTL)
	}
	// The DHT is made only now that the host listens: it dials its
	// bootstrap peers (the daemons) at once, and a TCP dial made before the
	// listener exists leaves from an ephemeral port instead of the listen
	// port, so identify's observation of the NAT mapping on that connection
	// is discarded and hole punching never starts over TCP (every later
	// dial to the daemon shares that connection). libp2p.Routing would
	// build it inside libp2p.New, before listening.
	out := &Host{Host: h, Daemons: cfg.Daemons, punches: tr}
	if !cfg.DisableDHT {
		if cfg.DHTDir == "" {
			h.Close()
			return nil, errors.New("host: DHTDir required for the DHT")
		}
		if out.dhtStore, err = dhtstore.Open(cfg.DHTDir, chatDHTLimits); err != nil {
			h.Close()
			return nil, fmt.Errorf("dht store: %w", err)
		}
		out.DHT, err = dht.New(h,
			dht.Mode(dht.ModeAuto),
			dht.ProtocolPrefix(DHTPrefix),
			dht.BootstrapPeers(cfg.Daemons...),
			dht.Datastore(out.dhtStore),
		)
		if err != nil {
			out.dhtStore.Close()
			h.Close()
			return nil, fmt.Errorf("create dht: %w", err)
		}
	}
	return out, nil
}

// punchDrainTimeout bounds how long Close waits for hole punches in flight:
// DCUtR's own dial timeout (10 s) and a margin.
const punchDrainTimeout = 11 * time.Second

// Close stops the DHT, the host and the DHT's store.
//
// Before the libp2p host closes, Close lets the hole punches in flight
// finish. go-libp2p (v0.51 and v0.52) does not wait for the punch a DCUtR
// responder starts from its stream handler: if the swarm drops its
// transports while that dial is being set up, the dial dereferences a nil
// transport (swarm.nonProxyAddr) and the process panics. So Close removes
// the DCUtR handler (no new punch starts), closes the relayed connections
// (a negotiation still on the wire fails instead of dialling) and waits,
// bounded, for the punches the tracer saw start to end.
func (h *Host) Close() error {
	h.Host.RemoveStreamHandler(holepunch.Protocol)
	for _, c := range h.Host.Network().Conns() {
		if c.Stat().Limited {
			_ = c.Close()
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), punchDrainTimeout)
	h.punches.wait(ctx)
	cancel()
	var errs []error
	if h.DHT != nil {
		errs = append(errs, h.DHT.Close())
	}
	errs = append(errs, h.Host.Close())
	if h.dhtStore != nil {
		errs = append(errs, h.dhtStore.Close())
	}
	return errors.Join(errs...)
}

// hpTracer turns DCUtR traces into EventHolePunch on the event bus. The
// emitter is set once the host exists; no attempt can end before that.
type hpTracer struct {
	log *slog.Logger

	mu       sync.Mutex
	em       event.Emitter
	attempts map[peer.ID]int
	punching int           // punches started and not yet ended
	drained  chan struct{} // closed when punching drops back to 0
}

// wait returns once no punch is in flight, or when ctx ends.
func (t *hpTracer) wait(ctx context.Context) {
	t.mu.Lock()
	if t.punching == 0 {
		t.mu.Unlock()
		return
	}
	ch := t.drained
	t.mu.Unlock()
	select {
	case <-ch:
	case <-ctx.Done():
	}
}

func (t *hpTracer) setEmitter(em event.Emitter) {
	t.mu.Lock()
	t.em = em
	t.mu.Unlock()
}

func (t *hpTracer) Trace(evt *holepunch.Event) {
	var out *EventHolePunch
	t.mu.Lock()
	switch e := evt.Evt.(type) {
	case *holepunch.StartHolePunchEvt:
		if t.punching == 0 {
			t.drained = make(chan struct{})
		}
		t.punching++
	case *holepunch.HolePunchAttemptEvt:
		t.attempts[evt.Remote] = e.Attempt
	case *holepunch.EndHolePunchEvt:
		if t.punching > 0 {
			if t.punching--; t.punching == 0 {
				close(t.drained)
			}
		}
		a := t.attempts[evt.Remote]
		delete(t.attempts, evt.Remote)
		out = &EventHolePunch{Peer: evt.Remote, Success: e.Success, Attempts: a, Elapsed: e.EllapsedTime, Err: e.Error}
	case *holepunch.ProtocolErrorEvt:
		// The attempt ended before any dial.
		delete(t.attempts, evt.Remote)
		out = &EventHolePunch{Peer: evt.Remote, Err: "protocol: " + e.Error}
	case *holepunch.DirectDialEvt:
		if e.Success {
			out = &EventHolePunch{Peer: evt.Remote, Success: true, Elapsed: e.EllapsedTime}
		}
	}
	em := t.em
	t.mu.Unlock()
	if out == nil || em == nil {
		return
	}
	t.log.Info("hole punch", "peer", out.Peer, "success", out.Success, "attempts", out.Attempts, "elapsed", out.Elapsed, "err", out.Err)
	_ = em.Emit(*out)
}

// Peer is a chat Node on a Host of its own, as cmd/chat runs it.
type Peer struct {
	*Node
	Host *Host
	// Embedded is the chat's embedded server, when it runs one.
	Embedded *Embedded
}

// Open builds a Host for cfg (its identity key in cfg.DataDir, created on
// first use; the daemons are cfg.Rendezvous unless hc.Daemons is set) and
// starts a Node on it. hc.Key, when set, is used instead of the key file.
func Open(hc HostConfig, cfg Config) (*Peer, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("data dir required")
	}
	if hc.Key == nil {
		key, _, err := identity.LoadOrCreate(filepath.Join(cfg.DataDir, identity.FileName))
		if err != nil {
			return nil, err
		}
		hc.Key = key
	}
	if hc.Daemons == nil {
		hc.Daemons = cfg.Rendezvous
	}
	if hc.Logger == nil {
		hc.Logger = cfg.Logger
	}
	if hc.DHTDir == "" {
		hc.DHTDir = filepath.Join(cfg.DataDir, DHTDirName)
	}
	if cfg.Serve.Mode != EmbedOff && hc.ListenFile == "" {
		hc.ListenFile = filepath.Join(cfg.DataDir, listenFileName)
	}
	h, err := NewHost(hc)
	if err != nil {
		return nil, err
	}
	cfg.DHT = h.DHT
	// The start-up (embed_start.go) picks the servers and may start the
	// embedded one.
	var (
		st   *startup
		book *recordBook
	)
	if cfg.Serve.Mode != EmbedOff {
		if book, err = newRecordBook(h.EventBus()); err != nil {
			h.Close()
			return nil, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*dialTimeout)
		st, err = bootstrap(ctx, h, book, hc, cfg, hc.Logger)
		cancel()
		if err != nil {
			book.close()
			h.Close()
			return nil, err
		}
		cfg.Rendezvous = st.rdv
	}
	n, err := New(h, cfg)
	if err != nil {
		if st != nil && st.embedded != nil {
			st.embedded.Close()
		}
		book.close()
		h.Close()
		return nil, err
	}
	p := &Peer{Node: n, Host: h}
	if st != nil {
		n.useStartup(st, book)
		p.Embedded = st.embedded
	}
	return p, nil
}

// Close closes the node, then the host, then the embedded server.
func (p *Peer) Close() error {
	errs := []error{p.Node.Close(), p.Host.Close()}
	if p.Embedded != nil {
		errs = append(errs, p.Embedded.Close())
	}
	return errors.Join(errs...)
}
