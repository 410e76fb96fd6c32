//go:build e2e

package testbed

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// natSpec places a peer behind a router: the router's address on the shared
// Docker network, the peer's VXLAN LAN address and the router's LAN address.
type natSpec struct {
	Router  string
	LAN     string
	Gateway string
	// LAN6 and Gateway6 (dual-stack LANs): the peer's IPv6 address and
	// prefix, and the router's IPv6 LAN address.
	LAN6, Gateway6 string
}

// natArgs are the natrouter peer arguments up to "--", and the docker run
// options they need.
func (n *natSpec) natArgs() (dockerOpts, natrouter []string) {
	dockerOpts = []string{"--cap-add", "NET_ADMIN"}
	natrouter = []string{"peer", "-router", n.Router, "-lan", n.LAN, "-gateway", n.Gateway}
	if n.LAN6 != "" {
		dockerOpts = append(dockerOpts, "--sysctl", "net.ipv6.conf.all.disable_ipv6=0", "--sysctl", "net.ipv6.conf.default.disable_ipv6=0")
		natrouter = append(natrouter, "-lan6", n.LAN6, "-gateway6", n.Gateway6)
	}
	return dockerOpts, append(natrouter, "--")
}

// peerSpec describes one chat peer; the harness runs it with `docker run -i`
// and drives its -json mode through stdin/stdout pipes.
type peerSpec struct {
	Nick         string
	Network      string // compose network key
	IP           string // static address on that network (IPv4, or IPv6 if IPv6)
	IPv6         bool
	NAT          *natSpec
	Listen       string
	Rendezvous   []string
	Room         string
	Reachability string
}

// event is one JSON line from a peer's stdout.
type event map[string]any

func (e event) str(k string) string { s, _ := e[k].(string); return s }
func (e event) is(kind string) bool { return e.str("event") == kind }
func (e event) boolean(k string) bool {
	b, _ := e[k].(bool)
	return b
}
func (e event) num(k string) float64 { f, _ := e[k].(float64); return f }

// at is when the harness read the event.
func (e event) at() time.Time { t, _ := e["_at"].(time.Time); return t }

// peer is one incarnation (container) of a chat peer.
type peer struct {
	t         *testing.T
	spec      peerSpec
	container string
	cmd       *exec.Cmd
	stdin     io.WriteCloser
	ID        string

	mu      sync.Mutex
	events  []event
	changed chan struct{} // closed and replaced on every new event
	exited  bool
	stderr  bytes.Buffer
}

var incarnation = map[string]int{}
var incarnationMu sync.Mutex

// startPeer runs the peer and waits for its "ready" event.
func (tp *topology) startPeer(spec peerSpec) *peer {
	tp.t.Helper()
	p := tp.launchPeer(spec)
	p.waitReady()
	return p
}

// waitReady waits for the peer's "ready" event and keeps its peer ID.
func (p *peer) waitReady() {
	p.t.Helper()
	ready := p.wait(90*time.Second, 0, func(e event) bool { return e.is("ready") })
	p.ID = ready.str("peer")
}

