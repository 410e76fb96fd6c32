package conformance

import (
	"bytes"
	"context"
	"encoding/binary"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/p2p-messaging/p2p-messaging/rendezvous/pb"
)

const (
	hour        = 3600
	defaultTTL  = 2 * hour
	maxTTL      = 72 * hour
	defaultMin  = 120 // the daemon's documented default -min-ttl (2m)
	maxDiscover = 1000
)

// Most checks run against a daemon started as the checker starts it
// (only -listen and -data-dir, plus -log-format json to learn its address),
// so all limits are the defaults. fastFlags lift the per-peer rate limit for
// tests that must not meet it while checking something else.
var fastFlags = []string{"-rate", "1000", "-burst", "5000"}

func requireStatus(t testing.TB, want, got pb.Message_ResponseStatus, text, what string) {
	t.Helper()
	require.Equal(t, want.String(), got.String(), "%s: want status %s, got %s (statusText %q)", what, want, got, text)
}

func TestRegister(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, t.TempDir())

	t.Run("OK_explicit_type_status_and_ttl", func(t *testing.T) {
		c := newClient(t)
		rs := c.stream(d)
		rs.send(regMsg(regReq{ns: proto.String("conf/ok"), ttl: proto.Uint64(3600), record: c.record()}))
		m, raw := rs.recv()
		// recv + the checks below look at the raw bytes: type=1 and status=0
		// must both be written.
		checkRegisterResponseWire(t, raw)
		top := fields(t, raw)
		inner := fields(t, requireBytes(t, top, 3, "registerResponse"))
		require.EqualValues(t, 0, requireVarint(t, inner, 1, "RegisterResponse.status"), "status OK must be written as an explicit 0")
		requireStatus(t, pb.Message_OK, m.GetRegisterResponse().GetStatus(), m.GetRegisterResponse().GetStatusText(), "register")
		require.EqualValues(t, 3600, m.GetRegisterResponse().GetTtl(), "granted ttl")
	})

	t.Run("default_TTL_2h_when_absent", func(t *testing.T) {
		c := newClient(t)
		resp := c.register(d, "conf/default-ttl", 0)
		requireStatus(t, pb.Message_OK, resp.GetStatus(), resp.GetStatusText(), "register without ttl")
		require.EqualValues(t, defaultTTL, resp.GetTtl(), "absent ttl must be granted the 2h default")
	})

	t.Run("max_TTL_72h_accepted", func(t *testing.T) {
		c := newClient(t)
		resp := c.register(d, "conf/max-ttl", maxTTL)
		requireStatus(t, pb.Message_OK, resp.GetStatus(), resp.GetStatusText(), "register ttl=72h")
		require.EqualValues(t, maxTTL, resp.GetTtl())
	})

	t.Run("E_INVALID_TTL_above_72h", func(t *testing.T) {
		c := newClient(t)
		for _, ttl := range []uint64{maxTTL + 1, 1 << 40, 1<<64 - 1} {
			resp := c.register(d, "conf/ttl-high", ttl)
			requireStatus(t, pb.Message_E_INVALID_TTL, resp.GetStatus(), resp.GetStatusText(), "register ttl="+itoa(ttl))
		}
	})

	t.Run("E_INVALID_TTL_below_default_minimum", func(t *testing.T) {
		c := newClient(t)
		resp := c.register(d, "conf/ttl-low", defaultMin-1)
		requireStatus(t, pb.Message_E_INVALID_TTL, resp.GetStatus(), resp.GetStatusText(), "register ttl below -min-ttl default (2m)")
		resp = c.register(d, "conf/ttl-low", defaultMin)
		requireStatus(t, pb.Message_OK, resp.GetStatus(), resp.GetStatusText(), "register ttl == minimum")
	})

	t.Run("E_INVALID_NAMESPACE", func(t *testing.T) {
		c := newClient(t)
		cases := map[string]*string{
			"empty ns":    proto.String(""),
			"absent ns":   nil,
			"256-byte ns": proto.String(strings.Repeat("n", 256)),
			"64 KiB ns":   proto.String(strings.Repeat("n", 64<<10)),
		}
		for name, ns := range cases {
			resp := c.registerReq(d, regReq{ns: ns, ttl: proto.Uint64(hour), record: c.record()})
			requireStatus(t, pb.Message_E_INVALID_NAMESPACE, resp.GetStatus(), resp.GetStatusText(), "register with "+name)
		}
		resp := c.register(d, strings.Repeat("n", 255), hour)
		requireStatus(t, pb.Message_OK, resp.GetStatus(), resp.GetStatusText(), "register with a 255-byte ns")
	})

	t.Run("E_INVALID_SIGNED_PEER_RECORD", func(t *testing.T) {
		c := newClient(t)
		otherPriv, _, err := crypto.GenerateEd25519Key(nil)
		require.NoError(t, err)
		otherID, err := peer.IDFromPrivateKey(otherPriv)
		require.NoError(t, err)

		cases := map[string][]byte{
			"garbage bytes": []byte("definitely not a signed envelope"),
			"absent record": nil,
			// A valid envelope and record, but for another peer than the one
			// on the stream.
			"record signed by another peer's key": sealRecord(t, otherPriv, peer.AddrInfo{ID: otherID, Addrs: c.h.Addrs()}),
			// Signed by this peer's key, but naming another peer ID.
			"record whose peer ID mismatches the key": sealRecord(t, c.priv, peer.AddrInfo{ID: otherID, Addrs: c.h.Addrs()}),
		}
		rec := c.record()
		tampered := bytes.Clone(rec)
		tampered[len(tampered)-1] ^= 0xff // breaks the signature
		cases["record with a broken signature"] = tampered

		for name, b := range cases {
			resp := c.registerReq(d, regReq{ns: proto.String("conf/spr"), ttl: proto.Uint64(hour), record: b})
			requireStatus(t, pb.Message_E_INVALID_SIGNED_PEER_RECORD, resp.GetStatus(), resp.GetStatusText(), "register with "+name)
		}
		// Nothing of the above got registered.
		require.Empty(t, c.discoverNS(d, "conf/spr"), "rejected records must not be listed")
	})

	t.Run("E_NOT_AUTHORIZED_exclusive_namespace", func(t *testing.T) {
		const ns = "p2p-messaging/user/x"
		a, b := newClient(t), newClient(t)
		a.mustRegister(d, ns, hour)
		resp := b.register(d, ns, hour)
		requireStatus(t, pb.Message_E_NOT_AUTHORIZED, resp.GetStatus(), resp.GetStatusText(), "second peer registering a held user name")
		resp = a.register(d, ns, hour)
		requireStatus(t, pb.Message_OK, resp.GetStatus(), resp.GetStatusText(), "holder refreshing its own user name")
		regs := a.discoverNS(d, ns)
		require.Len(t, regs, 1)
		require.Equal(t, a.id(), regPeer(t, regs[0]), "the holder alone is listed")

		// After the holder unregisters, the name stays leased to its key;
		// an UNREGISTER with release_name (field 100) frees it.
		rs := a.stream(d)
		rs.send(unregMsg(ns))
		rs.send(discMsg(discReq{ns: proto.String(ns)}))
		dr := rs.recvDiscoverResponse()
		require.Empty(t, dr.GetRegistrations(), "unregistered holder still listed")
		resp = b.register(d, ns, hour)
		requireStatus(t, pb.Message_E_NOT_AUTHORIZED, resp.GetStatus(), resp.GetStatusText(), "registering a user name whose holder only unregistered")
		require.Contains(t, resp.GetStatusText(), "held by another key until")
		rs.send(releaseMsg(ns))
		rs.send(discMsg(discReq{ns: proto.String(ns)}))
		rs.recvDiscoverResponse()
		resp = b.register(d, ns, hour)
		requireStatus(t, pb.Message_OK, resp.GetStatus(), resp.GetStatusText(), "registering a user name its holder released")
	})

	t.Run("E_INTERNAL_ERROR", func(t *testing.T) {
		t.Skip("E_INTERNAL_ERROR (300) cannot be provoked by a well-behaved server from outside")
	})
}

