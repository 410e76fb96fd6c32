package conformance

import (
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/p2p-messaging/p2p-messaging/rendezvous/pb"
)

// TestWireChecker shows that the raw-byte checks catch the proto3-style
// omission of zero fields that breaks Rust and Nim peers.
func TestWireChecker(t *testing.T) {
	t.Parallel()
	// What a proto3-style encoder writes for an OK REGISTER_RESPONSE whose
	// status is 0: no status field at all.
	omitted := protowireMessage(t, 1, 3600, false)
	inner := fields(t, requireBytes(t, fields(t, omitted), 3, "registerResponse"))
	require.Empty(t, inner[1], "sanity: the omitted encoding has no status field")

	explicit := protowireMessage(t, 1, 3600, true)
	checkRegisterResponseWire(t, explicit)
}

// protowireMessage encodes a REGISTER_RESPONSE by hand, with or without an
// explicit status 0.
func protowireMessage(t *testing.T, typ, ttl uint64, withStatus bool) []byte {
	t.Helper()
	var inner []byte
	if withStatus {
		inner = append(inner, 0x08, 0x00) // status = 0
	}
	inner = append(inner, 0x18) // ttl
	inner = appendVarint(inner, ttl)
	out := []byte{0x08}
	out = appendVarint(out, typ)
	out = append(out, 0x1a)
	out = appendVarint(out, uint64(len(inner)))
	return append(out, inner...)
}

func appendVarint(b []byte, v uint64) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

func TestStartupFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	d := startDaemon(t, dir, fastFlags...)
	b, err := os.ReadFile(filepath.Join(dir, "addrs"))
	require.NoError(t, err, "the daemon writes <data-dir>/addrs once listening")
	lines := strings.Fields(string(b))
	require.Contains(t, lines, d.addr, "addrs file lists the logged listen address")
	for _, l := range lines {
		require.True(t, strings.HasSuffix(l, "/p2p/"+d.info.ID.String()), "addrs file line %q must end in /p2p/<id>", l)
	}
	if runtime.GOOS != "windows" {
		st, err := os.Stat(filepath.Join(dir, "identity.key"))
		require.NoError(t, err, "identity key persisted in the data dir")
		require.Equal(t, os.FileMode(0o600), st.Mode().Perm(), "identity key permissions")
	}
}

func TestExpiry(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, t.TempDir(), append(fastFlags, "-min-ttl", "1s")...)
	const ns = "conf/expiry"
	short, long, q := newClient(t), newClient(t), newClient(t)
	resp := short.register(d, ns, 1)
	requireStatus(t, pb.Message_OK, resp.GetStatus(), resp.GetStatusText(), "ttl 1s with -min-ttl 1s")
	require.EqualValues(t, 1, resp.GetTtl())
	long.mustRegister(d, ns, hour)
	start := time.Now()
	require.Eventually(t, func() bool { return len(q.discoverNS(d, ns)) == 1 }, 10*time.Second, 100*time.Millisecond,
		"a registration past its ttl must no longer be listed")
	require.GreaterOrEqual(t, time.Since(start), 500*time.Millisecond, "expired too early")
	require.Contains(t, peersOf(t, q.discoverNS(d, ns)), long.id())
}

func TestWatchRefusals(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, t.TempDir(), append(fastFlags, "-max-watches-per-peer", "1")...)
	c := newClient(t)

	refused := func(ns *string, what string) {
		t.Helper()
		ws := c.open(d, watchProto)
		ws.send(&pb.WatchRequest{Ns: ns})
		raw, err := ws.readFrame()
		require.NoError(t, err, "%s: a refused watch gets an ERROR event", what)
		var ev pb.WatchEvent
		require.NoError(t, proto.Unmarshal(raw, &ev))
		require.Equal(t, pb.WatchEvent_ERROR.String(), ev.GetKind().String(), what)
		requireVarint(t, fields(t, raw), 5, "WatchEvent.status")
		require.NotEqual(t, pb.Message_OK.String(), ev.GetStatus().String(), what)
		ws.expectEnd(what + ": stream closed after the ERROR event")
	}
	refused(proto.String(""), "watch with an empty ns")
	refused(nil, "watch with an absent ns")
	refused(proto.String(strings.Repeat("n", 256)), "watch with a 256-byte ns")

	// One watch is allowed, the second of the same peer refused.
	ws := c.open(d, watchProto)
	ws.send(&pb.WatchRequest{Ns: proto.String("conf/w")})
	raw, err := ws.readFrame()
	require.NoError(t, err)
	var ev pb.WatchEvent
	require.NoError(t, proto.Unmarshal(raw, &ev))
	require.Equal(t, pb.WatchEvent_SYNCED.String(), ev.GetKind().String(), "empty namespace: SYNCED at once")
	refused(proto.String("conf/w2"), "second watch with -max-watches-per-peer 1")
}

