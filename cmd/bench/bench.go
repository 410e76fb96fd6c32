package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"google.golang.org/protobuf/proto"

	"github.com/p2p-messaging/p2p-messaging/rendezvous/pb"
)

// config is what one run measures.
type config struct {
	Clients       int           `json:"clients"`
	Duration      time.Duration `json:"-"`
	Warmup        time.Duration `json:"-"`
	Mix           float64       `json:"register_fraction"`
	Rates         []float64     `json:"paced_rates"`
	Capacity      []int         `json:"capacity_steps"`
	DialPar       int           `json:"dial_parallelism"`
	RecordAddrs   int           `json:"record_addrs"`
	DiscoverLimit int           `json:"discover_limit"`
	ChatMessages  int           `json:"chat_messages"`
	FileSize      int64         `json:"file_size"` // files.go
	FileRounds    int           `json:"file_rounds"`
	RoomSizes     []int         `json:"room_sizes"` // rooms.go
	RoomGOGC      int           `json:"room_gogc"`
	CPUProfile    string        `json:"-"`
	Addr          string        `json:"addr,omitempty"`
	DaemonPID     int           `json:"-"`
	DaemonBin     string        `json:"-"`
	DaemonArgs    []string      `json:"daemon_args,omitempty"`
	Phases        []string      `json:"phases"`
	Short         bool          `json:"short"`

	DurationS float64 `json:"duration_s"`
	WarmupS   float64 `json:"warmup_s"`
}

func (c *config) phase(name string) bool {
	for _, p := range c.Phases {
		if p == name || p == "all" {
			return true
		}
	}
	return false
}

// result is one measured row.
type result struct {
	Group       string  `json:"group"` // baseline, rendezvous, chat
	Name        string  `json:"name"`
	Mode        string  `json:"mode"` // closed loop or paced at a rate
	Clients     int     `json:"clients"`
	Ops         int     `json:"ops"`
	OpsPerSec   float64 `json:"ops_per_sec"`
	P50         float64 `json:"p50_ms"`
	P99         float64 `json:"p99_ms"`
	Max         float64 `json:"max_ms"`
	Errors      int     `json:"errors"`
	FirstError  string  `json:"first_error,omitempty"`
	ServerCPUUS float64 `json:"server_cpu_us_per_op,omitempty"`
	ServerRSS   int64   `json:"server_rss_bytes,omitempty"`
	// ClientCPUUS is the load generator's own CPU per operation (this
	// process: clients, and for chat rows also the in-process nodes).
	ClientCPUUS float64 `json:"client_cpu_us_per_op,omitempty"`
	// OtherCores is how many CPUs other processes of the machine kept busy
	// on average during the window: a result measured beside a busy
	// neighbour is not comparable with one measured alone.
	OtherCores *float64 `json:"other_cores_busy,omitempty"`
	Baseline   string   `json:"baseline,omitempty"`
	RatioOf    string   `json:"ratio_of,omitempty"` // ops/s, p50, p99
	Ratio      float64  `json:"ratio,omitempty"`    // this / baseline
	Target     string   `json:"target,omitempty"`
	Pass       *bool    `json:"pass,omitempty"`
}

// memResult is one memory figure of the daemon.
type memResult struct {
	Name     string  `json:"name"`
	Count    int     `json:"count"` // connections or registrations
	RSSBytes int64   `json:"rss_bytes"`
	PerItem  float64 `json:"bytes_per_item"`
	Held     int     `json:"answered,omitempty"` // connections that answered a request after the step
	Server   string  `json:"server"`             // rendezvous or libp2p-echo
	// From the daemon's Go collector, when it serves metrics: goroutines
	// and heap/stack bytes per item over the idle daemon.
	Go            *goStats `json:"go,omitempty"`
	GoroutinesPer float64  `json:"goroutines_per_item,omitempty"`
	HeapPerItem   float64  `json:"heap_bytes_per_item,omitempty"`
	StackPerItem  float64  `json:"stack_bytes_per_item,omitempty"`
	Baseline      string   `json:"baseline,omitempty"`
	Ratio         float64  `json:"ratio,omitempty"` // bytes per item / the baseline's
	Target        string   `json:"target,omitempty"`
	Pass          *bool    `json:"pass,omitempty"`
	Note          string   `json:"note,omitempty"`
	Available     bool     `json:"available"`
}

