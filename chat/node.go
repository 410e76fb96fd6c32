package chat

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/routing"
	drouting "github.com/libp2p/go-libp2p/p2p/discovery/routing"
	"github.com/libp2p/go-libp2p/p2p/protocol/holepunch"
	noise "github.com/libp2p/go-libp2p/p2p/security/noise"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	"github.com/multiformats/go-multiaddr"

	"github.com/p2p-messaging/p2p-messaging/internal/identity"
)

// Timeouts and intervals that are not configurable.
const (
	maxStreamsPerPeer = 4                // live chat streams per peer; a new one retires the oldest
	writeTimeout      = 10 * time.Second // one frame write
	dialTimeout       = 15 * time.Second // one connect + stream open attempt
	verifyTimeout     = 5 * time.Second  // rendezvous look-up verifying a Hello
	resolveTimeout    = 10 * time.Second // DHT look-up of a nick
	unregisterLimit   = 2 * time.Second  // Close's unregister budget
	maxBackoff        = time.Minute      // outbox retry backoff cap
	maxAutoSessions   = 64               // room members / contacts we connect to unasked
	maxContactWatch   = 32               // contacts whose user namespace we watch
	dhtAdvertiseMax   = 30 * time.Second // longest retry delay after a failed DHT advertise
	relayGrace        = 3 * time.Second  // presence kept after a relayed stream ends without evidence of death
	graceRetry        = 250 * time.Millisecond
)

// IdentityFileName is the node's private key inside the data dir.
const IdentityFileName = "identity.key"

// DefaultListenAddrs are the addresses a node listens on when
// Config.ListenAddrs is empty: TCP and QUIC on all IPv4 and IPv6 interfaces.
var DefaultListenAddrs = []string{
	"/ip4/0.0.0.0/tcp/0",
	"/ip4/0.0.0.0/udp/0/quic-v1",
	"/ip6/::/tcp/0",
	"/ip6/::/udp/0/quic-v1",
}

// Node is one chat peer: a libp2p host speaking ProtocolID, registered under
// its nick on the rendezvous daemons, with its contacts, history and outbox
// in a bbolt database in the data dir.
type Node struct {
	cfg  Config
	log  *slog.Logger
	h    host.Host
	dht  *dht.IpfsDHT // nil when disabled
	disc *drouting.RoutingDiscovery
	rdv  nameService // nil without rendezvous daemons
	db   *store
	ev   *eventQueue
	hp   *hpTracer

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	kick   chan struct{}

	mu            sync.Mutex
	closed        bool
	started       bool
	room          string
	roomCancel    context.CancelFunc
	peers         map[peer.ID]*peerState
	outbox        map[peer.ID]*peerOutbox // unacknowledged messages, see outbox.go
	outSeq        uint64
	contactWatch  map[string]context.CancelFunc
	warned        map[string]bool
	closeOnce     sync.Once
	closeErr      error
	notifiee      *network.NotifyBundle
	advertiseStop map[string]context.CancelFunc
}