func TestStreamDeadline(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, t.TempDir(), append(fastFlags, "-stream-timeout", "500ms")...)
	c := newClient(t)

	// An idle stream and a slowloris partial frame are both ended by the
	// server's per-request deadline, well before our own 10 s deadline.
	for name, data := range map[string][]byte{
		"idle stream":    nil,
		"partial frame":  {0x20, 0x08},
		"partial length": {0x80},
	} {
		rs := c.stream(d)
		if len(data) > 0 {
			rs.writeRaw(data)
		}
		start := time.Now()
		rs.expectEnd(name + " with -stream-timeout 500ms")
		took := time.Since(start)
		require.Less(t, took, 5*time.Second, "%s: ended only after %v", name, took)
		t.Logf("%s ended after %v", name, took.Round(time.Millisecond))
	}
	// A stream in use stays usable across requests spaced by less than the timeout.
	c.mustRegister(d, "conf/deadline", hour)
	require.Len(t, c.discoverNS(d, "conf/deadline"), 1)
}

func TestRateLimitRefills(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, t.TempDir(), "-rate", "5", "-burst", "5")
	c := newClient(t)
	rs := c.stream(d)
	limited := false
	for i := 0; i < 30 && !limited; i++ {
		rs.send(discMsg(discReq{ns: proto.String("conf/refill")}))
		limited = rs.recvDiscoverResponse().GetStatus() == pb.Message_E_UNAVAILABLE
	}
	require.True(t, limited, "30 back-to-back requests with -rate 5 -burst 5 must hit the limit")
	// The bucket refills at 5/s: the same peer is served again shortly.
	require.Eventually(t, func() bool {
		rs.send(discMsg(discReq{ns: proto.String("conf/refill")}))
		return rs.recvDiscoverResponse().GetStatus() == pb.Message_OK
	}, 5*time.Second, 250*time.Millisecond, "a rate-limited peer must be served again once tokens refill")
}

// A user name is leased to its key beyond the presence: the holder's
// disconnect or expiry removes its registration, not its claim.
func TestExclusiveNameHeldAcrossDisconnectAndExpiry(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, t.TempDir(), append(fastFlags, "-min-ttl", "1s", "-disconnect-grace", "300ms")...)
	holder, expiring, other := newClient(t), newClient(t), newClient(t)
	holder.mustRegister(d, "p2p-messaging/user/leaver", hour)
	resp := expiring.register(d, "p2p-messaging/user/expirer", 1)
	requireStatus(t, pb.Message_OK, resp.GetStatus(), resp.GetStatusText(), "ttl 1s")

	resp = other.register(d, "p2p-messaging/user/leaver", hour)
	requireStatus(t, pb.Message_E_NOT_AUTHORIZED, resp.GetStatus(), resp.GetStatusText(), "name held by a connected peer")

	require.NoError(t, holder.h.Close())
	require.Eventually(t, func() bool {
		return len(other.discoverNS(d, "p2p-messaging/user/leaver")) == 0
	}, 10*time.Second, 100*time.Millisecond, "the registration goes once its holder disconnected (after the grace)")
	resp = other.register(d, "p2p-messaging/user/leaver", hour)
	requireStatus(t, pb.Message_E_NOT_AUTHORIZED, resp.GetStatus(), resp.GetStatusText(), "the name outlives its holder's disconnect")

	require.Eventually(t, func() bool {
		return len(other.discoverNS(d, "p2p-messaging/user/expirer")) == 0
	}, 10*time.Second, 100*time.Millisecond, "the registration goes once it expired")
	resp = other.register(d, "p2p-messaging/user/expirer", hour)
	requireStatus(t, pb.Message_E_NOT_AUTHORIZED, resp.GetStatus(), resp.GetStatusText(), "the name outlives its holder's expired registration")
	resp = expiring.register(d, "p2p-messaging/user/expirer", hour)
	requireStatus(t, pb.Message_OK, resp.GetStatus(), resp.GetStatusText(), "the holder takes its name back")
	regs := other.discoverNS(d, "p2p-messaging/user/expirer")
	require.Len(t, regs, 1)
	require.Equal(t, expiring.id(), regPeer(t, regs[0]))
}

func TestConcurrentClients(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, t.TempDir())
	const n = 16
	const ns = "conf/concurrent"
	clients := make([]*client, n)
	for i := range clients {
		clients[i] = newClient(t)
		clients[i].connect(d)
	}
	errs := make(chan error, n)
	for _, c := range clients {
		go func() { errs <- c.churn(d, ns, 20) }()
	}
	for range clients {
		require.NoError(t, <-errs)
	}
	regs := peersOf(t, newClient(t).discoverNS(d, ns))
	require.Len(t, regs, n, "every concurrent client ends registered exactly once")
}

