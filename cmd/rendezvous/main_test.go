package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	drouting "github.com/libp2p/go-libp2p/p2p/discovery/routing"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/p2p-messaging/p2p-messaging/internal/identity"
	"github.com/p2p-messaging/p2p-messaging/internal/paths"
	"github.com/p2p-messaging/p2p-messaging/rendezvous"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// logSink collects the daemon's json log records.
type logSink struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	records []map[string]any
	notify  chan struct{}
}

func newLogSink() *logSink { return &logSink{notify: make(chan struct{}, 1)} }

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf.Write(p)
	for {
		line, err := s.buf.ReadBytes('\n')
		if err != nil {
			// Incomplete line: keep it for the next write.
			rest := append([]byte(nil), line...)
			s.buf.Reset()
			s.buf.Write(rest)
			break
		}
		var rec map[string]any
		if json.Unmarshal(line, &rec) == nil {
			s.records = append(s.records, rec)
		}
	}
	select {
	case s.notify <- struct{}{}:
	default:
	}
	return len(p), nil
}

// find returns the records with msg.
func (s *logSink) find(msg string) []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, r := range s.records {
		if r["msg"] == msg {
			out = append(out, r)
		}
	}
	return out
}

// testDaemon is a daemon run through run() in-process.
type testDaemon struct {
	logs    *logSink
	cancel  context.CancelFunc
	done    chan struct{} // closed when run returns
	err     error         // run's result, set before done closes
	peer    peer.ID
	addrs   []ma.Multiaddr
	metrics string
	dataDir string
}

func (d *testDaemon) info() peer.AddrInfo {
	ai, err := peer.AddrInfosFromP2pAddrs(d.addrs...)
	if err != nil || len(ai) != 1 {
		panic("bad daemon addrs")
	}
	return ai[0]
}

// stop cancels the daemon and returns run's error.
func (d *testDaemon) stop(t *testing.T) error {
	t.Helper()
	d.cancel()
	select {
	case <-d.done:
		return d.err
	case <-time.After(30 * time.Second):
		t.Fatal("daemon did not stop")
		return nil
	}
}

// startRun runs the daemon with args plus a loopback listen address, json
// logs and dataDir, and waits for its "ready" record.
func startRun(t *testing.T, dataDir string, args ...string) *testDaemon {
	t.Helper()
	logs := newLogSink()
	ctx, cancel := context.WithCancel(context.Background())
	d := &testDaemon{logs: logs, cancel: cancel, done: make(chan struct{}), dataDir: dataDir}
	full := append([]string{"-listen", "/ip4/127.0.0.1/tcp/0", "-data-dir", dataDir, "-log-format", "json", "-log-level", "debug"}, args...)
	go func() {
		d.err = run(ctx, full, io.Discard, logs)
		close(d.done)
	}()
	t.Cleanup(func() {
		cancel()
		<-d.done
	})
	deadline := time.After(30 * time.Second)
	for len(logs.find("ready")) == 0 {
		select {
		case <-logs.notify:
		case <-d.done:
			t.Fatalf("daemon exited before ready: %v", d.err)
		case <-deadline:
			t.Fatal("daemon not ready")
		}
	}
	d.peer = peer.ID(mustDecode(t, logs.find("ready")[0]["peer"].(string)))
	for _, r := range logs.find("listening") {
		a, err := ma.NewMultiaddr(r["addr"].(string))
		require.NoError(t, err)
		d.addrs = append(d.addrs, a)
	}
	if m := logs.find("metrics"); len(m) > 0 {
		d.metrics = m[0]["addr"].(string)
	}
	return d
}

func mustDecode(t *testing.T, s string) peer.ID {
	t.Helper()
	id, err := peer.Decode(s)
	require.NoError(t, err)
	return id
}

// newClientHost is a plain libp2p host on loopback.
func newClientHost(t *testing.T, opts ...libp2p.Option) host.Host {
	t.Helper()
	h, err := libp2p.New(append([]libp2p.Option{
		libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
		libp2p.DisableMetrics(),
	}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = h.Close() })
	return h
}