// New creates the node's host and opens its state (identity key and
// database in cfg.DataDir); it does not contact the network yet (Start
// does). The stream handler is live when New returns. ctx is not retained:
// the node lives until Close.
func New(ctx context.Context, cfg Config) (*Node, error) {
	if !ValidNick(cfg.Nick) {
		return nil, fmt.Errorf("nick %q: %w (1-%d letters, digits, '-', '_', '.')", cfg.Nick, errBadNick, MaxNickLen)
	}
	if cfg.Room == "" {
		cfg.Room = DefaultRoom
	}
	if !ValidRoom(cfg.Room) {
		return nil, fmt.Errorf("room %q: invalid name", cfg.Room)
	}
	if cfg.DataDir == "" {
		return nil, errors.New("data dir required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = time.Second
	}
	if cfg.PingTimeout <= 0 {
		cfg.PingTimeout = 3500 * time.Millisecond
	}
	if cfg.PingTimeout <= cfg.PingInterval {
		return nil, fmt.Errorf("ping timeout %s must exceed ping interval %s", cfg.PingTimeout, cfg.PingInterval)
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = 2 * time.Second
	}
	if cfg.AckTimeout <= 0 {
		cfg.AckTimeout = 30 * time.Second
	}
	if cfg.HelloTimeout <= 0 {
		cfg.HelloTimeout = 10 * time.Second
	}
	if cfg.RegisterTTL <= 0 {
		cfg.RegisterTTL = 2 * time.Hour
	}
	if cfg.MaxSeenPerPeer <= 0 {
		cfg.MaxSeenPerPeer = 10000
	}
	listen := cfg.ListenAddrs
	if len(listen) == 0 {
		for _, s := range DefaultListenAddrs {
			listen = append(listen, multiaddr.StringCast(s))
		}
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	key, _, err := identity.LoadOrCreate(filepath.Join(cfg.DataDir, IdentityFileName))
	if err != nil {
		return nil, err
	}
	db, err := openStore(filepath.Join(cfg.DataDir, DBFileName), cfg.MaxSeenPerPeer)
	if err != nil {
		return nil, err
	}
	log := cfg.Logger.With("nick", cfg.Nick)
	n := &Node{
		cfg:           cfg,
		log:           log,
		db:            db,
		ev:            newEventQueue(log),
		kick:          make(chan struct{}, 1),
		room:          cfg.Room,
		peers:         map[peer.ID]*peerState{},
		outbox:        map[peer.ID]*peerOutbox{},
		contactWatch:  map[string]context.CancelFunc{},
		warned:        map[string]bool{},
		advertiseStop: map[string]context.CancelFunc{},
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.hp = &hpTracer{n: n, attempts: map[peer.ID]int{}}

	opts := []libp2p.Option{
		libp2p.Identity(key),
		libp2p.ListenAddrs(listen...),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Transport(quic.NewTransport),
		libp2p.Security(noise.ID, noise.New),
		libp2p.DisableMetrics(),
		libp2p.UserAgent("p2p-messaging-chat"),
		libp2p.EnableHolePunching(holepunch.WithTracer(n.hp)),
	}
	if len(cfg.Rendezvous) > 0 {
		opts = append(opts, libp2p.EnableAutoRelayWithStaticRelays(cfg.Rendezvous))
	}
	switch cfg.Reachability {
	case ReachabilityPublic:
		opts = append(opts, libp2p.ForceReachabilityPublic())
	case ReachabilityPrivate:
		opts = append(opts, libp2p.ForceReachabilityPrivate())
	}
	if !cfg.DisableDHT {
		opts = append(opts, libp2p.Routing(func(h host.Host) (routing.PeerRouting, error) {
			d, err := dht.New(h,
				dht.Mode(dht.ModeAuto),
				dht.ProtocolPrefix("/p2p-messaging"),
				dht.BootstrapPeers(cfg.Rendezvous...),
			)
			if err != nil {
				return nil, err
			}
			n.dht = d
			return d, nil
		}))
	}
	h, err := libp2p.New(opts...)
	if err != nil {
		if n.dht != nil {
			n.dht.Close()
		}
		n.cancel()
		n.ev.close()
		db.close()
		return nil, fmt.Errorf("create host: %w", err)
	}
	n.h = h
	if n.dht != nil {
		n.disc = drouting.NewRoutingDiscovery(n.dht)
	}
	for _, d := range cfg.Rendezvous {
		h.Peerstore().AddAddrs(d.ID, d.Addrs, peerstore.PermanentAddrTTL)
	}
	if len(cfg.Rendezvous) > 0 && newNameService != nil {
		rdv, err := newNameService(h, cfg.Rendezvous, log)
		if err != nil {
			n.closeHost()
			return nil, fmt.Errorf("rendezvous client: %w", err)
		}
		n.rdv = rdv
	}

	// Known contacts: their last addresses, so a restart can dial them
	// without a look-up.
	contacts, err := db.contacts()
	if err != nil {
		n.closeHost()
		return nil, fmt.Errorf("load contacts: %w", err)
	}
	for _, c := range contacts {
		if len(c.Addrs) > 0 {
			h.Peerstore().AddAddrs(c.Peer, c.Addrs, peerstore.AddressTTL)
		}
		n.peer(c.Peer).nick = c.Nick
	}
	pend, err := db.pendingPeers()
	if err != nil {
		n.closeHost()
		return nil, fmt.Errorf("load outbox: %w", err)
	}
	for p := range pend {
		msgs, err := db.pending(p)
		if err != nil {
			n.closeHost()
			return nil, fmt.Errorf("load outbox: %w", err)
		}
		for _, m := range msgs {
			n.outboxAddLocked(m, true)
		}
	}

	n.notifiee = &network.NotifyBundle{
		ConnectedF:    func(_ network.Network, c network.Conn) { n.onConnChange(c.RemotePeer(), true, c) },
		DisconnectedF: func(_ network.Network, c network.Conn) { n.onConnChange(c.RemotePeer(), false, c) },
	}
	h.Network().Notify(n.notifiee)
	h.SetStreamHandler(ProtocolID, n.handleStream)
	n.spawn(n.retryLoop)
	n.spawn(n.pingLoop)
	n.spawn(n.punchWhenReady)
	return n, nil
}

// closeHost undoes New after the host exists.
func (n *Node) closeHost() {
	n.cancel()
	if n.rdv != nil {
		n.rdv.Close()
	}
	if n.dht != nil {
		n.dht.Close()
	}
	n.h.Close()
	n.ev.close()
	n.db.close()
}

// spawn runs f in a goroutine tracked by Close; it does nothing once the
// node is closing.
func (n *Node) spawn(f func()) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return false
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		f()
	}()
	return true
}

func userNS(nick string) string { return UserNamespacePrefix + nick }
func roomNS(room string) string { return RoomNamespacePrefix + room }

// Start connects to the rendezvous daemons, registers the nick (ErrNickTaken
// if another peer holds it) and the room on every daemon, starts watching the
// room and the contacts, bootstraps the DHT and advertises both names on it,
// then emits EventReady.
func (n *Node) Start(ctx context.Context) error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return ErrClosed
	}
	if n.started {
		n.mu.Unlock()
		return errors.New("already started")
	}
	n.started = true
	room := n.room
	n.mu.Unlock()

	// Daemons first: rendezvous, relay and DHT all go through them.
	var wg sync.WaitGroup
	for _, d := range n.cfg.Rendezvous {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, dialTimeout)
			defer cancel()
			if err := n.h.Connect(cctx, d); err != nil {
				n.log.Warn("cannot reach rendezvous daemon", "peer", d.ID, "err", err)
			}
		}()
	}
	wg.Wait()

	if n.rdv != nil {
		if err := n.rdv.Register(ctx, userNS(n.cfg.Nick), n.cfg.RegisterTTL); err != nil {
			if errors.Is(err, errNotAuthorized) {
				return fmt.Errorf("register nick %q: %w", n.cfg.Nick, ErrNickTaken)
			}
			// No daemon answered: run on the DHT and keep trying.
			n.registerLater(userNS(n.cfg.Nick), err)
		}
		if err := n.rdv.Register(ctx, roomNS(room), n.cfg.RegisterTTL); err != nil {
			n.registerLater(roomNS(room), err)
		}
		n.startRoomWatch(room)
		contacts, err := n.db.contacts()
		if err == nil {
			for _, c := range contacts {
				n.watchContact(c.Nick)
			}
		}
	}
	if n.dht != nil {
		if err := n.dht.Bootstrap(n.ctx); err != nil {
			n.log.Debug("dht bootstrap", "err", err)
		}
		n.advertise(userNS(n.cfg.Nick))
		n.advertise(roomNS(room))
	}
	n.kickRetry()
	n.ev.emit(EventReady{Nick: n.cfg.Nick, Peer: n.h.ID(), Addrs: n.Addrs()})
	return nil
}

