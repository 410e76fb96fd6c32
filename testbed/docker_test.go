//go:build e2e

package testbed

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
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

// namePrefix starts the name of every container, network and volume the
// harness creates, so leftovers of a crashed run can be found and removed.
const namePrefix = "p2pmtb"

var (
	runID      = randomHex(4)
	repoRoot   string
	image      string
	composeCmd []string

	setupOnce sync.Once
	setupErr  error
	skipWhy   string
)

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func TestMain(m *testing.M) {
	code := m.Run()
	if image != "" {
		_ = exec.Command("docker", "rmi", "-f", image).Run()
	}
	os.Exit(code)
}

// docker runs the docker CLI and returns its trimmed stdout.
func docker(ctx context.Context, args ...string) (string, error) {
	return run(ctx, nil, "docker", args...)
}

func run(ctx context.Context, env []string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return strings.TrimSpace(out.String()), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return strings.TrimSpace(out.String()), nil
}

// requireEnv skips the test without a Docker engine and otherwise builds the
// image once per run.
func requireEnv(t *testing.T) {
	t.Helper()
	setupOnce.Do(setup)
	if skipWhy != "" {
		t.Skip(skipWhy)
	}
	if setupErr != nil {
		t.Fatalf("test bed setup: %v", setupErr)
	}
}

func setup() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	vctx, vcancel := context.WithTimeout(ctx, 15*time.Second)
	v, err := docker(vctx, "version", "--format", "{{.Server.Version}}")
	vcancel()
	if err != nil || v == "" {
		skipWhy = fmt.Sprintf("no Docker engine answers (docker version: %v); the e2e test bed needs one", err)
		return
	}
	if _, err := docker(ctx, "compose", "version"); err == nil {
		composeCmd = []string{"docker", "compose"}
	} else if _, err := run(ctx, nil, "docker-compose", "version"); err == nil {
		composeCmd = []string{"docker-compose"}
	} else {
		skipWhy = "neither `docker compose` nor `docker-compose` works"
		return
	}
	gomod, err := run(ctx, nil, "go", "env", "GOMOD")
	if err != nil || gomod == "" || gomod == os.DevNull {
		setupErr = fmt.Errorf("locate module root: %v", err)
		return
	}
	repoRoot = filepath.Dir(gomod)
	removeLeftovers(ctx)
	setupErr = buildImage(ctx)
}

// removeLeftovers deletes what an earlier, killed run left behind (the
// topologies use fixed subnets, so leftovers would block the next run).
func removeLeftovers(ctx context.Context) {
	if ids, _ := docker(ctx, "ps", "-aq", "--filter", "name="+namePrefix); ids != "" {
		_, _ = docker(ctx, append([]string{"rm", "-f"}, strings.Fields(ids)...)...)
	}
	if ids, _ := docker(ctx, "network", "ls", "-q", "--filter", "name="+namePrefix); ids != "" {
		_, _ = docker(ctx, append([]string{"network", "rm"}, strings.Fields(ids)...)...)
	}
	if ids, _ := docker(ctx, "volume", "ls", "-q", "--filter", "name="+namePrefix); ids != "" {
		_, _ = docker(ctx, append([]string{"volume", "rm", "-f"}, strings.Fields(ids)...)...)
	}
}

func buildImage(ctx context.Context) error {
	dir, err := os.MkdirTemp("", "p2pmtb-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	for name, pkg := range map[string]string{
		"natrouter": "./testbed/natrouter", "hpcheck": "./testbed/hpcheck",
		"rendezvous": "./cmd/rendezvous", "chat": "./cmd/chat",
	} {
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", filepath.Join(dir, name), pkg)
		cmd.Dir = repoRoot
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("build %s: %w\n%s", pkg, err, out)
		}
	}
	df, err := os.ReadFile(filepath.Join(repoRoot, "testbed", "Dockerfile"))
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), df, 0o644); err != nil {
		return err
	}
	tag := namePrefix + ":e2e-" + runID
	if _, err := run(ctx, []string{"DOCKER_BUILDKIT=0"}, "docker", "build", "-q", "-t", tag, dir); err != nil {
		// No builder (or it wants to pull): import the folder as an image.
		_ = os.Remove(filepath.Join(dir, "Dockerfile"))
		cmd := exec.CommandContext(ctx, "sh", "-c",
			`tar -c -C "$1" . | docker import -c 'ENTRYPOINT ["/chat"]' - "$2"`, "sh", dir, tag)
		if out, ierr := cmd.CombinedOutput(); ierr != nil {
			return fmt.Errorf("docker build: %v; docker import: %w: %s", err, ierr, out)
		}
	}
	image = tag
	return nil
}

