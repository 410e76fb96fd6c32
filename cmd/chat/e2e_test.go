package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/stretchr/testify/require"

	"github.com/p2p-messaging/p2p-messaging/chat"
	"github.com/p2p-messaging/p2p-messaging/rendezvous"
)

// e2eWait bounds every wait for an event in the end-to-end tests; events
// normally arrive within milliseconds on loopback.
const e2eWait = 30 * time.Second

// daemon is an in-process rendezvous server on loopback.
func daemon(t *testing.T) (host.Host, string) {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	require.NoError(t, err)
	srv, err := rendezvous.NewServer(h, rendezvous.WithExclusivePrefix(chat.UserNamespacePrefix))
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = srv.Close()
		_ = h.Close()
	})
	addrs, err := peer.AddrInfoToP2pAddrs(&peer.AddrInfo{ID: h.ID(), Addrs: h.Addrs()})
	require.NoError(t, err)
	var ss []string
	for _, a := range addrs {
		ss = append(ss, a.String())
	}
	return h, strings.Join(ss, ",")
}

// jsonProc is one run() in -json mode, fed through pipes.
type jsonProc struct {
	t      *testing.T
	name   string
	cancel context.CancelFunc
	stdin  *io.PipeWriter
	events chan map[string]any
	done   chan error
	mu     sync.Mutex
	seen   []string // every line, for failure messages
}

func startJSON(t *testing.T, name string, args ...string) *jsonProc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	p := &jsonProc{t: t, name: name, cancel: cancel, stdin: inW, events: make(chan map[string]any, 1000), done: make(chan error, 1)}
	args = append([]string{"-json", "-nick", name, "-listen", "/ip4/127.0.0.1/tcp/0", "-log-level", "warn"}, args...)
	go func() {
		err := run(ctx, args, inR, outW, &testLogWriter{t: t, prefix: name})
		_ = outW.Close()
		_ = inR.Close()
		p.done <- err
	}()
	go func() {
		defer close(p.events)
		sc := bufio.NewScanner(outR)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.seen = append(p.seen, line)
			p.mu.Unlock()
			var ev map[string]any
			if err := json.Unmarshal([]byte(line), &ev); err != nil {
				t.Errorf("%s: stdout line is not JSON: %q", name, line)
				continue
			}
			if _, ok := ev["event"].(string); !ok {
				t.Errorf("%s: line without event: %q", name, line)
			}
			p.events <- ev
		}
	}()
	t.Cleanup(func() {
		cancel()
		_ = inW.Close()
		select {
		case <-p.done:
		case <-time.After(e2eWait):
			t.Errorf("%s: run did not return", name)
		}
		for range p.events {
		}
	})
	return p
}

func (p *jsonProc) send(line string) {
	p.t.Helper()
	_, err := io.WriteString(p.stdin, line+"\n")
	require.NoError(p.t, err)
}

// await returns the first event named kind that matches all of want,
// skipping others.
func (p *jsonProc) await(kind string, want map[string]any) map[string]any {
	p.t.Helper()
	timer := time.NewTimer(e2eWait)
	defer timer.Stop()
	for {
		select {
		case ev, ok := <-p.events:
			if !ok {
				p.t.Fatalf("%s: stdout ended while waiting for %s %v; saw:\n%s", p.name, kind, want, p.history())
			}
			if eventMatches(ev, "event", kind, want) {
				return ev
			}
		case <-timer.C:
			p.t.Fatalf("%s: no %s %v within %s; saw:\n%s", p.name, kind, want, e2eWait, p.history())
		}
	}
}

func (p *jsonProc) history() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.seen, "\n")
}

// exit waits for run to return after stdin ended or the context ended.
func (p *jsonProc) exit() error {
	p.t.Helper()
	select {
	case err := <-p.done:
		p.done <- err // for Cleanup
		return err
	case <-time.After(e2eWait):
		p.t.Fatalf("%s: run did not return", p.name)
		return nil
	}
}

type testLogWriter struct {
	t      *testing.T
	prefix string
}

