package conformance

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

var (
	tmpRoot   string
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "rendezvous-conformance-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "conformance: temp dir:", err)
		os.Exit(1)
	}
	tmpRoot = dir
	code := m.Run()
	_ = os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "conformance: goroutine leak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// goTool finds the go command: go test puts its own GOROOT/bin first on
// the test binary's PATH; else $GOROOT/bin.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	if root := os.Getenv("GOROOT"); root != "" {
		return filepath.Join(root, "bin", "go")
	}
	return "go"
}

// daemonBinary builds ./cmd/rendezvous once per test binary run.
func daemonBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		out, err := exec.Command(goTool(), "env", "GOMOD").Output()
		if err != nil {
			buildErr = fmt.Errorf("go env GOMOD: %w", err)
			return
		}
		gomod := strings.TrimSpace(string(out))
		if gomod == "" || gomod == os.DevNull {
			buildErr = errors.New("not inside a Go module")
			return
		}
		bin := filepath.Join(tmpRoot, "rendezvous")
		if runtime.GOOS == "windows" {
			bin += ".exe"
		}
		cmd := exec.Command(goTool(), "build", "-o", bin, "./cmd/rendezvous")
		cmd.Dir = filepath.Dir(gomod)
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/rendezvous: %w\n%s", err, out)
			return
		}
		binPath = bin
	})
	require.NoError(t, buildErr, "building the daemon")
	return binPath
}

// daemon is one running cmd/rendezvous process.
type daemon struct {
	t       testing.TB
	dataDir string
	args    []string
	cmd     *exec.Cmd
	info    peer.AddrInfo
	addr    string // the first "listening" addr, with /p2p/<id>

	exited  chan struct{}
	waitErr error

	logMu sync.Mutex
	logs  []string
}

const daemonStartTimeout = 45 * time.Second

// startDaemon starts the daemon on 127.0.0.1 (random TCP port) with dataDir
// and extra flags, and waits for its "ready" log record. It is stopped when
// the test ends.
func startDaemon(t testing.TB, dataDir string, extra ...string) *daemon {
	t.Helper()
	bin := daemonBinary(t)
	args := append([]string{
		"-listen", "/ip4/127.0.0.1/tcp/0",
		"-data-dir", dataDir,
		"-log-format", "json",
	}, extra...)
	d := &daemon{t: t, dataDir: dataDir, args: args, exited: make(chan struct{})}
	d.cmd = exec.Command(bin, args...)
	d.cmd.Env = cleanEnv()
	stderr, err := d.cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, d.cmd.Start(), "starting the daemon")

	listening := make(chan string, 1)
	ready := make(chan string, 1)
	scanDone := make(chan struct{})
	go func() {
		defer close(scanDone)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			d.logMu.Lock()
			d.logs = append(d.logs, line)
			if len(d.logs) > 400 {
				d.logs = d.logs[len(d.logs)-300:]
			}
			d.logMu.Unlock()
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) != nil {
				continue
			}
			switch rec["msg"] {
			case "listening":
				if a, ok := rec["addr"].(string); ok {
					select {
					case listening <- a:
					default:
					}
				}
			case "ready":
				p, _ := rec["peer"].(string)
				select {
				case ready <- p:
				default:
				}
			}
		}
	}()
	go func() {
		<-scanDone // Wait must not run before the pipe is drained
		d.waitErr = d.cmd.Wait()
		close(d.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-d.exited:
		default:
			_ = d.cmd.Process.Kill()
			<-d.exited
		}
		d.checkLog(t)
	})

	timeout := time.After(daemonStartTimeout)
	var addr, readyPeer string
	for addr == "" || readyPeer == "" {
		select {
		case a := <-listening:
			addr = a
		case p := <-ready:
			readyPeer = p
		case <-d.exited:
			t.Fatalf("daemon %v exited before ready: %v\nlog:\n%s", args, d.waitErr, d.logText())
		case <-timeout:
			t.Fatalf("daemon %v not ready after %v\nlog:\n%s", args, daemonStartTimeout, d.logText())
		}
	}
	info, err := peer.AddrInfoFromString(addr)
	require.NoError(t, err, "listening addr %q must be a multiaddr ending in /p2p/<id>", addr)
	require.Equal(t, info.ID.String(), readyPeer, "ready record's peer must match the listening addr")
	d.info = *info
	d.addr = addr
	return d
}

// cleanEnv drops RENDEZVOUS_* variables so only our flags configure the daemon.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "RENDEZVOUS_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

func (d *daemon) logText() string {
	d.logMu.Lock()
	defer d.logMu.Unlock()
	return strings.Join(d.logs, "\n")
}

// alive reports whether the process is still running.
func (d *daemon) alive() bool {
	select {
	case <-d.exited:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM and waits for a clean exit.
func (d *daemon) stop(t testing.TB) {
	t.Helper()
	require.NoError(t, d.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-d.exited:
	case <-time.After(30 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.exited
		t.Fatalf("daemon did not exit within 30s of SIGTERM\nlog:\n%s", d.logText())
	}
	require.NoError(t, d.waitErr, "daemon must exit cleanly (status 0) on SIGTERM\nlog:\n%s", d.logText())
}

// checkLog fails the test if the daemon logged an error or a panic: bad
// input from peers is the peers' problem and must not show as a server error.
func (d *daemon) checkLog(t testing.TB) {
	t.Helper()
	d.logMu.Lock()
	defer d.logMu.Unlock()
	for _, line := range d.logs {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) != nil {
			if strings.Contains(line, "panic") || strings.HasPrefix(line, "goroutine ") {
				t.Errorf("daemon %v wrote a panic: %s", d.args, line)
			}
			continue
		}
		if rec["level"] == "ERROR" {
			t.Errorf("daemon %v logged an error: %s", d.args, line)
		}
	}
}