func TestIdentityAddrsFileAndRestart(t *testing.T) {
	dir := t.TempDir()
	d := startRun(t, dir)

	require.NotEmpty(t, d.addrs)
	for _, a := range d.addrs {
		require.Contains(t, a.String(), "/p2p/"+d.peer.String())
	}

	keyPath := filepath.Join(dir, KeyFileName)
	k, err := identity.Load(keyPath)
	require.NoError(t, err)
	id, err := peer.IDFromPrivateKey(k)
	require.NoError(t, err)
	require.Equal(t, d.peer, id)
	if runtime.GOOS != "windows" {
		fi, err := os.Stat(keyPath)
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	}

	b, err := os.ReadFile(filepath.Join(dir, paths.AddrFileName))
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	require.Len(t, lines, len(d.addrs))
	for i, l := range lines {
		require.Equal(t, d.addrs[i].String(), l)
		require.Contains(t, l, "/p2p/"+d.peer.String())
	}
	require.True(t, strings.HasPrefix(lines[0], "/ip4/127.0.0.1/"), "loopback first: %s", lines[0])

	require.NoError(t, d.stop(t))
	require.NotEmpty(t, d.logs.find("stopped"))
	_, err = os.Stat(filepath.Join(dir, paths.AddrFileName))
	require.ErrorIs(t, err, os.ErrNotExist, "addrs file removed on clean shutdown")

	d2 := startRun(t, dir)
	require.Equal(t, d.peer, d2.peer, "same peer id after restart")
	require.NotEmpty(t, d2.logs.find("identity"))
	require.Equal(t, false, d2.logs.find("identity")[0]["created"])
	require.NoError(t, d2.stop(t))
}

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

func TestRegisterDiscoverThroughDaemon(t *testing.T) {
	d := startRun(t, t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	alice := newClientHost(t)
	bob := newClientHost(t)
	ca, err := rendezvous.NewClient(alice, []peer.AddrInfo{d.info()})
	require.NoError(t, err)
	defer ca.Close()
	cb, err := rendezvous.NewClient(bob, []peer.AddrInfo{d.info()})
	require.NoError(t, err)
	defer cb.Close()

	ttl, err := ca.RegisterOn(ctx, d.peer, "p2p-messaging/room/lobby", 0)
	require.NoError(t, err)
	require.Equal(t, rendezvous.DefaultTTL, ttl)

	regs, _, err := cb.DiscoverOn(ctx, d.peer, "p2p-messaging/room/lobby", 0, nil)
	require.NoError(t, err)
	require.Len(t, regs, 1)
	require.Equal(t, alice.ID(), regs[0].Peer.ID)
	require.NotEmpty(t, regs[0].Peer.Addrs)

	// The exclusive user prefix is on by default: one holder per nick.
	_, err = ca.RegisterOn(ctx, d.peer, userNamespacePrefix+"alice", 0)
	require.NoError(t, err)
	_, err = cb.RegisterOn(ctx, d.peer, userNamespacePrefix+"alice", 0)
	var se *rendezvous.StatusError
	require.ErrorAs(t, err, &se)
	require.Equal(t, rendezvous.StatusNotAuthorized, se.Status)
}

func TestLimitFlagsReachServer(t *testing.T) {
	d := startRun(t, t.TempDir(),
		"-max-registrations-per-peer", "2",
		"-max-ttl", "1h", "-default-ttl", "30m",
		"-exclusive-prefix", "",
	)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	alice := newClientHost(t)
	bob := newClientHost(t)
	ca, err := rendezvous.NewClient(alice, []peer.AddrInfo{d.info()})
	require.NoError(t, err)
	defer ca.Close()
	cb, err := rendezvous.NewClient(bob, []peer.AddrInfo{d.info()})
	require.NoError(t, err)
	defer cb.Close()

	ttl, err := ca.RegisterOn(ctx, d.peer, "ns/a", 0)
	require.NoError(t, err)
	require.Equal(t, 30*time.Minute, ttl, "-default-ttl")
	_, err = ca.RegisterOn(ctx, d.peer, "ns/b", 2*time.Hour)
	var se *rendezvous.StatusError
	require.ErrorAs(t, err, &se, "-max-ttl")
	require.Equal(t, rendezvous.StatusInvalidTTL, se.Status)
	_, err = ca.RegisterOn(ctx, d.peer, "ns/b", 0)
	require.NoError(t, err)
	_, err = ca.RegisterOn(ctx, d.peer, "ns/c", 0)
	require.ErrorAs(t, err, &se, "-max-registrations-per-peer")
	require.Equal(t, rendezvous.StatusNotAuthorized, se.Status)

	// -exclusive-prefix "" turns exclusivity off.
	_, err = ca.RegisterOn(ctx, d.peer, userNamespacePrefix+"x", 0)
	require.ErrorAs(t, err, &se) // alice is at her cap of 2
	_, err = cb.RegisterOn(ctx, d.peer, userNamespacePrefix+"x", 0)
	require.NoError(t, err)
	_, err = ca.RegisterOn(ctx, d.peer, "ns/a", 0) // replacing her own is fine
	require.NoError(t, err)
	require.NoError(t, ca.UnregisterOn(ctx, d.peer, "ns/a"))
	_, err = ca.RegisterOn(ctx, d.peer, userNamespacePrefix+"x", 0)
	require.NoError(t, err, "a second holder of a user name with exclusivity off")
}

func TestRelayReservation(t *testing.T) {
	d := startRun(t, t.TempDir(), "-force-public", "-relay-limit-duration", "3m", "-relay-limit-data", "256KiB")
	h := newClientHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, h.Connect(ctx, d.info()))

	// The relay service starts on the reachability event, just after ready.
	var rsvp *client.Reservation
	require.Eventually(t, func() bool {
		var err error
		rsvp, err = client.Reserve(ctx, h, d.info())
		return err == nil
	}, 10*time.Second, 20*time.Millisecond)
	require.Equal(t, 3*time.Minute, rsvp.LimitDuration)
	require.Equal(t, uint64(256<<10), rsvp.LimitData)
	require.True(t, rsvp.Expiration.After(time.Now().Add(50*time.Minute)))
}

