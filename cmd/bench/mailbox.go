package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"

	"github.com/p2p-messaging/p2p-messaging/chat"
	"github.com/p2p-messaging/p2p-messaging/rendezvous/mailbox"
)

// The mailbox phase (issue 10): deposits/s and fetch-and-delete/s on warm
// connections to the daemon, beside a libp2p echo that, like the mailbox
// protocol, opens a new stream per request on a warm connection and moves
// deposit-sized bytes; then the daemon's memory and disk per stored
// deposit, and the time a recipient with 1000 waiting deposits takes to
// catch up (fetch and delete, pages of 64).

// mailboxArgs open the daemon's mailbox quotas and rate for load.
var mailboxArgs = []string{
	"-mailbox-rate", "1000000000", "-mailbox-burst", "1000000000",
	"-mailbox-max-per-recipient", "100000000", "-mailbox-max-per-sender-per-recipient", "100000000",
	"-mailbox-max-bytes-per-recipient", "64GiB", "-mailbox-max-bytes-per-sender", "64GiB",
	"-mailbox-max-store-size", "64GiB",
}

const (
	mailboxCatchUp = 1000
	benchTextLen   = 200 // bytes of text in each benchmark letter
)

// mbClient is one full libp2p host with warm connections to the daemon and
// the echo server.
type mbClient struct {
	h   host.Host
	cl  *mailbox.Client
	box []byte // a real sealed box; its tail is varied per deposit
	n   atomic.Uint64
}

// uniqueBox returns the client's box with a counter in its last bytes: the
// same size, a different digest, so the daemon stores every one (it does
// not open boxes; only the recipient would notice).
func (c *mbClient) uniqueBox() []byte {
	b := append([]byte(nil), c.box...)
	binary.BigEndian.PutUint64(b[len(b)-8:], c.n.Add(1))
	return b
}

func newMBHost(ctx context.Context, priv crypto.PrivKey, targets ...peer.AddrInfo) (host.Host, error) {
	opts := []libp2p.Option{libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay(), libp2p.DisableMetrics()}
	if priv != nil {
		opts = append(opts, libp2p.Identity(priv))
	}
	h, err := libp2p.New(opts...)
	if err != nil {
		return nil, err
	}
	for _, t := range targets {
		cctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
		err := h.Connect(cctx, t)
		cancel()
		if err != nil {
			h.Close()
			return nil, err
		}
	}
	return h, nil
}

func infoOf(s *server) peer.AddrInfo {
	ai := peer.AddrInfo{ID: s.ID}
	if s.Addr != nil {
		if t, _ := peer.SplitAddr(s.Addr); t != nil {
			ai.Addrs = append(ai.Addrs, t)
		}
	}
	return ai
}

