// Command bench measures the rendezvous daemon and the chat on loopback,
// each beside a baseline measured in the same run: a plain TCP
// request/response echo and a plain libp2p stream echo using the same
// stream strategy as the rendezvous client (one long-lived stream per
// client, sequential requests, length-prefixed frames).
//
// It starts its own daemon (go build of ./cmd/rendezvous, or -daemon-bin)
// so that daemon CPU and memory can be read from /proc, or targets one
// given by -addr. Clients are lightweight libp2p connections (TCP, Noise,
// yamux, each with its own Ed25519 identity) so that ten thousand of them
// fit in one process.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if kind := os.Getenv(childEnv); kind != "" {
		if err := serveChild(kind, os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "bench child:", err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "bench:", err)
		}
		os.Exit(1)
	}
}

// explainNotes say how to read the table.
var explainNotes = []string{
	"closed loop: every client sends its next request as soon as the answer to the previous one arrives; ops/s is the capacity, and latency there is mostly queueing (clients ÷ ops/s)",
	"paced: the clients together offer the given rate at even intervals (open loop); latency counts from the scheduled send time, so a stall is not hidden",
	"srv CPU µs/op is the measured process's user+system CPU over the window from /proc; client CPU µs/op is this process's (clients, and for chat rows the two in-process chat nodes)",
	"REGISTER re-registers the client's own nick with the same signed peer record (a refresh); \"REGISTER new record\" sends a newly signed record (higher seq) every time, so the server must check a signature it has never seen; DISCOVER looks up a random other client's nick (one registration back); the mix uses refreshes",
	"chat rows use two in-process chat.Nodes with their data in $TMPDIR (fsync'd bbolt); the echo baselines run on the very connection the chat uses",
	"other load: CPUs that processes other than the benchmark and its server kept busy during the window (from /proc/stat); with a busy neighbour on a 2-CPU machine throughput drops and tails grow",
	"memory: RSS of the server process over its idle RSS, per connection (each with one open stream that answered a request) and per registration",
}

var allPhases = []string{"baseline", "rendezvous", "capacity", "chat", "mailbox", "files", "rooms"}

func parseFlags(args []string, stderr io.Writer) (config, string, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg config
	var capacity, phases, daemonArgs, rates, roomSizes string
	var jsonOut bool
	var format string
	fs.IntVar(&cfg.Clients, "clients", 1000, "concurrent client identities for the load phases (each with its own connection)")
	fs.DurationVar(&cfg.Duration, "duration", 5*time.Second, "measured time of each load phase")
	fs.DurationVar(&cfg.Warmup, "warmup", time.Second, "unmeasured time before each load phase")
	fs.Float64Var(&cfg.Mix, "mix", 0.1, "fraction of REGISTER in the mixed phase (the rest is DISCOVER)")
	fs.StringVar(&rates, "rate", "1000,10000", "comma-separated total request rates (per second) of the paced latency phases: 1,000/s is every one of 1,000 clients asking once a second, 10,000/s a stress; 0 skips them")
	fs.StringVar(&capacity, "capacity", "1000,10000", "comma-separated connection counts at which the daemon's memory is read")
	fs.IntVar(&cfg.DialPar, "dial-parallelism", 64, "handshakes in flight while connecting clients")
	fs.IntVar(&cfg.RecordAddrs, "record-addrs", 4, "addresses in each client's signed peer record (1-4)")
	fs.IntVar(&cfg.DiscoverLimit, "discover-limit", 10, "limit field of each DISCOVER")
	fs.IntVar(&cfg.ChatMessages, "chat-messages", 2000, "messages per chat measurement")
	fs.Int64Var(&cfg.FileSize, "file-size", 1<<30, "bytes of the file the files phase sends (TCP, QUIC, and the kill-at-half resume)")
	fs.IntVar(&cfg.FileRounds, "file-rounds", 2, "interleaved rounds of stream copy and transfer per transport in the files phase (the fastest of each counts)")
	fs.StringVar(&roomSizes, "room-sizes", "200,1000", "comma-separated member counts of the rooms phase (-short: 50)")
	fs.IntVar(&cfg.RoomGOGC, "room-gogc", 400, "GC percent (as GOGC) while the rooms phase runs: its members share one heap, which no real member has; 0 keeps the process's setting")
	fs.StringVar(&cfg.CPUProfile, "cpuprofile", "", "write a CPU profile of the rooms phase's measured messages in the largest room to this file (go tool pprof)")
	fs.StringVar(&cfg.Addr, "addr", "", "benchmark this running daemon (/ip4/127.0.0.1/tcp/…/p2p/…) instead of starting one")
	fs.IntVar(&cfg.DaemonPID, "daemon-pid", 0, "with -addr: the daemon's PID, to read its CPU and memory from /proc")
	fs.StringVar(&cfg.DaemonBin, "daemon-bin", "", "rendezvous daemon binary to start (default: go build ./cmd/rendezvous)")
	fs.StringVar(&daemonArgs, "daemon-args", "", "extra space-separated flags for the started daemon")
	fs.StringVar(&phases, "phases", strings.Join(allPhases, ","), "comma-separated phases to run: "+strings.Join(allPhases, ", "))
	fs.BoolVar(&cfg.Short, "short", false, "a few seconds in total with small numbers (CI: checks that everything runs, not timings)")
	fs.BoolVar(&jsonOut, "json", false, "print the report as JSON (same as -format json)")
	fs.StringVar(&format, "format", "table", "report format: table, json or markdown")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: bench [flags]\n\nLoad and latency benchmarks of the rendezvous daemon and the chat, on loopback,\neach beside a TCP and a libp2p echo baseline measured in the same run.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return cfg, "", err
	}
	if fs.NArg() > 0 {
		return cfg, "", fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if cfg.Short {
		short := map[string]func(){
			"clients":       func() { cfg.Clients = 50 },
			"duration":      func() { cfg.Duration = 300 * time.Millisecond },
			"warmup":        func() { cfg.Warmup = 100 * time.Millisecond },
			"rate":          func() { rates = "1000" },
			"capacity":      func() { capacity = "100,200" },
			"chat-messages": func() { cfg.ChatMessages = 50 },
			"file-size":     func() { cfg.FileSize = 16 << 20 },
			"file-rounds":   func() { cfg.FileRounds = 1 },
			"room-sizes":    func() { roomSizes = "50" },
		}
		for name, f := range short {
			if !set[name] {
				f()
			}
		}
	}
	for _, s := range strings.Split(capacity, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			return cfg, "", fmt.Errorf("invalid -capacity step %q", s)
		}
		cfg.Capacity = append(cfg.Capacity, n)
	}
	for _, s := range strings.Split(roomSizes, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < 2 {
			return cfg, "", fmt.Errorf("invalid -room-sizes entry %q (at least 2 members)", s)
		}
		cfg.RoomSizes = append(cfg.RoomSizes, n)
	}
	for _, s := range strings.Split(rates, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		r, err := strconv.ParseFloat(s, 64)
		if err != nil || r < 0 {
			return cfg, "", fmt.Errorf("invalid -rate %q", s)
		}
		if r > 0 {
			cfg.Rates = append(cfg.Rates, r)
		}
	}
	for _, p := range strings.Split(phases, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		known := p == "all"
		for _, a := range allPhases {
			known = known || a == p
		}
		if !known {
			return cfg, "", fmt.Errorf("unknown phase %q (want %s)", p, strings.Join(allPhases, ", "))
		}
		cfg.Phases = append(cfg.Phases, p)
	}
	cfg.DaemonArgs = strings.Fields(daemonArgs)
	switch {
	case cfg.Clients < 1:
		return cfg, "", errors.New("-clients must be at least 1")
	case cfg.Duration <= 0 || cfg.Warmup < 0:
		return cfg, "", errors.New("-duration must be positive and -warmup not negative")
	case cfg.Mix < 0 || cfg.Mix > 1:
		return cfg, "", errors.New("-mix must be within 0..1")
	case cfg.RecordAddrs < 1 || cfg.RecordAddrs > 4:
		return cfg, "", errors.New("-record-addrs must be within 1..4")
	case cfg.DiscoverLimit < 1:
		return cfg, "", errors.New("-discover-limit must be at least 1")
	case cfg.DialPar < 1:
		return cfg, "", errors.New("-dial-parallelism must be at least 1")
	case cfg.FileRounds < 1:
		return cfg, "", errors.New("-file-rounds must be at least 1")
	case cfg.FileSize < 1<<20:
		return cfg, "", errors.New("-file-size must be at least 1 MiB")
	case cfg.RoomGOGC < 0:
		return cfg, "", errors.New("-room-gogc must not be negative (0 keeps the process's setting)")
	case cfg.ChatMessages < 1:
		return cfg, "", errors.New("-chat-messages must be at least 1")
	}
	if jsonOut {
		format = "json"
	}
	switch format {
	case "table", "json", "markdown":
	default:
		return cfg, "", fmt.Errorf("unknown -format %q (want table, json or markdown)", format)
	}
	return cfg, format, nil
}

