package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/multiformats/go-multiaddr"

	"github.com/p2p-messaging/p2p-messaging/chat/transfer"
	"github.com/p2p-messaging/p2p-messaging/internal/identity"
)

// The files phase (issue 11): a file sent with chat/transfer from this
// process to a child process over TCP and over QUIC on loopback, beside a
// plain libp2p stream that copies the same file to the same kind of disk
// file on the same kind of connection (baseline), in the same run; the
// peak RSS of both processes during each; and a transfer whose recipient
// is SIGKILLed half way and restarted.

// filesDirEnv is the data dir of a "files" child.
const filesDirEnv = "P2P_BENCH_FILES_DIR"

// copyProtocol is the baseline: the sender writes the file, half-closes;
// the receiver writes it to disk, syncs, answers one byte.
const copyProtocol protocol.ID = "/p2p-messaging/bench/copy/1.0.0"

const fileIOBuf = 256 << 10

// fileResult is one transport's row.
type fileResult struct {
	Transport        string  `json:"transport"`
	Size             int64   `json:"size_bytes"`
	TransferMiBps    float64 `json:"transfer_mib_per_s"`
	CopyMiBps        float64 `json:"copy_mib_per_s"`
	Ratio            float64 `json:"ratio"`
	OfferSeconds     float64 `json:"offer_seconds"` // hashing the file + the offer exchange, before the clock starts
	SenderRSSBase    int64   `json:"sender_rss_base_bytes"`
	SenderRSSPeak    int64   `json:"sender_rss_peak_bytes"`
	RecvRSSBase      int64   `json:"receiver_rss_base_bytes"`
	RecvRSSPeak      int64   `json:"receiver_rss_peak_bytes"`
	CopySenderPeak   int64   `json:"copy_sender_rss_peak_bytes"`
	CopyReceiverPeak int64   `json:"copy_receiver_rss_peak_bytes"`
	// CPU seconds (user+system) per GiB moved, the least of the rounds:
	// what each side spends, less sensitive to a busy machine than rates.
	SenderCPU     float64 `json:"sender_cpu_s_per_gib"`
	RecvCPU       float64 `json:"receiver_cpu_s_per_gib"`
	CopySenderCPU float64 `json:"copy_sender_cpu_s_per_gib"`
	CopyRecvCPU   float64 `json:"copy_receiver_cpu_s_per_gib"`
	Rounds        int     `json:"rounds"`
	Target        string  `json:"target"`
	Pass          *bool   `json:"pass,omitempty"`
}

// resumeResult is the kill-half-way measurement.
type resumeResult struct {
	Size       int64  `json:"size_bytes"`
	ChunkSize  int    `json:"chunk_size"`
	OnDisk     int64  `json:"on_disk_at_kill_bytes"` // bytes the killed recipient had written (to 256 KiB)
	Kept       int64  `json:"kept_at_restart_bytes"` // whole checked chunks the restart kept
	ReReceived int64  `json:"received_again_bytes"`  // on disk at the kill but fetched again
	SentAfter  int64  `json:"sent_after_restart_bytes"`
	SentTotal  int64  `json:"sent_total_bytes"` // by the sender, bytes lost in flight at the kill included
	Target     string `json:"target"`
	Pass       *bool  `json:"pass,omitempty"`
}

// filesReport is the phase's part of the report.
type filesReport struct {
	Rows   []fileResult  `json:"rows"`
	Resume *resumeResult `json:"resume,omitempty"`
}