func TestRelayInfinite(t *testing.T) {
	d := startRun(t, t.TempDir(), "-force-public", "-relay-infinite")
	h := newClientHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, h.Connect(ctx, d.info()))
	var rsvp *client.Reservation
	require.Eventually(t, func() bool {
		var err error
		rsvp, err = client.Reserve(ctx, h, d.info())
		return err == nil
	}, 10*time.Second, 20*time.Millisecond)
	require.Zero(t, rsvp.LimitDuration)
	require.Zero(t, rsvp.LimitData)
}

func TestNoRelayWithoutPublicReachability(t *testing.T) {
	d := startRun(t, t.TempDir())
	require.NotEmpty(t, d.logs.find("relay service starts only once AutoNAT confirms public reachability; on a public IP use -force-public"))
	h := newClientHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, h.Connect(ctx, d.info()))
	_, err := client.Reserve(ctx, h, d.info())
	require.Error(t, err)
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func TestBootstrapDHT(t *testing.T) {
	// Daemon A's identity and port are fixed up front, so B can be told to
	// bootstrap from A before A runs: B must keep retrying.
	dirA, dirB := t.TempDir(), t.TempDir()
	keyA, _, err := identity.LoadOrCreate(filepath.Join(dirA, KeyFileName))
	require.NoError(t, err)
	idA, err := peer.IDFromPrivateKey(keyA)
	require.NoError(t, err)
	listenA := "/ip4/127.0.0.1/tcp/" + itoa(freePort(t))
	addrA := listenA + "/p2p/" + idA.String()

	logs := newLogSink()
	cb, err := parseConfig([]string{
		"-listen", "/ip4/127.0.0.1/tcp/0", "-data-dir", dirB, "-log-format", "json", "-log-level", "debug",
		// Its own address in the list is ignored, so one list serves all daemons.
		"-bootstrap", addrA,
	}, noEnv, io.Discard)
	require.NoError(t, err)
	b, err := startDaemon(context.Background(), cb, logs)
	require.NoError(t, err)
	defer b.shutdown()

	ca, err := parseConfig([]string{
		"-listen", listenA, "-data-dir", dirA, "-log-format", "json",
		"-bootstrap", addrA + "," + listenAddrs(b.host)[0].String(),
	}, noEnv, io.Discard)
	require.NoError(t, err)
	a, err := startDaemon(context.Background(), ca, io.Discard)
	require.NoError(t, err)
	defer a.shutdown()
	require.Equal(t, idA, a.host.ID())

	require.Eventually(t, func() bool {
		return a.kad.RoutingTable().Find(b.host.ID()) != "" && b.kad.RoutingTable().Find(a.host.ID()) != ""
	}, 20*time.Second, 20*time.Millisecond)
	require.True(t, b.cm.IsProtected(idA, bootstrapProtectTag))

	// A restarts (same key, same port): B reconnects by itself.
	require.NoError(t, a.shutdown())
	require.Eventually(t, func() bool {
		return b.host.Network().Connectedness(idA) != network.Connected
	}, 10*time.Second, 20*time.Millisecond)
	ca2, err := parseConfig([]string{"-listen", listenA, "-data-dir", dirA, "-log-format", "json"}, noEnv, io.Discard)
	require.NoError(t, err)
	a2, err := startDaemon(context.Background(), ca2, io.Discard)
	require.NoError(t, err)
	defer a2.shutdown()
	require.Eventually(t, func() bool {
		return b.kad.RoutingTable().Find(idA) != "" && a2.kad.RoutingTable().Find(b.host.ID()) != ""
	}, 30*time.Second, 20*time.Millisecond)
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func noEnv(string) (string, bool) { return "", false }

func mapEnv(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestConfigDefaults(t *testing.T) {
	c, err := parseConfig(nil, noEnv, io.Discard)
	require.NoError(t, err)
	var listen []string
	for _, a := range c.listen {
		listen = append(listen, a.String())
	}
	require.Equal(t, defaultListen, listen)
	want, err := paths.DaemonDataDir()
	require.NoError(t, err)
	require.Equal(t, want, c.dataDir)
	require.Equal(t, rendezvous.DefaultLimits(), c.limits)
	require.Equal(t, userNamespacePrefix, c.exclusivePrefix)
	require.Equal(t, defaultDisconnectGrace, c.disconnectGrace)
	require.False(t, c.forcePublic)
	require.Empty(t, c.metrics)
	require.Empty(t, c.bootstrap)
	require.Equal(t, int64(1<<20), c.relay.limitData)
	require.Equal(t, 10*time.Minute, c.relay.limitDuration)
}

func TestConfigEnvPrecedence(t *testing.T) {
	env := mapEnv(map[string]string{
		"RENDEZVOUS_MAX_TTL":          "10h",
		"RENDEZVOUS_MIN_TTL":          "5m",
		"RENDEZVOUS_FORCE_PUBLIC":     "true",
		"RENDEZVOUS_EXCLUSIVE_PREFIX": "", // set but empty: exclusivity off
		"RENDEZVOUS_LISTEN":           "/ip4/127.0.0.1/tcp/1234,/ip6/::1/udp/1234/quic-v1",
		"RENDEZVOUS_RELAY_LIMIT_DATA": "2MiB",
		"RENDEZVOUS_METRICS":          "127.0.0.1:9000",
	})
	c, err := parseConfig([]string{"-max-ttl", "20h", "-metrics", "127.0.0.1:9100"}, env, io.Discard)
	require.NoError(t, err)
	require.Equal(t, 20*time.Hour, c.limits.MaxTTL, "flag beats env")
	require.Equal(t, "127.0.0.1:9100", c.metrics, "flag beats env")
	require.Equal(t, 5*time.Minute, c.limits.MinTTL, "env beats default")
	require.True(t, c.forcePublic)
	require.Equal(t, "", c.exclusivePrefix)
	require.Len(t, c.listen, 2)
	require.Equal(t, int64(2<<20), c.relay.limitData)

	_, err = parseConfig(nil, mapEnv(map[string]string{"RENDEZVOUS_RATE": "fast"}), io.Discard)
	require.ErrorContains(t, err, "RENDEZVOUS_RATE")
}

func TestConfigErrors(t *testing.T) {
	id := "12D3KooWDqvf1rarn59QDCwmmkTb85aG86cQMxtzKY4JtMExipHU"
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-listen", "not-a-multiaddr"}, "-listen"},
		{[]string{"-listen", ","}, "no address"},
		{[]string{"-listen", "/ip4/127.0.0.1/tcp/1/p2p/" + id}, "no /p2p component"},
		{[]string{"-bootstrap", "/ip4/127.0.0.1/tcp/1"}, "missing /p2p"},
		{[]string{"-announce", "/nope"}, "-announce"},
		{[]string{"-log-level", "loud"}, "-log-level"},
		{[]string{"-log-format", "xml"}, "-log-format"},
		{[]string{"-max-ttl", "forever"}, "invalid value"},
		{[]string{"-min-ttl", "0s"}, "-min-ttl must be positive"},
		{[]string{"-min-ttl", "3h"}, "ttls must satisfy"},
		{[]string{"-max-ttl", "90m500ms"}, "whole seconds"},
		{[]string{"-max-registrations", "0"}, "-max-registrations must be positive"},
		{[]string{"-max-registrations-per-peer", "-1"}, "-max-registrations-per-peer must be positive"},
		{[]string{"-max-discover-limit", "5000"}, "-max-discover-limit"},
		{[]string{"-rate", "0"}, "-rate must be positive"},
		{[]string{"-burst", "0"}, "-burst must be positive"},
		{[]string{"-max-watches", "-1"}, "must not be negative"},
		{[]string{"-exclusive-prefix", strings.Repeat("x", 256)}, "-exclusive-prefix"},
		{[]string{"-relay-max-reservations", "0"}, "-relay-max-reservations must be positive"},
		{[]string{"-relay-max-circuits", "0"}, "-relay-max-circuits"},
		{[]string{"-relay-max-reservations-per-ip", "0"}, "-relay-max-reservations-per-ip"},
		{[]string{"-relay-limit-duration", "0s"}, "-relay-limit-duration"},
		{[]string{"-relay-limit-data", "lots"}, "invalid size"},
		{[]string{"-relay-limit-data", "0"}, "-relay-limit-data must be positive"},
		{[]string{"-conns-max", "10"}, "-conns-max"},
		{[]string{"-conns-per-ip", "0"}, "-conns-per-ip"},
		{[]string{"-autonat-rate", "-1"}, "-autonat-rate"},
		{[]string{"-autonat-rate-per-peer", "0"}, "-autonat-rate-per-peer"},
		{[]string{"-no-such-flag"}, "not defined"},
		{[]string{"extra"}, "unexpected argument"},
	} {
		_, err := parseConfig(tc.args, noEnv, io.Discard)
		require.ErrorContains(t, err, tc.want, "%v", tc.args)
	}
}

func TestRunBadFlags(t *testing.T) {
	dir := t.TempDir()
	var stderr bytes.Buffer
	err := run(context.Background(), []string{"-data-dir", dir, "-rate", "-5"}, io.Discard, &stderr)
	require.ErrorContains(t, err, "-rate must be positive")
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Empty(t, entries, "nothing written for a rejected config")

	// A metrics address that cannot be bound fails the start and cleans up.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	err = run(context.Background(), []string{"-listen", "/ip4/127.0.0.1/tcp/0", "-data-dir", dir, "-metrics", l.Addr().String()}, io.Discard, io.Discard)
	require.ErrorContains(t, err, "metrics listener")
	_, err = os.Stat(filepath.Join(dir, paths.AddrFileName))
	require.ErrorIs(t, err, os.ErrNotExist)

	// A key file with loose permissions is refused, not silently used.
	if runtime.GOOS != "windows" {
		require.NoError(t, os.Chmod(filepath.Join(dir, KeyFileName), 0o644))
		err = run(context.Background(), []string{"-listen", "/ip4/127.0.0.1/tcp/0", "-data-dir", dir}, io.Discard, io.Discard)
		require.ErrorContains(t, err, "want 0600")
	}
}

func TestHelpListsEnv(t *testing.T) {
	var out bytes.Buffer
	_, err := parseConfig([]string{"-h"}, noEnv, &out)
	require.True(t, errors.Is(err, flag.ErrHelp))
	usage := out.String()
	sc := bufio.NewScanner(strings.NewReader(usage))
	found := 0
	for sc.Scan() {
		if strings.Contains(sc.Text(), "[RENDEZVOUS_") {
			found++
		}
	}
	require.GreaterOrEqual(t, found, 30)
	require.Contains(t, usage, "[RENDEZVOUS_FORCE_PUBLIC]")
}

func TestParseByteSize(t *testing.T) {
	for in, want := range map[string]int64{
		"1024": 1024, "1KiB": 1024, "1 MiB": 1 << 20, "3GiB": 3 << 30, "5kB": 5000, "2MB": 2_000_000, "7B": 7,
	} {
		got, err := parseByteSize(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "-1", "1.5MiB", "MiB", "1TiB", "99999999999GiB"} {
		_, err := parseByteSize(in)
		require.Error(t, err, in)
	}
}

func TestResourceLimitsSizedForTenThousandClients(t *testing.T) {
	limits, _, fds := resourceLimits(defaultConnsMax, 1<<20, rendezvous.DefaultLimits())
	p := limits.ToPartialLimitConfig()
	require.GreaterOrEqual(t, int(p.System.ConnsInbound), 10_000)
	require.GreaterOrEqual(t, int(p.System.Conns), 10_000)
	require.GreaterOrEqual(t, int(p.System.FD), 10_000)
	require.GreaterOrEqual(t, fds, 10_000)
	require.GreaterOrEqual(t, int(p.System.StreamsInbound), 20_000)
	require.GreaterOrEqual(t, int(p.Transient.ConnsInbound), 1_000)
	for _, proto := range []protocol.ID{rendezvous.ProtocolID, rendezvous.WatchProtocolID, dhtProtocol} {
		require.GreaterOrEqual(t, int(p.Protocol[proto].StreamsInbound), 10_000, proto)
	}
	low, high := connWatermarks(defaultConnsMax)
	require.GreaterOrEqual(t, low, 10_000)
	require.Greater(t, high, low)
	require.Less(t, high, int(p.System.Conns))

	// Without an OS descriptor limit (Windows) descriptors follow conns.
	_, _, fds = resourceLimits(defaultConnsMax, 0, rendezvous.DefaultLimits())
	require.GreaterOrEqual(t, fds, defaultConnsMax)
}

func TestAnnounce(t *testing.T) {
	d := startRun(t, t.TempDir(), "-announce", "/ip4/11.0.0.1/tcp/4001,/dns4/rdv.example/tcp/4001")
	var announced []string
	for _, r := range d.logs.find("announcing") {
		announced = append(announced, r["addr"].(string))
	}
	suffix := "/p2p/" + d.peer.String()
	require.ElementsMatch(t, []string{"/ip4/11.0.0.1/tcp/4001" + suffix, "/dns4/rdv.example/tcp/4001" + suffix}, announced)

	// Peers learn the announced addresses through identify.
	h := newClientHost(t)
	require.NoError(t, h.Connect(context.Background(), d.info()))
	want := ma.StringCast("/ip4/11.0.0.1/tcp/4001")
	require.Eventually(t, func() bool {
		for _, a := range h.Peerstore().Addrs(d.peer) {
			if a.Equal(want) {
				return true
			}
		}
		return false
	}, 10*time.Second, 20*time.Millisecond)
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

func FuzzParseByteSize(f *testing.F) {
	for _, s := range []string{"1", "1KiB", "2 MiB", "3GB", "", "-1", "9223372036854775807", "1e9", "MiB"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseByteSize(s)
		if err == nil && n < 0 {
			t.Fatalf("%q parsed to negative %d", s, n)
		}
	})
}

func FuzzParseConfig(f *testing.F) {
	f.Add("-listen", "/ip4/127.0.0.1/tcp/0", "RENDEZVOUS_MAX_TTL", "1h")
	f.Add("-bootstrap", "/ip4/1.2.3.4/tcp/1/p2p/12D3KooWDqvf1rarn59QDCwmmkTb85aG86cQMxtzKY4JtMExipHU", "RENDEZVOUS_RATE", "x")
	f.Add("-relay-limit-data", "1MiB", "RENDEZVOUS_ANNOUNCE", "/ip6/::1/udp/1/quic-v1")
	f.Add("-announce", ",,,", "RENDEZVOUS_LISTEN", "")
	f.Fuzz(func(t *testing.T, flagName, flagValue, envKey, envValue string) {
		env := mapEnv(map[string]string{envKey: envValue})
		c, err := parseConfig([]string{flagName, flagValue, "-data-dir", "/nonexistent"}, env, io.Discard)
		if err == nil && (len(c.listen) == 0 || c.connsMax < 64) {
			t.Fatalf("invalid config accepted: %+v", c)
		}
	})
}

func TestSecondDaemonOnSameDataDir(t *testing.T) {
	dir := t.TempDir()
	d := startRun(t, dir)
	before, err := os.ReadFile(filepath.Join(dir, paths.AddrFileName))
	require.NoError(t, err)

	err = run(context.Background(), []string{"-listen", "/ip4/127.0.0.1/tcp/0", "-data-dir", dir}, io.Discard, io.Discard)
	require.ErrorContains(t, err, "is another daemon using this data dir")

	after, err := os.ReadFile(filepath.Join(dir, paths.AddrFileName))
	require.NoError(t, err, "the running daemon's addrs file survives")
	require.Equal(t, before, after)
	require.NoError(t, d.stop(t))
}

func TestRegistrationsSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	d := startRun(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	alice := newClientHost(t)
	ca, err := rendezvous.NewClient(alice, []peer.AddrInfo{d.info()})
	require.NoError(t, err)
	defer ca.Close()
	_, err = ca.RegisterOn(ctx, d.peer, "p2p-messaging/room/lobby", time.Hour)
	require.NoError(t, err)
	require.NoError(t, d.stop(t))

	d2 := startRun(t, dir)
	require.Equal(t, d.peer, d2.peer)
	bob := newClientHost(t)
	cb, err := rendezvous.NewClient(bob, []peer.AddrInfo{d2.info()})
	require.NoError(t, err)
	defer cb.Close()
	regs, _, err := cb.DiscoverOn(ctx, d2.peer, "p2p-messaging/room/lobby", 0, nil)
	require.NoError(t, err)
	require.Len(t, regs, 1)
	require.Equal(t, alice.ID(), regs[0].Peer.ID)
	require.Greater(t, regs[0].TTL, 50*time.Minute)
	require.LessOrEqual(t, regs[0].TTL, time.Hour)
}

// TestRoutingDiscoveryAcrossDaemons: alice knows only daemon A, bob only
// daemon B; A and B are bootstrapped to each other. Bob finds alice through
// the DHT alone.
func TestRoutingDiscoveryAcrossDaemons(t *testing.T) {
	a := startRun(t, t.TempDir())
	b := startRun(t, t.TempDir(), "-bootstrap", a.addrs[0].String())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	newPeer := func(daemon *testDaemon) (host.Host, *dht.IpfsDHT) {
		h := newClientHost(t)
		kad, err := dht.New(h, dht.Mode(dht.ModeClient), dht.ProtocolPrefix(dhtPrefix), dht.BootstrapPeers(daemon.info()))
		require.NoError(t, err)
		t.Cleanup(func() { _ = kad.Close() })
		require.NoError(t, h.Connect(ctx, daemon.info()))
		require.Eventually(t, func() bool { return kad.RoutingTable().Find(daemon.peer) != "" },
			10*time.Second, 10*time.Millisecond)
		return h, kad
	}
	alice, akad := newPeer(a)
	bob, bkad := newPeer(b)
	require.Equal(t, network.NotConnected, bob.Network().Connectedness(alice.ID()))

	const ns = "p2p-messaging/user/alice"
	_, err := drouting.NewRoutingDiscovery(akad).Advertise(ctx, ns)
	require.NoError(t, err)

	require.Eventually(t, func() bool {
		ch, err := drouting.NewRoutingDiscovery(bkad).FindPeers(ctx, ns)
		if err != nil {
			return false
		}
		for ai := range ch {
			if ai.ID == alice.ID() && len(ai.Addrs) > 0 {
				return true
			}
		}
		return false
	}, 30*time.Second, 50*time.Millisecond)
}

func TestByteSizeString(t *testing.T) {
	for n, want := range map[int64]string{1 << 20: "1MiB", 256 << 10: "256KiB", 3 << 30: "3GiB", 1000: "1000", 1536: "1536", 0: "0"} {
		b := byteSize(n)
		require.Equal(t, want, b.String())
		var back byteSize
		require.NoError(t, back.Set(want))
		require.Equal(t, b, back)
	}
}

// relayPair reserves a slot for bob on the daemon and connects alice to bob
// through the relay; it returns a stream from alice to bob's echo handler.
func relayPair(t *testing.T, d *testDaemon) (alice, bob host.Host, s network.Stream) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	alice, bob = newClientHost(t), newClientHost(t)
	const echo = "/test/echo"
	bob.SetStreamHandler(echo, func(s network.Stream) {
		_, _ = io.Copy(s, s)
		_ = s.Close()
	})
	require.NoError(t, bob.Connect(ctx, d.info()))
	require.Eventually(t, func() bool {
		_, err := client.Reserve(ctx, bob, d.info())
		return err == nil
	}, 10*time.Second, 20*time.Millisecond)

	circuit := ma.StringCast("/p2p/" + d.peer.String() + "/p2p-circuit")
	var addrs []ma.Multiaddr
	for _, a := range d.addrs {
		base, _ := ma.SplitLast(a) // drop /p2p/<daemon>
		addrs = append(addrs, base.Encapsulate(circuit))
	}
	require.NoError(t, alice.Connect(ctx, peer.AddrInfo{ID: bob.ID(), Addrs: addrs}))
	conns := alice.Network().ConnsToPeer(bob.ID())
	require.Len(t, conns, 1)
	_, err := conns[0].RemoteMultiaddr().ValueForProtocol(ma.P_CIRCUIT)
	require.NoError(t, err, "connected through the relay")

	s, err = alice.NewStream(network.WithAllowLimitedConn(ctx, "test"), bob.ID(), echo)
	require.NoError(t, err)
	return alice, bob, s
}

func TestRelayCircuitLimits(t *testing.T) {
	d := startRun(t, t.TempDir(), "-force-public", "-relay-limit-data", "4KiB")
	_, _, s := relayPair(t, d)
	defer s.Reset()
	require.True(t, s.Conn().Stat().Limited, "a limited relay marks its connections limited")

	// Chat-sized traffic passes.
	msg := []byte("hello over the relay")
	_, err := s.Write(msg)
	require.NoError(t, err)
	buf := make([]byte, len(msg))
	_, err = io.ReadFull(s, buf)
	require.NoError(t, err)
	require.Equal(t, msg, buf)

	// More than -relay-limit-data in one direction: the relay cuts it.
	require.NoError(t, s.SetDeadline(time.Now().Add(20*time.Second)))
	go func() {
		big := make([]byte, 1024)
		for i := 0; i < 64; i++ {
			if _, err := s.Write(big); err != nil {
				return
			}
		}
	}()
	n, err := io.Copy(io.Discard, s)
	require.Error(t, err, "the relayed connection must be reset")
	require.Less(t, n, int64(8<<10), "no more than about -relay-limit-data came back")
}

func TestRelayInfiniteCircuitNotLimited(t *testing.T) {
	d := startRun(t, t.TempDir(), "-force-public", "-relay-infinite")
	_, _, s := relayPair(t, d)
	defer s.Reset()
	require.False(t, s.Conn().Stat().Limited, "-relay-infinite gives connections that are not limited")
	big := make([]byte, 64<<10)
	go func() { _, _ = s.Write(big); _ = s.CloseWrite() }()
	n, err := io.Copy(io.Discard, s)
	require.NoError(t, err)
	require.Equal(t, int64(len(big)), n)
}
