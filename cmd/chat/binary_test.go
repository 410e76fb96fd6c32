package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The binary tests run the built chat and rendezvous binaries as separate
// processes, the way they are checked from outside: a daemon and three -json
// peers on loopback, a peer killed with SIGKILL and restarted, the daemon
// stopped while conversations go on.

func buildBinaries(t *testing.T) (chatBin, rendezvousBin string) {
	t.Helper()
	dir := t.TempDir()
	chatBin, rendezvousBin = filepath.Join(dir, "chat"), filepath.Join(dir, "rendezvous")
	for bin, pkg := range map[string]string{chatBin: ".", rendezvousBin: "../rendezvous"} {
		out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput()
		require.NoError(t, err, "go build %s: %s", pkg, out)
	}
	return chatBin, rendezvousBin
}

// binProc is a started binary whose stdout (or stderr, for the daemon)
// carries one JSON object per line.
type binProc struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	events chan map[string]any
	waited chan struct{}
	mu     sync.Mutex
	seen   []string
}

func startBin(t *testing.T, name string, jsonFromStderr bool, bin string, args ...string) *binProc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "NO_COLOR=1")
	p := &binProc{t: t, name: name, cmd: cmd, events: make(chan map[string]any, 10000), waited: make(chan struct{})}
	var err error
	p.stdin, err = cmd.StdinPipe()
	require.NoError(t, err)
	var events io.ReadCloser
	logs := &testLogWriter{t: t, prefix: name}
	if jsonFromStderr {
		events, err = cmd.StderrPipe()
		cmd.Stdout = logs
	} else {
		events, err = cmd.StdoutPipe()
		cmd.Stderr = logs
	}
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	scanDone := make(chan struct{})
	go func() {
		defer close(scanDone)
		defer close(p.events)
		sc := bufio.NewScanner(events)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.seen = append(p.seen, line)
			p.mu.Unlock()
			var ev map[string]any
			if err := json.Unmarshal([]byte(line), &ev); err != nil {
				if !jsonFromStderr {
					t.Errorf("%s: stdout line is not JSON: %q", name, line)
				}
				continue
			}
			p.events <- ev
		}
	}()
	go func() {
		<-scanDone // Wait closes the pipes: read them to the end first
		_ = cmd.Wait()
		close(p.waited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.waited
		for range p.events {
		}
	})
	return p
}

func (p *binProc) send(line string) {
	p.t.Helper()
	_, err := io.WriteString(p.stdin, line+"\n")
	require.NoError(p.t, err, "%s: write stdin", p.name)
}

// await returns the first event with ev[key] == kind matching want.
func (p *binProc) awaitKey(key, kind string, want map[string]any, timeout time.Duration) map[string]any {
	p.t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case ev, ok := <-p.events:
			if !ok {
				p.t.Fatalf("%s: output ended while waiting for %s %v; saw:\n%s", p.name, kind, want, p.history())
			}
			if eventMatches(ev, key, kind, want) {
				return ev
			}
		case <-timer.C:
			p.t.Fatalf("%s: no %s %v within %s; saw:\n%s", p.name, kind, want, timeout, p.history())
		}
	}
}

func (p *binProc) await(kind string, want map[string]any) map[string]any {
	p.t.Helper()
	return p.awaitKey("event", kind, want, e2eWait)
}

func (p *binProc) history() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.seen, "\n")
}

// count is how many lines seen so far contain all of subs.
func (p *binProc) count(subs ...string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, l := range p.seen {
		all := true
		for _, s := range subs {
			all = all && strings.Contains(l, s)
		}
		if all {
			n++
		}
	}
	return n
}

func (p *binProc) signal(sig os.Signal) {
	p.t.Helper()
	require.NoError(p.t, p.cmd.Process.Signal(sig))
}

func (p *binProc) wait() int {
	p.t.Helper()
	select {
	case <-p.waited:
	case <-time.After(e2eWait):
		p.t.Fatalf("%s: did not exit", p.name)
	}
	return p.cmd.ProcessState.ExitCode()
}

