package mailbox

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the server's Prometheus metrics (all prefixed
// rendezvous_mailbox_).
type metrics struct {
	reg           prometheus.Registerer
	cs            []prometheus.Collector
	deposits      prometheus.Counter
	replays       prometheus.Counter
	fetched       prometheus.Counter
	deleted       prometheus.Counter
	notices       prometheus.Counter
	notifySkipped prometheus.Counter
	rejected      *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, st *store) (*metrics, error) {
	m := &metrics{
		reg: reg,
		deposits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rendezvous_mailbox_deposits_total", Help: "Sealed deposits stored."}),
		replays: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rendezvous_mailbox_replays_total", Help: "Deposits of a box already held (answered with the held deposit, not stored again)."}),
		fetched: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rendezvous_mailbox_fetched_total", Help: "Deposits handed to their recipient by FETCH."}),
		deleted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rendezvous_mailbox_deleted_total", Help: "Deposits deleted by their recipient."}),
		notices: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rendezvous_mailbox_notices_total", Help: "Push notices delivered to connected recipients."}),
		notifySkipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rendezvous_mailbox_notices_skipped_total", Help: "Push notices not sent because too many were in flight."}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rendezvous_mailbox_rejected_total", Help: "Requests refused, by reason (the status answered)."}, []string{"reason"}),
	}
	m.cs = []prometheus.Collector{m.deposits, m.replays, m.fetched, m.deleted, m.notices, m.notifySkipped, m.rejected,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "rendezvous_mailbox_bytes_held", Help: "Bytes of deposits held (as the quotas count them)."},
			func() float64 { return float64(st.stats().Bytes) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "rendezvous_mailbox_deposits_held", Help: "Deposits held."},
			func() float64 { return float64(st.stats().Deposits) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "rendezvous_mailbox_expired_total", Help: "Deposits deleted at the end of their TTL."},
			func() float64 { return float64(st.stats().Expired) }),
	}
	for _, s := range []Status{StatusBadRequest, StatusBadRecipient, StatusTooLarge, StatusRecipientFull, StatusSenderFull, StatusStoreFull, StatusRateLimited} {
		m.rejected.WithLabelValues(s.String())
	}
	if reg == nil {
		return m, nil
	}
	for i, c := range m.cs {
		if err := reg.Register(c); err != nil {
			for _, done := range m.cs[:i] {
				reg.Unregister(done)
			}
			return nil, fmt.Errorf("mailbox metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) reject(s Status) { m.rejected.WithLabelValues(s.String()).Inc() }

func (m *metrics) unregister() {
	if m.reg == nil {
		return
	}
	for _, c := range m.cs {
		m.reg.Unregister(c)
	}
}