// topology is one compose project: networks, routers and daemons from a
// compose file, plus peers the harness starts itself with `docker run -i`.
type topology struct {
	t       *testing.T
	project string
	file    string
	env     []string
	// tag starts the names of the peers' containers and volumes inside the
	// project ("r03_" in a matrix repetition), so that every repetition
	// gets fresh identities in a topology that stays up.
	tag string

	*tpState
}

// tpState is what every view of a topology (with) shares.
type tpState struct {
	mu         sync.Mutex
	containers []string // docker run containers (peers)
	volumes    []string
}

// with returns a view of tp that fails t (its Fatal calls are t's) and
// names its peers with tag; the compose project and what the views started
// are shared, and torn down once, by the test that made tp.
func (tp *topology) with(t *testing.T, tag string) *topology {
	v := *tp
	v.t, v.tag = t, tag
	return &v
}

var projectSeq int
var projectMu sync.Mutex

func newTopology(t *testing.T, file string, env ...string) *topology {
	t.Helper()
	projectMu.Lock()
	projectSeq++
	n := projectSeq
	projectMu.Unlock()
	tp := &topology{
		t:       t,
		project: fmt.Sprintf("%s%s%02d", namePrefix, runID, n),
		file:    filepath.Join(repoRoot, "testbed", "compose", file),
		env:     append([]string{"TESTBED_IMAGE=" + image}, env...),
		tpState: &tpState{},
	}
	t.Cleanup(tp.teardown)
	return tp
}

func (tp *topology) compose(ctx context.Context, args ...string) (string, error) {
	full := append(append(append([]string{}, composeCmd[1:]...), "-p", tp.project, "-f", tp.file), args...)
	return run(ctx, tp.env, composeCmd[0], full...)
}

func (tp *topology) network(name string) string { return tp.project + "_" + name }

// up starts services in the background.
func (tp *topology) up(services ...string) {
	tp.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := tp.compose(ctx, append([]string{"up", "-d", "--no-build"}, services...)...); err != nil {
		tp.t.Fatal(err)
	}
}

func (tp *topology) container(service string) string {
	tp.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The labels compose (v1 and v2) puts on its containers; the docker CLI
	// answers much faster than a compose process starts.
	id, err := docker(ctx, "ps", "-aq", "--filter", "label=com.docker.compose.project="+tp.project,
		"--filter", "label=com.docker.compose.service="+service)
	if err != nil || id == "" {
		tp.t.Fatalf("container of %s: %v", service, err)
	}
	return strings.Fields(id)[0]
}

func (tp *topology) stop(service string) {
	tp.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// As compose stop would, with the services' stop_grace_period (10 s).
	if _, err := docker(ctx, "stop", "-t", "10", tp.container(service)); err != nil {
		tp.t.Fatal(err)
	}
}

func (tp *topology) start(service string) time.Time {
	tp.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	at := time.Now()
	if _, err := tp.compose(ctx, "start", service); err != nil {
		tp.t.Fatal(err)
	}
	return at
}

func (tp *topology) teardown() {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tp.mu.Lock()
	containers, volumes := tp.containers, tp.volumes
	tp.mu.Unlock()
	if tp.t.Failed() {
		if out, err := tp.compose(ctx, "logs", "--no-color", "--tail", "60"); err == nil {
			tp.t.Logf("compose logs of %s:\n%s", tp.project, out)
		}
	}
	if os.Getenv("TESTBED_LOG_DIR") != "" {
		if out, err := tp.compose(ctx, "logs", "--no-color", "--timestamps"); err == nil {
			saveLog(tp.project+"_compose.log", out)
		}
	}
	if len(containers) > 0 {
		_, _ = docker(ctx, append([]string{"rm", "-f", "-v"}, containers...)...)
	}
	// Every profile is active for down: compose v2 otherwise skips services
	// of inactive profiles that were started by name.
	tp.env = append(tp.env, "COMPOSE_PROFILES=peers,two-daemons")
	if _, err := tp.compose(ctx, "down", "-v", "--remove-orphans", "-t", "5"); err != nil {
		tp.t.Errorf("teardown: %v", err)
	}
	// Safety net: nothing named after the project may survive.
	if ids, _ := docker(ctx, "ps", "-aq", "--filter", "name="+tp.project); ids != "" {
		tp.t.Errorf("containers left after compose down: %s", ids)
		_, _ = docker(ctx, append([]string{"rm", "-f", "-v"}, strings.Fields(ids)...)...)
	}
	if ids, _ := docker(ctx, "network", "ls", "-q", "--filter", "name="+tp.project); ids != "" {
		tp.t.Errorf("networks left after compose down: %s", ids)
		_, _ = docker(ctx, append([]string{"network", "rm"}, strings.Fields(ids)...)...)
	}
	if len(volumes) > 0 {
		if _, err := docker(ctx, append([]string{"volume", "rm", "-f"}, volumes...)...); err != nil {
			tp.t.Errorf("teardown volumes: %v", err)
		}
	}
}

