package main

import (
	"context"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	"github.com/stretchr/testify/require"

	"github.com/p2p-messaging/p2p-messaging/rendezvous"
)

// lightHost is a dial-only client host, cheap enough to run hundreds.
func lightHost(t testing.TB) host.Host {
	h, err := libp2p.New(
		libp2p.NoListenAddrs,
		libp2p.NoTransports,
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.DisableMetrics(),
		libp2p.DisableRelay(),
		libp2p.ResourceManager(&network.NullResourceManager{}),
	)
	require.NoError(t, err)
	return h
}

// connectMany connects n light hosts to the daemon, at most par at a time,
// and returns the hosts and how many connected.
func connectMany(t testing.TB, ai peer.AddrInfo, n, par int) ([]host.Host, int) {
	hosts := make([]host.Host, n)
	var ok atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, par)
	for i := range hosts {
		hosts[i] = lightHost(t)
		wg.Add(1)
		sem <- struct{}{}
		go func(h host.Host) {
			defer wg.Done()
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if h.Connect(ctx, ai) == nil {
				ok.Add(1)
			}
		}(hosts[i])
	}
	wg.Wait()
	return hosts, int(ok.Load())
}

func closeAll(hosts []host.Host) {
	var wg sync.WaitGroup
	for _, h := range hosts {
		wg.Add(1)
		go func() { defer wg.Done(); _ = h.Close() }()
	}
	wg.Wait()
}

// TestConnsMaxEnforced: -conns-max is a hard cap in the resource manager.
func TestConnsMaxEnforced(t *testing.T) {
	const connsMax = 64
	d := startRun(t, t.TempDir(), "-conns-max", strconv.Itoa(connsMax))
	c, err := parseConfig([]string{"-conns-max", strconv.Itoa(connsMax)}, noEnv, nil)
	require.NoError(t, err)
	require.Equal(t, connsMax, c.connsMax)

	hosts, ok := connectMany(t, d.info(), connsMax+16, 8)
	defer closeAll(hosts)
	t.Logf("%d of %d clients connected with -conns-max %d", ok, connsMax+16, connsMax)
	require.LessOrEqual(t, ok, connsMax, "connections beyond -conns-max were accepted")
	require.GreaterOrEqual(t, ok, connsMax*3/4, "the daemon refused far below -conns-max")
}

// TestManyClients is a load check, off by default: RENDEZVOUS_LOAD_CLIENTS=N
// connects N clients, each of which then runs a DISCOVER, and reports the
// time taken. The daemon runs with its default (10,000+) limits, in-process
// or, with RENDEZVOUS_LOAD_TARGET=<multiaddr/p2p/id>, as a separate process.
func TestManyClients(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("RENDEZVOUS_LOAD_CLIENTS"))
	if n <= 0 {
		t.Skip("set RENDEZVOUS_LOAD_CLIENTS to run")
	}
	var target peer.AddrInfo
	if s := os.Getenv("RENDEZVOUS_LOAD_TARGET"); s != "" {
		// A daemon in another process: the clients and the daemon then
		// each have their own open-file limit.
		ai, err := peer.AddrInfoFromString(s)
		require.NoError(t, err)
		target = *ai
	} else {
		target = startRun(t, t.TempDir(), "-log-level", "info").info()
	}
	start := time.Now()
	hosts, ok := connectMany(t, target, n, 64)
	defer closeAll(hosts)
	connected := time.Since(start)
	require.Equal(t, n, ok, "all clients connect")

	start = time.Now()
	var failed atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for _, h := range hosts {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := rendezvous.NewClient(h, []peer.AddrInfo{target})
			if err != nil {
				failed.Add(1)
				return
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, _, err := c.DiscoverOn(ctx, target.ID, "p2p-messaging/room/lobby", 10, nil); err != nil {
				failed.Add(1)
			}
		}()
	}
	wg.Wait()
	require.Zero(t, failed.Load())
	t.Logf("%d clients: connected in %v, %d DISCOVERs in %v", n, connected, n, time.Since(start))
}
