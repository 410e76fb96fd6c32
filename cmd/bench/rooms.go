package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/metrics"
	"github.com/libp2p/go-libp2p/core/peer"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"

	"github.com/p2p-messaging/p2p-messaging/chat"
)

// The rooms phase (issue 9): a room of N members on loopback, each a real
// libp2p host (TCP, Noise, yamux, several per process) running the chat's
// own services (chat.New: GossipSub with strict signing, scoring and the
// room validator, bbolt history, history sync). Members find each other
// through a documented bootstrap, the shape of a rendezvous DISCOVER
// answer: each new member dials roomBootstrap random members already in
// the room. Every message is counted at every member (100 % or the
// missing receipts are reported), p50/p99 are the time from the send to
// the last member's receipt, one message at a time (so queueing does not
// hide in them). Beside it, in the same run and on the same hosts, one
// member sends the same text as N-1 direct messages (the chat protocol,
// acknowledged), timed from the first Send to the last receipt.
// Then a late joiner catches up on roomHistoryN messages by history sync:
// time and bytes on the history protocol.

const (
	roomBootstrap  = 4    // members a new member dials
	roomHistoryN   = 1000 // messages a late joiner catches up on
	roomDeliverMax = 30 * time.Second
)

// roomMember is one bench member: a host, a chat node and its receipts.
type roomMember struct {
	h    host.Host
	n    *chat.Node
	bw   *metrics.BandwidthCounter
	mu   sync.Mutex
	got  map[string]time.Time // message ID -> first receipt
	seen atomic.Int64
	done chan struct{}
}

func newRoomMember(ctx context.Context, dir, nick, room string, size int, fast bool) (*roomMember, error) {
	bw := metrics.NewBandwidthCounter()
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(rcmgr.InfiniteLimits))
	if err != nil {
		return nil, err
	}
	// The direct fan-out holds a connection to every member: the default
	// connection manager (160 low, 192 high) would trim most of them.
	cm, err := connmgr.NewConnManager(size+160, size+192)
	if err != nil {
		return nil, err
	}
	h, err := libp2p.New(
		libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
		libp2p.ResourceManager(rm),
		libp2p.ConnectionManager(cm),
		libp2p.BandwidthReporter(bw),
		libp2p.DisableMetrics(),
	)
	if err != nil {
		return nil, fmt.Errorf("member host: %w", err)
	}
	cfg := chat.Config{
		Nick:    nick,
		Room:    room,
		DataDir: dir,
		Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if fast {
		// The history rows post roomHistoryN messages as fast as they go.
		cfg.RoomRate, cfg.RoomBurst = 1e6, 1e6
	}
	n, err := chat.New(h, cfg)
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("member %s: %w", nick, err)
	}
	m := &roomMember{h: h, n: n, bw: bw, got: map[string]time.Time{}, done: make(chan struct{})}
	go m.pump()
	if err := n.Start(ctx); err != nil {
		m.close()
		return nil, err
	}
	return m, nil
}

func (m *roomMember) pump() {
	defer close(m.done)
	for ev := range m.n.Events() {
		e, ok := ev.(chat.EventMessage)
		if !ok {
			continue
		}
		now := time.Now()
		m.mu.Lock()
		_, dup := m.got[e.Message.ID]
		if !dup {
			m.got[e.Message.ID] = now
		}
		m.mu.Unlock()
		if !dup {
			m.seen.Add(1)
		}
	}
}