func TestLimits(t *testing.T) {
	t.Parallel()
	t.Run("E_NOT_AUTHORIZED_per_peer_cap", func(t *testing.T) {
		d := startDaemon(t, t.TempDir(), append(fastFlags, "-max-registrations-per-peer", "2")...)
		a, b := newClient(t), newClient(t)
		a.mustRegister(d, "conf/cap-1", hour)
		a.mustRegister(d, "conf/cap-2", hour)
		resp := a.register(d, "conf/cap-3", hour)
		requireStatus(t, pb.Message_E_NOT_AUTHORIZED, resp.GetStatus(), resp.GetStatusText(), "third registration with -max-registrations-per-peer 2")
		resp = a.register(d, "conf/cap-1", hour)
		requireStatus(t, pb.Message_OK, resp.GetStatus(), resp.GetStatusText(), "re-registering an existing (peer, ns) at the per-peer cap")
		resp = b.register(d, "conf/cap-3", hour)
		requireStatus(t, pb.Message_OK, resp.GetStatus(), resp.GetStatusText(), "another peer is not limited by the first one's cap")
		regs := a.discoverNS(d, "conf/cap-3")
		require.Len(t, regs, 1, "cap-3 lists only the second peer")
		require.Equal(t, b.id(), regPeer(t, regs[0]))
	})

	t.Run("E_UNAVAILABLE_total_cap", func(t *testing.T) {
		d := startDaemon(t, t.TempDir(), append(fastFlags, "-max-registrations", "3")...)
		a, b := newClient(t), newClient(t)
		a.mustRegister(d, "conf/total-1", hour)
		a.mustRegister(d, "conf/total-2", hour)
		b.mustRegister(d, "conf/total-3", hour)
		resp := b.register(d, "conf/total-4", hour)
		requireStatus(t, pb.Message_E_UNAVAILABLE, resp.GetStatus(), resp.GetStatusText(), "fourth registration with -max-registrations 3")
		resp = a.register(d, "conf/total-1", hour)
		requireStatus(t, pb.Message_OK, resp.GetStatus(), resp.GetStatusText(), "refreshing an existing registration when the server is full")
		require.Empty(t, b.discoverNS(d, "conf/total-4"), "refused registration must not be listed")
	})

	t.Run("E_INVALID_TTL_configured_minimum", func(t *testing.T) {
		d := startDaemon(t, t.TempDir(), append(fastFlags, "-min-ttl", "10m")...)
		c := newClient(t)
		resp := c.register(d, "conf/min", 599)
		requireStatus(t, pb.Message_E_INVALID_TTL, resp.GetStatus(), resp.GetStatusText(), "ttl 599s with -min-ttl 10m")
		resp = c.register(d, "conf/min", 600)
		requireStatus(t, pb.Message_OK, resp.GetStatus(), resp.GetStatusText(), "ttl 600s with -min-ttl 10m")
		require.EqualValues(t, 600, resp.GetTtl())
	})

	t.Run("E_UNAVAILABLE_rate_limit_flood_others_served", func(t *testing.T) {
		d := startDaemon(t, t.TempDir(), "-rate", "5", "-burst", "5")
		flooder, other := newClient(t), newClient(t)
		other.mustRegister(d, "conf/rate", hour)

		rs := flooder.stream(d)
		const n = 40
		limited := 0
		for i := 0; i < n; i++ {
			rs.send(discMsg(discReq{ns: proto.String("conf/rate")}))
			// Every request is answered, limited or not: no hang, no reset.
			resp := rs.recvDiscoverResponse()
			switch resp.GetStatus() {
			case pb.Message_OK:
			case pb.Message_E_UNAVAILABLE:
				limited++
			default:
				t.Fatalf("flood request %d: unexpected status %s (%q)", i, resp.GetStatus(), resp.GetStatusText())
			}
		}
		require.Positive(t, limited, "%d back-to-back requests with -rate 5 -burst 5: none answered E_UNAVAILABLE", n)
		require.Less(t, limited, n, "the burst must still be served")

		// Another peer is served normally while the flooder is throttled.
		resp := other.discover(d, discReq{ns: proto.String("conf/rate")})
		requireStatus(t, pb.Message_OK, resp.GetStatus(), resp.GetStatusText(), "other peer during the flood")
		require.Len(t, resp.GetRegistrations(), 1)
	})

	t.Run("DISCOVER_limit_capped_at_1000", func(t *testing.T) {
		d := startDaemon(t, t.TempDir())
		// 1200 registrations over 2 peers and 600 namespaces; DISCOVER with
		// no ns sees them all.
		const perPeer = 600
		for _, c := range []*client{newClient(t), newClient(t)} {
			rs := c.stream(d)
			rec := c.record()
			for i := 0; i < perPeer; i++ {
				rs.send(regMsg(regReq{ns: proto.String("conf/bulk-" + itoa(uint64(i))), ttl: proto.Uint64(hour), record: rec}))
			}
			for i := 0; i < perPeer; i++ {
				resp := rs.recvRegisterResponse()
				requireStatus(t, pb.Message_OK, resp.GetStatus(), resp.GetStatusText(), "bulk register")
			}
			_ = rs.s.Close()
		}
		q := newClient(t)
		for name, limit := range map[string]*uint64{
			"absent limit": nil,
			"limit 0":      proto.Uint64(0),
			"limit 1<<63":  proto.Uint64(1 << 63),
			"limit 2^64-1": proto.Uint64(1<<64 - 1),
			"limit 1001":   proto.Uint64(1001),
		} {
			resp := q.discover(d, discReq{limit: limit})
			requireStatus(t, pb.Message_OK, resp.GetStatus(), resp.GetStatusText(), "discover all with "+name)
			require.Len(t, resp.GetRegistrations(), maxDiscover, "discover all with %s over 1200 registrations", name)
		}
		// Paging through all namespaces returns the 1200 exactly once.
		seen := map[string]bool{}
		var cookie []byte
		for page := 0; ; page++ {
			require.Less(t, page, 10, "pagination does not terminate")
			resp := q.discover(d, discReq{cookie: cookie})
			requireStatus(t, pb.Message_OK, resp.GetStatus(), resp.GetStatusText(), "discover all, page")
			cookie = resp.GetCookie()
			require.Len(t, cookie, 8, "cookie of a DISCOVER over all namespaces: 8 bytes + empty namespace")
			if len(resp.GetRegistrations()) == 0 {
				break
			}
			for _, r := range resp.GetRegistrations() {
				key := regPeer(t, r).String() + "|" + r.GetNs()
				require.False(t, seen[key], "registration %s returned twice", key)
				seen[key] = true
			}
		}
		require.Len(t, seen, 2*perPeer)
	})
}