func TestBinaryScenario(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binaries")
	}
	chatBin, rvBin := buildBinaries(t)
	rv := startBin(t, "rendezvous", true, rvBin, "-listen", "/ip4/127.0.0.1/tcp/0", "-data-dir", t.TempDir(), "-log-format", "json")
	listen := rv.awaitKey("msg", "listening", nil, e2eWait)
	rvAddr := listen["addr"].(string)
	rv.awaitKey("msg", "ready", nil, e2eWait)

	dirs := map[string]string{"ann": t.TempDir(), "ben": t.TempDir(), "cat": t.TempDir()}
	startPeer := func(nick string) *binProc {
		return startBin(t, nick, false, chatBin, "-json", "-nick", nick, "-listen", "/ip4/127.0.0.1/tcp/0",
			"-rendezvous", rvAddr, "-data-dir", dirs[nick], "-log-level", "warn")
	}
	peers := map[string]*binProc{}
	for _, nick := range []string{"ann", "ben", "cat"} {
		peers[nick] = startPeer(nick)
	}
	ids := map[string]string{}
	for nick, p := range peers {
		ids[nick] = p.await("ready", map[string]any{"nick": nick})["peer"].(string)
	}

	// Messages by nick in every direction, each delivered and acknowledged
	// once.
	exchange := func(from, to, text string) string {
		t.Helper()
		peers[from].send("/msg " + to + " " + text)
		id := peers[from].await("sent", map[string]any{"to": to})["id"].(string)
		peers[to].await("message", map[string]any{"id": id, "from": from, "peer": ids[from], "text": text})
		peers[from].await("delivered", map[string]any{"id": id, "to": to})
		return id
	}
	var sentIDs []string
	for _, from := range []string{"ann", "ben", "cat"} {
		for _, to := range []string{"ann", "ben", "cat"} {
			if from != to {
				sentIDs = append(sentIDs, exchange(from, to, fmt.Sprintf("%s to %s", from, to)))
			}
		}
	}
	for _, id := range sentIDs {
		n := 0
		for _, p := range peers {
			n += p.count(`"event":"message"`, id)
		}
		require.Equal(t, 1, n, "message %s shown once", id)
	}

	// cat is killed: the others see it offline within 5 s, and messages to
	// it stay pending.
	killed := time.Now()
	peers["cat"].signal(syscall.SIGKILL)
	peers["cat"].wait()
	for _, nick := range []string{"ann", "ben"} {
		peers[nick].awaitKey("event", "presence", map[string]any{"nick": "cat", "online": false}, 5*time.Second)
		t.Logf("%s saw cat offline after %s", nick, time.Since(killed).Round(time.Millisecond))
	}
	peers["ann"].send("/msg cat are you back?")
	pendingID := peers["ann"].await("sent", map[string]any{"to": "cat"})["id"].(string)
	peers["ann"].send("/history cat 1")
	h := peers["ann"].await("history", map[string]any{"with": "cat"})["messages"].([]any)
	require.Equal(t, "pending", h[0].(map[string]any)["status"])
	require.Zero(t, peers["ann"].count(`"event":"delivered"`, pendingID))

	// cat restarts (same data dir): it receives the message exactly once.
	peers["cat"] = startPeer("cat")
	peers["cat"].await("ready", map[string]any{"peer": ids["cat"]})
	peers["cat"].await("message", map[string]any{"id": pendingID, "from": "ann", "text": "are you back?"})
	peers["ann"].await("delivered", map[string]any{"id": pendingID, "to": "cat"})
	exchange("cat", "ann", "round trip after the restart")
	require.Equal(t, 1, peers["cat"].count(`"event":"message"`, pendingID))
	require.Equal(t, 1, peers["ann"].count(`"event":"delivered"`, pendingID))

	// The daemon stops; running conversations continue.
	rv.signal(syscall.SIGTERM)
	require.Zero(t, rv.wait())
	exchange("ann", "ben", "still here without the daemon")
	exchange("ben", "cat", "and here")

	// Clean shutdown: EOF on stdin for one, SIGTERM for the others.
	require.NoError(t, peers["ann"].stdin.Close())
	require.Zero(t, peers["ann"].wait())
	for _, nick := range []string{"ben", "cat"} {
		peers[nick].signal(syscall.SIGTERM)
		require.Zero(t, peers[nick].wait())
	}
}

// eventMatches reports whether ev has ev[key] == kind and every field in
// want (compared as printed).
func eventMatches(ev map[string]any, key, kind string, want map[string]any) bool {
	if ev[key] != kind {
		return false
	}
	for k, v := range want {
		if fmt.Sprint(ev[k]) != fmt.Sprint(v) {
			return false
		}
	}
	return true
}
