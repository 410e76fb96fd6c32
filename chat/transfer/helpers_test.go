package transfer

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/ipfs/go-log/v2/writer.(*MirrorWriter).logRoutine"),
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
		goleak.IgnoreAnyFunction("github.com/libp2p/go-libp2p/p2p/transport/webrtc/udpmux.(*UDPMux).readLoop"),
	)
}

func newHost(t testing.TB) host.Host {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics(), libp2p.DisableRelay())
	require.NoError(t, err)
	t.Cleanup(func() { h.Close() })
	return h
}

func connect(t testing.TB, a, b host.Host) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, a.Connect(ctx, peer.AddrInfo{ID: b.ID(), Addrs: b.Addrs()}))
}

// recorder keeps a service's events.
type recorder struct {
	mu     sync.Mutex
	events []Event
	notify chan struct{}
}

func newRecorder() *recorder { return &recorder{notify: make(chan struct{})} }

func (r *recorder) add(ev Event) {
	r.mu.Lock()
	r.events = append(r.events, ev)
	close(r.notify)
	r.notify = make(chan struct{})
	r.mu.Unlock()
}

func (r *recorder) wait(t testing.TB, d time.Duration, f func(Event) bool) Event {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		r.mu.Lock()
		for _, ev := range r.events {
			if f(ev) {
				r.mu.Unlock()
				return ev
			}
		}
		ch := r.notify
		r.mu.Unlock()
		select {
		case <-ch:
		case <-timer.C:
			t.Fatalf("no matching event within %s; got %v", d, r.all())
			return nil
		}
	}
}

func (r *recorder) all() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.events...)
}

func (r *recorder) count(f func(Event) bool) int {
	n := 0
	for _, ev := range r.all() {
		if f(ev) {
			n++
		}
	}
	return n
}

type tsvc struct {
	*Service
	h    host.Host
	rec  *recorder
	dir  string // state
	down string // downloads
}

type svcOpt func(*Config)

func allowAll(c *Config) {
	c.Authorize = func(_ context.Context, p peer.ID, nick string) (string, error) {
		if nick != "" {
			return nick, nil
		}
		return p.String(), nil
	}
}

func fastLimits(c *Config) {
	c.Limits.RetryMin = 20 * time.Millisecond
	c.Limits.RetryMax = 200 * time.Millisecond
	c.Limits.ProgressInterval = time.Millisecond
}

func newSvc(t testing.TB, h host.Host, stateDir, downDir string, opts ...svcOpt) *tsvc {
	t.Helper()
	if stateDir == "" {
		stateDir = t.TempDir()
	}
	if downDir == "" {
		downDir = t.TempDir()
	}
	rec := newRecorder()
	cfg := Config{StateDir: stateDir, DownloadDir: downDir, Events: rec.add}
	allowAll(&cfg)
	fastLimits(&cfg)
	for _, o := range opts {
		o(&cfg)
	}
	s, err := New(h, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return &tsvc{Service: s, h: h, rec: rec, dir: stateDir, down: downDir}
}

func randomFile(t testing.TB, dir string, size int) (string, []byte) {
	t.Helper()
	b := make([]byte, size)
	_, _ = rand.Read(b)
	p := filepath.Join(dir, "src.bin")
	require.NoError(t, os.WriteFile(p, b, 0o644))
	return p, b
}

func sum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func isOffer(e Event) bool { _, ok := e.(OfferEvent); return ok }

func isDone(id string, incoming bool) func(Event) bool {
	return func(e Event) bool { d, ok := e.(DoneEvent); return ok && d.ID == id && d.Incoming == incoming }
}

func isFailed(id string, incoming bool) func(Event) bool {
	return func(e Event) bool { d, ok := e.(FailedEvent); return ok && d.ID == id && d.Incoming == incoming }
}

func isProgressAtLeast(id string, incoming bool, n int64) func(Event) bool {
	return func(e Event) bool {
		p, ok := e.(ProgressEvent)
		return ok && p.ID == id && p.Incoming == incoming && p.Bytes >= n
	}
}

// dirFiles lists the names in dir.
func dirFiles(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func requireFile(t testing.TB, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	require.True(t, bytes.Equal(got, want), "content of %s differs", path)
}

type peerID = peer.ID

var errStranger = errors.New("offers from strangers are refused")

// rawStream opens a stream of the protocol from a (no service there) to b.
func rawStream(t testing.TB, a, b host.Host) network.Stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := a.NewStream(ctx, b.ID(), ProtocolID)
	require.NoError(t, err)
	t.Cleanup(func() { st.Reset() })
	_ = st.SetDeadline(time.Now().Add(waitFor))
	return st
}

func readStatus(t testing.TB, st network.Stream) statusMsg {
	t.Helper()
	m, err := readMessage(bufio.NewReader(st))
	require.NoError(t, err)
	sm, ok := m.(statusMsg)
	require.True(t, ok, "got %T", m)
	return sm
}