// launchPeer runs the peer (a new incarnation of spec.Nick) without
// waiting for it.
func (tp *topology) launchPeer(spec peerSpec) *peer {
	tp.t.Helper()
	incarnationMu.Lock()
	incarnation[tp.project+tp.tag+spec.Nick]++
	gen := incarnation[tp.project+tp.tag+spec.Nick]
	incarnationMu.Unlock()

	name := fmt.Sprintf("%s_%s%s_%d", tp.project, tp.tag, spec.Nick, gen)
	vol := fmt.Sprintf("%s_peer_%s%s", tp.project, tp.tag, spec.Nick)
	if gen == 1 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		_, err := docker(ctx, "volume", "create", vol)
		cancel()
		if err != nil {
			tp.t.Fatal(err)
		}
		tp.mu.Lock()
		tp.volumes = append(tp.volumes, vol)
		tp.mu.Unlock()
		// Registered before the container's cleanup, so it runs after it:
		// the identity ends with the test that made it (a matrix
		// repetition); teardown removes any left.
		tp.t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			_, _ = docker(ctx, "volume", "rm", "-f", vol)
		})
	}
	tp.mu.Lock()
	tp.containers = append(tp.containers, name)
	tp.mu.Unlock()

	args := []string{"run", "-i", "--rm", "--name", name, "--network", tp.network(spec.Network), "-v", vol + ":/data"}
	if spec.IPv6 {
		args = append(args, "--ip6", spec.IP)
	} else {
		args = append(args, "--ip", spec.IP)
	}
	chatArgs := []string{"/chat", "-json", "-nick", spec.Nick, "-data-dir", "/data",
		"-rendezvous", strings.Join(spec.Rendezvous, ","), "-log-level", "debug"}
	if spec.Listen != "" {
		chatArgs = append(chatArgs, "-listen", spec.Listen)
	}
	if spec.Room != "" {
		chatArgs = append(chatArgs, "-room", spec.Room)
	}
	if spec.Reachability != "" {
		chatArgs = append(chatArgs, "-reachability", spec.Reachability)
	}
	// libp2p's own logs, e.g. GOLOG_LOG_LEVEL=error,p2p-holepunch=debug.
	if lvl := os.Getenv("GOLOG_LOG_LEVEL"); lvl != "" {
		args = append(args, "-e", "GOLOG_LOG_LEVEL="+lvl)
	}
	if spec.NAT != nil {
		opts, nat := spec.NAT.natArgs()
		args = append(append(append(args, opts...), "--entrypoint", "/natrouter", image), nat...)
		args = append(args, chatArgs...)
	} else {
		args = append(args, "--entrypoint", "/chat", image)
		args = append(args, chatArgs[1:]...)
	}

	return tp.launch(spec, name, args)
}

// startProc runs argv (a binary of the image) in a container on network at
// ip, behind nat if not nil, and returns it without waiting for anything.
// An ip with a colon is an IPv6 address ("v4,v6" gives both).
func (tp *topology) startProc(name, network, ip string, nat *natSpec, argv ...string) *peer {
	tp.t.Helper()
	cname := fmt.Sprintf("%s_%s%s", tp.project, tp.tag, name)
	tp.mu.Lock()
	tp.containers = append(tp.containers, cname)
	tp.mu.Unlock()
	args := []string{"run", "-i", "--rm", "--name", cname, "--network", tp.network(network)}
	for _, a := range strings.Split(ip, ",") {
		if strings.Contains(a, ":") {
			args = append(args, "--ip6", a)
		} else {
			args = append(args, "--ip", a)
		}
	}
	if nat != nil {
		opts, natArgs := nat.natArgs()
		args = append(append(append(args, opts...), "--entrypoint", "/natrouter", image), natArgs...)
		args = append(args, argv...)
	} else {
		if argv[0] == "/natrouter" { // natrouter route: adds routes
			args = append(args, "--cap-add", "NET_ADMIN")
		}
		args = append(args, "--entrypoint", argv[0], image)
		args = append(args, argv[1:]...)
	}
	return tp.launch(peerSpec{Nick: name}, cname, args)
}

func (tp *topology) launch(spec peerSpec, name string, args []string) *peer {
	tp.t.Helper()
	p := &peer{t: tp.t, spec: spec, container: name, changed: make(chan struct{})}
	p.cmd = exec.Command("docker", args...)
	var err error
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		tp.t.Fatal(err)
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		tp.t.Fatal(err)
	}
	p.cmd.Stderr = &lockedWriter{mu: &p.mu, w: &p.stderr}
	if err := p.cmd.Start(); err != nil {
		tp.t.Fatal(err)
	}
	go p.read(stdout)
	tp.t.Cleanup(func() {
		if tp.t.Failed() {
			p.mu.Lock()
			tp.t.Logf("peer %s stderr (tail):\n%s", name, tailString(p.stderr.String(), 40))
			tp.t.Logf("peer %s events (tail):\n%s", name, p.eventsTail(30))
			p.mu.Unlock()
		}
		p.kill()
		p.mu.Lock()
		saveLog(name+".log", p.stderr.String()+"\n--- events ---\n"+p.eventsTail(1<<30))
		p.mu.Unlock()
	})
	return p
}