// report is the whole run, as -json prints it.
type report struct {
	Time      string       `json:"time"`
	GoVersion string       `json:"go_version"`
	OS        string       `json:"os"`
	Arch      string       `json:"arch"`
	CPUs      int          `json:"cpus"`
	Command   string       `json:"command"`
	Config    config       `json:"config"`
	Sizes     msgSizes     `json:"message_sizes"`
	Results   []result     `json:"results"`
	Memory    []memResult  `json:"memory"`
	Files     *filesReport `json:"files,omitempty"`
	Notes     []string     `json:"notes,omitempty"`
	Errors    []string     `json:"errors,omitempty"`
}

// msgSizes are the rendezvous message sizes the echo baselines copy.
type msgSizes struct {
	DiscoverReq  int `json:"discover_request"`
	DiscoverResp int `json:"discover_response"`
	RegisterReq  int `json:"register_request"`
	RegisterResp int `json:"register_response"`
}

func boolp(b bool) *bool { return &b }

// bench runs the phases of one benchmark.
type bench struct {
	cfg    config
	rep    *report
	log    io.Writer // progress lines
	runTag string
	tmp    string
	nicks  int // rendezvous clients created so far
}

func newBench(cfg config, log io.Writer) (*bench, error) {
	var tag [4]byte
	_, _ = rand.Read(tag[:])
	tmp, err := os.MkdirTemp("", "p2p-bench-")
	if err != nil {
		return nil, err
	}
	cfg.DurationS = cfg.Duration.Seconds()
	cfg.WarmupS = cfg.Warmup.Seconds()
	return &bench{
		cfg:    cfg,
		log:    &lockedWriter{w: log},
		runTag: hex.EncodeToString(tag[:]),
		tmp:    tmp,
		rep: &report{
			Time:      time.Now().UTC().Format(time.RFC3339),
			GoVersion: runtime.Version(),
			OS:        runtime.GOOS,
			Arch:      runtime.GOARCH,
			CPUs:      runtime.NumCPU(),
			Config:    cfg,
		},
	}, nil
}

// lockedWriter serialises progress lines and daemon log lines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (b *bench) close() { os.RemoveAll(b.tmp) }

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.log, "bench: "+format+"\n", args...)
}

func (b *bench) fail(what string, err error) {
	b.logf("%s: %v", what, err)
	b.rep.Errors = append(b.rep.Errors, fmt.Sprintf("%s: %v", what, err))
}

func (b *bench) find(group, name string) *result {
	for i := range b.rep.Results {
		if b.rep.Results[i].Group == group && b.rep.Results[i].Name == name {
			return &b.rep.Results[i]
		}
	}
	return nil
}

// computeSizes fills the message sizes of a nick lookup and a registration.
func (b *bench) computeSizes() error {
	priv, err := newIdentity()
	if err != nil {
		return err
	}
	rec, err := signedRecord(priv, fakeAddrs(40000, b.cfg.RecordAddrs))
	if err != nil {
		return err
	}
	ns := b.nick(0)
	delim := func(m proto.Message) int {
		n := proto.Size(m)
		return n + len(protowireVarint(uint64(n)))
	}
	reg := registerMsg(ns, rec)
	b.rep.Sizes = msgSizes{
		DiscoverReq: delim(discoverMsg(ns, uint64(b.cfg.DiscoverLimit))),
		DiscoverResp: delim(&pb.Message{
			Type: pb.Message_DISCOVER_RESPONSE.Enum(),
			DiscoverResponse: &pb.Message_DiscoverResponse{
				Registrations: []*pb.Message_Register{reg.Register},
				Cookie:        make([]byte, 8+len(ns)),
				Status:        pb.Message_OK.Enum(),
			},
		}),
		RegisterReq: delim(reg),
		RegisterResp: delim(&pb.Message{
			Type: pb.Message_REGISTER_RESPONSE.Enum(),
			RegisterResponse: &pb.Message_RegisterResponse{
				Status: pb.Message_OK.Enum(), Ttl: proto.Uint64(benchTTL),
			},
		}),
	}
	return nil
}