func TestDiscover(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, t.TempDir())

	t.Run("own_ns_ttl_and_record", func(t *testing.T) {
		a, b := newClient(t), newClient(t)
		a.mustRegister(d, "conf/d1", 3*hour)
		b.mustRegister(d, "conf/d1", hour)
		regs := peersOf(t, a.discoverNS(d, "conf/d1"))
		require.Len(t, regs, 2)
		for id, ttl := range map[peer.ID]uint64{a.id(): 3 * hour, b.id(): hour} {
			r := regs[id]
			require.NotNil(t, r, "peer %s not listed", id)
			require.Equal(t, "conf/d1", r.GetNs())
			require.LessOrEqual(t, r.GetTtl(), ttl, "ttl above the granted one")
			require.Greater(t, r.GetTtl(), ttl-60, "ttl must be the remaining one, close to the granted %d", ttl)
		}
	})

	t.Run("remaining_TTL_decreases", func(t *testing.T) {
		c := newClient(t)
		c.mustRegister(d, "conf/remaining", 7200)
		start := time.Now()
		var last uint64
		require.Eventually(t, func() bool {
			regs := c.discoverNS(d, "conf/remaining")
			if len(regs) != 1 {
				return false
			}
			last = regs[0].GetTtl()
			return last < 7200
		}, 10*time.Second, 100*time.Millisecond, "DISCOVER must return the remaining ttl: still %d", last)
		require.GreaterOrEqual(t, last, uint64(7200-time.Since(start).Seconds()-2))
	})

	t.Run("OK_always_has_cookie", func(t *testing.T) {
		c := newClient(t)
		resp := c.discover(d, discReq{ns: proto.String("conf/never-used")})
		requireStatus(t, pb.Message_OK, resp.GetStatus(), resp.GetStatusText(), "discover of an empty namespace")
		require.Empty(t, resp.GetRegistrations())
		require.NotEmpty(t, resp.GetCookie(), "an OK DISCOVER_RESPONSE with no registrations still carries a cookie")
	})

	t.Run("cookie_shape_8_bytes_plus_namespace", func(t *testing.T) {
		c := newClient(t)
		c.mustRegister(d, "conf/shape", hour)
		for _, ns := range []string{"conf/shape", "conf/never-used-shape", "héllo/ünïcode"} {
			resp := c.discover(d, discReq{ns: proto.String(ns)})
			requireStatus(t, pb.Message_OK, resp.GetStatus(), resp.GetStatusText(), "discover "+ns)
			ck := resp.GetCookie()
			require.GreaterOrEqual(t, len(ck), 8, "cookie %x shorter than 8 bytes", ck)
			require.Equal(t, ns, string(ck[8:]), "cookie must be 8 bytes followed by the UTF-8 namespace (Rust clients parse it so): %x", ck)
		}
	})

	t.Run("absent_ns_lists_all_namespaces", func(t *testing.T) {
		a, b := newClient(t), newClient(t)
		a.mustRegister(d, "conf/all-1", hour)
		b.mustRegister(d, "conf/all-2", hour)
		b.mustRegister(d, "conf/all-3", hour)
		resp := a.discover(d, discReq{limit: proto.Uint64(1000)})
		requireStatus(t, pb.Message_OK, resp.GetStatus(), resp.GetStatusText(), "discover without ns")
		got := map[string]bool{}
		for _, r := range resp.GetRegistrations() {
			id := regPeer(t, r)
			if id == a.id() || id == b.id() {
				got[id.String()+"|"+r.GetNs()] = true
			}
		}
		require.Equal(t, map[string]bool{
			a.id().String() + "|conf/all-1": true,
			b.id().String() + "|conf/all-2": true,
			b.id().String() + "|conf/all-3": true,
		}, got, "each registration must carry its own namespace")
	})

	t.Run("limit_honoured", func(t *testing.T) {
		q := newClient(t)
		for i := 0; i < 3; i++ {
			newClient(t).mustRegister(d, "conf/limit", hour)
		}
		resp := q.discover(d, discReq{ns: proto.String("conf/limit"), limit: proto.Uint64(2)})
		requireStatus(t, pb.Message_OK, resp.GetStatus(), resp.GetStatusText(), "discover limit 2")
		require.Len(t, resp.GetRegistrations(), 2)
		for name, limit := range map[string]*uint64{"absent": nil, "0": proto.Uint64(0), "1<<63": proto.Uint64(1 << 63)} {
			resp := q.discover(d, discReq{ns: proto.String("conf/limit"), limit: limit})
			requireStatus(t, pb.Message_OK, resp.GetStatus(), resp.GetStatusText(), "discover limit "+name)
			require.Len(t, resp.GetRegistrations(), 3, "limit %s", name)
		}
	})

	t.Run("E_INVALID_COOKIE", func(t *testing.T) {
		c := newClient(t)
		c.mustRegister(d, "conf/ck-a", hour)
		c.mustRegister(d, "conf/ck-b", hour)
		resp := c.discover(d, discReq{ns: proto.String("conf/ck-a")})
		requireStatus(t, pb.Message_OK, resp.GetStatus(), resp.GetStatusText(), "discover A")
		cookieA := resp.GetCookie()

		resp = c.discover(d, discReq{ns: proto.String("conf/ck-b"), cookie: cookieA})
		requireStatus(t, pb.Message_E_INVALID_COOKIE, resp.GetStatus(), resp.GetStatusText(), "cookie of namespace A used on B")

		resp = c.discover(d, discReq{cookie: cookieA})
		requireStatus(t, pb.Message_E_INVALID_COOKIE, resp.GetStatus(), resp.GetStatusText(), "cookie of namespace A used on a DISCOVER of all namespaces")
		resp = c.discover(d, discReq{})
		requireStatus(t, pb.Message_OK, resp.GetStatus(), resp.GetStatusText(), "discover all")
		resp = c.discover(d, discReq{ns: proto.String("conf/ck-a"), cookie: resp.GetCookie()})
		requireStatus(t, pb.Message_E_INVALID_COOKIE, resp.GetStatus(), resp.GetStatusText(), "cookie of an all-namespaces DISCOVER used on namespace A")

		for name, ck := range map[string][]byte{
			"garbage cookie":            []byte("garbage!garbage!"),
			"short cookie":              {1, 2, 3},
			"A's counter with B's name": append(bytes.Clone(cookieA[:8]), "conf/ck-b"...),
		} {
			resp = c.discover(d, discReq{ns: proto.String("conf/ck-a"), cookie: ck})
			requireStatus(t, pb.Message_E_INVALID_COOKIE, resp.GetStatus(), resp.GetStatusText(), name+" on namespace A")
		}
	})

	t.Run("E_INVALID_NAMESPACE", func(t *testing.T) {
		c := newClient(t)
		resp := c.discover(d, discReq{ns: proto.String(strings.Repeat("n", 256))})
		requireStatus(t, pb.Message_E_INVALID_NAMESPACE, resp.GetStatus(), resp.GetStatusText(), "discover with a 256-byte ns")
	})
}

