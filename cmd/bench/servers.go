package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// childEnv makes the bench binary (or its test binary) run one baseline
// server instead of the benchmark: "tcp" or "libp2p". The child prints
// "READY <host:port> [<peer id>]" and serves until its stdin closes, so it
// dies with its parent.
const childEnv = "P2P_BENCH_SERVE"

// server is a process the benchmark measures.
type server struct {
	Name     string
	HostPort string  // TCP address, loopback
	ID       peer.ID // empty for plain TCP
	PID      int     // 0 when unknown (remote daemon): no /proc figures
	Addr     multiaddr.Multiaddr
	Metrics  string // host:port of the daemon's /metrics, if any

	stop func() error
}

func (s *server) Close() error {
	if s.stop == nil {
		return nil
	}
	return s.stop()
}

// sample reads the server's /proc figures; ok is false when they are not
// available.
func (s *server) sample() (procSample, bool) {
	if s.PID == 0 {
		return procSample{}, false
	}
	p, err := readProc(s.PID)
	return p, err == nil
}

// serveChild runs a baseline server until stdin is closed.
func serveChild(kind string, stdin io.Reader, stdout io.Writer) error {
	switch kind {
	case "tcp":
		s, err := startTCPEcho()
		if err != nil {
			return err
		}
		defer s.Close()
		fmt.Fprintf(stdout, "READY %s\n", s.Addr())
	case "libp2p":
		h, err := newEchoHost()
		if err != nil {
			return err
		}
		defer h.Close()
		hp, err := tcpHostPort(h.Addrs())
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "READY %s %s\n", hp, h.ID())
	case "files":
		return serveFilesChild(stdin, stdout) // files.go
	default:
		return fmt.Errorf("unknown server kind %q", kind)
	}
	_, _ = io.Copy(io.Discard, stdin)
	return nil
}

// tcpHostPort picks the first loopback TCP address.
func tcpHostPort(addrs []multiaddr.Multiaddr) (string, error) {
	for _, a := range addrs {
		if t, _ := peer.SplitAddr(a); t != nil {
			a = t
		}
		if _, err := a.ValueForProtocol(multiaddr.P_TCP); err != nil {
			continue
		}
		if !manet.IsIPLoopback(a) {
			continue
		}
		na, err := manet.ToNetAddr(a)
		if err != nil {
			continue
		}
		return na.String(), nil
	}
	return "", fmt.Errorf("no loopback tcp address in %v", addrs)
}

// startChild runs a baseline server in a child process (this executable
// again), so its CPU and memory are its own and it does not share a Go
// scheduler with the load generator, exactly like the daemon.
func startChild(ctx context.Context, kind string) (*server, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable: %w", err)
	}
	cmd := exec.Command(exe)
	dieWithParent(cmd)
	cmd.Env = append(os.Environ(), childEnv+"="+kind)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s echo server: %w", kind, err)
	}
	stop := func() error {
		stdin.Close()
		return cmd.Wait()
	}
	line, err := readLine(ctx, bufio.NewReader(stdout), "READY ")
	if err != nil {
		stop()
		return nil, fmt.Errorf("%s echo server: %w", kind, err)
	}
	f := strings.Fields(line)
	s := &server{Name: kind + "-echo", HostPort: f[1], PID: cmd.Process.Pid, stop: stop}
	if len(f) > 2 {
		if s.ID, err = peer.Decode(f[2]); err != nil {
			stop()
			return nil, fmt.Errorf("%s echo server peer id: %w", kind, err)
		}
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	return s, nil
}