// registerLater retries a registration that no daemon accepted, with
// backoff, until it succeeds, a daemon refuses it (E_NOT_AUTHORIZED: a
// warning), it is no longer wanted (left room) or the node closes. Once it
// succeeds the rendezvous client keeps it alive.
func (n *Node) registerLater(ns string, first error) {
	n.log.Warn("no rendezvous daemon accepted the registration; retrying in the background", "ns", ns, "err", first)
	n.ev.emit(EventWarning{Text: fmt.Sprintf("rendezvous unavailable (%v); using the DHT and retrying", first)})
	n.spawn(func() {
		backoff := time.Second
		for {
			t := time.NewTimer(backoff)
			select {
			case <-n.ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			backoff = min(backoff*2, dhtAdvertiseMax)
			if ns != userNS(n.cfg.Nick) && ns != roomNS(n.Room()) {
				return
			}
			ctx, cancel := context.WithTimeout(n.ctx, dialTimeout)
			err := n.rdv.Register(ctx, ns, n.cfg.RegisterTTL)
			cancel()
			switch {
			case err == nil:
				n.log.Info("registered", "ns", ns)
				return
			case errors.Is(err, errNotAuthorized):
				n.warn(n.cfg.Nick, n.h.ID(), fmt.Sprintf("the rendezvous daemons refuse %q: another peer holds it", ns))
				return
			default:
				n.log.Debug("register retry", "ns", ns, "err", err)
			}
		}
	})
}

// advertise keeps ns advertised on the DHT until the node closes or
// stopAdvertise(ns).
func (n *Node) advertise(ns string) {
	if n.disc == nil {
		return
	}
	n.mu.Lock()
	if _, ok := n.advertiseStop[ns]; ok || n.closed {
		n.mu.Unlock()
		return
	}
	ctx, cancel := context.WithCancel(n.ctx)
	n.advertiseStop[ns] = cancel
	n.mu.Unlock()
	n.spawn(func() {
		defer cancel()
		backoff := time.Second
		for {
			actx, acancel := context.WithTimeout(ctx, time.Minute)
			ttl, err := n.disc.Advertise(actx, ns)
			acancel()
			wait := ttl * 7 / 8
			if err != nil {
				// Usually an empty routing table right after start.
				n.log.Debug("dht advertise", "ns", ns, "err", err)
				wait = backoff
				backoff = min(backoff*2, dhtAdvertiseMax)
			} else {
				backoff = time.Second
				n.log.Debug("dht advertised", "ns", ns, "ttl", ttl)
			}
			if wait <= 0 {
				wait = dhtAdvertiseMax
			}
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
	})
}

func (n *Node) stopAdvertise(ns string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if c, ok := n.advertiseStop[ns]; ok {
		c()
		delete(n.advertiseStop, ns)
	}
}

// Events returns the event channel (capacity EventBuffer). Network readers
// never wait for it: events queue internally and, past a large cap, the
// oldest are dropped and counted. It is closed by Close.
func (n *Node) Events() <-chan Event { return n.ev.out }

// ID returns the node's peer ID.
func (n *Node) ID() peer.ID { return n.h.ID() }

// Nick returns the node's nick.
func (n *Node) Nick() string { return n.cfg.Nick }

// Host returns the underlying libp2p host.
func (n *Node) Host() host.Host { return n.h }

// Room returns the current room.
func (n *Node) Room() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.room
}

// Addrs returns the node's shareable multiaddrs, each ending in /p2p/<id>.
func (n *Node) Addrs() []multiaddr.Multiaddr {
	addrs, err := peer.AddrInfoToP2pAddrs(&peer.AddrInfo{ID: n.h.ID(), Addrs: n.h.Addrs()})
	if err != nil {
		return nil
	}
	return addrs
}

// Join leaves the current room and joins room: registers it on the daemons,
// watches it, advertises it on the DHT.
func (n *Node) Join(ctx context.Context, room string) error {
	if !ValidRoom(room) {
		return fmt.Errorf("room %q: invalid name", room)
	}
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return ErrClosed
	}
	old, started := n.room, n.started
	n.mu.Unlock()
	if room == old {
		return nil
	}
	if started && n.rdv != nil {
		if err := n.rdv.Register(ctx, roomNS(room), n.cfg.RegisterTTL); err != nil {
			n.registerLater(roomNS(room), err)
		}
		uctx, cancel := context.WithTimeout(ctx, unregisterLimit)
		if err := n.rdv.Unregister(uctx, roomNS(old)); err != nil {
			n.log.Debug("unregister room", "ns", roomNS(old), "err", err)
		}
		cancel()
	}
	n.mu.Lock()
	n.room = room
	if n.roomCancel != nil {
		n.roomCancel()
		n.roomCancel = nil
	}
	oldNS := roomNS(old)
	for _, ps := range n.peers {
		if ps.regs[oldNS] {
			delete(ps.regs, oldNS)
			n.updatePresenceLocked(ps)
		}
	}
	n.mu.Unlock()
	if started {
		if n.rdv != nil {
			n.startRoomWatch(room)
		}
		n.stopAdvertise(roomNS(old))
		n.advertise(roomNS(room))
	}
	return nil
}