func TestCookiePagination(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, t.TempDir())
	const ns = "conf/pages"
	registrants := make(map[peer.ID]bool)
	for i := 0; i < 25; i++ {
		c := newClient(t)
		c.mustRegister(d, ns, hour)
		registrants[c.id()] = true
	}
	q := newClient(t)
	rs := q.stream(d) // all pages on one stream
	seen := map[peer.ID]bool{}
	var cookie []byte
	var sizes []int
	for range 4 {
		rs.send(discMsg(discReq{ns: proto.String(ns), limit: proto.Uint64(10), cookie: cookie}))
		resp := rs.recvDiscoverResponse()
		requireStatus(t, pb.Message_OK, resp.GetStatus(), resp.GetStatusText(), "discover page")
		sizes = append(sizes, len(resp.GetRegistrations()))
		for _, r := range resp.GetRegistrations() {
			id := regPeer(t, r)
			require.False(t, seen[id], "peer %s returned on two pages", id)
			require.True(t, registrants[id], "peer %s was never registered in %s", id, ns)
			require.Equal(t, ns, r.GetNs())
			seen[id] = true
		}
		require.NotEmpty(t, resp.GetCookie())
		cookie = resp.GetCookie()
	}
	require.Equal(t, []int{10, 10, 5, 0}, sizes, "page sizes with limit 10 over 25 registrations")
	require.Len(t, seen, 25, "union of pages")

	// Incremental polling: only newcomers.
	newcomers := map[peer.ID]bool{}
	for i := 0; i < 3; i++ {
		c := newClient(t)
		c.mustRegister(d, ns, hour)
		newcomers[c.id()] = true
	}
	rs.send(discMsg(discReq{ns: proto.String(ns), limit: proto.Uint64(10), cookie: cookie}))
	resp := rs.recvDiscoverResponse()
	requireStatus(t, pb.Message_OK, resp.GetStatus(), resp.GetStatusText(), "poll with last cookie")
	got := map[peer.ID]bool{}
	for _, r := range resp.GetRegistrations() {
		got[regPeer(t, r)] = true
	}
	require.Equal(t, newcomers, got, "polling with the last cookie must return exactly the 3 newcomers")
	rs.send(discMsg(discReq{ns: proto.String(ns), cookie: resp.GetCookie()}))
	resp = rs.recvDiscoverResponse()
	requireStatus(t, pb.Message_OK, resp.GetStatus(), resp.GetStatusText(), "poll again")
	require.Empty(t, resp.GetRegistrations(), "nothing new since the last cookie")
}

