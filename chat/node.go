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

	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	drouting "github.com/libp2p/go-libp2p/p2p/discovery/routing"
	"github.com/multiformats/go-multiaddr"

	"github.com/p2p-messaging/p2p-messaging/chat/transfer"
	"github.com/p2p-messaging/p2p-messaging/rendezvous"
)

// This file assembles the chat services on a host and runs their
// lifecycle. Each service owns its state:
//
//	store     chat.db and its group-commit writer goroutine (store.go)
//	outbox    unacknowledged messages in memory, one small lock (delivery.go)
//	peers     presence, connections, dialling: one goroutine (peers.go)
//	names     pins, verification, warnings, watches (names.go)
//	dm        the chat streams: a reader and a writer goroutine each (dm.go)
//	nat       hole-punch re-arming (nat.go)
//	events    the queue behind Events (events.go)

// DefaultRoom is the room a node joins when Config.Room is empty.
const DefaultRoom = "lobby"

// Namespaces in rendezvous and the DHT.
const (
	// UserNamespacePrefix is where nicks live on the daemons, which hold
	// it exclusive (one key per name).
	UserNamespacePrefix = "p2p-messaging/user/"
	// RoomNamespacePrefix is where rooms live in rendezvous and the DHT.
	RoomNamespacePrefix = "p2p-messaging/room/"
)

// Timeouts and bounds that are not configurable.
const (
	writeTimeout    = 10 * time.Second // one frame write
	dialTimeout     = 15 * time.Second // one connect + stream open attempt
	resolveTimeout  = 10 * time.Second // DHT look-up of a peer's addresses
	unregisterLimit = 2 * time.Second  // Close's unregister budget
)

// ErrNickTaken is returned by Start when another peer holds the nick on a
// rendezvous daemon.
var ErrNickTaken = errors.New("nick taken")

// ErrUnknownNick is returned when a nick cannot be resolved to a peer.
var ErrUnknownNick = errors.New("unknown nick")

// ErrClosed is returned by calls on a closed node.
var ErrClosed = errors.New("node closed")