// Close unregisters the nick and room (bounded by a short timeout), closes
// the streams, the host and the database, and closes the Events channel.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		n.mu.Lock()
		started := n.started
		room := n.room
		n.mu.Unlock()
		if started && n.rdv != nil {
			ctx, cancel := context.WithTimeout(context.Background(), unregisterLimit)
			var wg sync.WaitGroup
			for _, ns := range []string{userNS(n.cfg.Nick), roomNS(room)} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := n.rdv.Unregister(ctx, ns); err != nil {
						n.log.Debug("unregister", "ns", ns, "err", err)
					}
				}()
			}
			wg.Wait()
			cancel()
		}
		n.mu.Lock()
		n.closed = true
		var streams []*chatStream
		for _, ps := range n.peers {
			for cs := range ps.streams {
				streams = append(streams, cs)
			}
		}
		n.mu.Unlock()
		n.cancel()
		n.h.RemoveStreamHandler(ProtocolID)
		n.h.Network().StopNotify(n.notifiee)
		for _, cs := range streams {
			cs.s.Close()
		}
		var errs []error
		if n.rdv != nil {
			errs = append(errs, n.rdv.Close())
		}
		if n.dht != nil {
			errs = append(errs, n.dht.Close())
		}
		errs = append(errs, n.h.Close())
		n.wg.Wait()
		errs = append(errs, n.db.close())
		n.ev.close()
		n.closeErr = errors.Join(errs...)
	})
	return n.closeErr
}

