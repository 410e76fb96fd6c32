// Package transfer is the file transfer of p2p-messaging: a service on a
// libp2p host that offers files to peers, takes their offers, and moves
// accepted files directly between the two peers in chunks checked against
// SHA-256 hashes, resuming from state kept on disk after a kill of either
// side, a network cut or a change of connection.
//
// # Wire format
//
// Protocol ID /p2p-messaging/file/2.0.0 (1.0.0 had BLAKE3 chunk hashes).
// Every stream starts with one
// request from the side that opened it. Control messages are an
// unsigned-varint length prefix (1 to MaxMessageSize, 1024, checked before
// anything is read) followed by that many bytes: a type byte and fixed
// fields, integers big-endian, strings as a 2-byte length and UTF-8 bytes
// (with a per-field cap). A message with trailing bytes, an unknown type, a
// string over its cap or not UTF-8 is malformed and resets the stream.
//
//	1 OFFER   id[16] size u64 chunk_size u32 file_sha256[32] list_sha256[32] name (<=255) nick (<=64)
//	2 FETCH   id[16] have u64
//	3 CANCEL  id[16] reason (<=256)
//	4 STATUS  code u8 text (<=256)
//	5 HASHES  count u32, then count*32 raw bytes: the chunk hashes
//	6 WANT    start u32 count u32 (count >= 1): chunks [start, start+count)
//	7 CHUNK   index u32 length u32, then length raw bytes
//	8 DONE    (no fields)
//
// Status codes: 0 OK, 1 REFUSED (the recipient takes no offers from this
// peer), 2 BUSY (a limit is full), 3 UNKNOWN (no such transfer for this
// peer), 4 INVALID (malformed or impossible request), 5 TOO_LARGE.
//
// The file is cut into chunks of chunk_size bytes (a power of two from
// MinChunkSize, 64 KiB, to MaxChunkSize, 64 MiB; the last chunk may be
// shorter), at most MaxChunks (16384) of them, so a file is at most 1 TiB
// and its hash list at most 512 KiB. A sender picks DefaultChunkSize
// (1 MiB), doubled until the file fits. The hash list holds one SHA-256
// link per chunk: entry i is the SHA-256 chaining value (the eight state
// words, big-endian) after the first (i+1)*chunk_size bytes, and the last
// entry is the SHA-256 of the whole file, equal to file_sha256 (what users
// compare with sha256sum). Chunk i checks on its own, in any order: SHA-256
// resumed from entry i-1 (the initial value for chunk 0) at offset
// i*chunk_size, fed the chunk, must give entry i (chain.go). Once every
// chunk has checked, the links compose into the SHA-256 of the whole
// content, so the recipient proves the file equal to file_sha256 with one
// SHA-256 pass over each byte, in parallel with the network reads, and
// never reads the file back. list_sha256 is the SHA-256 of the
// concatenated hash list, which commits the offer to it.
//
// # Flow
//
// Offer: the sender opens a stream (a relayed, limited connection will
// do: the offer is small), writes OFFER and half-closes; the recipient
// answers STATUS and closes. The identity of the sender is the connection's
// peer ID; nick is only a claim that the recipient checks as it checks a
// chat Hello. An offer is refused (REFUSED) when the recipient's Authorize
// refuses the peer (by default: blocked and unknown peers), TOO_LARGE above
// its MaxFileSize, INVALID for a chunk geometry outside the rules above,
// BUSY when MaxPendingPerPeer (8) offers of the peer or MaxPending (64) in
// all wait for a decision. An offer taken is kept as a small record in
// the state directory (in/<id>.json: the offer's fields and when it
// arrived) before the OK, so it survives a restart of the recipient and
// still counts toward those limits then (a start with lower limits keeps
// the oldest); nothing is written to the download directory before the
// user accepts it. An offer without a decision for OfferTTL (7 days)
// expires: its record goes, the user sees it fail, and the sender gets a
// CANCEL (best effort). A sender keeps its offers on disk too, so after a
// restart of either side the offer can still be accepted and fetched.
//
// Accept is local: the recipient checks the free space of the download
// directory (statfs on Linux, macOS, FreeBSD and DragonFly; skipped
// elsewhere), creates the partial file "<name>.<id8>.part" there and its
// state in the state directory, and starts fetching. Reject is a CANCEL to the sender (best
// effort), which then drops its state.
//
// Fetch: the recipient opens a stream on a direct connection only and
// writes FETCH (have = bytes it holds, for the sender's progress). The
// sender answers STATUS: UNKNOWN unless the id is an offer it made to this
// very peer (a peer that opens the protocol without an offer gets nothing),
// INVALID on a relayed connection, BUSY past MaxServePerPeer (4) fetch
// streams of the peer at once. On OK it follows with HASHES and the hash
// list; the recipient checks it against list_sha256. The recipient then
// writes WANT messages (at most 1024 at a time, so they always fit in the
// stream's window) for the chunks it does not hold, and the sender answers
// each WANT with the CHUNK messages of its range, in order. The recipient
// expects exactly the chunks it asked for, in order, each of its offered
// length: a CHUNK with another index ("out-of-range offset") or another
// length ("more bytes than offered") cuts the sender off: the stream is
// reset and the transfer fails. Each piece of a chunk is written to the
// partial file at its offset and handed to a checking goroutine (no chunk
// is buffered whole); a chunk that fails its hash is dropped and asked for
// again, up to MaxBadChunks (3) per transfer, past which the sender is cut
// off. A sender may be asked for at most twice the file plus
// MaxBadChunks+1 chunks on one stream.
//
// When every chunk has checked, the whole file has (its SHA-256 is the
// hash list's last entry, which the recipient checked against file_sha256
// when the list arrived; an empty file is checked against the SHA-256 of
// nothing); the recipient syncs it and moves it into place under its name,
// or "name (1).ext", "name (2).ext", ... if that exists (a hard link that
// fails on an existing name, so nothing is ever overwritten). A list that
// does not end in file_sha256 fails the transfer and removes the partial
// file. Then it writes DONE and closes; the sender reports the transfer
// done and drops its state.
//
// # Resume
//
// Both sides keep each transfer in the state directory: in/<id>.json or
// out/<id>.json (the offer, the source path and its modification time, or
// the download directory and the partial file) and <id>.hashes (the chunk
// hashes). A restarted sender serves fetches of its offers again (a source
// whose size or modification time changed fails the transfer); a
// restarted recipient reads the partial file back, keeps the chunks that
// match their hashes and fetches only the rest, so a kill costs at most the
// chunk that was arriving. Within a run, a fetch that breaks (network cut,
// reset, a new connection replacing the old: a newer FETCH of the same
// transfer resets the older stream) is retried with backoff (RetryMin 1 s
// doubling to RetryMax 30 s) and at once when a new connection to the
// peer appears. A fetch during which nothing arrived for StallTimeout
// (30 s) counts as a stall; MaxStalls (3) in a row fail the transfer.
//
// # Relayed connections
//
// The daemons' relayed connections are limited (by default 2 minutes and
// 128 KiB per direction), far too little for files. Offers and cancels (a
// few hundred bytes) may use them; chunk data never does: a recipient with
// only a relayed connection to the sender shows the transfer as
// "waiting_direct" (waiting for a direct connection), tries a direct dial
// on each retry when it knows a direct address of the sender, and fetches
// as soon as a direct connection appears (a hole punch); a sender refuses
// a FETCH that arrives over a relay. A transfer that was running when the
// connection changed simply resumes on the new one.
//
// # Names
//
// The offered name is reduced to a plain file name (SanitizeName): the part
// after the last '/' or '\', no control or format characters (bidi
// overrides included), no characters Windows forbids, no leading dots or
// spaces (no hidden files, no "." or ".."), no trailing dots or spaces, no
// device names, at most 200 bytes keeping the extension; an empty result is
// "file". The saved file is always inside the chosen directory.
package transfer