// TestLenientDecoding: requests as other implementations encode them.
func TestLenientDecoding(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, t.TempDir())

	t.Run("REGISTER_with_type_omitted", func(t *testing.T) {
		c := newClient(t)
		// proto3-style encoders (js protons, prost with proto3 syntax) omit
		// type = REGISTER because it is 0; for a proto2 reader an absent
		// enum is its default, REGISTER.
		m := regMsg(regReq{ns: proto.String("conf/notype"), ttl: proto.Uint64(hour), record: c.record()})
		m.Type = nil
		rs := c.stream(d)
		rs.send(m)
		raw, err := rs.readFrame()
		require.NoError(t, err, "REGISTER without an explicit type: read response")
		checkRegisterResponseWire(t, raw)
		var resp pb.Message
		require.NoError(t, proto.Unmarshal(raw, &resp))
		r := resp.GetRegisterResponse()
		requireStatus(t, pb.Message_OK, r.GetStatus(), r.GetStatusText(), "REGISTER without an explicit type")
		require.Len(t, c.discoverNS(d, "conf/notype"), 1)
	})

	t.Run("unknown_fields_ignored", func(t *testing.T) {
		c := newClient(t)
		b, err := proto.Marshal(regMsg(regReq{ns: proto.String("conf/unknown-fields"), ttl: proto.Uint64(hour), record: c.record()}))
		require.NoError(t, err)
		b = append(b, 0xf8, 0x06, 0x01)                // field 111, varint 1
		b = append(b, 0x82, 0x07, 0x03, 'a', 'b', 'c') // field 112, bytes "abc"
		rs := c.stream(d)
		rs.writeRaw(frame(b))
		r := rs.recvRegisterResponse()
		requireStatus(t, pb.Message_OK, r.GetStatus(), r.GetStatusText(), "REGISTER with unknown extra fields")
	})

	t.Run("record_passed_through_unchanged", func(t *testing.T) {
		c := newClient(t)
		rec := c.record()
		rs := c.stream(d)
		rs.send(regMsg(regReq{ns: proto.String("conf/passthrough"), ttl: proto.Uint64(hour), record: rec}))
		r := rs.recvRegisterResponse()
		requireStatus(t, pb.Message_OK, r.GetStatus(), r.GetStatusText(), "register")
		regs := c.discoverNS(d, "conf/passthrough")
		require.Len(t, regs, 1)
		require.Equal(t, rec, regs[0].GetSignedPeerRecord(), "DISCOVER must return the signed envelope byte for byte")
	})
}

func TestQUIC(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, t.TempDir(), append(fastFlags, "-listen", "/ip4/127.0.0.1/udp/0/quic-v1")...)
	require.Contains(t, d.addr, "/quic-v1/", "listening addr")
	c := newQUICClient(t)
	c.mustRegister(d, "conf/quic", hour)
	regs := c.discoverNS(d, "conf/quic")
	require.Len(t, regs, 1)
	require.Equal(t, c.id(), regPeer(t, regs[0]))
	conns := c.h.Network().ConnsToPeer(d.info.ID)
	require.NotEmpty(t, conns)
	require.Contains(t, conns[0].RemoteMultiaddr().String(), "/quic-v1")
}

// The per-peer watch cap is the daemon's, not its resource manager's: with
// -max-watches-per-peer 120 (above go-libp2p's default of 64 inbound streams
// per peer and protocol, plus a little per GiB) all 120 are served and the
// 121st is refused with a status. The default cap works the same.
func TestWatchCapHonoured(t *testing.T) {
	t.Parallel()
	for _, n := range []int{48, 120} {
		args := fastFlags
		if n != 48 {
			args = append(slices.Clone(fastFlags), "-max-watches-per-peer", strconv.Itoa(n))
		}
		d := startDaemon(t, t.TempDir(), args...)
		c := newClient(t)
		for i := range n {
			ws := c.open(d, watchProto)
			ws.send(&pb.WatchRequest{Ns: proto.String("conf/cap")})
			raw, err := ws.readFrame()
			require.NoError(t, err, "watch %d of %d", i+1, n)
			var ev pb.WatchEvent
			require.NoError(t, proto.Unmarshal(raw, &ev))
			require.Equal(t, pb.WatchEvent_SYNCED.String(), ev.GetKind().String(), "watch %d of %d", i+1, n)
		}
		ws := c.open(d, watchProto)
		ws.send(&pb.WatchRequest{Ns: proto.String("conf/cap")})
		raw, err := ws.readFrame()
		require.NoError(t, err, "watch %d over a cap of %d gets a status, not a reset", n+1, n)
		var ev pb.WatchEvent
		require.NoError(t, proto.Unmarshal(raw, &ev))
		require.Equal(t, pb.WatchEvent_ERROR.String(), ev.GetKind().String())
		require.Equal(t, pb.Message_E_UNAVAILABLE.String(), ev.GetStatus().String())
	}
}
