// Package mailbox is the sealed offline mailbox on the rendezvous daemons:
// a sender leaves a message sealed to its recipient on the daemons, and
// the recipient fetches and deletes it when it next connects, so a message
// arrives even when the two are never online at the same time.
//
// # Wire format
//
// Protocol ID /p2p-messaging/mailbox/1.0.0. One request per stream: the
// client writes one message (an unsigned-varint length prefix and a
// protobuf-encoded Request, hand-encoded with protowire), closes its write
// side, and reads one Response; the server closes the stream. A length
// prefix above MaxRequestSize (64 KiB + 1 KiB) is answered E_TOO_LARGE
// before the body is read; a request that does not decode resets that
// stream (nothing else). Each request and its answer must fit in
// Limits.StreamTimeout (10 s).
//
//	Request  { 1 op (varint: 1 DEPOSIT, 2 FETCH, 3 DELETE),
//	           2 recipient (bytes: a peer ID, DEPOSIT),
//	           3 box (bytes: the sealed box, DEPOSIT),
//	           4 limit (varint, FETCH; 0 or above 256 means 256),
//	           5 id (bytes, 16, repeated up to 256 times, DELETE),
//	           6 after (bytes, 16: a deposit ID, FETCH: only later ones) }
//	Response { 1 status (varint, always written), 2 text (string),
//	           3 id (bytes: the deposit's ID, DEPOSIT),
//	           4 deposit (repeated Deposit, FETCH), 5 more (varint 1: more wait),
//	           6 count (varint: deposits deleted, DELETE) }
//	Deposit  { 1 id (bytes, 16), 2 box (bytes), 3 stored_unix_ms (varint) }
//
// Identity comes from the connection (Noise), never from a field. Any
// authenticated peer may DEPOSIT for any recipient whose peer ID embeds an
// Ed25519 key (anything else is E_BAD_RECIPIENT). FETCH and DELETE act only
// on the deposits of the peer asking: another peer's deposit IDs match
// nothing. FETCH returns the oldest deposits first (a deposit ID is an
// 8-byte arrival sequence and 8 random bytes), after the deposit ID
// `after` if given, at most 256 and about 1 MiB per response, with more set
// when others wait; so a recipient pages past deposits it keeps for later
// (a stranger's held messages cannot block what comes after them).
// Deposits past their TTL are never handed out. A DEPOSIT of a box already held for that
// recipient (a replay) answers OK with the held deposit's ID and stores
// nothing.
//
// Status codes: OK=0; E_BAD_REQUEST=100 (not a sealed box, unknown op),
// E_BAD_RECIPIENT=101, E_TOO_LARGE=102 (box above Limits.MaxDepositSize);
// E_RECIPIENT_FULL=200 (the recipient's count or bytes), E_SENDER_FULL=201
// (this sender's count for this recipient, or its bytes for all
// recipients), E_STORE_FULL=202 (the daemon's total), E_RATE_LIMITED=203
// (this peer's requests, a token bucket: Limits.RequestRate 50/s, bursts
// of RequestBurst 500); E_INTERNAL=300. A full quota is always an answer,
// never a hang or a silent drop.
//
// Push notice: after storing a deposit for a recipient that is connected,
// the daemon opens a stream to it on /p2p-messaging/mailbox/notify/1.0.0
// that carries no data (both sides close it); the recipient then fetches.
// At most one notice per recipient is in flight (a deposit meanwhile
// sends one more after it) and at most 256 in all. A recipient that is
// not connected fetches when it connects; nobody polls.
//
// # Store and limits
//
// Deposits live in a bbolt file (DBFileName) in the daemon's data dir,
// committed before the answer (concurrent deposits share one fsync via
// bbolt's Batch), so an acknowledged deposit survives a crash. The quota
// counters are rebuilt from the file when it opens. Limits (each a daemon
// flag): MaxDepositSize (16 KiB), MaxPerRecipient (10000) and
// MaxBytesPerRecipient (64 MiB), MaxPerSenderPerRecipient (1000),
// MaxBytesPerSender (64 MiB, all recipients together: a sender cannot
// fill the store with deposits for made-up recipients), TTL (7 days),
// MaxStoreSize (1 GiB). A deposit counts its box plus 128 bytes. Expired
// deposits are deleted every minute (and at start) and give their quota
// back.
//
// # Sealing
//
// Seal and Open use the peers' libp2p Ed25519 identities (the peer ID
// embeds the public key):
//
//  1. The letter body (protobuf: 1 kind, 2 the sender's marshalled public
//     key, 3 the recipient's peer ID, 4 the 16-byte message ID, 5 the time
//     in unix milliseconds, 6 the sender's claimed nick, 7 the text, 8 the
//     further IDs a receipt acknowledges) is signed with the
//     sender's Ed25519 key over "p2p-messaging/mailbox/seal/v1\x00" ||
//     body. Plaintext = len-prefixed body || len-prefixed signature, zero
//     padded to a multiple of 256 bytes.
//  2. The recipient's Ed25519 public key is mapped to its X25519
//     (Montgomery) form with filippo.io/edwards25519; its private scalar
//     is the first half of SHA-512 of its Ed25519 seed, as Ed25519 derives
//     it.
//  3. A fresh ephemeral X25519 key per box (golang.org/x/crypto/curve25519,
//     which refuses low-order points); shared = X25519(eph, recipient).
//  4. key = HKDF-SHA256(shared, salt = eph_pub || recipient_x25519, info =
//     "p2p-messaging/mailbox/v1 chacha20poly1305 key").
//  5. box = 0x01 || eph_pub (32) || ChaCha20-Poly1305(key, nonce = 0,
//     plaintext, aad = 0x01 || eph_pub || recipient peer ID). The key is
//     used once, so the zero nonce is safe.
//
// Open recomputes the key, authenticates the ciphertext, verifies the
// signature with the embedded key, derives the sender's peer ID from that
// key, and checks that the signed recipient is the opener: only the
// recipient can open a box, only the holder of the sender's key can have
// written it, and a letter signed for Carol cannot be re-sealed to Bob.
// Every failure wraps ErrOpen. A receipt (KindReceipt) is the same letter
// with no text, sealed by the recipient back to the sender, naming the
// messages it acknowledges (the ID field and up to MaxAcks more in field
// 8, acks). Replays of a box are harmless: the daemon
// stores a box once, and the chat deduplicates by message ID.
//
// # What the daemon learns
//
// The recipient's peer ID, the depositing peer's ID (it is the
// authenticated connection, used for the per-sender quotas), the box's
// size to within 256 bytes, and the times of deposit and fetch. Not the
// text, the nick, the message ID or the time inside. A sender who wants to
// hide who it writes to from the daemon cannot, with this design.
package mailbox