func TestReregisterAndUnregister(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, t.TempDir())

	t.Run("re-register_replaces", func(t *testing.T) {
		c := newClient(t)
		c.mustRegister(d, "conf/rereg", 3*hour)
		c.mustRegister(d, "conf/rereg", hour)
		regs := c.discoverNS(d, "conf/rereg")
		require.Len(t, regs, 1, "re-registering (peer, ns) must replace, not add")
		require.LessOrEqual(t, regs[0].GetTtl(), uint64(hour), "the replacement's ttl applies")
	})

	t.Run("UNREGISTER_removes_without_response", func(t *testing.T) {
		c, other := newClient(t), newClient(t)
		c.mustRegister(d, "conf/unreg", hour)
		other.mustRegister(d, "conf/unreg", hour)
		rs := c.stream(d)
		rs.send(unregMsg("conf/unreg"))
		rs.send(unregMsg("conf/never-registered")) // also silent
		rs.send(discMsg(discReq{ns: proto.String("conf/unreg")}))
		// The first frame must be the DISCOVER_RESPONSE: UNREGISTER has none.
		m, raw := rs.recv()
		require.Equal(t, pb.Message_DISCOVER_RESPONSE.String(), m.GetType().String(), "UNREGISTER must not be answered; first frame was %x", raw)
		checkDiscoverResponseWire(t, raw)
		regs := peersOf(t, m.GetDiscoverResponse().GetRegistrations())
		require.Len(t, regs, 1)
		require.Contains(t, regs, other.id(), "the other peer stays")
		require.NotContains(t, regs, c.id(), "unregistered peer still listed")
	})

	t.Run("UNREGISTER_only_removes_the_sender", func(t *testing.T) {
		holder, intruder := newClient(t), newClient(t)
		holder.mustRegister(d, "conf/unreg-other", hour)
		holder.mustRegister(d, "p2p-messaging/user/held", hour)
		rs := intruder.stream(d)
		rs.send(unregMsg("conf/unreg-other"))
		rs.send(unregMsg("p2p-messaging/user/held"))
		rs.send(discMsg(discReq{ns: proto.String("conf/unreg-other")}))
		dr := rs.recvDiscoverResponse()
		require.Contains(t, peersOf(t, dr.GetRegistrations()), holder.id(), "another peer's UNREGISTER removed the holder")
		require.Contains(t, peersOf(t, holder.discoverNS(d, "p2p-messaging/user/held")), holder.id(), "another peer's UNREGISTER freed a held user name")
		resp := intruder.register(d, "p2p-messaging/user/held", hour)
		requireStatus(t, pb.Message_E_NOT_AUTHORIZED, resp.GetStatus(), resp.GetStatusText(), "user name still held")
	})
}

