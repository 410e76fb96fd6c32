package main

import (
	"context"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestHealthzAndMetrics(t *testing.T) {
	d := startRun(t, t.TempDir(), "-metrics", "127.0.0.1:0")
	require.NotEmpty(t, d.metrics)

	// A client connects, so the connected-peers gauge has something to count.
	h := newClientHost(t)
	require.NoError(t, h.Connect(context.Background(), d.info()))

	resp, err := http.Get("http://" + d.metrics + "/healthz")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, string(body), "ok "+d.peer.String())

	require.Eventually(t, func() bool {
		resp, err := http.Get("http://" + d.metrics + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		s := string(b)
		return resp.StatusCode == http.StatusOK &&
			strings.Contains(s, "rendezvous_connected_peers 1") &&
			strings.Contains(s, "rendezvous_healthy 1") &&
			strings.Contains(s, "rendezvous_dht_routing_table_peers") &&
			strings.Contains(s, "go_goroutines") &&
			strings.Contains(s, "process_") == (runtime.GOOS == "linux") &&
			strings.Contains(s, "libp2p_")
	}, 10*time.Second, 20*time.Millisecond)

	resp, err = http.Post("http://"+d.metrics+"/metrics", "text/plain", nil)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)

	require.NoError(t, d.stop(t))
	_, err = http.Get("http://" + d.metrics + "/healthz")
	require.Error(t, err, "metrics listener closed after shutdown")
}

func TestHealthzUnhealthyWhileShuttingDown(t *testing.T) {
	c, err := parseConfig([]string{"-listen", "/ip4/127.0.0.1/tcp/0", "-data-dir", t.TempDir(), "-metrics", "127.0.0.1:0"}, noEnv, io.Discard)
	require.NoError(t, err)
	logs := newLogSink()
	c.logFormat = "json"
	d, err := startDaemon(context.Background(), c, logs)
	require.NoError(t, err)
	defer d.shutdown()
	url := "http://" + logs.find("metrics")[0]["addr"].(string) + "/healthz"

	resp, err := http.Get(url)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	d.healthy.Store(false) // what shutdown does first
	resp, err = http.Get(url)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
}
