package rendezvous

import (
	"bytes"
	"encoding/binary"
	"io"
	"log/slog"
	"math"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/multiformats/go-varint"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/p2p-messaging/p2p-messaging/rendezvous/pb"
)

func TestLimitsValidate(t *testing.T) {
	require.NoError(t, DefaultLimits().validate())
	tests := []struct {
		name string
		mod  func(*Limits)
	}{
		{"zero min ttl", func(l *Limits) { l.MinTTL = 0 }},
		{"fractional ttl", func(l *Limits) { l.MinTTL = 1500 * time.Millisecond }},
		{"default below min", func(l *Limits) { l.DefaultTTL = time.Minute }},
		{"default above max", func(l *Limits) { l.DefaultTTL = 100 * time.Hour }},
		{"namespace len 0", func(l *Limits) { l.MaxNamespaceLen = 0 }},
		{"namespace len above spec", func(l *Limits) { l.MaxNamespaceLen = 256 }},
		{"per-peer cap 0", func(l *Limits) { l.MaxRegistrationsPerPeer = 0 }},
		{"total cap 0", func(l *Limits) { l.MaxRegistrations = 0 }},
		{"discover limit above spec", func(l *Limits) { l.MaxDiscoverLimit = 1001 }},
		{"rate 0", func(l *Limits) { l.RequestRate = 0 }},
		{"burst 0", func(l *Limits) { l.RequestBurst = 0 }},
		{"stream timeout 0", func(l *Limits) { l.StreamTimeout = 0 }},
		{"negative watch cap", func(l *Limits) { l.MaxWatches = -1 }},
		{"record size huge", func(l *Limits) { l.MaxRecordSize = MaxMessageSize }},
		{"watch queue 0", func(l *Limits) { l.WatchQueue = 0 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := DefaultLimits()
			tt.mod(&l)
			require.Error(t, l.validate())
			_, err := NewServer(nil, WithLimits(l))
			require.ErrorContains(t, err, "invalid limits")
		})
	}
}

func TestServerOptionErrors(t *testing.T) {
	_, err := NewServer(nil, WithLogger(nil))
	require.Error(t, err)
	_, err = NewServer(nil, WithClock(nil))
	require.Error(t, err)
}

func TestCookie(t *testing.T) {
	c := appendCookie(nil, 0x0102030405060708, "room")
	require.Equal(t, append([]byte{1, 2, 3, 4, 5, 6, 7, 8}, "room"...), c, "8 bytes big-endian, then the namespace")

	tests := []struct {
		name   string
		cookie []byte
		ns     string
		seq    uint64
		err    error
	}{
		{"empty starts over", nil, "room", 0, nil},
		{"own namespace", c, "room", 0x0102030405060708, nil},
		{"all namespaces", appendCookie(nil, 9, ""), "", 9, nil},
		{"max seq", appendCookie(nil, math.MaxUint64, "x"), "x", math.MaxUint64, nil},
		{"short", []byte{1, 2, 3}, "room", 0, errCookieMalformed},
		{"seven bytes", make([]byte, 7), "", 0, errCookieMalformed},
		{"other namespace", c, "roo", 0, errCookieNamespace},
		{"namespace prefix", c, "rooms", 0, errCookieNamespace},
		{"namespaced cookie for all", c, "", 0, errCookieNamespace},
		{"bad utf8", append(binary.BigEndian.AppendUint64(nil, 1), 0xc3), "\xc3", 0, errCookieMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seq, err := parseCookie(tt.cookie, tt.ns)
			require.ErrorIs(t, err, tt.err)
			require.Equal(t, tt.seq, seq)
		})
	}
}

func TestRemainingSeconds(t *testing.T) {
	s := int64(time.Second)
	for _, tt := range []struct {
		expires, now int64
		want         uint64
	}{
		{10 * s, 0, 10},
		{10 * s, 1, 10},
		{10 * s, s - 1, 10},
		{10 * s, s, 9},
		{10 * s, 10*s - 1, 1},
		{10 * s, 10 * s, 0},
		{10 * s, 11 * s, 0},
	} {
		require.Equal(t, tt.want, remainingSeconds(tt.expires, tt.now), "%+v", tt)
	}
}

