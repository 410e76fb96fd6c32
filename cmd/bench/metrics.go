package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// freeLoopbackPort returns a loopback host:port that was free a moment ago.
func freeLoopbackPort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// goStats is what the daemon's Go collector says about its memory.
type goStats struct {
	Goroutines int64 `json:"goroutines"`
	HeapInuse  int64 `json:"heap_inuse_bytes"`
	StackInuse int64 `json:"stack_inuse_bytes"`
}

// scrapeGoStats reads go_goroutines and the heap and stack gauges from a
// Prometheus text endpoint.
func scrapeGoStats(ctx context.Context, hostport string) (goStats, error) {
	var g goStats
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+hostport+"/metrics", nil)
	if err != nil {
		return g, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return g, fmt.Errorf("scrape metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return g, fmt.Errorf("scrape metrics: %s", resp.Status)
	}
	want := map[string]*int64{
		"go_goroutines":                 &g.Goroutines,
		"go_memstats_heap_inuse_bytes":  &g.HeapInuse,
		"go_memstats_stack_inuse_bytes": &g.StackInuse,
	}
	found := 0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		if p, ok := want[name]; ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
			if err != nil {
				return g, fmt.Errorf("parse %s: %w", name, err)
			}
			*p = int64(f)
			found++
		}
	}
	if err := sc.Err(); err != nil {
		return g, err
	}
	if found < len(want) {
		return g, fmt.Errorf("metrics lack the Go collector gauges")
	}
	return g, nil
}
