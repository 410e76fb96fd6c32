package rendezvous

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/p2p-messaging/p2p-messaging/rendezvous/pb"
)

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
