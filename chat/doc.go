// Package chat is the p2p-messaging peer: a libp2p node that registers a
// nick on rendezvous daemons, finds other nicks, and exchanges text
// messages with them directly over its own stream protocol.
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
//     nick is 1-64 bytes of letters, digits, '-', '_' and '.'. The peer's
//     identity is the Noise-authenticated peer ID of the connection, never
//     a frame field; the nick is only a claim that the receiver checks
//     against its pins and the rendezvous daemons (see Names).
//   - Message{id, sent_unix_ms, text}: id is 16 random bytes (32 hex
//     characters in the API), sent_unix_ms the sender's clock, text valid
//     UTF-8 of 1 to MaxTextLen (4096) bytes.
//   - Ack{id}: the receiver stored Message id. Sent for every Message,
//     duplicates included.
//   - Ping{nonce} / Pong{nonce}: liveness and round-trip time. Each side
//     pings every PingInterval (1 s); a stream on which nothing arrived for
//     PingTimeout (3.5 s) is reset and the peer shown offline.
//
// Flow: either side opens a stream, both write Hello, then any number of
// Message/Ack/Ping/Pong frames go either way. One long-lived stream per peer
// is enough; if both sides opened one at once, both stay usable (each side
// reads all of them). A stream ends with a clean close (EOF) when a side
// retires it, or with a reset on any error. A frame
// that does not decode, is oversized, has no known body, a malformed id,
// empty, oversized or non-UTF-8 text, or a first frame that is not a Hello
// resets that stream (the reason is logged at Debug); the node keeps
// serving. A stream cut inside a frame is an error, not a clean end. A
// repeated Hello is ignored. Streams also work over limited
// (relayed) connections; when a direct connection to the peer appears (hole
// punch), a new stream is opened on it and the relayed one closed.
//
// # Delivery
//
// Send stores a message as pending in the history and the outbox (bbolt,
// DataDir/chat.db) and returns once that record is committed, so a message
// Send accepted survives a crash. The frame does not wait for the commit:
// the outbox is mirrored in memory and the peer's stream writer puts the
// message on the wire while it is being committed. An ack that arrives
// before the commit is held and reported by Send right after EventSent, so
// EventSent always precedes EventDelivered and each comes once. (If the
// process dies during Send, the peer may have the message although the
// sender's history does not; if the commit fails, Send returns an error
// and the frame may still have arrived.)
//
// Outgoing messages to a peer go out on one "active" stream at a time (so
// they keep their order); whenever a stream becomes the active one (a new
// connection, the old stream ended, a move from a relayed to a direct
// connection) the whole outbox for that peer is (re)sent on it, oldest
// first, and a message left unacknowledged for AckTimeout (30 s) is written
// again. An Ack removes the message from the outbox and emits
// EventDelivered; the delivered mark in the database is written lazily
// (with the next commit, at most 50 ms later; History waits for it). If a crash loses the mark, the message is resent
// after the restart and the receiver deduplicates and acknowledges it again.
//
// The receiver acknowledges a message only after the transaction holding
// it has committed. It remembers the IDs it has seen per peer (the newest
// MaxSeenPerPeer), so a resend is acknowledged again but never shown twice.
// Peers with pending messages are retried when they show life (a rendezvous
// registration, a connection) and otherwise with exponential backoff
// (RetryInterval doubling up to 1 min).
//
// Writes go through one writer goroutine per node that commits everything
// queued while the previous transaction was committing in one bbolt
// transaction (group commit): the messages arriving on all streams, the
// sender's pending records and the delivered marks share one fsync. A
// stream's reader does not wait for the commit; its acks go out in order
// as their transactions commit, those of one commit in one write.
//
// # Names
//
// A node registers p2p-messaging/user/<nick> (exclusive on the daemons: a
// second holder gets E_NOT_AUTHORIZED, reported as ErrNickTaken) and
// p2p-messaging/room/<room> on every daemon, and advertises both on the DHT
// (protocol prefix /p2p-messaging). Resolving a nick tries the pinned
// contacts, then the daemons, then the DHT. The first peer a nick resolves
// to, or that presents in its Hello a nick the daemons list for it, is
// pinned to it (like SSH's known_hosts; when no daemon answers, the Hello
// is trusted on first use). A Hello nick that the daemons list for nobody
// is not pinned: a warning says so and the peer is shown by its ID. Another peer later
// claiming a pinned nick, in a Hello or a rendezvous registration, produces
// an EventWarning; its messages are shown under its peer ID and messages to
// the nick still go to the pinned peer only.
//
// # Presence
//
// A peer is online while a chat stream to it is up, or while the daemons
// list it in a watched namespace (the room, pinned contacts' nicks) and no
// stream to it has failed since. A registration alone is not proof of life
// (the daemons keep a killed peer listed for a moment and watches replay
// snapshots): once a peer's last stream ends it stays offline until a new
// stream comes up. The node opens streams by itself to the room members and
// contacts the daemons list (up to 64), retrying with backoff, which gives
// presence, nicks and round-trip times for them. A killed peer's connection
// closes, its stream ends and the reconnect fails at once, so it shows
// offline within a second (the daemons also drop its registrations when its
// connection to them closes); a peer whose network is cut misses pings and
// shows offline after PingTimeout (3.5 s by default). Over QUIC a killed
// process sends no close at all, so there too the ping timeout notices it,
// within about 4 s.
//
// # Hole punching
//
// Behind NAT the node reserves a slot on the daemons' relays and meets other
// peers over them; DCUtR then punches a direct connection, and the chat
// stream moves to it. go-libp2p punches only from the receiving side of a
// relayed connection that appears after its hole-punch service started,
// which waits for the host to learn a public address. Peers that met over
// the relay before that would stay relayed, so once the DCUtR handler
// appears the node re-dials its relay-only peers through the relay
// (punchWhenReady), giving each a fresh inbound relayed connection to punch
// from. Their presence holds meanwhile: a relayed stream ending is never
// taken as proof that the peer is gone, the node reconnects first. An
// attempt that breaks off with a protocol error (reported as a failed
// EventHolePunch) is re-armed the same way, at most twice per peer, since
// go-libp2p ignores connections that arrive while an attempt runs.
//
// The public address comes from identify: the daemon reports the address it
// sees the connection come from (the NAT's mapping), and go-libp2p uses
// that observation only if the connection's local address is one of the
// host's listen addresses, i.e. a TCP dial that reused the listen port.
// One daemon's observation is enough for hole punching (go-libp2p's
// HolePunchAddrs takes addresses with a single observer; the threshold of
// four applies only to the addresses the host announces). So the node dials
// nothing before it listens: the DHT, which dials its bootstrap peers (the
// daemons) the moment it exists, is created after libp2p.New returns, not
// through libp2p.Routing inside it. Built in there, it raced the listener
// and, about one start in two, got the daemon connection from an ephemeral
// port that every later dial then shared; that observation was dropped and
// the node never punched over TCP (QUIC was immune: its listener reuses
// the UDP socket of earlier dials).
//
// # Limits
//
// MaxFrameSize 64 KiB per frame; MaxTextLen 4096 bytes per message;
// MaxNickLen 64 bytes; HelloTimeout 10 s for the first frame; at most 4
// live chat streams per peer (a new one retires the least recently active);
// the newest MaxSeenPerPeer (10000) incoming IDs per peer kept for
// deduplication; at most 256 received messages per stream waiting for
// their commit (then the stream's reader waits); 4096 writes queued on the
// group-commit writer (then writers wait), at most 1024 per transaction;
// 10 s per frame write.
//
// # Events
//
// Events go through an internal queue drained by one goroutine into the
// Events channel (capacity EventBuffer), so network readers never block on a
// slow consumer. If the consumer stops reading and the queue reaches 65536
// events, the oldest are dropped and counted in a warning log; messages and
// their states remain in the database (History).
package chat