// Config configures a Node. Zero values mean the defaults.
type Config struct {
	Nick    string
	Room    string // default DefaultRoom
	DataDir string // chat.db: history, outbox, contacts

	// Rendezvous are the daemons the node registers on and looks nicks up
	// at. Empty: no rendezvous (contacts and peer IDs only).
	Rendezvous []peer.AddrInfo
	// DHT, when set, finds the addresses of known peers when the daemons
	// cannot, and advertises the room.
	DHT    *dht.IpfsDHT
	Logger *slog.Logger

	// PingInterval is the keepalive interval on a chat stream (default 1s).
	PingInterval time.Duration
	// PingTimeout marks a peer offline when no frame arrived for this long
	// (default 3.5s).
	PingTimeout time.Duration
	// RetryInterval is the base of the outbox retry backoff (default 2s;
	// the backoff doubles up to 1 minute).
	RetryInterval time.Duration
	// AckTimeout is how long a message written on a live stream may stay
	// unacknowledged before it is written again (default 30s).
	AckTimeout time.Duration
	// HelloTimeout bounds the wait for the peer's Hello on a new stream
	// (default 10s).
	HelloTimeout time.Duration
	// RegisterTTL is the TTL asked for registrations (default 2h; the
	// rendezvous client refreshes before it ends).
	RegisterTTL time.Duration
	// MaxSeenPerPeer bounds the persisted set of seen message IDs per peer
	// used for deduplication (default 10000).
	MaxSeenPerPeer int
	// ReceiveRate and ReceiveBurst bound the messages taken from one peer
	// (a token bucket, default 1000/s with bursts of 2000); beyond them
	// messages are not acknowledged, so the sender writes them again later.
	ReceiveRate  float64
	ReceiveBurst int
	// PeerQuota bounds the text bytes stored from one peer (default 64 MiB);
	// past it its messages are not taken, with a warning.
	PeerQuota int64
	// MaxRequests bounds the strangers' pending requests (default 100; the
	// oldest is dropped).
	MaxRequests int
	// NoDeposit: never leave messages or receipts in the daemons'
	// mailboxes (what others left for us is still fetched).
	NoDeposit bool
	// DepositAfter is how long a message to an online peer may stay
	// unacknowledged before it also goes to the mailboxes (default 3s; to
	// an offline peer it goes at once).
	DepositAfter time.Duration

	// DownloadDir is where accepted files land (default DataDir/downloads);
	// AcceptStrangerFiles shows offers from peers that are not contacts;
	// FileLimits bounds the transfers (chat/transfer). See files.go.
	DownloadDir         string
	AcceptStrangerFiles bool
	FileLimits          transfer.Limits

	// Rooms (room.go). RoomRate and RoomBurst: the token bucket of one
	// author in one room (default 5/s, bursts of 20); beyond it the
	// author's messages are neither shown nor relayed by this node.
	RoomRate  float64
	RoomBurst int
	// RoomHistoryMax and RoomHistoryAge bound a room's stored history and
	// what history sync asks for and serves (default 1000 messages, 7 days).
	RoomHistoryMax int
	RoomHistoryAge time.Duration
	// RoomReplayWindow: a live room message sent further than this from
	// our clock is a replay (or a wild clock) and ignored (default 5 min).
	RoomReplayWindow time.Duration
	// RoomPresenceGrace: a member that left a room is shown offline only
	// after staying away this long, so reconnects are not shown (default 5s).
	RoomPresenceGrace time.Duration
	// RoomSyncPeers: members asked for the history when joining a room or
	// coming back to it (default 3).
	RoomSyncPeers int
	// Serve: the start-up Open runs, and the embedded server (embed_start.go).
	Serve ServeConfig
}