// fileTable renders the phase for people.
func fileTable(rep *report) [][]string {
	if rep.Files == nil || len(rep.Files.Rows) == 0 {
		return nil
	}
	mib := func(b int64) string { return fmt.Sprintf("%.0f", float64(b)/(1<<20)) }
	t := [][]string{{"file transfer", "transport", "size MiB", "best transfer MiB/s", "best stream copy MiB/s", "vs copy", "target", "",
		"hash+offer s", "sender RSS MiB base→peak", "receiver RSS MiB base→peak", "copy RSS MiB peak snd/rcv",
		"CPU s/GiB snd/rcv", "copy CPU s/GiB snd/rcv"}}
	for _, r := range rep.Files.Rows {
		t = append(t, []string{fmt.Sprintf("1 file, %d rounds", r.Rounds), r.Transport, mib(r.Size), fmt.Sprintf("%.0f", r.TransferMiBps), fmt.Sprintf("%.0f", r.CopyMiBps),
			ratio(r.Ratio) + "×", r.Target, verdict(r.Pass), fmt.Sprintf("%.2f", r.OfferSeconds),
			mib(r.SenderRSSBase) + "→" + mib(r.SenderRSSPeak), mib(r.RecvRSSBase) + "→" + mib(r.RecvRSSPeak),
			mib(r.CopySenderPeak) + "/" + mib(r.CopyReceiverPeak),
			fmt.Sprintf("%.2f/%.2f", r.SenderCPU, r.RecvCPU), fmt.Sprintf("%.2f/%.2f", r.CopySenderCPU, r.CopyRecvCPU)})
	}
	if r := rep.Files.Resume; r != nil {
		t = append(t, []string{"kill at half + resume", "tcp", mib(r.Size), "", "", "", r.Target, verdict(r.Pass),
			fmt.Sprintf("on disk at kill %s MiB, kept %s MiB, received again %d KiB", mib(r.OnDisk), mib(r.Kept), r.ReReceived>>10),
			fmt.Sprintf("sent after restart %s MiB", mib(r.SentAfter)),
			fmt.Sprintf("sender total %s MiB (in flight at the kill included)", mib(r.SentTotal)), "", "", ""})
	}
	return t
}

// filesChild is a started receiver process.
type filesChild struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	id    peer.ID
	addrs []multiaddr.Multiaddr
	lines chan string
	pid   int
}

func startFilesChild(ctx context.Context, dir string, progress time.Duration, stopAt int64) (*filesChild, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	dieWithParent(cmd)
	cmd.Env = append(os.Environ(), childEnv+"=files", filesDirEnv+"="+dir, "P2P_BENCH_FILES_PROGRESS="+progress.String(),
		"P2P_BENCH_FILES_STOP_AT="+strconv.FormatInt(stopAt, 10))
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
		return nil, fmt.Errorf("start files child: %w", err)
	}
	c := &filesChild{cmd: cmd, stdin: stdin, lines: make(chan string, 1024), pid: cmd.Process.Pid}
	go func() {
		defer close(c.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
	}()
	l, err := c.await(ctx, "READY ", 2*time.Minute)
	if err != nil {
		c.kill()
		return nil, err
	}
	f := strings.Fields(l)
	if c.id, err = peer.Decode(f[1]); err != nil {
		c.kill()
		return nil, err
	}
	for _, s := range f[2:] {
		a, err := multiaddr.NewMultiaddr(s)
		if err != nil {
			c.kill()
			return nil, err
		}
		c.addrs = append(c.addrs, a)
	}
	return c, nil
}

// await returns the next line starting with prefix.
func (c *filesChild) await(ctx context.Context, prefix string, d time.Duration) (string, error) {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case l, ok := <-c.lines:
			if !ok {
				return "", fmt.Errorf("files child ended before %q", prefix)
			}
			if strings.HasPrefix(l, prefix) {
				return l, nil
			}
		case <-t.C:
			return "", fmt.Errorf("no %q from the files child within %s", prefix, d)
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
}

func (c *filesChild) stop() {
	c.stdin.Close()
	_ = c.cmd.Wait()
}

func (c *filesChild) kill() {
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	_ = c.cmd.Wait()
}

func (c *filesChild) addr(transport string) (peer.AddrInfo, error) {
	for _, a := range c.addrs {
		_, tcpErr := a.ValueForProtocol(multiaddr.P_TCP)
		_, quicErr := a.ValueForProtocol(multiaddr.P_QUIC_V1)
		if (transport == "tcp" && tcpErr == nil) || (transport == "quic" && quicErr == nil) {
			return peer.AddrInfo{ID: c.id, Addrs: []multiaddr.Multiaddr{a}}, nil
		}
	}
	return peer.AddrInfo{}, fmt.Errorf("files child has no %s address", transport)
}

