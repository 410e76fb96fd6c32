package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/stretchr/testify/require"

	"github.com/p2p-messaging/p2p-messaging/internal/addrfile"
	"github.com/p2p-messaging/p2p-messaging/internal/identity"
	"github.com/p2p-messaging/p2p-messaging/internal/paths"
	"github.com/p2p-messaging/p2p-messaging/rendezvous"
)

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

	keyPath := filepath.Join(dir, identity.FileName)
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
	// What the chat reads (internal/addrfile) is what the daemon wrote.
	read, err := addrfile.Read(filepath.Join(dir, paths.AddrFileName))
	require.NoError(t, err)
	require.Equal(t, d.addrs, read)

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

// startDaemonT starts an in-process daemon on loopback with args and stops
// it at the end of the test.
func startDaemonT(t *testing.T, dataDir string, args ...string) *daemon {
	t.Helper()
	c, err := parseConfig(append([]string{"-listen", "/ip4/127.0.0.1/tcp/0", "-data-dir", dataDir, "-log-format", "json"}, args...), noEnv, io.Discard)
	require.NoError(t, err)
	d, err := startDaemon(context.Background(), c, io.Discard)
	require.NoError(t, err)
	t.Cleanup(func() { _ = d.shutdown() })
	return d
}

func peerInfoOf(d *daemon) peer.AddrInfo {
	return peer.AddrInfo{ID: d.host.ID(), Addrs: d.host.Addrs()}
}
