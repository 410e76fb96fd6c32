package chat

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/p2p-messaging/p2p-messaging/rendezvous"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// Started once per process by libp2p's dependencies, never stopped.
		goleak.IgnoreTopFunction("github.com/ipfs/go-log/v2/writer.(*MirrorWriter).logRoutine"),
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
		goleak.IgnoreAnyFunction("github.com/libp2p/go-libp2p/p2p/transport/webrtc/udpmux.(*UDPMux).readLoop"),
	)
}

func testLogger() *slog.Logger {
	if os.Getenv("CHAT_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// rdvServer is an in-process rendezvous daemon on loopback.
type rdvServer struct {
	h    host.Host
	srv  *rendezvous.Server
	info peer.AddrInfo
	once sync.Once
}

// newRendezvous starts a daemon holding the chat's user namespaces
// exclusive, as cmd/rendezvous does.
func newRendezvous(t testing.TB, opts ...rendezvous.ServerOption) *rdvServer {
	t.Helper()
	h, err := libp2p.New(
		libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
		libp2p.ForceReachabilityPublic(),
		libp2p.DisableMetrics(),
	)
	require.NoError(t, err)
	// Cheap name claims: the tests start many nicks on one daemon (the
	// claim costs are the rendezvous package's tests).
	lim := rendezvous.DefaultLimits()
	lim.ClaimDifficulty, lim.ClaimBurst = 8, 1000
	opts = append([]rendezvous.ServerOption{
		rendezvous.WithLimits(lim),
		rendezvous.WithLogger(testLogger()),
		rendezvous.WithDisconnectGrace(500 * time.Millisecond),
		rendezvous.WithExclusivePrefix(UserNamespacePrefix),
	}, opts...)
	srv, err := rendezvous.NewServer(h, opts...)
	require.NoError(t, err)
	r := &rdvServer{h: h, srv: srv, info: peer.AddrInfo{ID: h.ID(), Addrs: h.Addrs()}}
	t.Cleanup(r.stop)
	return r
}

func (r *rdvServer) stop() {
	r.once.Do(func() {
		r.srv.Close()
		r.h.Close()
	})
}

// tnode is a Node under test with a recorder of its events.
type tnode struct {
	*Node
	host *Host
	rec  *recorder
	dir  string
}

// nodeOpt adjusts a test node's configuration.
type nodeOpt func(*testConfig)

// testConfig is a test node's host and chat configuration.
type testConfig struct {
	Config
	ListenAddrs  []multiaddr.Multiaddr
	Reachability Reachability
	DisableDHT   bool
}

func newNode(t testing.TB, r *rdvServer, nick, dir string, opts ...nodeOpt) *tnode {
	t.Helper()
	tn, err := tryNode(t, r, nick, dir, opts...)
	require.NoError(t, err)
	return tn
}

func tryNode(t testing.TB, r *rdvServer, nick, dir string, opts ...nodeOpt) (*tnode, error) {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	cfg := testConfig{
		Reachability: ReachabilityPublic,
		Config: Config{
			Nick:          nick,
			DataDir:       dir,
			Logger:        testLogger().With("node", nick),
			PingInterval:  time.Second,
			PingTimeout:   3 * time.Second,
			RetryInterval: 200 * time.Millisecond,
		},
		ListenAddrs: []multiaddr.Multiaddr{multiaddr.StringCast("/ip4/127.0.0.1/tcp/0")},
		DisableDHT:  true,
	}
	if r != nil {
		cfg.Rendezvous = []peer.AddrInfo{r.info}
	}
	for _, o := range opts {
		o(&cfg)
	}
	p, err := Open(HostConfig{
		ListenAddrs:  cfg.ListenAddrs,
		Reachability: cfg.Reachability,
		DisableDHT:   cfg.DisableDHT,
	}, cfg.Config)
	if err != nil {
		return nil, err
	}
	n, h := p.Node, p.Host
	tn := &tnode{Node: n, host: h, rec: newRecorder(n.Events()), dir: dir}
	t.Cleanup(func() { tn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		tn.Close()
		return nil, err
	}
	tn.rec.wait(t, 10*time.Second, func(e Event) bool { _, ok := e.(EventReady); return ok })
	return tn, nil
}

func (tn *tnode) Close() error {
	err := tn.Node.Close()
	<-tn.rec.done
	return errors.Join(err, tn.host.Close())
}

// recorder keeps every event of a node so tests can wait for one without
// racing the consumer.
type recorder struct {
	mu     sync.Mutex
	events []Event
	notify chan struct{}
	done   chan struct{}
}

func newRecorder(ch <-chan Event) *recorder {
	r := &recorder{notify: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for ev := range ch {
			r.mu.Lock()
			r.events = append(r.events, ev)
			close(r.notify)
			r.notify = make(chan struct{})
			r.mu.Unlock()
		}
	}()
	return r
}

// wait returns the first recorded event matching f, waiting up to d.
func (r *recorder) wait(t testing.TB, d time.Duration, f func(Event) bool) Event {
	t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
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
		case <-deadline.C:
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

func isMessage(text string) func(Event) bool {
	return func(e Event) bool { m, ok := e.(EventMessage); return ok && m.Message.Text == text }
}

func isRequest(text string) func(Event) bool {
	return func(e Event) bool { r, ok := e.(EventRequest); return ok && r.Text == text }
}

func isDelivered(id string) func(Event) bool {
	return func(e Event) bool { d, ok := e.(EventDelivered); return ok && d.ID == id }
}

func isPresence(nick string, online bool) func(Event) bool {
	return func(e Event) bool {
		p, ok := e.(EventPresence)
		return ok && p.Nick == nick && p.Online == online && p.Room == ""
	}
}

func send(t testing.TB, from *tnode, to, text string) Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := from.Send(ctx, to, text)
	require.NoError(t, err)
	return m
}