func TestRateLimiterSweep(t *testing.T) {
	rl := newRateLimiter(10, 2)
	now := time.Unix(1000, 0)
	p := newFakePeer(t).id
	require.True(t, rl.allow(p, now))
	require.True(t, rl.allow(p, now))
	require.False(t, rl.allow(p, now))
	rl.sweep(now)
	require.Equal(t, 1, rl.len(), "a drained bucket is kept")
	rl.sweep(now.Add(time.Second))
	require.Equal(t, 0, rl.len(), "a full bucket is dropped")
}

func TestIndexCompaction(t *testing.T) {
	var ix seqIndex
	var es []*regEntry
	for i := range 100 {
		e := &regEntry{seq: uint64(i + 1)}
		es = append(es, e)
		ix.entries = append(ix.entries, e)
	}
	for _, e := range es[:60] {
		e.dead = true
		ix.removed()
	}
	require.LessOrEqual(t, len(ix.entries), 2*ix.live()+16)
	require.Equal(t, 40, ix.live())
	require.Equal(t, 0, ix.after(60)-countDead(ix.entries[:ix.after(60)]), "positions stay sorted after compaction")
	require.Equal(t, uint64(61), firstLive(ix.entries[ix.after(0):]).seq)
	for _, e := range es[60:] {
		e.dead = true
		ix.removed()
	}
	require.Nil(t, ix.entries)
}

func countDead(es []*regEntry) int {
	n := 0
	for _, e := range es {
		if e.dead {
			n++
		}
	}
	return n
}

func firstLive(es []*regEntry) *regEntry {
	for _, e := range es {
		if !e.dead {
			return e
		}
	}
	return nil
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, sh := startServer(t, WithRegisterer(reg), WithLogger(log))
	ch := newTestHost(t)
	connect(t, ch, sh)
	rs := openRaw(t, ch, sh.ID(), ProtocolID)
	require.Equal(t, pb.Message_OK, rs.register("room", signedRecord(t, ch), 0).GetStatus())
	require.Equal(t, pb.Message_E_INVALID_TTL, rs.register("room", signedRecord(t, ch), 1).GetStatus())
	require.Equal(t, pb.Message_OK, rs.discover("room", 0, nil).GetStatus())
	require.Equal(t, pb.Message_E_INVALID_COOKIE, rs.discover("room", 0, []byte{1}).GetStatus())
	w := openWatch(t, ch, sh, "room")
	require.Equal(t, pb.WatchEvent_REGISTERED, w.next().GetKind())
	require.Equal(t, pb.WatchEvent_SYNCED, w.next().GetKind())

	require.Equal(t, 1.0, counterValue(t, reg, "rendezvous_registrations", nil))
	require.Equal(t, 1.0, counterValue(t, reg, "rendezvous_watch_subscribers", nil))
	require.Equal(t, 1.0, counterValue(t, reg, "rendezvous_requests_total", map[string]string{"type": "REGISTER", "status": "OK"}))
	require.Equal(t, 1.0, counterValue(t, reg, "rendezvous_requests_total", map[string]string{"type": "REGISTER", "status": "E_INVALID_TTL"}))
	require.Equal(t, 1.0, counterValue(t, reg, "rendezvous_requests_total", map[string]string{"type": "DISCOVER", "status": "E_INVALID_COOKIE"}))
	require.Equal(t, 1.0, counterValue(t, reg, "rendezvous_rejections_total", map[string]string{"reason": rejectTTL}))
	require.Equal(t, 1.0, counterValue(t, reg, "rendezvous_rejections_total", map[string]string{"reason": rejectCookie}))
	mfs, err := reg.Gather()
	require.NoError(t, err)
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
		require.True(t, strings.HasPrefix(mf.GetName(), "rendezvous_"))
	}
	require.True(t, names["rendezvous_request_duration_seconds"])
	require.Equal(t, 1, s.Registrations())
	require.Contains(t, logs.String(), "peer=")

	// A second server on the same registry is refused, not a panic.
	_, err = NewServer(newTestHost(t), WithRegisterer(reg))
	require.ErrorContains(t, err, "register metrics")
}

