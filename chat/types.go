package chat

import (
	"errors"
	"log/slog"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/multiformats/go-multiaddr"
)

// ProtocolID is the chat stream protocol.
const ProtocolID protocol.ID = "/p2p-messaging/chat/1.0.0"

// DefaultRoom is the room a node joins when Config.Room is empty.
const DefaultRoom = "lobby"

// UserNamespacePrefix is where user names live in rendezvous: the daemons
// make it exclusive (one holder per name at a time).
const UserNamespacePrefix = "p2p-messaging/user/"

// RoomNamespacePrefix is where rooms live in rendezvous and the DHT.
const RoomNamespacePrefix = "p2p-messaging/room/"

// Wire and API limits.
const (
	// MaxFrameSize bounds one length-prefixed frame on a chat stream.
	MaxFrameSize = 64 << 10
	// MaxTextLen bounds the UTF-8 text of one message, in bytes.
	MaxTextLen = 4096
	// MaxNickLen bounds a nick, in bytes.
	MaxNickLen = 64
	// MaxRoomLen bounds a room name, in bytes.
	MaxRoomLen = 128
	// IDLen is the length of a message ID in bytes (hex in the API).
	IDLen = 16
	// EventBuffer is the capacity of the Events channel.
	EventBuffer = 1024
)

// ErrNickTaken is returned by Start when another peer holds the nick on a
// rendezvous daemon.
var ErrNickTaken = errors.New("nick taken")

// ErrUnknownNick is returned when a nick cannot be resolved to a peer.
var ErrUnknownNick = errors.New("unknown nick")

// ErrClosed is returned by calls on a closed node.
var ErrClosed = errors.New("node closed")

// Reachability forces what the node believes about its own reachability.
type Reachability int

const (
	// ReachabilityAuto lets AutoNAT decide.
	ReachabilityAuto Reachability = iota
	// ReachabilityPublic forces public reachability (tests, servers).
	ReachabilityPublic
	// ReachabilityPrivate forces private reachability: the node takes relay
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

// Config configures a Node. Zero values mean the defaults.
type Config struct {
	Nick         string
	Room         string                // default DefaultRoom
	DataDir      string                // identity key (0600, atomic), bbolt db: history, outbox, contacts
	ListenAddrs  []multiaddr.Multiaddr // default TCP + QUIC on 0.0.0.0 and :: port 0
	Rendezvous   []peer.AddrInfo       // daemons: rendezvous servers, static relays, DHT bootstrap
	Reachability Reachability          // forced reachability
	Logger       *slog.Logger

	// DisableDHT turns the DHT off (no advertising, no DHT lookups).
	DisableDHT bool
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
}

// MessageStatus is the delivery state of a message.
type MessageStatus int

const (
	// StatusPending: sent but not acknowledged yet (still in the outbox).
	StatusPending MessageStatus = iota
	// StatusDelivered: acknowledged by the receiver (or an incoming message).
	StatusDelivered
)

func (s MessageStatus) String() string {
	if s == StatusDelivered {
		return "delivered"
	}
	return "pending"
}

// Message is one chat message, incoming or outgoing.
type Message struct {
	ID       string  // 32 hex characters
	From, To string  // nicks
	Peer     peer.ID // the other side
	Text     string
	Time     time.Time // the sender's timestamp
	Outgoing bool
	Status   MessageStatus
}

// ConnKind is how a peer is connected.
type ConnKind string

const (
	ConnDirect  ConnKind = "direct"
	ConnRelayed ConnKind = "relayed"
	ConnNone    ConnKind = "none"
)

// ConnInfo describes the best connection to a peer.
type ConnInfo struct {
	Kind      ConnKind
	Transport string // "tcp", "quic", ""
	IPVersion int    // 4, 6, 0
	Remote    multiaddr.Multiaddr
	Limited   bool
}

// PeerStatus is one known peer as Peers reports it.
type PeerStatus struct {
	Nick   string
	Peer   peer.ID
	Online bool
	Conn   ConnInfo
	RTT    time.Duration
}

// Whois describes a nick or peer ID.
type Whois struct {
	Nick   string
	Peer   peer.ID
	Addrs  []multiaddr.Multiaddr
	Pinned bool
	Online bool
	Conn   ConnInfo
}

// Event is something the UI shows. Receive them from Node.Events.
type Event interface{ isEvent() }

// EventReady: the node is registered and ready.
type EventReady struct {
	Nick  string
	Peer  peer.ID
	Addrs []multiaddr.Multiaddr
}

// EventSent: a message was accepted for sending.
type EventSent struct{ ID, To string }

// EventDelivered: the receiver acknowledged a message.
type EventDelivered struct{ ID, To string }

// EventMessage: an incoming message, emitted once per message ID.
type EventMessage struct{ Message Message }

// EventPresence: a peer went online or offline (emitted on change only).
type EventPresence struct {
	Nick   string
	Peer   peer.ID
	Online bool
}

// EventConn: the connection kind to a peer changed (e.g. relayed -> direct).
type EventConn struct {
	Nick string
	Peer peer.ID
	Conn ConnInfo
}

// EventHolePunch: a hole punch attempt ended.
type EventHolePunch struct {
	Peer     peer.ID
	Success  bool
	Attempts int
	Elapsed  time.Duration
	Err      string
}

// EventWarning: something the user must see, e.g. a peer impersonating a
// pinned nick.
type EventWarning struct {
	Text string
	Nick string
	Peer peer.ID
}

func (EventReady) isEvent()     {}
func (EventSent) isEvent()      {}
func (EventDelivered) isEvent() {}
func (EventMessage) isEvent()   {}
func (EventPresence) isEvent()  {}
func (EventConn) isEvent()      {}
func (EventHolePunch) isEvent() {}
func (EventWarning) isEvent()   {}