// serveFilesChild is the receiver: it accepts every offer into its dir,
// reports "PROGRESS <id> <bytes>" and "DONE <id> <path>", and serves the
// copy baseline, until stdin closes.
func serveFilesChild(stdin io.Reader, stdout io.Writer) error {
	dir := os.Getenv(filesDirEnv)
	progress, _ := time.ParseDuration(os.Getenv("P2P_BENCH_FILES_PROGRESS"))
	// With a stop point the child stops receiving there (its progress
	// event blocks the transfer's goroutine) and waits to be killed, so
	// the kill lands half way whatever the speed.
	stopAt, _ := strconv.ParseInt(os.Getenv("P2P_BENCH_FILES_STOP_AT"), 10, 64)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	// A persistent identity: the restarted recipient is the same peer.
	key, _, err := identity.LoadOrCreate(filepath.Join(dir, "identity.key"))
	if err != nil {
		return err
	}
	h, err := newFileHost(libp2p.Identity(key))
	if err != nil {
		return err
	}
	defer h.Close()
	var mu sync.Mutex
	say := func(format string, args ...any) {
		mu.Lock()
		fmt.Fprintf(stdout, format+"\n", args...)
		mu.Unlock()
	}
	var svc *transfer.Service
	ready := make(chan struct{})
	svc, err = transfer.New(h, transfer.Config{
		StateDir: filepath.Join(dir, "state"), DownloadDir: filepath.Join(dir, "down"),
		Authorize: func(_ context.Context, p peer.ID, _ string) (string, error) { return p.String(), nil },
		Limits:    transfer.Limits{ProgressInterval: progress},
		Events: func(ev transfer.Event) {
			switch e := ev.(type) {
			case transfer.OfferEvent:
				go func() {
					<-ready
					if _, err := svc.Accept(e.ID, ""); err != nil {
						say("ERROR accept: %v", err)
					}
				}()
			case transfer.ProgressEvent:
				say("PROGRESS %s %d", e.ID, e.Bytes)
				if stopAt > 0 && e.Incoming && e.Bytes >= stopAt {
					say("STOPPED %s %d", e.ID, e.Bytes)
					select {} // until SIGKILL
				}
			case transfer.DoneEvent:
				say("DONE %s %s %d", e.ID, e.Path, svc.BytesReceived())
			case transfer.FailedEvent:
				say("FAILED %s %s", e.ID, e.Err)
			}
		},
	})
	if err != nil {
		return err
	}
	close(ready)
	defer svc.Close()
	h.SetStreamHandler(copyProtocol, func(s network.Stream) {
		f, err := os.Create(filepath.Join(dir, "copy.bin"))
		if err != nil {
			s.Reset()
			return
		}
		defer f.Close()
		if _, err := io.CopyBuffer(f, s, make([]byte, fileIOBuf)); err != nil {
			s.Reset()
			return
		}
		if err := f.Sync(); err != nil {
			s.Reset()
			return
		}
		_, _ = s.Write([]byte{1})
		s.Close()
	})
	var as []string
	for _, a := range h.Addrs() {
		as = append(as, a.String())
	}
	say("READY %s %s", h.ID(), strings.Join(as, " "))
	_, _ = io.Copy(io.Discard, stdin)
	return nil
}

func newFileHost(opts ...libp2p.Option) (host.Host, error) {
	return libp2p.New(append([]libp2p.Option{
		libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"),
		libp2p.DisableRelay(), libp2p.DisableMetrics(),
	}, opts...)...)
}

// rssPeak samples the RSS of pids every 10 ms until stop is called.
func rssPeak(pids ...int) (stop func() []int64) {
	peaks := make([]int64, len(pids))
	done := make(chan struct{})
	finished := make(chan struct{})
	sample := func() {
		for i, pid := range pids {
			if s, err := readProc(pid); err == nil && s.RSSBytes > peaks[i] {
				peaks[i] = s.RSSBytes
			}
		}
	}
	go func() {
		defer close(finished)
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			sample()
			select {
			case <-t.C:
			case <-done:
				sample()
				return
			}
		}
	}()
	return func() []int64 { close(done); <-finished; return peaks }
}