func TestStreams(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, t.TempDir())

	t.Run("several_requests_on_one_stream", func(t *testing.T) {
		c := newClient(t)
		rs := c.stream(d)
		rs.send(regMsg(regReq{ns: proto.String("conf/multi"), ttl: proto.Uint64(hour), record: c.record()}))
		r := rs.recvRegisterResponse()
		requireStatus(t, pb.Message_OK, r.GetStatus(), r.GetStatusText(), "register")
		for i := 0; i < 2; i++ {
			rs.send(discMsg(discReq{ns: proto.String("conf/multi")}))
			dr := rs.recvDiscoverResponse()
			requireStatus(t, pb.Message_OK, dr.GetStatus(), dr.GetStatusText(), "discover")
			require.Len(t, dr.GetRegistrations(), 1)
		}
	})

	t.Run("pipelined_requests_on_one_stream", func(t *testing.T) {
		c := newClient(t)
		rs := c.stream(d)
		rs.send(regMsg(regReq{ns: proto.String("conf/pipe"), ttl: proto.Uint64(hour), record: c.record()}))
		rs.send(discMsg(discReq{ns: proto.String("conf/pipe")}))
		rs.send(discMsg(discReq{ns: proto.String("conf/pipe")}))
		rs.closeWrite()
		r := rs.recvRegisterResponse()
		requireStatus(t, pb.Message_OK, r.GetStatus(), r.GetStatusText(), "register")
		for i := 0; i < 2; i++ {
			dr := rs.recvDiscoverResponse()
			requireStatus(t, pb.Message_OK, dr.GetStatus(), dr.GetStatusText(), "discover")
			require.Len(t, dr.GetRegistrations(), 1)
		}
		rs.expectEnd("after the last answer of a half-closed stream")
	})

	t.Run("one_request_per_stream", func(t *testing.T) {
		c := newClient(t)
		for i := 0; i < 3; i++ {
			rs := c.stream(d)
			rs.send(regMsg(regReq{ns: proto.String("conf/single"), ttl: proto.Uint64(hour), record: c.record()}))
			rs.closeWrite()
			r := rs.recvRegisterResponse()
			requireStatus(t, pb.Message_OK, r.GetStatus(), r.GetStatusText(), "register")
			rs.expectEnd("single-request stream after its answer")
		}
		rs := c.stream(d)
		rs.send(discMsg(discReq{ns: proto.String("conf/single")}))
		rs.closeWrite()
		dr := rs.recvDiscoverResponse()
		requireStatus(t, pb.Message_OK, dr.GetStatus(), dr.GetStatusText(), "discover")
		require.Len(t, dr.GetRegistrations(), 1)
		rs.expectEnd("single-request stream after its answer")
	})
}

func TestRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	d := startDaemon(t, dir, append(fastFlags, "-disconnect-grace", "200ms")...)
	const ns = "conf/restart"
	a, b, q := newClient(t), newClient(t), newClient(t)
	a.mustRegister(d, ns, maxTTL)
	b.mustRegister(d, ns, maxTTL)
	resp := q.discover(d, discReq{ns: proto.String(ns)})
	requireStatus(t, pb.Message_OK, resp.GetStatus(), resp.GetStatusText(), "discover before restart")
	require.Len(t, resp.GetRegistrations(), 2)
	cookie := resp.GetCookie()
	oldID := d.info.ID

	d.stop(t)
	d2 := startDaemon(t, dir, append(fastFlags, "-disconnect-grace", "200ms")...)
	require.Equal(t, oldID, d2.info.ID, "peer ID must survive a restart (listening addr %s)", d2.addr)

	listed := func() map[peer.ID]*pb.Message_Register { return peersOf(t, q.discoverNS(d2, ns)) }
	regs := listed()
	require.Len(t, regs, 2, "registrations must survive a restart")
	for _, id := range []peer.ID{a.id(), b.id()} {
		require.Contains(t, regs, id)
		require.Greater(t, regs[id].GetTtl(), uint64(maxTTL-120), "remaining ttl after restart")
	}
	// The registrants' connections died with the old process; that is not a
	// disconnect the new one may act on.
	require.Never(t, func() bool { return len(listed()) != 2 }, 1500*time.Millisecond, 250*time.Millisecond,
		"registrations restored from disk were dropped after the restart")

	// The old cookie is still accepted and still means "seen a and b".
	c := newClient(t)
	c.mustRegister(d2, ns, hour)
	resp = q.discover(d2, discReq{ns: proto.String(ns), cookie: cookie})
	requireStatus(t, pb.Message_OK, resp.GetStatus(), resp.GetStatusText(), "cookie issued before the restart")
	got := peersOf(t, resp.GetRegistrations())
	require.Len(t, got, 1, "a pre-restart cookie must return only the registration made after it")
	require.Contains(t, got, c.id())
}

func TestHostileInput(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, t.TempDir())

	healthy := func(t *testing.T, what string) {
		t.Helper()
		require.True(t, d.alive(), "daemon died after %s\nlog:\n%s", what, d.logText())
		c := newClient(t)
		ns := "conf/healthy"
		c.mustRegister(d, ns, hour)
		require.Contains(t, peersOf(t, c.discoverNS(d, ns)), c.id(), "fresh client after %s", what)
	}

	typed := func(m *pb.Message) []byte {
		b, err := proto.Marshal(m)
		require.NoError(t, err)
		return frame(b)
	}
	respAsReq := typed(&pb.Message{
		Type:             pb.Message_REGISTER_RESPONSE.Enum(),
		RegisterResponse: &pb.Message_RegisterResponse{Status: pb.Message_OK.Enum(), Ttl: proto.Uint64(10)},
	})
	discRespAsReq := typed(&pb.Message{
		Type:             pb.Message_DISCOVER_RESPONSE.Enum(),
		DiscoverResponse: &pb.Message_DiscoverResponse{Status: pb.Message_OK.Enum(), Cookie: []byte("12345678x")},
	})
	unknownType := frame([]byte{0x08, 42}) // type = 42
	// type = 42 with a well-formed REGISTER body: still not a REGISTER.
	c0 := newClient(t)
	regBody, err := proto.Marshal(regMsg(regReq{ns: proto.String("conf/type42"), ttl: proto.Uint64(hour), record: c0.record()}))
	require.NoError(t, err)
	unknownTypeWithBody := frame(append([]byte{0x08, 42}, regBody[2:]...)) // regBody starts with 08 00 (type REGISTER)
	require.Equal(t, []byte{0x08, 0x00}, regBody[:2])

	cases := []struct {
		name      string
		data      []byte
		closeSend bool
	}{
		{"empty stream (open + close)", nil, true},
		{"4 GiB length prefix", binary.AppendUvarint(nil, 4<<30), false},
		{"2^64-1 length prefix", binary.AppendUvarint(nil, 1<<64-1), false},
		{"overlong varint prefix", bytes.Repeat([]byte{0xff}, 11), false},
		{"truncated frame", append(binary.AppendUvarint(nil, 100), make([]byte, 10)...), true},
		{"truncated length prefix", []byte{0x80}, true},
		{"garbage protobuf", frame([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}), false},
		{"garbage protobuf, bad length", frame([]byte{0x12, 0x7f, 0x01}), false},
		{"unknown message type 42", unknownType, false},
		{"unknown message type 42 with a REGISTER body", unknownTypeWithBody, false},
		{"REGISTER_RESPONSE sent as a request", respAsReq, false},
		{"DISCOVER_RESPONSE sent as a request", discRespAsReq, false},
	}
	for _, tc := range cases {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			c := newClient(t)
			rs := c.stream(d)
			if len(tc.data) > 0 {
				rs.writeRaw(tc.data)
			}
			if tc.closeSend {
				rs.closeWrite()
			}
			rs.expectEnd(tc.name)
			healthy(t, tc.name)
		})
	}

	t.Run("frame_of_exactly_1MiB_accepted", func(t *testing.T) {
		c := newClient(t)
		rs := c.stream(d)
		// Grow the garbage record until the message is exactly 1 MiB.
		m := regMsg(regReq{ns: proto.String("conf/big"), ttl: proto.Uint64(hour), record: bytes.Repeat([]byte{0xab}, 1<<20-64)})
		for proto.Size(m) < 1<<20 {
			m.Register.SignedPeerRecord = append(m.Register.SignedPeerRecord, 0xab)
		}
		require.Equal(t, 1<<20, proto.Size(m))
		rs.send(m)
		r := rs.recvRegisterResponse()
		requireStatus(t, pb.Message_E_INVALID_SIGNED_PEER_RECORD, r.GetStatus(), r.GetStatusText(), "~1 MiB REGISTER with a garbage record")
		healthy(t, "a 1 MiB frame")
	})

	t.Run("hostile_streams_in_parallel", func(t *testing.T) {
		c := newClient(t)
		ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		defer cancel()
		require.NoError(t, c.h.Connect(ctx, d.info))
		errs := make(chan error, 50)
		for i := 0; i < 50; i++ {
			go func() {
				s, err := c.h.NewStream(ctx, d.info.ID, rendezvousProto)
				if err != nil {
					errs <- err
					return
				}
				_ = s.SetDeadline(time.Now().Add(ioTimeout))
				_, _ = s.Write(binary.AppendUvarint(nil, 4<<30))
				_, err = s.Read(make([]byte, 1))
				_ = s.Reset()
				errs <- nil
				_ = err
			}()
		}
		for i := 0; i < 50; i++ {
			require.NoError(t, <-errs)
		}
		healthy(t, "50 parallel 4 GiB prefixes")
	})
}