// fdsForAll reports whether this process may hold clients connections to
// each of the three load servers at once.
func fdsForAll(clients int) bool {
	lim := fileLimit()
	return lim == 0 || uint64(3*clients+256) <= lim
}

// run parses args, runs the phases and prints the report. It fails when a
// phase could not run or a request failed, never because of a timing.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, format, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	b, err := newBench(cfg, stderr)
	if err != nil {
		return err
	}
	defer b.close()
	b.rep.Command = "bench " + strings.Join(args, " ")
	if err := b.computeSizes(); err != nil {
		return err
	}
	if base, rdv := cfg.phase("baseline"), cfg.phase("rendezvous"); base && rdv && !fdsForAll(cfg.Clients) {
		// Too many connections to hold against all three servers at once:
		// measure the baselines first, then the daemon.
		b.rep.Notes = append(b.rep.Notes, fmt.Sprintf("%d clients per server exceed the open-file limit for three servers at once: baselines and daemon were measured one after the other", cfg.Clients))
		b.runLoadPhases(ctx, true, false)
		b.runLoadPhases(ctx, false, true)
	} else if base || rdv {
		b.runLoadPhases(ctx, base, rdv)
	}
	if cfg.phase("capacity") && ctx.Err() == nil {
		if cfg.phase("baseline") {
			b.runCapacityBaseline(ctx)
		}
		b.runCapacity(ctx)
	}
	if cfg.phase("chat") && ctx.Err() == nil {
		b.runChat(ctx)
	}
	if cfg.phase("mailbox") && ctx.Err() == nil {
		b.runMailbox(ctx) // mailbox.go
	}
	if cfg.phase("files") && ctx.Err() == nil {
		b.runFiles(ctx) // files.go
	}
	if cfg.phase("rooms") && ctx.Err() == nil {
		b.runRooms(ctx) // rooms.go
	}
	b.evaluate()
	b.rep.Notes = append(b.rep.Notes, explainNotes...)
	switch format {
	case "json":
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(b.rep); err != nil {
			return err
		}
	case "markdown":
		writeMarkdown(stdout, b.rep)
	default:
		writeTable(stdout, b.rep)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if len(b.rep.Errors) > 0 {
		return fmt.Errorf("%d part(s) failed: %s", len(b.rep.Errors), strings.Join(b.rep.Errors, "; "))
	}
	return nil
}
