//go:build e2e

package testbed

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"
)

// result is one row of the results table.
type result struct {
	Scenario   string
	Transport  string
	NAT        string
	Outcome    string
	Direct     string // time to a direct connection (hole-punch tracer), "-" if none expected
	HPAttempts string
	Sent       int
	Delivered  int
	Duplicated int
	Duration   time.Duration
	Note       string
}

var (
	resultsMu sync.Mutex
	results   []*result
)

func record(r *result) {
	resultsMu.Lock()
	defer resultsMu.Unlock()
	results = append(results, r)
}

func printResults(w io.Writer) {
	resultsMu.Lock()
	defer resultsMu.Unlock()
	if len(results) == 0 {
		return
	}
	fmt.Fprintln(w, "\n=== test-bed results ===")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SCENARIO\tTRANSPORT\tNAT (A/B)\tOUTCOME\tDIRECT AFTER\tHP ATTEMPTS\tSENT\tDELIVERED\tDUPLICATED\tTIME\tNOTE")
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\n", r.Scenario, r.Transport, r.NAT, r.Outcome,
			r.Direct, r.HPAttempts, r.Sent, r.Delivered, r.Duplicated, r.Duration.Round(100*time.Millisecond), oneLine(r.Note))
	}
	tw.Flush()
}

// sentMsg is a message the harness sent through a peer.
type sentMsg struct {
	ID, From, To, Text string
}

// scenario tracks the peers (every incarnation) and messages of one scenario
// and fills its result row when it ends.
type scenario struct {
	t     *testing.T
	tp    *topology
	res   *result
	start time.Time

	mu    sync.Mutex
	peers map[string][]*peer
	sent  []sentMsg
	seq   int
}

func newScenario(t *testing.T, tp *topology, res *result) *scenario {
	s := &scenario{t: t, tp: tp, res: res, start: time.Now(), peers: map[string][]*peer{}}
	record(res)
	res.Outcome = "RUNNING"
	if res.Direct == "" {
		res.Direct = "-"
	}
	if res.HPAttempts == "" {
		res.HPAttempts = "-"
	}
	t.Cleanup(s.finish)
	return s
}

func (s *scenario) peer(spec peerSpec) *peer {
	s.t.Helper()
	p := s.tp.startPeer(spec)
	s.mu.Lock()
	s.peers[spec.Nick] = append(s.peers[spec.Nick], p)
	s.mu.Unlock()
	return p
}

// peersAtOnce starts several peers together and waits until each is ready.
func (s *scenario) peersAtOnce(specs ...peerSpec) []*peer {
	s.t.Helper()
	var ps []*peer
	for _, spec := range specs {
		p := s.tp.launchPeer(spec)
		s.mu.Lock()
		s.peers[spec.Nick] = append(s.peers[spec.Nick], p)
		s.mu.Unlock()
		ps = append(ps, p)
	}
	for _, p := range ps {
		p.waitReady()
	}
	return ps
}

// current returns the latest incarnation of nick.
func (s *scenario) current(nick string) *peer {
	s.mu.Lock()
	defer s.mu.Unlock()
	ps := s.peers[nick]
	return ps[len(ps)-1]
}

// send sends one message and waits until the sender accepted it ("sent").
func (s *scenario) send(from *peer, to string) sentMsg {
	s.t.Helper()
	s.mu.Lock()
	s.seq++
	text := fmt.Sprintf("m%d %s->%s %s", s.seq, from.spec.Nick, to, strings.Repeat("x", s.seq%7))
	s.mu.Unlock()
	m := from.mark()
	from.command("/msg " + to + " " + text)
	e := from.wait(120*time.Second, m, func(e event) bool {
		return (e.is("sent") && e.str("to") == to) || e.is("error")
	})
	if e.is("error") {
		s.t.Fatalf("%s: /msg %s: %s", from.spec.Nick, to, e.str("error"))
	}
	msg := sentMsg{ID: e.str("id"), From: from.spec.Nick, To: to, Text: text}
	s.mu.Lock()
	s.sent = append(s.sent, msg)
	s.mu.Unlock()
	return msg
}

// awaitDelivery waits for the ack at the sender and the message at the
// recipient's current incarnation.
func (s *scenario) awaitDelivery(msg sentMsg, timeout time.Duration) {
	s.t.Helper()
	from, to := s.current(msg.From), s.current(msg.To)
	from.wait(timeout, 0, func(e event) bool { return e.is("delivered") && e.str("id") == msg.ID })
	to.wait(timeout, 0, func(e event) bool { return e.is("message") && e.str("id") == msg.ID })
}

// exchange sends one message and waits for its delivery.
func (s *scenario) exchange(from *peer, to string) sentMsg {
	s.t.Helper()
	msg := s.send(from, to)
	s.awaitDelivery(msg, 90*time.Second)
	return msg
}

// account counts deliveries and duplicates over every incarnation of every
// peer: a message id acknowledged or received more than once is a duplicate.
func (s *scenario) account() (delivered, duplicated int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range s.sent {
		acks, recv := 0, 0
		for _, p := range s.peers[m.From] {
			acks += len(p.all(func(e event) bool { return e.is("delivered") && e.str("id") == m.ID }))
		}
		for _, p := range s.peers[m.To] {
			recv += len(p.all(func(e event) bool { return e.is("message") && e.str("id") == m.ID }))
		}
		if acks > 0 && recv > 0 {
			delivered++
		}
		if acks > 1 {
			duplicated += acks - 1
		}
		if recv > 1 {
			duplicated += recv - 1
		}
	}
	return delivered, duplicated
}

// fatalf records the reason in the results table and fails the scenario.
func (s *scenario) fatalf(format string, args ...any) {
	s.t.Helper()
	msg := fmt.Sprintf(format, args...)
	if len(msg) > 110 {
		s.res.Note = msg[:110] + "..."
	} else {
		s.res.Note = msg
	}
	s.t.Fatal(msg)
}

func (s *scenario) fatal(args ...any) {
	s.t.Helper()
	s.fatalf("%s", fmt.Sprint(args...))
}

func (s *scenario) finish() {
	delivered, dup := s.account()
	s.res.Sent, s.res.Delivered, s.res.Duplicated = len(s.sent), delivered, dup
	s.res.Duration = time.Since(s.start)
	switch {
	case s.t.Skipped():
		s.res.Outcome = "SKIP"
	case s.t.Failed():
		s.res.Outcome = "FAIL"
		if s.res.Note == "" {
			s.res.Note = "see the test log above"
		}
	case delivered != len(s.sent) || dup != 0:
		s.res.Outcome = "FAIL"
		s.t.Errorf("%d messages sent, %d delivered, %d duplicated", len(s.sent), delivered, dup)
	default:
		s.res.Outcome = "PASS"
	}
}

// oneLine keeps a note on its table row: the first line, at most 110 bytes
// (a multi-line dial error would otherwise break the column alignment).
func oneLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = strings.TrimRight(s[:i], " :") + " ..."
	}
	if len(s) > 110 {
		s = s[:110] + "..."
	}
	return s
}