// counterValue reads the value of the series of name with the given labels.
func counterValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if want, ok := labels[lp.GetName()]; ok && want != lp.GetValue() {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			}
		}
	}
	t.Fatalf("metric %s %v not found", name, labels)
	return 0
}

// TestRateLimiterHeldBucket: a bucket a stream holds is never swept, so a
// peer cannot get a second, full bucket by waiting for a sweep.
func TestRateLimiterHeldBucket(t *testing.T) {
	rl := newRateLimiter(10, 2)
	now := time.Unix(1000, 0)
	p := newFakePeer(t).id
	b := rl.acquire(p)
	require.Same(t, b, rl.acquire(p), "one bucket per peer")
	rl.release(b)
	require.True(t, b.allow(now))
	rl.sweep(now.Add(time.Hour))
	require.Equal(t, 1, rl.len(), "a held bucket is kept even when full")
	require.True(t, b.allow(now))
	require.False(t, b.allow(now))
	require.False(t, rl.allow(p, now), "map lookups share the held bucket")
	rl.release(b)
	rl.sweep(now.Add(time.Hour))
	require.Equal(t, 0, rl.len(), "released and full: dropped")
}

// TestFrameReader: frames split at every byte, a frame larger than the
// small buffer, a clean end, a cut-off frame and an oversized prefix.
func TestFrameReader(t *testing.T) {
	small := []byte("hello")
	large := bytes.Repeat([]byte{7}, 3000)
	huge := bytes.Repeat([]byte{9}, framePoolSize+10)
	var in []byte
	for _, b := range [][]byte{small, large, huge, {}} {
		in = append(in, varint.ToUvarint(uint64(len(b)))...)
		in = append(in, b...)
	}
	r := newFrameReader(iotest.OneByteReader(bytes.NewReader(in)))
	for _, want := range [][]byte{small, large, huge, {}} {
		got, err := r.next()
		require.NoError(t, err)
		require.Equal(t, want, got)
	}
	_, err := r.next()
	require.ErrorIs(t, err, io.EOF)
	r.done()

	_, err = newFrameReader(bytes.NewReader([]byte{10, 1, 2})).next()
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
	_, err = newFrameReader(bytes.NewReader([]byte{0x80})).next()
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
	_, err = newFrameReader(bytes.NewReader(varint.ToUvarint(MaxMessageSize + 1))).next()
	require.ErrorIs(t, err, errFrameTooLarge)

	// The largest frame, read in uneven pieces, comes back whole.
	max := bytes.Repeat([]byte{3}, MaxMessageSize)
	got, err := newFrameReader(iotest.HalfReader(bytes.NewReader(append(varint.ToUvarint(MaxMessageSize), max...)))).next()
	require.NoError(t, err)
	require.Equal(t, max, got)

	// A large claim followed by a trickle that stops is a truncated frame.
	_, err = newFrameReader(bytes.NewReader(append(varint.ToUvarint(MaxMessageSize), make([]byte, 10)...))).next()
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
}

// A peer announcing the largest frame and sending little makes the server
// hold memory for what arrived, not for the claim.
func TestFrameReaderGrowsWithData(t *testing.T) {
	in := append(varint.ToUvarint(MaxMessageSize), make([]byte, 1000)...)
	var m1, m2 runtime.MemStats
	runtime.ReadMemStats(&m1)
	_, err := newFrameReader(bytes.NewReader(in)).next()
	runtime.ReadMemStats(&m2)
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
	// Far below the 1 MiB claimed (headroom for anything else allocating).
	require.Less(t, m2.TotalAlloc-m1.TotalAlloc, uint64(256<<10))
}