func (b *bench) runMailbox(ctx context.Context) {
	if b.cfg.Addr != "" {
		b.rep.Notes = append(b.rep.Notes, "mailbox phase skipped with -addr: it starts its own daemon to read its data dir")
		return
	}
	if b.cfg.DaemonBin == "" {
		bin, err := buildDaemon(ctx, b.tmp)
		if err != nil {
			b.fail("mailbox: build daemon", err)
			return
		}
		b.cfg.DaemonBin = bin
	}
	dir, err := mkdirTemp(b.tmp, "daemon-mailbox-")
	if err != nil {
		b.fail("mailbox", err)
		return
	}
	srv, err := startDaemon(ctx, b.cfg.DaemonBin, dir, append(append([]string{}, mailboxArgs...), b.cfg.DaemonArgs...), b.log)
	if err != nil {
		b.fail("mailbox: start daemon", err)
		return
	}
	defer srv.Close()
	echo, err := startChild(ctx, "libp2p")
	if err != nil {
		b.fail("mailbox: echo server", err)
		return
	}
	defer echo.Close()
	echoAI := peer.AddrInfo{ID: echo.ID}
	if a, err := manetFromHostPort(echo.HostPort); err == nil {
		echoAI.Addrs = append(echoAI.Addrs, a)
	}

	nc := min(b.cfg.Clients, 16)
	// Recipients are offline during the deposits (no push notices), and
	// come online to fetch.
	recipKeys := make([]crypto.PrivKey, nc)
	for i := range recipKeys {
		recipKeys[i], _, _ = crypto.GenerateEd25519Key(rand.Reader)
	}
	recipID := func(i int) peer.ID { id, _ := peer.IDFromPrivateKey(recipKeys[i]); return id }
	clients := make([]*mbClient, nc)
	defer func() {
		for _, c := range clients {
			if c != nil {
				c.h.Close()
			}
		}
	}()
	for i := range clients {
		h, err := newMBHost(ctx, nil, infoOf(srv), echoAI)
		if err != nil {
			b.fail("mailbox: connect client", err)
			return
		}
		box, err := mailbox.Seal(h.Peerstore().PrivKey(h.ID()), recipID(i), mailbox.Letter{
			Kind: mailbox.KindMessage, ID: make([]byte, mailbox.MessageIDLen), Time: time.Now(),
			Nick: "bench", Text: benchText()})
		if err != nil {
			b.fail("mailbox: seal", err)
			return
		}
		clients[i] = &mbClient{h: h, cl: mailbox.NewClient(h, 0), box: box}
	}
	reqSize := len(clients[0].box) + 48 // a DEPOSIT request with its recipient
	const respSize = 20                 // status and a deposit ID

	// Floor: a libp2p echo of deposit-sized bytes on a new stream per
	// request, on a warm connection, as the mailbox protocol does.
	echoOps := make([]opFunc, nc)
	for i, c := range clients {
		req := echoRequest(reqSize, respSize)
		echoOps[i] = func(*mrand.Rand) error {
			ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			s, err := c.h.NewStream(ctx, echo.ID, EchoProtocolID)
			if err != nil {
				return err
			}
			ec := &echoClient{rw: s, br: bufio.NewReader(s), req: req}
			if err := ec.do(); err != nil {
				s.Reset()
				return err
			}
			return s.Close()
		}
	}
	b.measure(ctx, "mailbox", "libp2p-echo new stream, deposit-sized", echo, b.spec(echoOps, 0))

	idle, idleOK := srv.sample()
	var deposited atomic.Int64
	depOps := make([]opFunc, nc)
	for i, c := range clients {
		to := recipID(i)
		depOps[i] = func(*mrand.Rand) error {
			ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			if _, err := c.cl.Deposit(ctx, srv.ID, to, c.uniqueBox()); err != nil {
				return err
			}
			deposited.Add(1)
			return nil
		}
	}
	b.measure(ctx, "mailbox", "DEPOSIT", srv, b.spec(depOps, 0))
	held := deposited.Load()
	if after, ok := srv.sample(); ok && idleOK && held > 0 {
		rss := after.RSSBytes - idle.RSSBytes
		b.rep.Memory = append(b.rep.Memory, memResult{Name: "mailbox: RSS per stored deposit", Server: "rendezvous",
			Count: int(held), RSSBytes: after.RSSBytes, PerItem: float64(rss) / float64(held), Available: true,
			Note: fmt.Sprintf("%d-byte text, %d-byte sealed box", benchTextLen, len(clients[0].box))})
	}
	if st, err := os.Stat(filepath.Join(dir, mailbox.DBFileName)); err == nil && held > 0 {
		b.rep.Memory = append(b.rep.Memory, memResult{Name: "mailbox: disk per stored deposit (mailbox.db)", Server: "rendezvous",
			Count: int(held), RSSBytes: st.Size(), PerItem: float64(st.Size()) / float64(held), Available: true,
			Note: "bbolt file size over deposits held; the file grows in steps and keeps freed pages for reuse"})
	}

	// The recipients come online and fetch-and-delete one deposit per op.
	recips := make([]*mbClient, nc)
	defer func() {
		for _, c := range recips {
			if c != nil {
				c.h.Close()
			}
		}
	}()
	for i := range recips {
		h, err := newMBHost(ctx, recipKeys[i], infoOf(srv))
		if err != nil {
			b.fail("mailbox: connect recipient", err)
			return
		}
		recips[i] = &mbClient{h: h, cl: mailbox.NewClient(h, 0)}
	}
	b.mailboxDrain(ctx, srv, recips, held)

	b.mailboxCatchUp(ctx, srv, clients)
	b.mailboxChatCatchUp(ctx, srv)
}