// waitReceipts waits until every member has one of ids (any of them
// for a room message; for direct sends, member i gets ids[i]), at most
// roomDeliverMax, and returns the last receipt time and how many are
// missing. Receipt times are the members' own (taken as the event came),
// so how often this looks does not change them.
func waitReceipts(ctx context.Context, ms []*roomMember, ids []string) (time.Time, int) {
	deadline := time.Now().Add(roomDeliverMax)
	if len(ids) > 1 {
		deadline = deadline.Add(roomDeliverMax) // n-1 sends first
	}
	var last time.Time
	pending := append([]*roomMember(nil), ms...)
	idx := make(map[*roomMember]string, len(ms))
	for i, m := range ms {
		if len(ids) == 1 {
			idx[m] = ids[0]
		} else {
			idx[m] = ids[i]
		}
	}
	for {
		rest := pending[:0]
		for _, m := range pending {
			m.mu.Lock()
			at, ok := m.got[idx[m]]
			m.mu.Unlock()
			if !ok {
				rest = append(rest, m)
				continue
			}
			if at.After(last) {
				last = at
			}
		}
		pending = rest
		if len(pending) == 0 || time.Now().After(deadline) || ctx.Err() != nil {
			return last, len(pending)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (m *roomMember) close() {
	m.n.Close()
	<-m.done
	m.h.Close()
}

func (m *roomMember) info() peer.AddrInfo { return peer.AddrInfo{ID: m.h.ID(), Addrs: m.h.Addrs()} }

// roomDir is where the members' databases go: tmpfs when there is one
// (a thousand fsync'd bbolt files on one disk would measure the disk).
func (b *bench) roomDir() (string, string, error) {
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		d, err := os.MkdirTemp("/dev/shm", "p2p-bench-rooms-")
		return d, "tmpfs (/dev/shm)", err
	}
	d, err := mkdirTemp(b.tmp, "rooms-")
	return d, "$TMPDIR", err
}

func (b *bench) runRooms(ctx context.Context) {
	// A thousand members in one process share one heap of about 1.5 GiB:
	// with Go's default GOGC=100 each collection of it slows every member
	// at once for about half a second, which is the bench's doing (a real
	// member is a process of its own with a heap of a few MiB, whose
	// collections take microseconds). So the phase collects less often,
	// and once just before each room's measured messages.
	if b.cfg.RoomGOGC > 0 {
		old := debug.SetGCPercent(b.cfg.RoomGOGC)
		defer debug.SetGCPercent(old)
		b.rep.Notes = append(b.rep.Notes, fmt.Sprintf("rooms phase: GC percent %d (-room-gogc; the process had %d): the members share one heap that no real member has; -room-gogc 0 keeps the process's setting", b.cfg.RoomGOGC, old))
	}
	for _, n := range b.cfg.RoomSizes {
		if ctx.Err() != nil {
			return
		}
		b.roomRows(ctx, n)
	}
	if ctx.Err() == nil {
		b.historyRow(ctx)
	}
}

// roomRows measures a room of n members and the same fan-out as direct sends.
func (b *bench) roomRows(ctx context.Context, n int) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()
	dir, where, err := b.roomDir()
	if err != nil {
		b.fail("rooms dir", err)
		return
	}
	defer os.RemoveAll(dir)
	room := "bench-" + b.runTag
	runtime.GC()
	before, _ := readProc(os.Getpid())
	setup := time.Now()
	members := make([]*roomMember, 0, n)
	defer func() {
		var wg sync.WaitGroup
		sem := make(chan struct{}, 32)
		for _, m := range members {
			wg.Add(1)
			sem <- struct{}{}
			go func() { defer wg.Done(); m.close(); <-sem }()
		}
		wg.Wait()
	}()
	for i := range n {
		d, err := mkdirTemp(dir, "m-")
		if err != nil {
			b.fail("rooms", err)
			return
		}
		m, err := newRoomMember(ctx, d, fmt.Sprintf("m%d", i), room, n, false)
		if err != nil {
			b.fail("rooms member", err)
			return
		}
		// The bootstrap: a few members already in the room.
		for _, j := range rand.Perm(len(members))[:min(roomBootstrap, len(members))] {
			if err := m.h.Connect(ctx, members[j].info()); err != nil {
				b.fail("rooms bootstrap", err)
				return
			}
		}
		members = append(members, m)
	}
	b.logf("rooms: %d members up in %s", n, time.Since(setup).Round(time.Millisecond))

	post := func(from int) (time.Duration, int, error) {
		start := time.Now()
		msg, err := members[from].n.SendRoom(ctx, room, chatText)
		if err != nil {
			return 0, n - 1, err
		}
		others := make([]*roomMember, 0, n-1)
		for i, m := range members {
			if i != from {
				others = append(others, m)
			}
		}
		last, left := waitReceipts(ctx, others, []string{msg.ID})
		return last.Sub(start), left, nil
	}

	// Warm-up until one message reaches everybody (the mesh has formed).
	warm := time.Now()
	for {
		_, missing, err := post(0)
		if err != nil {
			b.fail("rooms warm-up", err)
			return
		}
		if missing == 0 {
			break
		}
		if time.Since(warm) > 2*time.Minute {
			b.fail("rooms warm-up", fmt.Errorf("a message still misses %d of %d members after 2 min", missing, n-1))
			return
		}
	}
	b.logf("rooms: %d members: mesh formed in %s", n, time.Since(warm).Round(time.Millisecond))
	mid, _ := readProc(os.Getpid())

	// What n idle members cost (heartbeats, pings, scans): measured, then
	// taken off the per-message CPU.
	idle0, _ := readProc(os.Getpid())
	idleStart := time.Now()
	time.Sleep(3 * time.Second)
	idle1, _ := readProc(os.Getpid())
	idleCores := (idle1.CPUSeconds - idle0.CPUSeconds) / time.Since(idleStart).Seconds()

	msgs := b.roomMessages()
	var lat Latencies
	missing := 0
	stopProfile := func() {}
	if b.cfg.CPUProfile != "" && n == slices.Max(b.cfg.RoomSizes) {
		stop, err := startProfile(b.cfg.CPUProfile)
		if err != nil {
			b.fail("rooms -cpuprofile", err)
			return
		}
		stopProfile = sync.OnceFunc(stop)
		defer stopProfile()
	}
	// Collect now (the idle window above allocated little): with the
	// GC percent of -room-gogc the next collection of the shared heap
	// then falls after the measured messages, as testing.B collects
	// before each benchmark.
	if b.cfg.RoomGOGC > 0 {
		runtime.GC()
	}
	cpu0, _ := readProc(os.Getpid())
	t0 := time.Now()
	for i := range msgs {
		d, miss, err := post(1 + i%min(10, n-1))
		if err != nil {
			b.fail("rooms send", err)
			return
		}
		missing += miss
		if miss == 0 {
			lat.Add(d)
		} else {
			lat.Add(roomDeliverMax)
		}
	}
	elapsed := time.Since(t0)
	cpu1, _ := readProc(os.Getpid())
	stopProfile()
	receipts := msgs * (n - 1)
	s := lat.Summarize()
	busy := max(cpu1.CPUSeconds-cpu0.CPUSeconds-idleCores*elapsed.Seconds(), 0)
	cpuPerMsgMember := busy * 1e6 / float64(receipts)
	roomRow := result{Group: "rooms", Name: fmt.Sprintf("room of %d: send → last member", n),
		Mode:    fmt.Sprintf("%d msgs, %d/%d receipts (%.1f %%)", msgs, receipts-missing, receipts, 100*float64(receipts-missing)/float64(receipts)),
		Clients: n, Ops: msgs, OpsPerSec: float64(msgs) / elapsed.Seconds(), P50: s.P50, P99: s.P99, Max: s.Max,
		Errors: missing, ClientCPUUS: cpuPerMsgMember}
	b.logf("rooms: %d members: room p50 %.1f ms p99 %.1f ms, %d missing (direct sends next)", n, s.P50, s.P99, missing)
	if n >= 1000 {
		pass := missing == 0 && s.P99 < 1000
		roomRow.Target, roomRow.Pass = "100 % delivered, p99 < 1 s", &pass
	}

	// The same fan-out as direct messages from member 0, on the same hosts.
	sender := members[0]
	for _, m := range members[1:] {
		sender.h.Peerstore().AddAddrs(m.h.ID(), m.h.Addrs(), time.Hour)
		if _, err := m.n.Allow(sender.h.ID().String()); err != nil {
			b.fail("rooms direct allow", err)
			return
		}
	}
	direct := func() (time.Duration, int, error) {
		start := time.Now()
		ids := make([]string, 0, n-1)
		for _, m := range members[1:] {
			msg, err := sender.n.Send(ctx, m.h.ID().String(), chatText)
			if err != nil {
				return 0, n - 1, err
			}
			ids = append(ids, msg.ID)
		}
		last, left := waitReceipts(ctx, members[1:], ids)
		return last.Sub(start), left, nil
	}
	if _, _, err := direct(); err != nil { // warm-up: connections and streams
		b.fail("rooms direct warm-up", err)
		return
	}
	dmsgs := min(msgs, 5)
	var dlat Latencies
	dmissing := 0
	d0 := time.Now()
	for range dmsgs {
		d, miss, err := direct()
		if err != nil {
			b.fail("rooms direct", err)
			return
		}
		dmissing += miss
		dlat.Add(d)
	}
	delapsed := time.Since(d0)
	ds := dlat.Summarize()
	dreceipts := dmsgs * (n - 1)
	directRow := result{Group: "rooms", Name: fmt.Sprintf("%d direct sends from one peer → last receipt", n-1),
		Mode:    fmt.Sprintf("%d fan-outs, %d/%d receipts", dmsgs, dreceipts-dmissing, dreceipts),
		Clients: n, Ops: dmsgs, OpsPerSec: float64(dmsgs) / delapsed.Seconds(), P50: ds.P50, P99: ds.P99, Max: ds.Max, Errors: dmissing}
	roomRow.Baseline, roomRow.RatioOf = directRow.Name, "p99"
	if ds.P99 > 0 {
		roomRow.Ratio = s.P99 / ds.P99
	}
	b.rep.Results = append(b.rep.Results, directRow, roomRow)
	memPer := float64(mid.RSSBytes-before.RSSBytes) / float64(n)
	b.rep.Notes = append(b.rep.Notes, fmt.Sprintf("room of %d: %.1f MiB RSS per member (host + chat node + bbolt on %s); idle, the %d members keep %.2f CPUs busy (%.0f µs/s each); a message costs %.0f µs CPU per member beyond that (the row's client CPU); %.1f room messages/s one at a time (%d receipts/s)",
		n, memPer/(1<<20), where, n, idleCores, idleCores*1e6/float64(n), cpuPerMsgMember, float64(msgs)/elapsed.Seconds(), int(float64(receipts-missing)/elapsed.Seconds())))
	b.logf("rooms: %d members: p50 %.1f ms p99 %.1f ms, %d missing; direct p99 %.1f ms", n, s.P50, s.P99, missing, ds.P99)
}

// startProfile starts a CPU profile into path; stop ends it and closes
// the file.
func startProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

func (b *bench) roomMessages() int {
	if b.cfg.Short {
		return 5
	}
	return 30
}

// historyRow: a member with roomHistoryN messages, a late joiner that
// catches up on them by history sync.
func (b *bench) historyRow(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	dir, where, err := b.roomDir()
	if err != nil {
		b.fail("history dir", err)
		return
	}
	defer os.RemoveAll(dir)
	room := "hist-" + b.runTag
	mk := func(name string) (*roomMember, error) {
		d, err := mkdirTemp(dir, name+"-")
		if err != nil {
			return nil, err
		}
		return newRoomMember(ctx, d, name, room, 2, true)
	}
	old, err := mk("old")
	if err != nil {
		b.fail("history member", err)
		return
	}
	defer old.close()
	for i := range roomHistoryN {
		if _, err := old.n.SendRoom(ctx, room, fmt.Sprintf("%s %d", chatText, i)); err != nil {
			b.fail("history post", err)
			return
		}
	}
	late, err := mk("late")
	if err != nil {
		b.fail("history joiner", err)
		return
	}
	defer late.close()
	in0 := late.bw.GetBandwidthTotals().TotalIn
	start := time.Now()
	if err := late.h.Connect(ctx, old.info()); err != nil {
		b.fail("history connect", err)
		return
	}
	for late.seen.Load() < roomHistoryN && ctx.Err() == nil && time.Since(start) < 2*time.Minute {
		select {
		case <-time.After(5 * time.Millisecond):
		case <-ctx.Done():
		}
	}
	took := time.Since(start)
	got := int(late.seen.Load())
	// The bandwidth meters are swept once a second: read them once they
	// stopped moving.
	var st metrics.Stats
	all := int64(-1)
	for range 10 {
		time.Sleep(1100 * time.Millisecond)
		now := late.bw.GetBandwidthTotals().TotalIn - in0
		if now == all && now > 0 {
			break
		}
		all = now
	}
	st = late.bw.GetBandwidthForProtocol(chat.RoomHistoryProtocol)
	b.rep.Results = append(b.rep.Results, result{Group: "rooms", Name: fmt.Sprintf("late joiner catches up on %d messages (history sync)", roomHistoryN),
		Mode: fmt.Sprintf("%d/%d shown, %d B in on all protocols (%d B metered on %s)", got, roomHistoryN, all, st.TotalIn, chat.RoomHistoryProtocol),
		Ops:  got, P50: ms(took), P99: ms(took), Max: ms(took), Errors: roomHistoryN - got})
	b.rep.Notes = append(b.rep.Notes, fmt.Sprintf("history catch-up: from the connect to the last of %d messages shown: the TCP+Noise+yamux handshake, identify, GossipSub's hello, the sync and the commit of every message (bbolt on %s); %.0f bytes received per message, all protocols counted",
		roomHistoryN, where, float64(all)/float64(max(got, 1))))
	b.logf("rooms: history catch-up of %d: %s, %d bytes", got, took.Round(time.Millisecond), all)
}