// logRecord is one line of a daemon's JSON log.
type logRecord map[string]any

func (r logRecord) str(k string) string { s, _ := r[k].(string); return s }

// waitLogs follows a container's output (stdout and stderr) from since and
// returns every line up to and including the first that match accepts.
func waitLogs(t *testing.T, container string, since time.Time, timeout time.Duration, match func(line string) bool) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	args := []string{"logs", "-f"}
	if !since.IsZero() {
		args = append(args, "--since", fmt.Sprintf("%d.%09d", since.Unix(), since.Nanosecond()))
	}
	cmd := exec.CommandContext(ctx, "docker", append(args, container)...)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = cmd.Wait(); pw.Close() }()
	defer func() { cancel(); pr.Close() }()
	var lines []string
	sc := bufio.NewScanner(pr)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if match(sc.Text()) {
			return lines
		}
	}
	t.Fatalf("container %s: no matching log line within %s; last lines:\n%s", container, timeout, tail(lines, 30))
	return nil
}

func tail(lines []string, n int) string {
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// daemon is a running rendezvous daemon as its logs describe it.
type daemon struct {
	Service string
	ID      string
	Addrs   []string // every listen multiaddr with /p2p/<id>
}

// addrsWith returns the daemon's multiaddrs that contain substr (e.g. its
// WAN IP), the ones peers are given.
func (d daemon) addrsWith(substr string) []string {
	var out []string
	for _, a := range d.Addrs {
		if strings.Contains(a, substr) {
			out = append(out, a)
		}
	}
	return out
}

// waitDaemon waits for the daemon's "ready" record (after since) and
// collects its "listening" records.
func (tp *topology) waitDaemon(service string, since time.Time) daemon {
	tp.t.Helper()
	d := daemon{Service: service}
	waitLogs(tp.t, tp.container(service), since, 90*time.Second, func(line string) bool {
		var r logRecord
		if json.Unmarshal([]byte(line), &r) != nil {
			return false
		}
		switch r.str("msg") {
		case "listening":
			d.Addrs = append(d.Addrs, r.str("addr"))
		case "ready":
			d.ID = r.str("peer")
			return true
		}
		return false
	})
	if d.ID == "" || len(d.Addrs) == 0 {
		tp.t.Fatalf("daemon %s ready without id or addresses: %+v", service, d)
	}
	return d
}

// waitRouter waits for the router's "ready" line.
func (tp *topology) waitRouter(service string) {
	tp.t.Helper()
	waitLogs(tp.t, tp.container(service), time.Time{}, 60*time.Second, func(line string) bool {
		return strings.HasPrefix(line, "ready")
	})
}

var errExited = errors.New("process exited")

// freshDaemon replaces the daemon with a new one that knows nothing: the
// container and its data volume (identity, registrations, name leases,
// relay reservations) are removed and the service is created again.
func (tp *topology) freshDaemon(service, volume string) daemon {
	tp.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := docker(ctx, "rm", "-f", "-v", tp.container(service)); err != nil {
		tp.t.Fatal(err)
	}
	if _, err := docker(ctx, "volume", "rm", "-f", tp.project+"_"+volume); err != nil {
		tp.t.Fatal(err)
	}
	tp.up(service)
	return tp.waitDaemon(service, time.Time{})
}

// flushRouters makes the routers forget every NAT mapping and tracked flow
// (natrouter flush, run inside each router while nothing runs behind it)
// and returns what each had: its "flushed conntrack=N fullcone=M neigh=K
// left=0" line. A router with anything left fails the test.
func (tp *topology) flushRouters(routers []string) []string {
	tp.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out []string
	for _, r := range routers {
		line, err := docker(ctx, "exec", tp.container(r), "/natrouter", "flush")
		if err != nil || !strings.HasSuffix(line, " left=0") {
			tp.t.Fatalf("flush %s: %q, %v", r, line, err)
		}
		out = append(out, r+": "+line)
	}
	return out
}