// cpuMeter starts counting the CPU time (user+system) of pids; the
// returned func gives the seconds each used since.
func cpuMeter(pids ...int) func() []float64 {
	base := make([]float64, len(pids))
	for i, pid := range pids {
		s, _ := readProc(pid)
		base[i] = s.CPUSeconds
	}
	return func() []float64 {
		out := make([]float64, len(pids))
		for i, pid := range pids {
			s, _ := readProc(pid)
			out[i] = s.CPUSeconds - base[i]
		}
		return out
	}
}

// minPos is the smaller of a and b, where a zero a means none yet.
func minPos(a, b float64) float64 {
	if a == 0 {
		return b
	}
	return min(a, b)
}

func rss(pid int) int64 {
	s, _ := readProc(pid)
	return s.RSSBytes
}

// writeBenchFile writes size pseudo-random bytes (ChaCha8: fast, and
// incompressible for any transport).
func writeBenchFile(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	var seed [32]byte
	copy(seed[:], "p2p-messaging bench file content")
	r := rand.NewChaCha8(seed)
	if _, err := io.CopyBuffer(f, io.LimitReader(r, size), make([]byte, fileIOBuf)); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func (b *bench) filesFail(err error) {
	b.rep.Errors = append(b.rep.Errors, "files: "+err.Error())
}

// runFiles runs the files phase.
func (b *bench) runFiles(ctx context.Context) {
	size := b.cfg.FileSize
	dir, err := os.MkdirTemp(b.tmp, "files-")
	if err != nil {
		b.filesFail(err)
		return
	}
	defer os.RemoveAll(dir)
	src := filepath.Join(dir, "src.bin")
	if err := writeBenchFile(src, size); err != nil {
		b.filesFail(err)
		return
	}
	h, err := newFileHost()
	if err != nil {
		b.filesFail(err)
		return
	}
	defer h.Close()
	svc, err := transfer.New(h, transfer.Config{StateDir: filepath.Join(dir, "sender"), DownloadDir: filepath.Join(dir, "sender-down")})
	if err != nil {
		b.filesFail(err)
		return
	}
	defer svc.Close()
	b.rep.Files = &filesReport{}
	for i, tr := range []string{"tcp", "quic"} {
		fmt.Fprintf(b.log, "files: %d MiB over %s...\n", size>>20, tr)
		r, err := b.fileRow(ctx, h, svc, src, filepath.Join(dir, fmt.Sprintf("recv-%d", i)), tr, size)
		if err != nil {
			b.filesFail(fmt.Errorf("%s: %w", tr, err))
			continue
		}
		b.rep.Files.Rows = append(b.rep.Files.Rows, r)
	}
	fmt.Fprintf(b.log, "files: kill at half and resume...\n")
	res, err := b.fileResume(ctx, h, svc, src, filepath.Join(dir, "resume"), size)
	if err != nil {
		b.filesFail(fmt.Errorf("resume: %w", err))
		return
	}
	b.rep.Files.Resume = res
	if b.cfg.Short {
		for i := range b.rep.Files.Rows {
			b.rep.Files.Rows[i].Pass = nil
		}
		res.Pass = nil
	}
}

func (b *bench) fileRow(ctx context.Context, h host.Host, svc *transfer.Service, src, dir, tr string, size int64) (fileResult, error) {
	r := fileResult{Transport: tr, Size: size, Rounds: b.cfg.FileRounds, Target: "≥ 0.8× stream copy"}
	gib := float64(size) / (1 << 30)
	child, err := startFilesChild(ctx, dir, 250*time.Millisecond, 0)
	if err != nil {
		return r, err
	}
	defer child.stop()
	ai, err := child.addr(tr)
	if err != nil {
		return r, err
	}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	err = h.Connect(cctx, ai)
	cancel()
	if err != nil {
		return r, err
	}
	defer h.Network().ClosePeer(ai.ID)
	me := os.Getpid()

	// Rounds of the baseline (the same bytes over a plain stream on the
	// same connection) and the transfer, interleaved; the fastest of each
	// counts, so a burst of load from other processes hurts neither alone.
	r.SenderRSSBase, r.RecvRSSBase = rss(me), rss(child.pid)
	for round := 0; round < b.cfg.FileRounds; round++ {
		stop := rssPeak(me, child.pid)
		cpu := cpuMeter(me, child.pid)
		start := time.Now()
		if err := copyFile(ctx, h, ai.ID, src); err != nil {
			stop()
			return r, fmt.Errorf("stream copy: %w", err)
		}
		copyDur := time.Since(start)
		peaks := stop()
		used := cpu()
		r.CopySenderCPU, r.CopyRecvCPU = minPos(r.CopySenderCPU, used[0]/gib), minPos(r.CopyRecvCPU, used[1]/gib)
		r.CopySenderPeak, r.CopyReceiverPeak = max(r.CopySenderPeak, peaks[0]), max(r.CopyReceiverPeak, peaks[1])
		r.CopyMiBps = max(r.CopyMiBps, float64(size)/(1<<20)/copyDur.Seconds())
		_ = os.Remove(filepath.Join(dir, "copy.bin"))

		// The transfer: hashing and the offer first, then the clock runs
		// from the offer's answer to the recipient's DONE.
		start = time.Now()
		info, err := svc.Offer(ctx, ai.ID, src, "bench")
		if err != nil {
			return r, err
		}
		r.OfferSeconds = time.Since(start).Seconds()
		stop = rssPeak(me, child.pid)
		cpu = cpuMeter(me, child.pid)
		start = time.Now()
		l, err := child.await(ctx, "DONE "+info.ID, 10*time.Minute)
		dur := time.Since(start)
		peaks = stop()
		if err != nil {
			return r, err
		}
		used = cpu()
		r.SenderCPU, r.RecvCPU = minPos(r.SenderCPU, used[0]/gib), minPos(r.RecvCPU, used[1]/gib)
		r.SenderRSSPeak, r.RecvRSSPeak = max(r.SenderRSSPeak, peaks[0]), max(r.RecvRSSPeak, peaks[1])
		r.TransferMiBps = max(r.TransferMiBps, float64(size)/(1<<20)/dur.Seconds())
		if f := strings.Fields(l); len(f) >= 3 {
			if err := sameContent(src, f[2]); err != nil {
				return r, err
			}
			_ = os.Remove(f[2])
		}
	}
	r.Ratio = r.TransferMiBps / r.CopyMiBps
	r.Pass = boolp(r.Ratio >= 0.8)
	return r, nil
}

// copyFile is the baseline: io.Copy of the file into a plain stream.
func copyFile(ctx context.Context, h host.Host, p peer.ID, src string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	s, err := h.NewStream(ctx, p, copyProtocol)
	if err != nil {
		return err
	}
	if _, err := io.CopyBuffer(s, f, make([]byte, fileIOBuf)); err != nil {
		s.Reset()
		return err
	}
	if err := s.CloseWrite(); err != nil {
		s.Reset()
		return err
	}
	var ack [1]byte
	if _, err := io.ReadFull(s, ack[:]); err != nil {
		s.Reset()
		return err
	}
	return s.Close()
}

func sameContent(a, b string) error {
	ha, err := fileHash(a)
	if err != nil {
		return err
	}
	hb, err := fileHash(b)
	if err != nil {
		return err
	}
	if !bytes.Equal(ha, hb) {
		return fmt.Errorf("%s differs from %s", b, a)
	}
	return nil
}

func fileHash(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyBuffer(h, f, make([]byte, fileIOBuf)); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}

// fileResume sends the file over TCP, SIGKILLs the recipient once half of
// it is on its disk, restarts it on the same data dir, and counts what had
// to move again.
func (b *bench) fileResume(ctx context.Context, h host.Host, svc *transfer.Service, src, dir string, size int64) (*resumeResult, error) {
	res := &resumeResult{Size: size, Target: "received again ≤ 1 chunk"}
	// A large file is killed on the fly, mid-chunk, as soon as half is
	// reported; a small one would finish before the kill lands, so its
	// recipient stops at half (a chunk boundary) and waits for the kill.
	var stopAt int64
	if size < 256<<20 {
		stopAt = size / 2
	}
	child, err := startFilesChild(ctx, dir, time.Millisecond, stopAt)
	if err != nil {
		return nil, err
	}
	ai, err := child.addr("tcp")
	if err != nil {
		child.kill()
		return nil, err
	}
	if err := h.Connect(ctx, ai); err != nil {
		child.kill()
		return nil, err
	}
	sent0 := svc.BytesSent()
	info, err := svc.Offer(ctx, ai.ID, src, "bench")
	if err != nil {
		child.kill()
		return nil, err
	}
	wait := "PROGRESS " + info.ID
	if stopAt > 0 {
		wait = "STOPPED " + info.ID
	}
	for {
		l, err := child.await(ctx, wait, 10*time.Minute)
		if err != nil {
			child.kill()
			return nil, err
		}
		f := strings.Fields(l)
		if n, _ := strconv.ParseInt(f[len(f)-1], 10, 64); n >= size/2 {
			break
		}
	}
	child.kill()
	h.Network().ClosePeer(ai.ID)

	// What the killed recipient had on disk: the 256 KiB pieces of the
	// partial file that equal the source's.
	parts, _ := filepath.Glob(filepath.Join(dir, "down", "*.part"))
	if len(parts) != 1 {
		return nil, fmt.Errorf("want one partial file, found %v", parts)
	}
	if res.OnDisk, err = matchingBytes(src, parts[0], fileIOBuf); err != nil {
		return nil, err
	}
	res.ChunkSize = transfer.DefaultChunkSize
	if res.Kept, err = matchingBytes(src, parts[0], int64(res.ChunkSize)); err != nil {
		return nil, err
	}
	sentBefore := svc.BytesSent()

	child, err = startFilesChild(ctx, dir, 250*time.Millisecond, 0)
	if err != nil {
		return nil, err
	}
	defer child.stop()
	if ai, err = child.addr("tcp"); err != nil {
		return nil, err
	}
	if err := h.Connect(ctx, ai); err != nil {
		return nil, err
	}
	l, err := child.await(ctx, "DONE "+info.ID, 10*time.Minute)
	if err != nil {
		return nil, err
	}
	f := strings.Fields(l)
	if err := sameContent(src, f[2]); err != nil {
		return nil, err
	}
	received2, _ := strconv.ParseInt(f[3], 10, 64)
	res.SentAfter = svc.BytesSent() - sentBefore
	res.SentTotal = svc.BytesSent() - sent0
	// Bytes on disk at the kill that the restart asked for again.
	res.ReReceived = max(0, received2-(size-res.OnDisk))
	res.Pass = boolp(res.ReReceived <= int64(res.ChunkSize))
	return res, nil
}

// matchingBytes counts the bytes of part that equal src's, in blocks of
// block bytes (a block counts only when it matches whole; the last may be
// short).
func matchingBytes(src, part string, block int64) (int64, error) {
	a, err := os.Open(src)
	if err != nil {
		return 0, err
	}
	defer a.Close()
	p, err := os.Open(part)
	if err != nil {
		return 0, err
	}
	defer p.Close()
	ba, bp := make([]byte, block), make([]byte, block)
	var n int64
	for off := int64(0); ; off += block {
		ka, errA := a.ReadAt(ba, off)
		kp, _ := p.ReadAt(bp, off)
		if ka == 0 {
			break
		}
		if kp == ka && bytes.Equal(ba[:ka], bp[:kp]) {
			n += int64(ka)
		}
		if errors.Is(errA, io.EOF) {
			break
		}
	}
	return n, nil
}