func (cfg *Config) setDefaults() error {
	if !ValidNick(cfg.Nick) {
		return fmt.Errorf("nick %q: %w (1-%d letters, digits, '-', '_', '.')", cfg.Nick, errBadNick, MaxNickLen)
	}
	if cfg.Room == "" {
		cfg.Room = DefaultRoom
	}
	if err := CheckRoomName(cfg.Room); err != nil {
		return err
	}
	if cfg.DataDir == "" {
		return errors.New("data dir required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.PingInterval, time.Second)
	def(&cfg.PingTimeout, 3500*time.Millisecond)
	def(&cfg.RetryInterval, 2*time.Second)
	def(&cfg.AckTimeout, 30*time.Second)
	def(&cfg.HelloTimeout, 10*time.Second)
	def(&cfg.RegisterTTL, 2*time.Hour)
	def(&cfg.DepositAfter, 3*time.Second)
	if cfg.PingTimeout <= cfg.PingInterval {
		return fmt.Errorf("ping timeout %s must exceed ping interval %s", cfg.PingTimeout, cfg.PingInterval)
	}
	if cfg.MaxSeenPerPeer <= 0 {
		cfg.MaxSeenPerPeer = 10000
	}
	if cfg.ReceiveRate <= 0 {
		cfg.ReceiveRate = 1000
	}
	if cfg.ReceiveBurst <= 0 {
		cfg.ReceiveBurst = 2000
	}
	if cfg.PeerQuota <= 0 {
		cfg.PeerQuota = 64 << 20
	}
	if cfg.MaxRequests <= 0 {
		cfg.MaxRequests = 100
	}
	return cfg.setRoomDefaults()
}

// Node is one chat peer on a libp2p host: it speaks ProtocolID, registers
// its nick on the rendezvous daemons, and keeps contacts, history and
// outbox in a bbolt database in the data dir. The host is the caller's:
// Close leaves it running.
type Node struct {
	cfg  Config
	log  *slog.Logger
	h    host.Host
	rdv  *rendezvous.Client // nil without daemons
	disc *drouting.RoutingDiscovery
	db   *store
	ev   *eventQueue

	out   *outbox
	peers *peerTable
	names *names
	dm    *dm
	nat   *nat
	mbox  *mbox             // mailbox.go
	files *transfer.Service // files.go
	rooms *rooms
	pex   *pexService // peer exchange (pex.go)

	// Set by Open's start-up (embed_start.go); nil otherwise.
	srv       *serverSet
	records   *recordBook // signed peer records from identify (pex_records.go)
	learn     *learner    // servers learnt while running (embed_learn.go)
	embedded  *Embedded
	startNote string

	ctx    context.Context // ends with Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	life struct {
		sync.Mutex
		closed    bool
		started   bool
		roomStops map[string]context.CancelFunc // each room's watch and DHT advertisement (roomnode.go)
		closeOnce sync.Once
		closeErr  error
	}
}

// New starts the chat services on h (the stream handler is live when it
// returns) and opens the database in cfg.DataDir. It does not contact the
// daemons yet (Start does).
func New(h host.Host, cfg Config) (*Node, error) {
	explicitRoom := cfg.Room != ""
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	db, err := openStore(filepath.Join(cfg.DataDir, DBFileName), cfg.MaxSeenPerPeer)
	if err != nil {
		return nil, err
	}
	log := cfg.Logger.With("nick", cfg.Nick)
	n := &Node{cfg: cfg, log: log, h: h, db: db, ev: newEventQueue(log), out: newOutbox()}
	n.life.roomStops = map[string]context.CancelFunc{}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	fail := func(err error) (*Node, error) {
		n.cancel()
		if n.rdv != nil {
			n.rdv.Close()
		}
		n.ev.close()
		db.close()
		return nil, err
	}
	if cfg.DHT != nil {
		n.disc = drouting.NewRoutingDiscovery(cfg.DHT)
	}
	if len(cfg.Rendezvous) > 0 {
		// A new nick costs a proof of work on the daemons: computed once
		// per nick and sent with the first registration.
		n.rdv, err = rendezvous.NewClient(h, cfg.Rendezvous, rendezvous.WithClientLogger(log),
			rendezvous.WithClaimPrefix(UserNamespacePrefix))
		if err != nil {
			return fail(fmt.Errorf("rendezvous client: %w", err))
		}
	}
	n.names = newNames(n)
	n.peers = newPeerTable(n)
	if err := n.loadState(); err != nil {
		return fail(err)
	}
	if err := n.openRooms(explicitRoom); err != nil {
		return fail(err)
	}
	n.dm = newDM(n)
	if err := n.startFiles(); err != nil {
		n.dm.close()
		return fail(err)
	}
	n.nat = newNAT(n)
	n.mbox = newMailbox(n)
	n.pex = newPexService(h, log, n.pexKnown)
	n.spawn(n.peers.run)
	n.spawn(n.nat.run)
	return n, nil
}

// loadState reads the contacts (their last addresses, so a restart can
// dial them without a look-up) and the outbox.
func (n *Node) loadState() error {
	if err := n.names.loadRelations(); err != nil {
		return fmt.Errorf("load contacts: %w", err)
	}
	contacts, err := n.db.contacts()
	if err != nil {
		return fmt.Errorf("load contacts: %w", err)
	}
	for _, c := range contacts {
		n.names.loadContact(c)
	}
	pend, err := n.db.pendingPeers()
	if err != nil {
		return fmt.Errorf("load outbox: %w", err)
	}
	for p := range pend {
		msgs, err := n.db.pending(p)
		if err != nil {
			return fmt.Errorf("load outbox: %w", err)
		}
		for _, m := range msgs {
			n.out.add(m)
		}
	}
	return nil
}

// spawn runs f in a goroutine that Close waits for; it does nothing once
// the node is closing.
func (n *Node) spawn(f func()) bool {
	n.life.Lock()
	defer n.life.Unlock()
	if n.life.closed {
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
// if another peer holds it) and the room on every daemon, starts watching
// the room and the contacts, and advertises the room on the DHT, then emits
// EventReady. A registration no daemon accepted yet is kept and retried by
// the rendezvous client.
func (n *Node) Start(ctx context.Context) error {
	n.life.Lock()
	if n.life.closed {
		n.life.Unlock()
		return ErrClosed
	}
	if n.life.started {
		n.life.Unlock()
		return errors.New("already started")
	}
	n.life.started = true
	n.life.Unlock()

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
		if err := n.register(ctx, userNS(n.cfg.Nick)); err != nil {
			return err
		}
		n.registerRooms(ctx)
		n.names.watchContacts()
	}
	n.enterRooms()
	n.peers.kick()
	if n.startNote != "" {
		n.ev.emit(EventWarning{Text: n.startNote})
	}
	n.startLearning()
	n.ev.emit(EventReady{Nick: n.cfg.Nick, Peer: n.h.ID(), Addrs: n.Addrs()})
	n.mbox.start()
	return nil
}

// register registers ns on the daemons. A refusal of the nick is
// ErrNickTaken; a registration no daemon could take yet is only a warning
// (the client keeps trying).
func (n *Node) register(ctx context.Context, ns string) error {
	err := n.rdv.Register(ctx, ns, n.cfg.RegisterTTL)
	var se *rendezvous.StatusError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &se) && se.Status == rendezvous.StatusNotAuthorized:
		if ns == userNS(n.cfg.Nick) {
			return fmt.Errorf("register nick %q: %w (%s)", n.cfg.Nick, ErrNickTaken, se.Text)
		}
		return err
	case ctx.Err() != nil:
		return ctx.Err()
	default:
		n.log.Warn("no rendezvous daemon accepted the registration yet", "ns", ns, "err", err)
		// One sentence for the user; the libp2p detail is in the log.
		n.ev.emit(EventWarning{Text: fmt.Sprintf("no rendezvous daemon reachable for %s yet; retrying in the background", ns)})
		return nil
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

// Host returns the libp2p host the node runs on.
func (n *Node) Host() host.Host { return n.h }

func (n *Node) isClosed() bool {
	n.life.Lock()
	defer n.life.Unlock()
	return n.life.closed
}

// Addrs returns the node's shareable multiaddrs, each ending in /p2p/<id>.
func (n *Node) Addrs() []multiaddr.Multiaddr {
	addrs, err := peer.AddrInfoToP2pAddrs(&peer.AddrInfo{ID: n.h.ID(), Addrs: n.h.Addrs()})
	if err != nil {
		return nil
	}
	return addrs
}

// Close unregisters the nick and rooms (bounded by a short timeout), closes
// the streams and the database, and closes the Events channel. The host
// stays up (it is the caller's).
func (n *Node) Close() error {
	n.life.closeOnce.Do(func() {
		n.mbox.close() // deposits in flight finish first (bounded)
		n.life.Lock()
		started := n.life.started
		n.life.Unlock()
		if started && n.rdv != nil {
			ctx, cancel := context.WithTimeout(context.Background(), unregisterLimit)
			var wg sync.WaitGroup
			for _, ns := range append([]string{userNS(n.cfg.Nick)}, n.roomNamespaces()...) {
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
		n.life.Lock()
		n.life.closed = true
		n.life.Unlock()
		n.dm.close() // handler removed, streams closed
		n.files.Close()
		n.rooms.close()
		n.pex.close()
		n.records.close()
		n.cancel()
		var errs []error
		if n.rdv != nil {
			errs = append(errs, n.rdv.Close())
		}
		n.wg.Wait()
		errs = append(errs, n.db.close())
		n.ev.close()
		n.life.closeErr = errors.Join(errs...)
	})
	return n.life.closeErr
}
