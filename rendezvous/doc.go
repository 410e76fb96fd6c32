// Package rendezvous implements the libp2p rendezvous protocol
// (/rendezvous/1.0.0, spec r3): a server that maps namespaces to the signed
// peer records of the peers registered under them, and a client that
// registers, discovers and watches across several such servers.
//
// # Wire format
//
// Every message on a stream is an unsigned-varint length prefix followed by
// a protobuf (proto2) Message from pb/rendezvous.proto, whose field numbers
// are the spec's. A length prefix above MaxMessageSize (1 MiB) ends the
// stream before anything is allocated for it. proto2 means every field that
// is set is written, even when zero: the server always writes `type` and
// `status`, which Rust and Nim peers depend on.
//
// A client opens a stream and sends requests one after another; the server
// answers each in order and keeps the stream open until the client closes
// its side (one request per stream works the same way). The requests are:
//
//   - REGISTER {ns, signedPeerRecord, ttl}: answered by REGISTER_RESPONSE
//     {status, statusText, ttl}. ns is 1..255 bytes of UTF-8. ttl is in
//     seconds; absent or 0 means 2 h, otherwise it must lie within the
//     server's bounds (default 2 min .. 72 h) or the answer is
//     E_INVALID_TTL. signedPeerRecord is a libp2p signed envelope (domain
//     "libp2p-peer-record") holding a peer record; its signature must
//     verify, the record's peer ID must match the signing key, and it must
//     be the authenticated remote peer of the stream: a peer registers only
//     itself; and it must hold at least one address (else
//     E_INVALID_SIGNED_PEER_RECORD, with the reason); its addresses are
//     checked too (see Addresses in records). Registering (peer, ns)
//     again replaces the previous registration and restarts its TTL. The
//     granted TTL is returned. An extension field, claim_proof (100),
//     carries the proof of work that claims a new name (see Names).
//   - UNREGISTER {ns}: removes the sender's registration in ns. No response;
//     the client waits for the server to end the stream, and takes a reset
//     (what other servers do) as well as a clean close. An extension field,
//     release_name (100), also gives up the sender's lease on the name ns
//     (see Names).
//   - DISCOVER {ns, limit, cookie}: answered by DISCOVER_RESPONSE
//     {registrations, cookie, status, statusText}. An absent (or empty) ns
//     lists all namespaces. limit 0 or absent means the maximum (1000);
//     larger values are clamped. Each registration carries its own ns and
//     its remaining TTL (rounded up, so a live one never shows 0). An OK
//     response always carries a cookie, and a page never exceeds
//     MaxMessageSize: a page of large records may hold fewer than limit.
//     The client reads a registration without ns in an answer for one
//     namespace as belonging to it (proto3 servers omit it), drops one
//     naming another namespace, and accepts records with no addresses.
//     An extension field, name_holder (100), names the holder of a
//     name's lease (see Names).
//
// Anything else (an undecodable frame, a message without a type, a response
// type sent as a request, a truncated frame) resets that stream and is
// logged at Debug; the server keeps serving everyone, including that peer.
// A stream that stays silent longer than the stream timeout (default 1 min)
// after an answer is reset; the server renews the deadline lazily, so the
// reset comes between 1 and 1.5 times the timeout after that answer.
//
// Status codes: OK, E_INVALID_NAMESPACE (empty, too long, not UTF-8),
// E_INVALID_SIGNED_PEER_RECORD (also: too many addresses, or an address
// that would aim dialers at someone else), E_INVALID_TTL,
// E_INVALID_COOKIE, E_NOT_AUTHORIZED (a name leased to another key, a
// missing or weak claim proof, the names per key reached, or the per-peer
// cap reached), E_INTERNAL_ERROR (the store cannot write to disk; reads
// still work), E_UNAVAILABLE (the per-peer request rate exceeded, the
// server's total registration cap reached, the source network's claim
// rate exceeded, or the names table full). Non-OK answers carry a
// human-readable statusText.
//
// # Cookies
//
// The server numbers every registration with a sequence number that only
// grows, and keeps each namespace's registrations ordered by it. A cookie is
// 8 bytes of big-endian sequence number followed by the UTF-8 namespace it
// was issued for (empty for a discover over all namespaces): the shape the
// Rust client parses. DISCOVER returns the registrations numbered after the
// cookie, and a cookie positioned after the last one returned. Paging with
// the returned cookies therefore yields every registration exactly once, and
// polling with the last cookie yields only registrations that are new or
// were refreshed since. A cookie that is malformed, was issued for another
// namespace, or lies beyond the server's current sequence number is answered
// with E_INVALID_COOKIE. The sequence number is persisted (and starts no
// lower than the clock in nanoseconds), so cookies stay valid across
// restarts and never hide registrations made after one.
//
// # Limits
//
// Limits holds every bound; DefaultLimits gives: TTL 2 min .. 72 h, default
// 2 h; namespace 1..255 bytes; 1000 registrations per peer (replacing one
// does not count twice; the 1001st is E_NOT_AUTHORIZED); 500,000 in total
// (then E_UNAVAILABLE; a name's own registration is counted apart, and a
// share is kept for name holders, see Names); 1000 per DISCOVER; a token bucket per peer of 100
// requests/s with a burst of 1500 (then E_UNAVAILABLE, while other peers
// are served normally); signed records up to 16 KiB; a 1 min stream
// timeout; 48 watches per peer and 100,000 in total (then an ERROR event
// with E_UNAVAILABLE). The per-peer watch cap fits the inbound streams per
// peer and protocol that go-libp2p's default resource manager allows (at
// least 64); SetResourceLimits raises a host's limits to fit higher caps.
//
// Streams are accounted in the host's resource manager under the service
// ServiceName, as go-libp2p's circuit relay does: a rendezvous stream
// reserves 4.2 KiB for its life, plus what a request above 4 KiB or a
// DISCOVER page above 4 KiB holds while it is handled (a page that does not
// fit is answered E_UNAVAILABLE); a watch stream reserves its request and
// its event queue (25 KiB by default). A stream the resource manager
// refuses is reset.
//
// Expired registrations disappear from answers at once and are freed by a
// sweeper that runs every 30 s and soon after a read skipped one.
//
// # Store
//
// Registrations live in an in-memory index: DISCOVER on an open stream
// takes a read lock, binary-searches the namespace's sequence-ordered index
// and writes the stored record bytes straight into a reused buffer, without
// allocating. With WithDataDir, changes are written through to a bbolt file
// (rendezvous.db) by a background writer that commits what 20 ms gathered
// in one transaction (one fsync per batch; answers never wait for it);
// Close flushes them. On start the server loads the live registrations,
// drops the expired ones and restores the sequence number.
//
// # Extensions
//
// Unregister on disconnect (on by default): when the last connection of a
// peer that holds registrations closes, its registrations are removed after
// a grace period (WithDisconnectGrace, default 2 s) unless it reconnected in
// the meantime. Registrations loaded from disk at start are subject to this
// only once their peer connects again.
//
// Exclusive namespaces: under a prefix (WithExclusivePrefix; off by default,
// the daemon passes the chat's user prefix "p2p-messaging/user/") a
// namespace is a name, held by one key at a time through a lease that
// outlives the registration; see Names.
//
// Watch, on its own protocol WatchProtocolID
// (/p2p-messaging/rendezvous/watch/1.0.0), with the same framing: the client
// sends one WatchRequest{ns} and then only reads. The server answers with a
// WatchEvent REGISTERED (the registration with its ns and remaining TTL) for
// every live registration in ns, one SYNCED, and then REGISTERED (new or
// refreshed) and UNREGISTERED (peer ID in binary form; by unregister,
// expiry, disconnect or replacement by the holder of an expired exclusive
// name) as they happen, until either side resets or the connection closes.
// Data after the request ends the watch with a reset; a client may
// half-close its side and keep reading (a half-closed watch whose
// connection is gone is ended within a quarter of the stream timeout). A
// refused request (bad ns,
// watch caps reached, rate limit) gets one ERROR event with a status and the
// stream is closed. Each subscriber has a bounded queue (default 1024
// events); one that falls behind is reset and must resubscribe, so a slow
// watcher never slows registration.
//
// # Names
//
// A namespace under the exclusive prefix is a name. The first peer to
// register a free name claims it: the server binds the name to that
// peer's key with a lease, kept apart from the registration (the
// presence). The lease lasts Limits.LeaseDuration (default 30 days) after
// the owner last registered or refreshed the name, and never ends before
// the owner's registration does. Unregister, expiry and disconnect end
// only the presence: while the lease lasts, a REGISTER of the name by any
// other peer is E_NOT_AUTHORIZED with the status text "namespace is
// exclusive and held by another key until <RFC 3339 UTC time> ...", also
// while the owner is offline. The owner takes the name back by
// registering it again, which needs nothing more and renews the lease.
//
// Holder: an OK DISCOVER_RESPONSE to a DISCOVER of one name carries, in
// name_holder (field 100 of DiscoverResponse, an extension: other clients
// ignore it), the binary peer ID of the key that holds the name's live
// lease, on every page and also when the holder has no registration (it
// is offline): so a peer can tell that a name is held, and by whom, from
// a sender it never saw online. It is absent for a free (or released, or
// expired) name, for a namespace outside the exclusive prefix and for a
// DISCOVER over all namespaces. Client.DiscoverNameOn returns it; a value
// that is not a peer ID fails that call.
//
// Release: the owner gives a name up with an UNREGISTER whose Unregister
// message carries release_name = true (field 100, an extension: other
// servers ignore it and just unregister). It ends the lease and the
// registration; from any other peer it changes nothing (no response is
// sent, as for every UNREGISTER). Client.Release does this on every
// server.
//
// Leases are persisted in their own bbolt file beside the registrations,
// dir/names.db (bucket "leases", key = the name, value = expiry as 8
// bytes big-endian unix nanoseconds followed by the owner's binary peer
// ID), written in batches like the registrations. A renewal is written
// once the lease moved on by an hour (or 1 % of the lease, if shorter), so
// a crash shortens a lease by at most that much. Registrations found on
// disk without a lease (written before leases existed) give their holders
// one at start. At most Limits.MaxNames (default 100,000) leases are held;
// a claim beyond that is E_UNAVAILABLE. Expired leases are freed by the
// sweeper.
//
// A key holds at most Limits.MaxNamesPerPeer names (default 3): a further
// claim is E_NOT_AUTHORIZED, "this key already holds 3 names (...), the
// most one key may hold; release one first". Refreshing a held name is no
// claim; a release or an expired lease frees a slot.
//
// Claiming a free name costs the claimer two things the server checks
// cheaply, in this order (refreshing a held name costs neither):
//
//   - A proof of work bound to (peer ID, name). Register carries it in
//     claim_proof (field 100, bytes; other servers ignore it): a nonce of
//     1..64 bytes such that SHA-256("p2p-messaging name claim" || peer ID
//     (binary) || 0x00 || ns || nonce) has at least Limits.ClaimDifficulty
//     leading zero bits (default 19: about 2^19 hashes, 104 ms on one core
//     here; the server checks one hash). Without it, or with a weaker one,
//     the answer is E_NOT_AUTHORIZED with a status text containing
//     "claim-difficulty=<D>" (ClaimDifficultyKey), so a client knows what
//     to compute. ClaimDifficulty 0 asks for no proof.
//   - A token of its source network's bucket: one per IPv4 address, one
//     per IPv6 /56 (the address the REGISTER's connection comes from),
//     Limits.ClaimBurst claims at once (default 8), then one per
//     Limits.ClaimInterval (default 5 min). Beyond it the answer is
//     E_UNAVAILABLE, "too many new names claimed from your network
//     (<prefix>), the next in <duration>". Loopback and private sources
//     count like any other. At most MaxNames networks are tracked; a new
//     one finding the table full of buckets that have not refilled is
//     E_UNAVAILABLE.
//
// The Client attaches the proof: under a prefix given with
// WithClaimPrefix it computes one per name at DefaultClaimDifficulty
// (cached; a proof serves every server) and sends it from the first
// attempt; for any name a server refuses with a claim-difficulty it
// computes that difficulty and retries once, up to WithMaxClaimDifficulty
// (default 23).
//
// Room for established names: the total cap (MaxRegistrations) must not
// let strangers lock out the users who hold names. A name registered by
// its owner is counted apart from MaxRegistrations (the lease table,
// MaxNames, bounds those), so an owner, or a new user who just claimed a
// name, always finds room for it. Of MaxRegistrations, a share
// (Limits.HolderShare, default 20 %: 100,000 of 500,000) is kept for
// peers that hold a name: a peer holding none gets E_UNAVAILABLE ("server
// is full") once the other registrations fill the rest, while a name
// holder may still register up to Limits.HolderQuota (default 16)
// registrations of its own (rooms; its names not counted) until the whole
// cap is full. Renewals never need room. Filling the holders' share thus
// takes HolderShare*MaxRegistrations/HolderQuota names (6,250 by
// default), each paid with a proof of work and a claim token of its
// network. In the worst case the server holds MaxRegistrations +
// MaxNames registrations.
//
// # Addresses in records
//
// A registered record is an instruction to every peer that discovers it:
// dial these addresses. So that a record cannot aim that traffic at
// someone else's host, the server checks the addresses of every
// REGISTER's record (in any namespace; the record is signed, so the server
// can only accept or refuse it whole) and answers
// E_INVALID_SIGNED_PEER_RECORD, with the offending address and the
// registrant's observed IP ("observed=<ip>", ObservedKey) in the status
// text, when:
//
//   - it lists more than Limits.MaxRecordAddrs addresses (default 16);
//   - an address has a public IP (manet.IsPublicAddr) that is not the
//     registrant's observed address: the IP its connection to the server
//     comes from (that of the REGISTER's stream, or of another direct
//     connection of the same peer); an IPv6 address counts as observed
//     when it lies in the observed address's /64 (temporary and stable
//     addresses of one host). Ports are not checked: a host's listen
//     ports differ from the source port of its connection;
//   - an address is a DNS name (/dns, /dns4, /dns6, /dnsaddr), which
//     cannot be checked;
//   - a relay address (.../p2p/<relay>/p2p-circuit...) reaches its relay
//     at a public IP that is neither this server's own (for a relay
//     through this server) nor one this server is connected to that
//     relay from (for another relay: daemons that know each other);
//     /p2p/<relay>/p2p-circuit without a transport part is accepted, as
//     it aims nowhere by itself;
//   - an address is unspecified, multicast or broadcast;
//   - an address is loopback while the registrant does not come over
//     loopback (it would aim remote dialers at their own host).
//
// Other non-public addresses (RFC 1918, CGNAT, ULA, link-local and the
// other ranges manet.IsPublicAddr refuses) are accepted: they reach only
// inside the dialer's own network, where the registrant may really be
// (peers behind one NAT find each other by them). The per-record cap
// bounds how many a dialer is given; dialers bound what they try.
//
// The Client mends such a refusal once: it learns the observed IP from the
// status text and, on that server from then on, registers a record it
// signs itself with only the addresses the server accepts (judged by the
// same rules; relay addresses through that server are kept). The text of
// every address refusal, including the count cap, carries "observed=".