// readLine returns the first line starting with prefix, or fails when ctx
// ends or the reader does.
func readLine(ctx context.Context, r *bufio.Reader, prefix string) (string, error) {
	type res struct {
		line string
		err  error
	}
	ch := make(chan res, 1)
	go func() {
		for {
			l, err := r.ReadString('\n')
			if strings.HasPrefix(l, prefix) {
				ch <- res{strings.TrimSpace(l), nil}
				return
			}
			if err != nil {
				ch <- res{"", fmt.Errorf("no %q line: %w", strings.TrimSpace(prefix), err)}
				return
			}
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	select {
	case r := <-ch:
		return r.line, r.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// buildDaemon compiles ./cmd/rendezvous of the module the working directory
// belongs to into dir.
func buildDaemon(ctx context.Context, dir string) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside the p2p-messaging module: run from the repository or pass -daemon-bin")
	}
	bin := filepath.Join(dir, "rendezvous")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/rendezvous")
	cmd.Dir = filepath.Dir(gomod)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/rendezvous: %w\n%s", err, out)
	}
	return bin, nil
}

// startDaemon runs the rendezvous daemon on loopback with limits opened up
// for load, and waits for its "listening" and "ready" log records.
func startDaemon(ctx context.Context, bin, dataDir string, extra []string, logTo io.Writer) (*server, error) {
	metrics, err := freeLoopbackPort()
	if err != nil {
		return nil, err
	}
	args := []string{
		"-metrics", metrics,
		"-listen", "/ip4/127.0.0.1/tcp/0",
		"-data-dir", dataDir,
		"-log-format", "json",
		"-log-level", "info", // "listening" and "ready" are info records
	}
	args = append(args, daemonLoadArgs...)
	args = append(args, extra...)
	cmd := exec.Command(bin, args...)
	dieWithParent(cmd)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout = logTo
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start daemon: %w", err)
	}
	var once sync.Once
	var waitErr error
	stop := func() error {
		once.Do(func() {
			_ = cmd.Process.Signal(os.Interrupt)
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case waitErr = <-done:
			case <-time.After(20 * time.Second):
				_ = cmd.Process.Kill()
				waitErr = <-done
			}
		})
		return waitErr
	}
	addr, id, err := waitDaemonReady(ctx, stderr, logTo)
	if err != nil {
		stop()
		return nil, err
	}
	hp, err := tcpHostPort([]multiaddr.Multiaddr{addr})
	if err != nil {
		stop()
		return nil, err
	}
	return &server{Name: "rendezvous", HostPort: hp, ID: id, PID: cmd.Process.Pid, Addr: addr, Metrics: metrics, stop: stop}, nil
}

// daemonLoadArgs lift the daemon's per-peer rate limit and caps so the
// benchmark measures the server, not its abuse protection.
var daemonLoadArgs = []string{
	"-rate", "1000000",
	"-burst", "1000000",
	"-max-registrations", "10000000",
	"-conns-max", "60000",
}

// waitDaemonReady parses the daemon's JSON log records until "ready", then
// keeps copying them to logTo.
func waitDaemonReady(ctx context.Context, stderr io.Reader, logTo io.Writer) (multiaddr.Multiaddr, peer.ID, error) {
	type res struct {
		addr multiaddr.Multiaddr
		id   peer.ID
		err  error
	}
	ch := make(chan res, 1)
	go func() {
		br := bufio.NewReader(stderr)
		var addr multiaddr.Multiaddr
		var id peer.ID
		sent := false
		for {
			line, err := br.ReadBytes('\n')
			if len(line) > 0 && sent && !bytes.Contains(line, []byte(`"level":"INFO"`)) && !bytes.Contains(line, []byte(`"level":"DEBUG"`)) {
				_, _ = logTo.Write(line)
			}
			if !sent && len(line) > 0 {
				var rec struct {
					Msg  string `json:"msg"`
					Addr string `json:"addr"`
					Peer string `json:"peer"`
				}
				if json.Unmarshal(line, &rec) != nil {
					_, _ = logTo.Write(line)
				}
				switch rec.Msg {
				case "listening":
					if a, err := multiaddr.NewMultiaddr(rec.Addr); err == nil {
						if _, err := a.ValueForProtocol(multiaddr.P_TCP); err == nil && addr == nil {
							addr = a
						}
					}
				case "ready":
					id, _ = peer.Decode(rec.Peer)
					if addr == nil || id == "" {
						ch <- res{err: fmt.Errorf("daemon ready without a tcp address or peer id (%s)", line)}
					} else {
						ch <- res{addr: addr, id: id}
					}
					sent = true
				}
			}
			if err != nil {
				if !sent {
					ch <- res{err: fmt.Errorf("daemon exited before ready: %w", err)}
				}
				return
			}
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	select {
	case r := <-ch:
		return r.addr, r.id, r.err
	case <-ctx.Done():
		return nil, "", fmt.Errorf("wait for daemon: %w", ctx.Err())
	}
}

// remoteDaemon targets a daemon given by -addr. Its PID is known only when
// -daemon-pid says so.
func remoteDaemon(addr string, pid int) (*server, error) {
	ma, err := multiaddr.NewMultiaddr(addr)
	if err != nil {
		return nil, fmt.Errorf("parse -addr: %w", err)
	}
	ai, err := peer.AddrInfoFromP2pAddr(ma)
	if err != nil {
		return nil, fmt.Errorf("-addr needs /p2p/<id>: %w", err)
	}
	hp, err := tcpHostPort(ai.Addrs)
	if err != nil {
		return nil, fmt.Errorf("-addr: %w", err)
	}
	return &server{Name: "rendezvous", HostPort: hp, ID: ai.ID, PID: pid, Addr: ma}, nil
}

func mkdirTemp(dir, pattern string) (string, error) { return os.MkdirTemp(dir, pattern) }