func TestUnregisterOnDisconnect(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, t.TempDir()) // default flags, default grace
	const ns = "conf/disconnect"
	leaver, stayer, q := newClient(t), newClient(t), newClient(t)
	leaver.mustRegister(d, ns, hour)
	stayer.mustRegister(d, ns, hour)
	require.Len(t, q.discoverNS(d, ns), 2)
	require.NoError(t, leaver.h.Close())
	start := time.Now()
	require.Eventually(t, func() bool {
		return len(q.discoverNS(d, ns)) == 1
	}, 15*time.Second, 100*time.Millisecond, "a disconnected peer must be unregistered after the grace period")
	t.Logf("unregistered %v after disconnect", time.Since(start).Round(time.Millisecond))
	require.Contains(t, peersOf(t, q.discoverNS(d, ns)), stayer.id(), "a connected peer must stay")
}

func TestWatch(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, t.TempDir(), append(fastFlags, "-disconnect-grace", "300ms")...)
	const ns = "conf/watch"
	early, watcher := newClient(t), newClient(t)
	early.mustRegister(d, ns, hour)

	ws := watcher.open(d, watchProto)
	ws.send(&pb.WatchRequest{Ns: proto.String(ns)})
	next := func() *pb.WatchEvent {
		t.Helper()
		raw, err := ws.readFrame()
		require.NoError(t, err, "read watch event")
		f := fields(t, raw)
		requireVarint(t, f, 1, "WatchEvent.kind")
		var ev pb.WatchEvent
		require.NoError(t, proto.Unmarshal(raw, &ev))
		return &ev
	}

	ev := next()
	require.Equal(t, pb.WatchEvent_REGISTERED.String(), ev.GetKind().String(), "snapshot first")
	require.Equal(t, early.id(), regPeer(t, ev.GetRegistration()))
	require.Equal(t, ns, ev.GetRegistration().GetNs())
	require.Positive(t, ev.GetRegistration().GetTtl())
	ev = next()
	require.Equal(t, pb.WatchEvent_SYNCED.String(), ev.GetKind().String(), "SYNCED after the snapshot")

	// Live arrival.
	late := newClient(t)
	start := time.Now()
	late.mustRegister(d, ns, hour)
	ev = next()
	require.Equal(t, pb.WatchEvent_REGISTERED.String(), ev.GetKind().String())
	require.Equal(t, late.id(), regPeer(t, ev.GetRegistration()))
	require.Equal(t, ns, ev.GetRegistration().GetNs())
	t.Logf("arrival seen after %v", time.Since(start).Round(time.Microsecond))

	// Departure by UNREGISTER.
	rs := late.stream(d)
	rs.send(unregMsg(ns))
	ev = next()
	require.Equal(t, pb.WatchEvent_UNREGISTERED.String(), ev.GetKind().String())
	id, err := peer.IDFromBytes(ev.GetPeer())
	require.NoError(t, err, "UNREGISTERED carries the binary peer ID")
	require.Equal(t, late.id(), id)
	require.Equal(t, ns, ev.GetNs())

	// Departure by disconnect.
	require.NoError(t, early.h.Close())
	ev = next()
	require.Equal(t, pb.WatchEvent_UNREGISTERED.String(), ev.GetKind().String())
	id, err = peer.IDFromBytes(ev.GetPeer())
	require.NoError(t, err)
	require.Equal(t, early.id(), id)
}

func itoa(v uint64) string { return strconv.FormatUint(v, 10) }