// hpTracer turns hole-punch traces into EventHolePunch.
type hpTracer struct {
	n        *Node
	mu       sync.Mutex
	attempts map[peer.ID]int
}

func (t *hpTracer) Trace(evt *holepunch.Event) {
	switch e := evt.Evt.(type) {
	case *holepunch.HolePunchAttemptEvt:
		t.mu.Lock()
		t.attempts[evt.Remote] = e.Attempt
		t.mu.Unlock()
	case *holepunch.EndHolePunchEvt:
		t.mu.Lock()
		a := t.attempts[evt.Remote]
		delete(t.attempts, evt.Remote)
		t.mu.Unlock()
		t.n.log.Info("hole punch", "peer", evt.Remote, "success", e.Success, "attempts", a, "elapsed", e.EllapsedTime, "err", e.Error)
		t.n.ev.emit(EventHolePunch{Peer: evt.Remote, Success: e.Success, Attempts: a, Elapsed: e.EllapsedTime, Err: e.Error})
	case *holepunch.ProtocolErrorEvt:
		// The attempt ended before any dial: report it, and try again.
		t.mu.Lock()
		delete(t.attempts, evt.Remote)
		t.mu.Unlock()
		t.n.log.Info("hole punch broke off", "peer", evt.Remote, "err", e.Error)
		t.n.ev.emit(EventHolePunch{Peer: evt.Remote, Success: false, Err: "protocol: " + e.Error})
		t.n.punchAgain(evt.Remote)
	case *holepunch.DirectDialEvt:
		if e.Success {
			t.n.log.Info("direct dial instead of hole punch", "peer", evt.Remote, "elapsed", e.EllapsedTime)
			t.n.ev.emit(EventHolePunch{Peer: evt.Remote, Success: true, Attempts: 0, Elapsed: e.EllapsedTime})
		}
	}
}
