package rendezvous

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/p2p-messaging/p2p-messaging/rendezvous/pb"
)

// Rejection reasons, the label of rendezvous_rejections_total.
const (
	rejectRateLimit     = "rate_limit"
	rejectNamespace     = "namespace"
	rejectRecord        = "signed_peer_record"
	rejectTTL           = "ttl"
	rejectCookie        = "cookie"
	rejectExclusive     = "exclusive"
	rejectPeerCap       = "peer_cap"
	rejectTotalCap      = "total_cap"
	rejectStore         = "store"
	rejectWatchCap      = "watch_cap"
	rejectWatchOverflow = "watch_overflow"
	rejectMalformed     = "malformed"
	rejectResource      = "resource"
)

// requestTypes are the request labels of rendezvous_requests_total.
var requestTypes = []pb.Message_MessageType{pb.Message_REGISTER, pb.Message_UNREGISTER, pb.Message_DISCOVER}

// metrics holds the server's collectors. Counters for the fixed label sets
// are resolved once, so the request path does no label hashing.
type serverMetrics struct {
	requests   map[pb.Message_MessageType]map[Status]prometheus.Counter
	rejections *prometheus.CounterVec
	latency    map[pb.Message_MessageType]prometheus.Observer
	removals   *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, registrations, watchers func() float64) (*serverMetrics, error) {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rendezvous_requests_total",
		Help: "Rendezvous requests handled, by message type and response status.",
	}, []string{"type", "status"})
	rejections := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rendezvous_rejections_total",
		Help: "Requests refused or streams reset, by reason.",
	}, []string{"reason"})
	latency := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "rendezvous_request_duration_seconds",
		Help:    "Time to handle one rendezvous request, by message type.",
		Buckets: []float64{5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 1e-2, 0.1},
	}, []string{"type"})
	removals := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rendezvous_removals_total",
		Help: "Registrations removed, by reason (unregister, expired, disconnect).",
	}, []string{"reason"})
	regs := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "rendezvous_registrations",
		Help: "Live registrations held by the server.",
	}, registrations)
	watch := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "rendezvous_watch_subscribers",
		Help: "Open watch subscriptions.",
	}, watchers)

	if reg != nil {
		var errs []error
		for _, c := range []prometheus.Collector{requests, rejections, latency, removals, regs, watch} {
			errs = append(errs, reg.Register(c))
		}
		if err := errors.Join(errs...); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}

	m := &serverMetrics{
		requests:   make(map[pb.Message_MessageType]map[Status]prometheus.Counter),
		rejections: rejections,
		latency:    make(map[pb.Message_MessageType]prometheus.Observer),
		removals:   removals,
	}
	for _, t := range requestTypes {
		byStatus := make(map[Status]prometheus.Counter)
		for v := range pb.Message_ResponseStatus_name {
			st := Status(v)
			byStatus[st] = requests.WithLabelValues(t.String(), st.String())
		}
		m.requests[t] = byStatus
		m.latency[t] = latency.WithLabelValues(t.String())
	}
	for _, r := range []string{rejectRateLimit, rejectNamespace, rejectRecord, rejectTTL, rejectCookie,
		rejectExclusive, rejectPeerCap, rejectTotalCap, rejectStore, rejectWatchCap, rejectWatchOverflow, rejectMalformed, rejectResource,
		// names and records (lease.go, claim.go, addrcheck.go)
		rejectNameHeld, rejectNamesFull, rejectNameCap, rejectClaimProof, rejectClaimRate, rejectRecordAddrs} {
		rejections.WithLabelValues(r)
	}
	return m, nil
}

func (m *serverMetrics) reject(reason string) { m.rejections.WithLabelValues(reason).Inc() }
