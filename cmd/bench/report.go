package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// evaluate fills each row's baseline ratio and target verdict, and turns
// failed requests into report errors.
func (b *bench) evaluate() {
	rows := b.rep.Results
	findMode := func(name, mode string) *result {
		for i := range rows {
			if rows[i].Name == name && rows[i].Mode == mode {
				return &rows[i]
			}
		}
		return nil
	}
	against := func(r *result, base *result, metric string) {
		if base == nil {
			return
		}
		r.Baseline = base.Name
		r.RatioOf = metric
		var num, den float64
		switch metric {
		case "ops/s":
			num, den = r.OpsPerSec, base.OpsPerSec
		case "p50":
			num, den = r.P50, base.P50
		case "p99":
			num, den = r.P99, base.P99
		}
		if den > 0 {
			r.Ratio = num / den
		}
	}
	for i := range rows {
		r := &rows[i]
		paced := strings.HasPrefix(r.Mode, "paced")
		switch {
		case r.Group == "baseline" && strings.HasPrefix(r.Name, "libp2p-echo"):
			metric := "ops/s"
			if paced {
				metric = "p99"
			}
			against(r, findMode(strings.Replace(r.Name, "libp2p-", "tcp-", 1), r.Mode), metric)
		case r.Group == "rendezvous" && r.Name == "DISCOVER":
			against(r, findMode("libp2p-echo discover-sized", r.Mode), "ops/s")
			r.Target = "≥ 0.6× libp2p echo and ≥ 50,000/s"
			r.Pass = boolp(r.Ratio >= 0.6 && r.OpsPerSec >= 50000)
		case r.Group == "rendezvous" && strings.HasPrefix(r.Name, "REGISTER"):
			against(r, findMode("libp2p-echo register-sized", r.Mode), "ops/s")
			r.Target = "≥ 10,000/s"
			r.Pass = boolp(r.OpsPerSec >= 10000)
		case r.Group == "rendezvous" && paced:
			against(r, findMode("libp2p-echo discover-sized", r.Mode), "p99")
			r.Target = "p99 ≤ 2 ms at 1,000 clients"
			r.Pass = boolp(r.P99 <= 2 && r.Clients >= 1000)
		case r.Group == "rendezvous":
			against(r, findMode("libp2p-echo discover-sized", r.Mode), "ops/s")
		}
		if r.Ops == 0 {
			r.Pass = nil // nothing measured, nothing to judge
		}
		if r.Errors > 0 {
			b.rep.Errors = append(b.rep.Errors, fmt.Sprintf("%s %s (%s): %d failed requests, first: %s", r.Group, r.Name, r.Mode, r.Errors, r.FirstError))
		}
	}
	b.evaluateChat()
	b.evaluateMailbox() // mailbox.go
	if b.cfg.Short {
		// Small numbers and windows of a few hundred milliseconds: the
		// verdicts would mean nothing.
		for i := range b.rep.Results {
			b.rep.Results[i].Pass = nil
		}
		for i := range b.rep.Memory {
			b.rep.Memory[i].Pass = nil
		}
		b.rep.Notes = append(b.rep.Notes, "short mode: checks that every part runs; targets are not judged")
	}
}

func verdict(p *bool) string {
	switch {
	case p == nil:
		return ""
	case *p:
		return "pass"
	default:
		return "MISS"
	}
}

func num(v float64, format string) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprintf(format, v)
}