func (w *testLogWriter) Write(b []byte) (int, error) {
	w.t.Logf("%s: %s", w.prefix, strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

func TestJSONModeEndToEnd(t *testing.T) {
	_, rv := daemon(t)
	aliceDir, bobDir := t.TempDir(), t.TempDir()
	alice := startJSON(t, "alice", "-rendezvous", rv, "-data-dir", aliceDir)
	bob := startJSON(t, "bob", "-rendezvous", rv, "-data-dir", bobDir)

	ra := alice.await("ready", map[string]any{"nick": "alice"})
	rb := bob.await("ready", map[string]any{"nick": "bob"})
	aliceID, bobID := ra["peer"].(string), rb["peer"].(string)
	require.NotEmpty(t, ra["addrs"])

	// alice → bob by nick, acknowledged.
	alice.send("/msg bob hello bob, ünïcode ✓")
	sent := alice.await("sent", map[string]any{"to": "bob"})
	id := sent["id"].(string)
	require.Len(t, id, 32)
	msg := bob.await("message", map[string]any{"id": id})
	require.Equal(t, "alice", msg["from"])
	require.Equal(t, aliceID, msg["peer"])
	require.Equal(t, "hello bob, ünïcode ✓", msg["text"])
	_, err := time.Parse(time.RFC3339, msg["time"].(string))
	require.NoError(t, err)
	alice.await("delivered", map[string]any{"id": id, "to": "bob"})

	// bob → alice with /to and a plain line.
	bob.send("/to alice")
	bob.await("to", map[string]any{"nick": "alice"})
	bob.send("hi alice")
	sent = bob.await("sent", map[string]any{"to": "alice"})
	alice.await("message", map[string]any{"id": sent["id"], "from": "bob", "peer": bobID, "text": "hi alice"})
	bob.await("delivered", map[string]any{"id": sent["id"], "to": "alice"})

	// Bad input gets an error event and the process keeps going.
	alice.send("/frobnicate")
	alice.await("error", map[string]any{"error": "unknown command /frobnicate (try /help)"})
	alice.send(strings.Repeat("x", maxLineLen+10))
	alice.await("error", map[string]any{"error": fmt.Sprintf("line too long (max %d bytes), ignored", maxLineLen)})
	alice.send("plain line without a target")
	alice.await("error", map[string]any{"error": errNoTarget.Error()})
	alice.send("/msg nobody-here hello?")
	ev := alice.await("error", nil)
	require.Contains(t, ev["error"], "nobody-here")
	require.Contains(t, ev["error"], "unknown nick")
	alice.send("/id")
	idEv := alice.await("id", map[string]any{"nick": "alice", "peer": aliceID, "room": "lobby"})
	require.NotEmpty(t, idEv["addrs"])

	alice.send("/peers")
	peers := alice.await("peers", nil)["peers"].([]any)
	var bobEntry map[string]any
	for _, e := range peers {
		if e := e.(map[string]any); e["nick"] == "bob" {
			bobEntry = e
		}
	}
	require.NotNil(t, bobEntry, "bob in %v", peers)
	require.Equal(t, bobID, bobEntry["peer"])
	require.Equal(t, "direct", bobEntry["conn"])
	require.Equal(t, "tcp", bobEntry["transport"])
	require.EqualValues(t, 4, bobEntry["ip"])
	require.Equal(t, true, bobEntry["online"])

	alice.send("/whois bob")
	w := alice.await("whois", map[string]any{"nick": "bob"})
	require.Equal(t, bobID, w["peer"])
	require.Equal(t, true, w["pinned"])
	require.Equal(t, "direct", w["conn"])

	alice.send("/history bob")
	h := alice.await("history", map[string]any{"with": "bob"})["messages"].([]any)
	require.Len(t, h, 2)
	require.Equal(t, "hello bob, ünïcode ✓", h[0].(map[string]any)["text"])
	require.Equal(t, true, h[0].(map[string]any)["outgoing"])
	require.Equal(t, "delivered", h[0].(map[string]any)["status"])
	require.Equal(t, "hi alice", h[1].(map[string]any)["text"])

	alice.send("/join dev")
	alice.await("joined", map[string]any{"room": "dev"})

	// End of stdin: alice unregisters and exits cleanly; bob sees her go.
	require.NoError(t, alice.stdin.Close())
	require.NoError(t, alice.exit())
	bob.await("presence", map[string]any{"nick": "alice", "online": false})

	// SIGTERM (the context) ends bob cleanly although his stdin stays open.
	bob.cancel()
	require.NoError(t, bob.exit())

	// A restart keeps the identity and the history.
	alice2 := startJSON(t, "alice", "-rendezvous", rv, "-data-dir", aliceDir)
	alice2.await("ready", map[string]any{"peer": aliceID})
	alice2.send("/history bob 1")
	h = alice2.await("history", map[string]any{"with": "bob"})["messages"].([]any)
	require.Len(t, h, 1)
	require.Equal(t, "hi alice", h[0].(map[string]any)["text"])
	alice2.send("/quit")
	require.NoError(t, alice2.exit())
}

func TestJSONModeNickTaken(t *testing.T) {
	_, rv := daemon(t)
	first := startJSON(t, "dora", "-rendezvous", rv, "-data-dir", t.TempDir())
	first.await("ready", nil)

	second := startJSON(t, "dora", "-rendezvous", rv, "-data-dir", t.TempDir())
	ev := second.await("error", nil)
	require.Contains(t, ev["error"], "taken")
	err := second.exit()
	require.ErrorContains(t, err, "nick taken")
}
