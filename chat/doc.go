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
//	nat.go       hole-punch events, re-arming, one direction of relayed connections
//	store.go     chat.db and its group-commit writer goroutine
//	events.go    the event types and the queue behind Events
//	mailbox.go   the sealed offline mailbox on the daemons (rendezvous/mailbox)
//	frame.go     frame decoding and validation
//	files.go     file transfers: the chat/transfer service on the node's host
//	room*.go     rooms: GossipSub, the validator, history sync, invites (see Rooms)
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
// # Offline mailbox
//
// A message that its recipient does not acknowledge within DepositAfter
// (3 s; at once when the recipient is offline, and at Close for whatever
// is still waiting) is also sealed to the recipient (rendezvous/mailbox)
// and deposited on every daemon; EventStored says on how many. The node
// fetches its own deposits from every daemon when it starts, when a daemon
// connection comes up, and when a daemon pushes a notice (no polling), at
// most 4096 per round and one round a second after a burst of 5. A page
// of fetched messages goes through the same store path as a stream's
// (dedupe by message ID, contacts and requests, quotas) in one group
// commit; what was stored or was a duplicate is deleted on the daemon and
// acknowledged: with Ack frames if a stream to the sender is up, otherwise
// with one sealed receipt per sender and page (up to 256 IDs) in the
// sender's mailbox. A receipt is an ack: the message leaves the outbox
// and EventDelivered comes once, whichever path arrived first. A box that
// does not open (tampered, not for us, a forged sender) is deleted and
// reported in one warning per round. Deposits that cannot be taken now (a
// stranger's held messages, the store busy) stay on the daemon and the
// next page starts after them. chat.db records which daemons hold each
// pending message, so a restart does not deposit it again and a daemon
// that was away (refused, unreachable) gets it when its connection comes
// back, with another EventStored carrying the new count; Close waits up
// to 5 s for deposits in flight. Config.NoDeposit never deposits (messages or
// receipts).
//
// # Names
//
// A node registers p2p-messaging/user/<nick> (exclusive on the daemons: a
// second holder gets E_NOT_AUTHORIZED, reported as ErrNickTaken) and
// p2p-messaging/room/<room> on every daemon; the room is also advertised
// on the DHT (protocol prefix /p2p-messaging). Resolving a nick tries the
// pinned contacts, then the daemons. Verification fails closed: a nick
// counts as held by a peer only when at least one daemon answers and the
// answering daemons name that peer and no other, as registered under the
// nick or as the holder of its lease (a DISCOVER's name_holder, see the
// rendezvous package doc, "Names"). The lease names its holder also while
// it is offline and unregistered: a letter from the mailbox, or a nick
// resolved to send to, is verified by it. A look-up that errs, is refused
// or is rate-limited, daemons that disagree, or one daemon whose lease
// names another peer than its registration (reported as a conflict naming
// both peers), or no daemon at all leave a claim unverified: the peer is shown by its ID with a warning and nothing is
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
// addresses of a record are kept for dialling. At most 32 chat stream
// dials run at once; the rest queue, so a burst of sends to many peers
// does not start hundreds of handshakes that all time out together. A
// peer with a live chat stream is tagged in the connection manager (value
// 100, above a GossipSub mesh link's 20), so when the node holds more
// connections than the manager's high water mark, the conversations' are
// the last it closes. A peer met only in a room
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
// re-armed the same way, at most twice per peer, unless every connection
// to the peer is a relayed one this node dialled (then the peer punches
// from it, and re-dialling would cut its punch off).
//
// Between two peers there is one direction of relayed connections. Two
// peers that reach each other at about the same time (one sends a message
// while the other opens its stream to a contact or room member) each dial
// through the relay, and get two relayed connections, one dialled by each.
// DCUtR then runs from both sides at once, and each side's coordination
// stream goes over whichever connection its host picks; go-libp2p resets a
// stream that arrives on a connection the receiver did not dial, so each
// run failed at random, sometimes both, and the two runs' simultaneous
// TCP dials (merged into one dial per peer, with the role of whichever
// started first) could leave both sides in the same role, so that every
// handshake failed until DCUtR's third attempt switched roles. In the test
// bed (full cone, TCP, 20 runs) a coordination stream was reset or cut in
// 17 runs, and in 2 the dials failed after 5 s each until the third
// attempt. So when a relayed connection appears and the peer is also
// connected the other way, the side with the larger peer ID closes the
// relayed connections it dialled (the chat streams on them reopen on the
// one kept) before its own DCUtR run opens its stream: that side punches,
// its stream goes over the connection it received, and the other side's
// run, cut short, is not re-armed. Only if the other side's run is already
// under way on a connection this side dialled (its DCUtR stream open) does
// this side keep its own and close the other's instead, so that no run in
// progress is cut off.
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
// When a punch fails, Peers says why in one short phrase (PeerStatus.Punch,
// while the connection is not direct), from the DCUtR outcome: "timeout: no
// answer through the NATs (symmetric NAT or firewall)", "no public address
// learned", "peer has no public address", "symmetric NAT detected" (when
// go-libp2p classified the host's own NAT as endpoint dependent, which takes
// several observers) and so on. A punch cut short keeps the earlier, more
// telling reason; a success clears it. At most 256 peers' reasons are kept
// (those of peers without a connection go first).
//
// # Files
//
// File transfers run on their own protocol, /p2p-messaging/file/2.0.0
// (package chat/transfer documents the wire format, resume and limits),
// beside the chat streams. SendFile offers a file to a nick (resolved as
// Send resolves it; the recipient becomes a contact); the recipient sees
// EventFileOffer and nothing is written until AcceptFile, which checks the
// free space of the directory; RejectFile tells the sender. Offers from
// blocked peers are always refused; offers from other peers that are not
// contacts are refused unless the offer's nick claim verifies at the
// daemons (as a Hello's would) or Config.AcceptStrangerFiles is set; Block
// also ends the peer's unfinished transfers. State
// lives in DataDir/transfers, files land in Config.DownloadDir (default
// DataDir/downloads). Transfers survive a restart of either side and move
// only over direct connections: over a relay they show "waiting_direct".
//
// # Rooms
//
// A node is in any number of rooms (Join, Leave; the joined rooms are kept
// in chat.db and rejoined at start). A room name is 1-64 bytes of letters,
// digits, '-', '_' and '.'. Each room is one GossipSub topic (go-libp2p-pubsub
// v0.19, strict signing, peer scoring): /p2p-messaging/room/<name> for an
// open room. The message data is a protobuf body (roomwire.go: a 16-byte
// id, the author's send time in ms, the text, the author's claimed nick);
// the author is the signing peer, never a field, and the nick shown is the
// author's pinned or daemon-verified nick, else its peer ID. The topic
// validator rejects data over 6 KiB, bodies that do not decode (text
// empty, over MaxTextLen or not UTF-8) and seals that do not open; it
// ignores (neither shows nor relays) messages sent more than
// RoomReplayWindow (5 min) from our clock, authors the user blocked, and
// an author over its per-room token bucket (RoomRate 5/s, RoomBurst 20).
// Every room message goes into chat.db (at most RoomHistoryMax 1000 per
// room and RoomHistoryAge 7 days, oldest dropped) and is shown once per
// (author, id), however it arrived.
//
// Members find each other through the room's rendezvous namespace (the
// watch opens chat sessions to up to 64 listed members, whose connections
// GossipSub then uses), and the DHT (the namespace advertised, and looked
// up every 30 s: up to 8 members dialled per look-up). Invite-only rooms
// (CreateRoom, Invite, Join with the invite string
// p2pm-invite:<name>:<secret>) derive their topic
// (/p2p-messaging/room/sealed/<hex>), namespace and XChaCha20-Poly1305 key
// from the 32-byte secret with HKDF-SHA256, so the daemons and the DHT see
// neither the name nor the text, and a peer without the invite can neither
// read nor post (its messages fail the seal and count against its score).
// A member behind a symmetric NAT reaches the others only through a
// daemon's relay. GossipSub does not open streams over limited relayed
// connections, so over a default (limited) relay such a member is not in
// the mesh: it is shown offline in Members, and the room reaches it through
// history sync, which runs over limited connections: every 30 s each node
// asks up to two members the daemons list in the room but GossipSub does
// not reach for the last minute (so their posts reach the room within
// about 30 s), and a node with no mesh peer at all asks them for
// everything since its newest message (so it reads the room). A daemon run
// with -relay-infinite gives unlimited relayed connections, and over those
// the member is a full mesh member.
//
// History sync, protocol /p2p-messaging/room-history/1.0.0 (roomsync.go):
// one request per stream (topic, since, limit) answered by up to limit
// signed GossipSub messages as they were received, oldest first, and an
// end frame with a status (0 ok, 1 not in that room, 2 busy, 3 bad
// request). A node asks the first RoomSyncPeers (3) members it meets in a
// room for everything since its newest message (less the replay window),
// and every member again 2 s after meeting it for the last 30 s (the
// messages a new link can miss while it forms). The asker checks each
// message as the validator would plus its signature (so a member passing
// history on cannot forge or alter it) and holds each author to the room's
// rate on the messages' own send times; a bad message ends the exchange
// with a warning, the valid ones before it are kept. The answerer serves 8
// requests at once, each peer once a second (bursts of 5), and answers
// busy beyond that; requests over 1 KiB, answers over the frame bound,
// more messages than asked and exchanges over 30 s end the stream.
//
// GossipSub announces a node's topics to every peer it is connected to, so
// a peer without the invite can learn a sealed topic and subscribe; it
// still counts for nothing: in an invite-only room a peer enters the mesh
// (the peer filter), the members, presence and history answers only once
// it proved it holds the room's key over /p2p-messaging/room-proof/1.0.0
// (roomproof.go: HMAC-SHA256 with a key derived from the secret, over a
// fresh nonce and both peer IDs, so a proof cannot be replayed or relayed).
//
// Block (persisted; Unblock lifts it) drops a peer everywhere: its chat
// streams are reset, its room messages ignored by every room's validator
// (so this node does not relay them) and it is kept out of the meshes.
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