// # Client
//
// A Client talks to several servers at once. Discover and FindPeers ask
// every server and merge the answers by (namespace asked for, peer). Watch
// merges the servers' pushes: a peer is present while any server lists it.
//
// Register registers on every server and keeps the registration alive in
// the background: refreshed at about half its TTL, renewed at once when the
// host's addresses change or a server's connection comes back, and retried
// with backoff (package internal/backoff: doubling from 1 s to 30 s, up to
// a fifth of jitter) while a server fails. When no server accepts it at
// first for reasons that may pass (unreachable, E_UNAVAILABLE,
// E_INTERNAL_ERROR, a timeout), Register keeps it all the same and returns
// an error wrapping ErrNotYetRegistered: the retries go on until a server
// accepts it, Unregister or Close. A refusal (E_NOT_AUTHORIZED,
// E_INVALID_*) is returned as a *StatusError and nothing is kept; after
// E_NOT_AUTHORIZED from any server, the servers that accepted are
// unregistered again. Lost watch streams are resubscribed with the same
// backoff.
//
// # Metrics
//
// WithRegisterer exports rendezvous_registrations, rendezvous_watch_subscribers,
// rendezvous_requests_total{type,status}, rendezvous_rejections_total{reason},
// rendezvous_removals_total{reason} and rendezvous_request_duration_seconds{type}.
package rendezvous
