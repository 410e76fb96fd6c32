// Package conformance is a black-box conformance suite for the rendezvous
// daemon (cmd/rendezvous). It holds tests only.
//
// The suite is an independent client written from the protocol facts in
// DESIGN.md (libp2p rendezvous spec r3 plus this project's extensions), not
// from the server code. It builds the real daemon binary, starts it as a
// separate process on 127.0.0.1 with its own data directory, learns its
// address from the JSON "listening" log record, and drives it from real
// libp2p hosts with raw streams on /rendezvous/1.0.0, framing each message
// (unsigned-varint length prefix + proto2 Message) itself and inspecting the
// raw response bytes with protowire.
//
// What it checks:
//
//   - REGISTER: `type` and `status` are always present on the wire, also when
//     status is OK (0); the granted TTL; the 2 h default; the 72 h maximum and
//     the configured minimum (E_INVALID_TTL); namespaces of 1..255 bytes
//     (E_INVALID_NAMESPACE); signed peer records that are garbage, absent,
//     signed by another peer's key or naming another peer
//     (E_INVALID_SIGNED_PEER_RECORD); exclusive user namespaces held by
//     another peer, also after the holder unregistered, disconnected or
//     expired, until it releases the name (UNREGISTER with release_name),
//     also across a restart of the daemon, a new name's claim proof of
//     work (claim_proof, computed here by an independent implementation
//     at the difficulty the daemon names), and
//     the per-peer cap (E_NOT_AUTHORIZED); the total cap and
//     the per-peer request rate limit (E_UNAVAILABLE, while another peer is
//     still served). E_INTERNAL_ERROR cannot be provoked from outside.
//   - DISCOVER: every registration carries its own ns, its remaining TTL and
//     a record that verifies to the registrant; an OK response always has a
//     cookie shaped as 8 bytes followed by the UTF-8 namespace; absent ns
//     lists all namespaces; limit is honoured, and 0, absent or 1<<63 are
//     capped at 1000 without error; garbage cookies and cookies of another
//     namespace get E_INVALID_COOKIE.
//   - Cookie pagination returns every registration exactly once, and polling
//     with the last cookie returns only newcomers.
//   - Re-registering replaces; UNREGISTER removes and gets no response, the
//     stream staying usable.
//   - Several requests on one stream (sequential and pipelined) and one
//     request per stream.
//   - Restart on the same data dir: same peer ID, registrations and issued
//     cookies still valid; SIGTERM exits cleanly.
//   - Hostile input (empty stream, 4 GiB length prefix, truncated frame,
//     garbage protobuf, unknown type, a response sent as a request): the bad
//     stream ends promptly, the daemon lives on and serves others correctly;
//     a frame just under 1 MiB is still accepted.
//   - Unregister on disconnect, and the watch extension
//     (/p2p-messaging/rendezvous/watch/1.0.0): snapshot, SYNCED, live
//     arrivals and departures; refused watches get one ERROR event; the
//     per-peer cap (the default, and one raised with -max-watches-per-peer)
//     is the daemon's, not its resource manager's: every watch it allows
//     is served and the next gets E_UNAVAILABLE.
//   - Limits seen from outside: -stream-timeout ends idle and half-sent
//     streams, the rate limit refills, expired registrations and held user
//     names are freed, UNREGISTER only ever removes the sender.
//   - Interop leniency: unknown fields are ignored, records are passed
//     through byte for byte, a REGISTER whose zero `type` was omitted by a
//     proto3-style encoder is served, and everything works over QUIC too.
//
// Most checks run against a daemon started with default limits, as the
// issue's checker starts it; dedicated daemons carry small limits for the
// limit checks. The daemon's log must hold no ERROR record and no panic.
//
// Every daemon is stopped (SIGTERM, then kill) when its test ends.
package conformance