// tables turns the report into the rows people read: the results and the
// memory figures, each with a header row.
func tables(rep *report) (results, memory [][]string) {
	if len(rep.Results) > 0 {
		results = append(results, []string{"group", "measurement", "mode", "clients", "ops/s", "p50 ms", "p99 ms", "max ms",
			"srv CPU µs/op", "client CPU µs/op", "other load", "vs baseline", "target", ""})
		for _, r := range rep.Results {
			vs := ""
			if r.Baseline != "" && r.Ratio > 0 {
				vs = fmt.Sprintf("%s× %s of %s", ratio(r.Ratio), r.RatioOf, r.Baseline)
			}
			other := ""
			if r.OtherCores != nil {
				other = fmt.Sprintf("%.2f CPU", *r.OtherCores)
			}
			results = append(results, []string{r.Group, r.Name, r.Mode, fmt.Sprint(r.Clients), num(r.OpsPerSec, "%.0f"),
				num(r.P50, "%.3f"), num(r.P99, "%.3f"), num(r.Max, "%.3f"),
				num(r.ServerCPUUS, "%.1f"), num(r.ClientCPUUS, "%.1f"), other, vs, r.Target, verdict(r.Pass)})
		}
	}
	if len(rep.Memory) > 0 {
		memory = append(memory, []string{"memory", "server", "count", "answered", "RSS MiB", "KiB each", "vs baseline", "target", "",
			"heap KiB each", "stack KiB each", "goroutines each"})
		for _, m := range rep.Memory {
			rss, each := "n/a", "n/a"
			if m.Available {
				rss = fmt.Sprintf("%.1f", float64(m.RSSBytes)/(1<<20))
				each = num(m.PerItem/1024, "%.1f")
			}
			held := ""
			if m.Held > 0 {
				held = fmt.Sprint(m.Held)
			}
			vs := ""
			if m.Baseline != "" {
				vs = fmt.Sprintf("%s× %s", ratio(m.Ratio), m.Baseline)
			}
			heap, stack, gor := "", "", ""
			if m.Go != nil {
				heap = fmt.Sprintf("%.1f", m.HeapPerItem/1024)
				stack = fmt.Sprintf("%.1f", m.StackPerItem/1024)
				gor = fmt.Sprintf("%.2f", m.GoroutinesPer)
			}
			memory = append(memory, []string{m.Name, m.Server, fmt.Sprint(m.Count), held, rss, each, vs, m.Target, verdict(m.Pass), heap, stack, gor})
		}
	}
	return results, memory
}

func header(rep *report) []string {
	return []string{
		fmt.Sprintf("p2p-messaging bench — %s, %s/%s, %d CPUs, %s (load generator on the same machine)",
			rep.Time, rep.OS, rep.Arch, rep.CPUs, rep.GoVersion),
		"command: " + rep.Command,
		fmt.Sprintf("message sizes (bytes, with length prefix): DISCOVER %d→%d, REGISTER %d→%d; echo baselines move the same bytes",
			rep.Sizes.DiscoverReq, rep.Sizes.DiscoverResp, rep.Sizes.RegisterReq, rep.Sizes.RegisterResp),
	}
}

// writeTable prints the report for people, aligned for a terminal.
func writeTable(w io.Writer, rep *report) {
	for _, l := range header(rep) {
		fmt.Fprintln(w, l)
	}
	fmt.Fprintln(w)
	results, memory := tables(rep)
	for _, t := range [][][]string{results, memory, fileTable(rep)} {
		if len(t) == 0 {
			continue
		}
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, row := range t {
			fmt.Fprintln(tw, strings.Join(row, "\t")+"\t")
		}
		tw.Flush()
		fmt.Fprintln(w)
	}
	for _, n := range rep.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	for _, e := range rep.Errors {
		fmt.Fprintf(w, "error: %s\n", e)
	}
}

// writeMarkdown prints the report as GitHub-flavoured Markdown tables (for
// the README).
func writeMarkdown(w io.Writer, rep *report) {
	for _, l := range header(rep) {
		fmt.Fprintf(w, "%s  \n", l)
	}
	fmt.Fprintln(w)
	results, memory := tables(rep)
	for _, t := range [][][]string{results, memory, fileTable(rep)} {
		if len(t) == 0 {
			continue
		}
		for i, row := range t {
			cells := make([]string, len(row))
			for j, c := range row {
				cells[j] = strings.ReplaceAll(c, "|", "\\|")
			}
			fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
			if i == 0 {
				fmt.Fprintf(w, "|%s\n", strings.Repeat(" --- |", len(row)))
			}
		}
		fmt.Fprintln(w)
	}
	for _, n := range rep.Notes {
		fmt.Fprintf(w, "- %s\n", n)
	}
	for _, e := range rep.Errors {
		fmt.Fprintf(w, "- **error**: %s\n", e)
	}
}

func ratio(v float64) string {
	if v >= 0.1 {
		return fmt.Sprintf("%.2f", v)
	}
	return fmt.Sprintf("%.2g", v)
}
