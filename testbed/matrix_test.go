//go:build e2e

package testbed

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// matrixRow gathers the runs of one pair: the self-check's and the chat's
// successes, times to a direct connection and punch attempts.
type matrixRow struct {
	Pair pair

	mu                      sync.Mutex
	runs                    int
	selfOK, chatOK          int
	selfTimes, chatTimes    []time.Duration
	selfAttempts, chatAttem int
	// flushCT, flushFC: conntrack entries and full-cone mappings the
	// routers held (and forgot) before the runs, summed over the runs.
	flushCT, flushFC int
	// chatBrokeOff: the chat's punches that broke off before any dial,
	// over the successful runs.
	chatBrokeOff int
}

// flushed adds what natrouter flush reported before a run.
func (r *matrixRow) flushed(lines []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, l := range lines {
		for _, f := range strings.Fields(l) {
			k, v, _ := strings.Cut(f, "=")
			n, _ := strconv.Atoi(v)
			switch k {
			case "conntrack":
				r.flushCT += n
			case "fullcone":
				r.flushFC += n
			}
		}
	}
}

func (r *matrixRow) start() {
	r.mu.Lock()
	r.runs++
	r.mu.Unlock()
}

// addSelf counts a self-check run: direct for a direct pair, relayed with
// every punch failed (at least one) for the others.
func (r *matrixRow) addSelf(p pair, sc selfCheckResult) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if p.direct() != sc.Direct || (!p.direct() && (len(sc.Fails) == 0 || len(sc.Success) > 0)) {
		return
	}
	r.selfOK++
	if sc.Direct {
		r.selfTimes = append(r.selfTimes, sc.Elapsed)
		r.selfAttempts += sc.Attempts
	}
}

// addChat counts a chat run that passed every check of runChat with every
// message delivered exactly once.
func (r *matrixRow) addChat(p pair, c chatResult) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.chatOK++
	if p.direct() {
		r.chatTimes = append(r.chatTimes, c.Elapsed)
		r.chatAttem += c.MaxAttempt
		r.chatBrokeOff += c.BrokeOff
	}
}

// percentile returns the q-quantile (nearest rank) of ds.
func percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.999999) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func fmtTimes(ds []time.Duration) string {
	if len(ds) == 0 {
		return "-"
	}
	return fmt.Sprintf("%d / %d ms", percentile(ds, 0.5).Milliseconds(), percentile(ds, 0.95).Milliseconds())
}

func perSuccess(attempts, ok int, direct bool) string {
	if !direct || ok == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", float64(attempts)/float64(ok))
}

func printMatrix(w io.Writer, n int, rows []*matrixRow) {
	if len(rows) == 0 {
		return
	}
	fmt.Fprintf(w, "\n=== success-rate matrix (N=%d per row; self-check = plain go-libp2p through the same routers in the same run) ===\n", n)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAT (A/B)\tTRANSPORT\tLINK\tEXPECTED\tCHAT OK\tSELF-CHECK OK\tCHAT p50/p95 TO DIRECT\tSELF p50/p95 TO DIRECT\tCHAT ATTEMPTS/SUCCESS\tSELF ATTEMPTS/SUCCESS\tCHAT BROKE OFF\tFLUSHED CT/FC PER RUN")
	for _, r := range rows {
		r.mu.Lock()
		expect := "relayed"
		if r.Pair.direct() {
			expect = "direct"
			if r.Pair.A == "public" {
				expect = "direct (reversal)"
			}
		}
		link := r.Pair.Link
		if link == "" {
			link = "internet"
		}
		flushed := "-"
		if r.runs > 0 {
			flushed = fmt.Sprintf("%.1f / %.1f", float64(r.flushCT)/float64(r.runs), float64(r.flushFC)/float64(r.runs))
		}
		brokeOff := "-"
		if r.Pair.direct() {
			brokeOff = strconv.Itoa(r.chatBrokeOff)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d/%d\t%d/%d\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Pair.nat(), r.Pair.transportName(), link, expect,
			r.chatOK, r.runs, r.selfOK, r.runs, fmtTimes(r.chatTimes), fmtTimes(r.selfTimes),
			perSuccess(r.chatAttem, r.chatOK, r.Pair.direct()), perSuccess(r.selfAttempts, r.selfOK, r.Pair.direct()), brokeOff, flushed)
		r.mu.Unlock()
	}
	tw.Flush()
}