// saveLog writes a full log to $TESTBED_LOG_DIR (if set), for debugging a
// run after the fact (the failure output keeps only tails).
func saveLog(name, text string) {
	dir := os.Getenv("TESTBED_LOG_DIR")
	if dir == "" {
		return
	}
	_ = os.MkdirAll(dir, 0o755)
	_ = os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644)
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

func tailString(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return tail(lines, n)
}

func (p *peer) eventsTail(n int) string {
	var lines []string
	for _, e := range p.events {
		b, _ := json.Marshal(e)
		lines = append(lines, string(b))
	}
	return tail(lines, n)
}

func (p *peer) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			e = event{"event": "_raw", "text": sc.Text()}
		}
		e["_at"] = time.Now() // arrival, for times to a direct connection
		p.mu.Lock()
		p.events = append(p.events, e)
		close(p.changed)
		p.changed = make(chan struct{})
		p.mu.Unlock()
	}
	_ = p.cmd.Wait()
	p.mu.Lock()
	p.exited = true
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
}

// mark returns the index of the next event, for waits that ignore the past.
func (p *peer) mark() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.events)
}

// wait returns the first event at index >= from that match accepts.
func (p *peer) wait(timeout time.Duration, from int, match func(event) bool) event {
	p.t.Helper()
	e, err := p.tryWait(timeout, from, match)
	if err != nil {
		p.t.Fatal(err)
	}
	return e
}

func (p *peer) tryWait(timeout time.Duration, from int, match func(event) bool) (event, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		p.mu.Lock()
		for i := from; i < len(p.events); i++ {
			if match(p.events[i]) {
				e := p.events[i]
				p.mu.Unlock()
				return e, nil
			}
		}
		from = len(p.events)
		ch, exited := p.changed, p.exited
		p.mu.Unlock()
		if exited {
			return nil, fmt.Errorf("peer %s (%s): %w before the awaited event", p.spec.Nick, p.container, errExited)
		}
		select {
		case <-ch:
		case <-deadline.C:
			return nil, fmt.Errorf("peer %s: awaited event not seen within %s", p.spec.Nick, timeout)
		}
	}
}

// all returns the events matching match.
func (p *peer) all(match func(event) bool) []event {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []event
	for _, e := range p.events {
		if match(e) {
			out = append(out, e)
		}
	}
	return out
}

// command writes one command line to the peer's stdin.
func (p *peer) command(line string) {
	p.t.Helper()
	if _, err := io.WriteString(p.stdin, line+"\n"); err != nil {
		p.t.Fatalf("peer %s: write %q: %v", p.spec.Nick, line, err)
	}
}

// kill removes the container at once (SIGKILL) and waits for the process.
func (p *peer) kill() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, _ = docker(ctx, "rm", "-f", p.container)
	p.mu.Lock()
	ch, exited := p.changed, p.exited
	p.mu.Unlock()
	if !exited {
		select {
		case <-ch:
		case <-ctx.Done():
		}
	}
}

// peers asks for /peers and returns the entry for nick (nil if absent).
func (p *peer) peerEntry(nick string) map[string]any {
	p.t.Helper()
	m := p.mark()
	p.command("/peers")
	e := p.wait(30*time.Second, m, func(e event) bool { return e.is("peers") })
	list, _ := e["peers"].([]any)
	for _, it := range list {
		if entry, ok := it.(map[string]any); ok && entry["nick"] == nick {
			return entry
		}
	}
	return nil
}