func protowireVarint(v uint64) []byte {
	var b []byte
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

func (b *bench) nick(i int) string { return nickNS(b.runTag, i) }

// measure runs spec against srv and turns it into a row.
func (b *bench) measure(ctx context.Context, group, name string, srv *server, spec loadSpec) result {
	var before, after, selfB, selfA procSample
	var okB, okA bool
	var errB, errA error
	self := os.Getpid()
	var busyB, busyA, t0, t1 float64
	var errMB, errMA error
	spec.OnStart = func() {
		before, okB = srv.sample()
		selfB, errB = readProc(self)
		busyB, _, errMB = machineCPU()
		t0 = float64(time.Now().UnixNano()) / 1e9
	}
	spec.OnEnd = func() {
		after, okA = srv.sample()
		selfA, errA = readProc(self)
		busyA, _, errMA = machineCPU()
		t1 = float64(time.Now().UnixNano()) / 1e9
	}
	lr := runLoad(ctx, spec)
	r := result{
		Group: group, Name: name, Mode: "closed loop", Clients: lr.Clients,
		Ops: lr.Ops, OpsPerSec: lr.OpsPerSec,
		P50: lr.Latency.P50, P99: lr.Latency.P99, Max: lr.Latency.Max,
		Errors: lr.Errors, FirstError: lr.FirstErr,
	}
	if spec.Rate > 0 {
		r.Mode = fmt.Sprintf("paced %.0f/s", spec.Rate)
	}
	if okB && okA && lr.Ops > 0 {
		r.ServerCPUUS = (after.CPUSeconds - before.CPUSeconds) / float64(lr.Ops) * 1e6
		r.ServerRSS = after.RSSBytes
	}
	if errA == nil && errB == nil && lr.Ops > 0 {
		r.ClientCPUUS = (selfA.CPUSeconds - selfB.CPUSeconds) / float64(lr.Ops) * 1e6
	}
	if okA && okB && errA == nil && errB == nil && errMA == nil && errMB == nil && t1 > t0 {
		ours := (after.CPUSeconds - before.CPUSeconds) + (selfA.CPUSeconds - selfB.CPUSeconds)
		other := max(0, (busyA-busyB-ours)/(t1-t0))
		other = math.Round(other*100) / 100
		r.OtherCores = &other
	}
	b.logf("%-10s %-28s %-14s %8.0f ops/s  p50 %.3f ms  p99 %.3f ms  errors %d %s",
		group, name, r.Mode, r.OpsPerSec, r.P50, r.P99, r.Errors, r.FirstError)
	b.rep.Results = append(b.rep.Results, r)
	return r
}

func (b *bench) spec(ops []opFunc, rate float64) loadSpec {
	return loadSpec{Clients: ops, Warmup: b.cfg.Warmup, Duration: b.cfg.Duration, Rate: rate}
}

// echoClients connects cfg.Clients echo clients: plain TCP connections, or
// lightweight libp2p connections with one echo stream each.
func (b *bench) echoClients(ctx context.Context, srv *server, kind string) ([]io.ReadWriter, func(), error) {
	n := b.cfg.Clients
	rws := make([]io.ReadWriter, n)
	if kind == "tcp" {
		closers := make([]io.Closer, 0, n)
		closeFn := func() {
			for _, c := range closers {
				c.Close()
			}
		}
		for i := range n {
			var d netDialer
			c, err := d.dial(ctx, srv.HostPort)
			if err != nil {
				closeFn()
				return nil, nil, err
			}
			closers = append(closers, c)
			rws[i] = c
		}
		return rws, closeFn, nil
	}
	conns, streams, err := connectLite(ctx, srv, n, b.cfg.DialPar, b.cfg.RecordAddrs, EchoProtocolID)
	if err != nil {
		return nil, nil, err
	}
	for i, s := range streams {
		rws[i] = s
	}
	return rws, func() {
		for _, s := range streams {
			s.Reset()
		}
		closeAll(conns)
	}, nil
}

var _ network.MuxedStream