// mailboxDrain measures fetch-and-delete: every recipient fetches one
// deposit and deletes it, closed loop, until all it holds are gone (a
// fixed amount of work: the deposit window decided how much).
func (b *bench) mailboxDrain(ctx context.Context, srv *server, recips []*mbClient, held int64) {
	lats := make([]Latencies, len(recips))
	var errs atomic.Int64
	var first atomic.Pointer[error]
	var wg sync.WaitGroup
	before, okB := srv.sample()
	start := time.Now()
	for i, c := range recips {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				t0 := time.Now()
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				deps, _, err := c.cl.Fetch(cctx, srv.ID, 1)
				if err == nil && len(deps) == 1 {
					_, err = c.cl.Delete(cctx, srv.ID, [][]byte{deps[0].ID})
				}
				cancel()
				if err != nil {
					errs.Add(1)
					first.CompareAndSwap(nil, &err)
					return
				}
				if len(deps) == 0 {
					return // drained
				}
				lats[i].Add(time.Since(t0))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	after, okA := srv.sample()
	var all Latencies
	for i := range lats {
		all.Merge(&lats[i])
	}
	s := all.Summarize()
	r := result{Group: "mailbox", Name: "FETCH+DELETE (2 requests)", Mode: "closed loop, until drained",
		Clients: len(recips), Ops: all.Len(), P50: s.P50, P99: s.P99, Max: s.Max, Errors: int(errs.Load())}
	if elapsed > 0 {
		r.OpsPerSec = float64(all.Len()) / elapsed.Seconds()
	}
	if e := first.Load(); e != nil {
		r.FirstError = (*e).Error()
	}
	if okA && okB && all.Len() > 0 {
		r.ServerCPUUS = (after.CPUSeconds - before.CPUSeconds) / float64(all.Len()) * 1e6
		r.ServerRSS = after.RSSBytes
	}
	if int64(all.Len()) != held {
		r.Errors++
		if r.FirstError == "" {
			r.FirstError = fmt.Sprintf("fetched %d of %d deposited", all.Len(), held)
		}
	}
	b.logf("%-10s %-28s %-14s %8.0f ops/s  p50 %.3f ms  p99 %.3f ms  errors %d %s",
		r.Group, r.Name, r.Mode, r.OpsPerSec, r.P50, r.P99, r.Errors, r.FirstError)
	b.rep.Results = append(b.rep.Results, r)
}

// mailboxCatchUp times a recipient with mailboxCatchUp waiting deposits
// fetching and deleting them all.
func (b *bench) mailboxCatchUp(ctx context.Context, srv *server, clients []*mbClient) {
	key, _, _ := crypto.GenerateEd25519Key(rand.Reader)
	to, _ := peer.IDFromPrivateKey(key)
	var wg sync.WaitGroup
	var failed atomic.Pointer[error]
	per := (mailboxCatchUp + len(clients) - 1) / len(clients)
	var made atomic.Int64
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range per {
				if made.Add(1) > mailboxCatchUp {
					return
				}
				if _, err := c.cl.Deposit(ctx, srv.ID, to, c.uniqueBox()); err != nil {
					failed.CompareAndSwap(nil, &err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if e := failed.Load(); e != nil {
		b.fail("mailbox catch-up: deposit", *e)
		return
	}
	h, err := newMBHost(ctx, key, infoOf(srv))
	if err != nil {
		b.fail("mailbox catch-up: connect", err)
		return
	}
	defer h.Close()
	cl := mailbox.NewClient(h, 0)
	var pageLat Latencies
	start := time.Now()
	got := 0
	for {
		t0 := time.Now()
		deps, more, err := cl.Fetch(ctx, srv.ID, 64)
		if err != nil {
			b.fail("mailbox catch-up: fetch", err)
			return
		}
		ids := make([][]byte, len(deps))
		for i, d := range deps {
			ids[i] = d.ID
		}
		if len(ids) > 0 {
			if _, err := cl.Delete(ctx, srv.ID, ids); err != nil {
				b.fail("mailbox catch-up: delete", err)
				return
			}
		}
		pageLat.Add(time.Since(t0))
		got += len(deps)
		if !more {
			break
		}
	}
	elapsed := time.Since(start)
	s := pageLat.Summarize()
	r := result{Group: "mailbox", Name: fmt.Sprintf("catch-up: %d waiting, fetch+delete pages of 64", mailboxCatchUp),
		Mode: fmt.Sprintf("one recipient, %.1f ms total", float64(elapsed.Microseconds())/1000), Clients: 1, Ops: got,
		OpsPerSec: float64(got) / elapsed.Seconds(), P50: s.P50, P99: s.P99, Max: s.Max}
	if got != mailboxCatchUp {
		r.Errors, r.FirstError = 1, fmt.Sprintf("fetched %d of %d", got, mailboxCatchUp)
	}
	b.logf("%-10s %-28s %s: %d deposits in %s", "mailbox", "catch-up", r.Mode, got, elapsed)
	b.rep.Results = append(b.rep.Results, r)
}

// evaluateMailbox sets the mailbox rows' ratios to the echo floor.
func (b *bench) evaluateMailbox() {
	var floor *result
	for i := range b.rep.Results {
		if r := &b.rep.Results[i]; r.Group == "mailbox" && r.Name == "libp2p-echo new stream, deposit-sized" {
			floor = r
		}
	}
	if floor == nil || floor.OpsPerSec == 0 {
		return
	}
	for i := range b.rep.Results {
		r := &b.rep.Results[i]
		if r.Group != "mailbox" || r == floor || r.Clients == 1 {
			continue
		}
		r.Baseline, r.RatioOf, r.Ratio = floor.Name, "ops/s", r.OpsPerSec/floor.OpsPerSec
	}
}

// manetFromHostPort turns a loopback host:port into a TCP multiaddr.
func manetFromHostPort(hp string) (multiaddr.Multiaddr, error) {
	host, port, err := net.SplitHostPort(hp)
	if err != nil {
		return nil, err
	}
	return multiaddr.NewMultiaddr("/ip4/" + host + "/tcp/" + port)
}

func benchText() string {
	b := make([]byte, benchTextLen)
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	return string(b)
}

// mailboxChatCatchUp times a real chat node coming online to
// mailboxCatchUp sealed messages from a contact waiting on the daemon: from
// Start until the last EventMessage (open, verify, store with group
// commits, delete, receipts).
func (b *bench) mailboxChatCatchUp(ctx context.Context, srv *server) {
	dir, err := mkdirTemp(b.tmp, "chat-catchup-")
	if err != nil {
		b.fail("mailbox chat catch-up", err)
		return
	}
	senderKey, _, _ := crypto.GenerateEd25519Key(rand.Reader)
	sender, _ := peer.IDFromPrivateKey(senderKey)
	open := func() (*chat.Peer, error) {
		return chat.Open(chat.HostConfig{ListenAddrs: []multiaddr.Multiaddr{multiaddr.StringCast("/ip4/127.0.0.1/tcp/0")}},
			chat.Config{Nick: "catchup" + b.runTag, Room: "catchup" + b.runTag, DataDir: dir,
				Rendezvous: []peer.AddrInfo{infoOf(srv)}, Logger: slog.New(slog.DiscardHandler)})
	}
	p, err := open()
	if err != nil {
		b.fail("mailbox chat catch-up: open", err)
		return
	}
	recip := p.Node.ID()
	_, err = p.Node.Allow(sender.String()) // a contact: its messages go to the conversation
	p.Close()
	if err != nil {
		b.fail("mailbox chat catch-up: allow", err)
		return
	}

	h, err := newMBHost(ctx, senderKey, infoOf(srv))
	if err != nil {
		b.fail("mailbox chat catch-up: sender", err)
		return
	}
	defer h.Close()
	cl := mailbox.NewClient(h, 0)
	now := time.Now()
	var wg sync.WaitGroup
	var failed atomic.Pointer[error]
	next := atomic.Int64{}
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= mailboxCatchUp {
					return
				}
				id := make([]byte, mailbox.MessageIDLen)
				_, _ = rand.Read(id)
				box, err := mailbox.Seal(senderKey, recip, mailbox.Letter{Kind: mailbox.KindMessage, ID: id, Time: now, Text: benchText()})
				if err == nil {
					_, err = cl.Deposit(ctx, srv.ID, recip, box)
				}
				if err != nil {
					failed.CompareAndSwap(nil, &err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if e := failed.Load(); e != nil {
		b.fail("mailbox chat catch-up: deposit", *e)
		return
	}

	start := time.Now()
	p, err = open()
	if err != nil {
		b.fail("mailbox chat catch-up: reopen", err)
		return
	}
	defer p.Close()
	got := make(chan time.Duration, 1)
	go func() {
		n := 0
		for ev := range p.Events() {
			if _, ok := ev.(chat.EventMessage); ok {
				if n++; n == mailboxCatchUp {
					got <- time.Since(start)
				}
			}
		}
	}()
	if err := p.Start(ctx); err != nil {
		b.fail("mailbox chat catch-up: start", err)
		return
	}
	r := result{Group: "mailbox", Name: fmt.Sprintf("chat node catch-up: %d waiting messages", mailboxCatchUp), Clients: 1}
	select {
	case d := <-got:
		r.Ops, r.OpsPerSec = mailboxCatchUp, float64(mailboxCatchUp)/d.Seconds()
		ms := float64(d.Microseconds()) / 1000
		r.Mode = fmt.Sprintf("Start to last message, %.0f ms", ms)
		r.P50, r.P99, r.Max = ms, ms, ms
	case <-time.After(2 * time.Minute):
		r.Errors, r.FirstError = 1, "not all messages arrived within 2 minutes"
	case <-ctx.Done():
		return
	}
	b.logf("%-10s %-28s %s", "mailbox", "chat node catch-up", r.Mode)
	b.rep.Results = append(b.rep.Results, r)
}
