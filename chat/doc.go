// Package chat is the p2p-messaging peer: chat services on a libp2p host
// that register a nick on rendezvous daemons, find other nicks, and
// exchange text messages with them directly over their own stream
// protocol.
//
// # Shape
//
// NewHost assembles the host (TCP and QUIC, Noise, AutoNAT, AutoRelay with
// the daemons as static relays, DCUtR, the DHT); New starts the chat
// services on any host.Host; Open does both, as cmd/chat does. Each piece
// of state has one owner, named after its concept:
//
//	host.go      the host assembly, and the hole-punch tracer feeding the event bus
//	node.go      Node: configuration, lifecycle, registration, rooms
//	dm.go        the ProtocolID stream service: per stream one reader and one writer goroutine
//	delivery.go  Send, acknowledgements, history; the in-memory outbox (one small lock)
//	peers.go     presence, connections and dialling: the peer table, one goroutine
//	names.go     pins, contacts and requests, verification, warnings, watches (one small lock)
//	nat.go       hole-punch events and re-arming
//	store.go     chat.db and its group-commit writer goroutine
//	events.go    the event types and the queue behind Events
//	frame.go     frame decoding and validation
//	embed*.go    the embedded server (a rendezvous and DHT server, with Serve a
//	             relay, on a host of its own) and the start-up that picks the
//	             servers: dial, classify, peer exchange, kept peers
//	pex*.go      peer exchange (/p2p-messaging/pex/1.0.0; wire format and
//	             limits in pex.go) and the signed records it hands out
//
// No lock is held across I/O or a channel send; network readers never wait
// for the disk or the UI.
//
// # Wire format
//
// Protocol ID /p2p-messaging/chat/1.0.0. A chat stream carries a sequence of
// frames in both directions. Each frame is an unsigned-varint length prefix
// followed by that many bytes of a protobuf pb.Frame (chat/pb/chat.proto).
// A prefix above MaxFrameSize (64 KiB) is rejected before anything is
// allocated. A Frame holds exactly one of:
//
//   - Hello{nick}: the first frame each side writes on a new stream. The
//     nick is 1-64 bytes of letters, digits, '-', '_' and '.', in the
//     canonical form NormalizeNick gives (PRECIS UsernameCaseMapped, one
//     script: "Bob" is written bob, a Latin-Cyrillic mix is no nick). The peer's
//     identity is the Noise-authenticated peer ID of the connection, never
//     a frame field; the nick is only a claim that the receiver checks
//     against its pins and the rendezvous daemons (see Names).
//   - Message{id, sent_unix_ms, text}: id is 16 random bytes (32 hex
//     characters in the API), sent_unix_ms the sender's clock, between
//     2020-01-01 UTC and 24 h after the receiver's clock, text valid UTF-8
//     of 1 to MaxTextLen (4096) bytes.
//   - Ack{id}: the receiver stored Message id. Sent for every Message it
//     takes, duplicates included.
//   - Ping{nonce} / Pong{nonce}: liveness and round-trip time. Each side
//     pings every PingInterval (1 s); a stream on which nothing arrived for
//     PingTimeout (3.5 s) is reset and the peer shown offline.
//
// Flow: either side opens a stream, both write Hello, then any number of
// Message/Ack/Ping/Pong frames go either way. One long-lived stream per peer
// is enough; if both sides opened one at once, both stay usable (each side
// reads all of them). A stream ends with a clean close (EOF) when a side
// retires it, or with a reset on any error. A frame that does not decode
// (non-UTF-8 text included), is oversized, has no known body or a
// malformed id, a bad Hello nick, or a first frame that is not a Hello
// resets that stream (the reason is logged at Debug); the node keeps
// serving. A Message with a valid id whose time or text is refused (empty
// or oversized text, a time out of range) is dropped alone: not stored,
// not acknowledged, the stream stays up and the sender keeps it in its
// outbox, so one poisoned message never fails or stalls others. A stream cut
// inside a frame is an error, not a clean end. A repeated Hello is
// ignored. Streams also work over relayed connections, limited or not;
// when a direct connection to the peer appears (hole punch), a new stream
// is opened on it and the relayed one closed.
//
// # Delivery
//
// Send stores a message as pending in the history and the outbox (bbolt,
// DataDir/chat.db) and returns once that record is committed, so a message
// Send accepted survives a crash. The frame does not wait for the commit:
// the outbox is mirrored in memory and the peer's stream writer puts the
// message on the wire while it is being committed. The pending record is
// queued before the frame can leave, so an ack's delivered mark, queued
// behind it on the same writer, always lands after it: EventSent (after
// the pending commit) always precedes EventDelivered (after the mark's
// commit), and EventDelivered comes once per message, also across a crash:
// a mark lost in a crash means the message is resent after the restart,
// deduplicated and acknowledged again, and reported then.
//
// Outgoing messages to a peer go out on one "active" stream at a time (so
// they keep their order); whenever a stream becomes the active one (a new
// connection, the old stream ended, a move from a relayed to a direct
// connection) the whole outbox for that peer is (re)sent on it, oldest
// first, and a message left unacknowledged for AckTimeout (30 s) is written
// again.
//
// The receiver acknowledges a message only after the transaction holding
// it has committed. It remembers the IDs it has seen per peer (the newest
// MaxSeenPerPeer), so a resend is acknowledged again but never shown twice.
// A reader never waits for the disk: a message it cannot take at once (its
// stream has 256 waiting for their commit, the writer's queue of 4096 is
// full, the peer is over its receive rate or storage quota) is simply not
// acknowledged, and the sender writes it again; pings and acks on the same
// stream go on meanwhile. Peers with pending messages are retried when
// they show life (a connection, a stream) and otherwise with exponential
// backoff (RetryInterval doubling up to 1 min).
//
// Writes go through one writer goroutine that commits everything queued
// while the previous transaction was committing in one bbolt transaction
// (group commit): the messages arriving on all streams, the sender's
// pending records and the delivered marks share one fsync. If one write of
// a batch fails, each is retried alone, so a bad one fails alone.
//
// # Names
//
// A node registers p2p-messaging/user/<nick> (exclusive on the daemons: a
// second holder gets E_NOT_AUTHORIZED, reported as ErrNickTaken) and
// p2p-messaging/room/<room> on every daemon; the room is also advertised
// on the DHT (protocol prefix /p2p-messaging). Resolving a nick tries the
// pinned contacts, then the daemons. Verification fails closed: a nick
// counts as held by a peer only when at least one daemon answers and every
// answering daemon lists that peer and no other. A look-up that errs, is
// refused or is rate-limited, daemons that disagree (reported as a
// conflict naming both peers), or no daemon at all leave a claim
// unverified: the peer is shown by its ID with a warning and nothing is
// pinned. The DHT only finds the addresses of peers known by ID (pinned
// contacts, peer IDs the user typed); it never makes a nick trusted.
//
// Only daemons the user configured (Config.Rendezvous with Serve's sources:
// a flag, the environment, the local addrs file) are authorities. A server
// that is just a chat node (another chat's embedded service, this chat's
// own, one learnt by peer exchange or kept on disk; embed_start.go) is
// asked too, but its answers never verify: a nick only such servers list is
// resolved to that peer unverified (a warning, nothing pinned), and a Hello
// claim stays unverified. Signed peer records still prove addresses, so the
// addresses such a server hands out are used.
//
// A verified nick is pinned to its peer (like SSH's known_hosts): the
// first peer a nick resolves to, or that presents in its Hello a nick the
// daemons verify. A verified nick confusable with a contact's (rnary and
// mary, b0b and bob) is flagged with a warning, and from a Hello it is not
// pinned. Another peer later claiming a pinned nick, in a Hello or
// a rendezvous registration, produces an EventWarning; its messages are
// shown under its peer ID and messages to the nick still go to the pinned
// peer only. The look-ups a Hello triggers are bounded so that a peer
// cannot drain the node's request allowance at the daemons: answers are
// cached for 30 s, concurrent look-ups of one nick are joined, one peer may
// make the node look up at most 4 distinct nicks, and all peers together
// at most 5 a second (bursts of 20); a claim over those bounds stays
// unverified.
//
// # Contacts and requests
//
// Contacts are the pinned peers, the peers the user wrote to, and the
// peers the user allowed. A message from anyone else (a stranger: no
// verified nick, never written to) is not put in the history: the first
// one becomes the stranger's request (EventRequest), acknowledged and kept
// in chat.db; its later messages are not acknowledged, so they wait in the
// stranger's outbox. At most MaxRequests (100) requests are kept, the
// oldest dropped. Allow turns the stranger into a contact (its request
// joins the conversation as an EventMessage, and its held messages follow);
// Block drops the request and resets the peer's streams from then on.
//
// # Presence
//
// A peer is online while a chat stream to it is up, or while the daemons
// list it in a watched namespace (the room, the nicks of the contacts the
// user talks with: written to, allowed, or received from) and no stream
// to it has failed since. A registration alone is not proof of life
// (the daemons keep a killed peer listed for a moment and watches replay
// snapshots): once a peer's last stream ends it stays offline until a new
// stream comes up. The node opens streams by itself to the room members and
// contacts the daemons list (up to 64), retrying with backoff, which gives
// presence, nicks and round-trip times for them. A registration does not
// reset that backoff (anyone can register a record), and at most 8
// addresses of a record are kept for dialling. A peer met only in a room
// the node (or the peer) left, never talked to, is forgotten, and the
// streams the node opened to it are closed. A
// killed peer's connection closes, its stream ends and the reconnect fails
// at once, so it shows offline within a second; a peer whose network is
// cut misses pings and shows offline after PingTimeout (3.5 s by default).
// Over QUIC a killed process sends no close at all, so there too the ping
// timeout notices it, within about 4 s. An offline peer's connection is
// reported as none.
//
// # Hole punching
//
// Behind NAT the node reserves a slot on the daemons' relays and meets other
// peers over them; DCUtR then punches a direct connection, and the chat
// stream moves to it. go-libp2p punches only from the receiving side of a
// relayed connection that appears after its hole-punch service started,
// which waits for the host to learn a public address. Peers that met over
// the relay before that would stay relayed, so once the DCUtR handler
// appears the node re-dials its relay-only peers through the relay,
// giving each a fresh inbound relayed connection to punch from. Their
// presence holds meanwhile: a relayed stream ending is never taken as proof
// that the peer is gone, the node reconnects first. An attempt that breaks
// off with a protocol error (reported as a failed EventHolePunch) is
// re-armed the same way, at most twice per peer.
//
// The public address comes from identify: the daemon reports the address it
// sees the connection come from (the NAT's mapping), and go-libp2p uses
// that observation only if the connection's local address is one of the
// host's listen addresses, i.e. a TCP dial that reused the listen port.
// One daemon's observation is enough for hole punching (go-libp2p's
// HolePunchAddrs takes addresses with a single observer; the threshold of
// four applies only to the addresses the host announces). So the host
// dials nothing before it listens: the DHT, which dials its bootstrap peers
// (the daemons) the moment it exists, is created after libp2p.New returns,
// not through libp2p.Routing inside it. Built in there, it raced the
// listener and, about one start in two, got the daemon connection from an
// ephemeral port that every later dial then shared; that observation was
// dropped and the node never punched over TCP (QUIC was immune: its
// listener reuses the UDP socket of earlier dials).
//
// # Limits
//
// MaxFrameSize 64 KiB per frame; MaxTextLen 4096 bytes per message;
// MaxNickLen 64 bytes; HelloTimeout 10 s for the first frame; at most 4
// live chat streams per peer (a new one retires the least recently
// active); the newest MaxSeenPerPeer (10000) incoming IDs per peer kept
// for deduplication; per peer a receive rate of ReceiveRate (1000/s,
// bursts of ReceiveBurst 2000) and a storage quota of PeerQuota (64 MiB of text);
// at most 256 received messages per stream waiting for their commit; 4096
// writes queued on the group-commit writer, at most 1024 per transaction;
// 10 s per frame write; MaxRequests (100) strangers' requests.
//
// # Events
//
// Events go through an internal queue drained by one goroutine into the
// Events channel (capacity EventBuffer), so network readers never block on a
// slow consumer. If the consumer stops reading and the queue reaches 65536
// events, the oldest are dropped and counted in a warning log; messages and
// their states remain in the database (History).
package chat
