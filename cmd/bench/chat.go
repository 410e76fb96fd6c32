package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
	bolt "go.etcd.io/bbolt"

	"github.com/p2p-messaging/p2p-messaging/chat"
)

// Chat message sizes for the echo baseline: a Message frame with a short
// text, answered by an Ack frame.
const (
	chatText     = "hello from the p2p-messaging benchmark"
	chatReqSize  = 80
	chatRespSize = 24
)

// chatNode is a chat.Peer whose events are watched for deliveries.
type chatNode struct {
	*chat.Peer
	dir       string
	mu        sync.Mutex
	delivered map[string]time.Time // delivered before anybody waited
	waiters   map[string]chan time.Time
	count     int // deliveries seen
	countCh   chan struct{}
	done      chan struct{}
}

func newChatNode(ctx context.Context, dir, nick string, daemon peer.AddrInfo) (*chatNode, error) {
	n, err := chat.Open(chat.HostConfig{
		ListenAddrs: []multiaddr.Multiaddr{
			multiaddr.StringCast("/ip4/127.0.0.1/tcp/0"),
			multiaddr.StringCast("/ip4/127.0.0.1/udp/0/quic-v1"),
		},
	}, chat.Config{
		Nick:       nick,
		Room:       nick, // a room of its own: no presence streams between bench nodes
		DataDir:    dir,
		Rendezvous: []peer.AddrInfo{daemon},
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		return nil, fmt.Errorf("chat node %s: %w", nick, err)
	}
	c := &chatNode{
		Peer:      n,
		dir:       dir,
		delivered: map[string]time.Time{},
		waiters:   map[string]chan time.Time{},
		countCh:   make(chan struct{}, 1),
		done:      make(chan struct{}),
	}
	go c.pump()
	if err := n.Start(ctx); err != nil {
		n.Close()
		<-c.done
		return nil, fmt.Errorf("start chat node %s: %w", nick, err)
	}
	return c, nil
}

func (c *chatNode) pump() {
	defer close(c.done)
	for ev := range c.Events() {
		d, ok := ev.(chat.EventDelivered)
		if !ok {
			continue
		}
		now := time.Now()
		c.mu.Lock()
		c.count++
		if w, ok := c.waiters[d.ID]; ok {
			w <- now
			delete(c.waiters, d.ID)
		} else {
			c.delivered[d.ID] = now
		}
		c.mu.Unlock()
		select {
		case c.countCh <- struct{}{}:
		default:
		}
	}
}

func (c *chatNode) close() {
	c.Peer.Close()
	<-c.done
}

// send sends one message and waits for its acknowledgement, returning the
// time from the Send call to the EventDelivered.
func (c *chatNode) send(ctx context.Context, nick string) (time.Duration, error) {
	start := time.Now()
	m, err := c.Send(ctx, nick, chatText)
	if err != nil {
		return 0, err
	}
	at, err := c.waitDelivered(ctx, m.ID)
	if err != nil {
		return 0, err
	}
	return at.Sub(start), nil
}

func (c *chatNode) waitDelivered(ctx context.Context, id string) (time.Time, error) {
	c.mu.Lock()
	if at, ok := c.delivered[id]; ok {
		delete(c.delivered, id)
		c.mu.Unlock()
		return at, nil
	}
	w := make(chan time.Time, 1)
	c.waiters[id] = w
	c.mu.Unlock()
	select {
	case at := <-w:
		return at, nil
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.waiters, id)
		c.mu.Unlock()
		return time.Time{}, fmt.Errorf("wait for delivery of %s: %w", id, ctx.Err())
	}
}

// deliveredCount waits until at least n deliveries were seen.
func (c *chatNode) waitCount(ctx context.Context, n int) error {
	for {
		c.mu.Lock()
		got := c.count
		c.mu.Unlock()
		if got >= n {
			return nil
		}
		select {
		case <-c.countCh:
		case <-ctx.Done():
			return fmt.Errorf("%d of %d messages delivered: %w", got, n, ctx.Err())
		}
	}
}

func (c *chatNode) deliveries() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.count
}

// echoHandler serves the echo baseline on a chat node's own host, so the
// baseline runs on the very connection the chat uses.
func echoHandler(s network.Stream) {
	if err := serveEchoFrames(s); err != nil {
		s.Reset()
		return
	}
	s.Close()
}

// echoRTT does n sequential echo round trips from h to p on one stream.
func echoRTT(ctx context.Context, h host.Host, p peer.ID, n int, lat *Latencies) error {
	s, err := h.NewStream(ctx, p, EchoProtocolID)
	if err != nil {
		return fmt.Errorf("open echo stream: %w", err)
	}
	defer s.Close()
	stop := context.AfterFunc(ctx, func() { s.Reset() })
	defer stop()
	c := newEchoClient(s, chatReqSize, chatRespSize)
	for range n {
		start := time.Now()
		if err := c.do(); err != nil {
			s.Reset()
			return err
		}
		lat.Add(time.Since(start))
	}
	return nil
}

// echoPipelined sends n echo requests without waiting and reads the n
// answers; it returns the elapsed time.
func echoPipelined(ctx context.Context, h host.Host, p peer.ID, n int) (time.Duration, error) {
	s, err := h.NewStream(ctx, p, EchoProtocolID)
	if err != nil {
		return 0, fmt.Errorf("open echo stream: %w", err)
	}
	defer s.Close()
	stop := context.AfterFunc(ctx, func() { s.Reset() })
	defer stop()
	c := newEchoClient(s, chatReqSize, chatRespSize)
	start := time.Now()
	werr := make(chan error, 1)
	go func() {
		for range n {
			if _, err := s.Write(c.req); err != nil {
				werr <- err
				return
			}
		}
		werr <- nil
	}()
	for range n {
		if err := c.readResp(); err != nil {
			s.Reset()
			<-werr
			return 0, err
		}
	}
	if err := <-werr; err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// runChat measures the chat with two (and more) in-process chat.Nodes and a
// daemon, against libp2p echo on the same kind of connection.
func (b *bench) runChat(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	srv, err := b.daemon(ctx, "chat")
	if err != nil {
		b.fail("start daemon", err)
		return
	}
	defer srv.Close()
	ai, err := peer.AddrInfoFromP2pAddr(srv.Addr)
	if err != nil {
		b.fail("daemon address", err)
		return
	}
	dir, err := mkdirTemp(b.tmp, "chat-")
	if err != nil {
		b.fail("chat dir", err)
		return
	}
	var nodes []*chatNode
	defer func() {
		var wg sync.WaitGroup
		for _, n := range nodes {
			wg.Add(1)
			go func() { defer wg.Done(); n.close() }()
		}
		wg.Wait()
	}()
	mk := func(name string) (*chatNode, error) {
		nick := fmt.Sprintf("bench-%s-%s", b.runTag, name)
		d, err := mkdirTemp(dir, name+"-")
		if err != nil {
			return nil, err
		}
		n, err := newChatNode(ctx, d, nick, *ai)
		if err != nil {
			return nil, err
		}
		n.Host.SetStreamHandler(EchoProtocolID, echoHandler)
		nodes = append(nodes, n)
		return n, nil
	}
	alice, err := mk("alice")
	if err != nil {
		b.fail("chat", err)
		return
	}

	// First message to a nick never contacted: a fresh receiver each time,
	// and no connection to it (the DHT may have made one: it is closed).
	trials := 20
	if b.cfg.Short {
		trials = 2
	}
	var first, firstBase Latencies
	var bob *chatNode
	for i := range trials {
		rcv, err := mk(fmt.Sprintf("r%d", i))
		if err != nil {
			b.fail("chat", err)
			return
		}
		_ = alice.Host.Network().ClosePeer(rcv.ID())
		d, err := alice.send(ctx, rcv.Nick())
		if err != nil {
			b.fail("chat first message", err)
			return
		}
		first.Add(d)
		if bob == nil {
			bob = rcv
		}
		// Baseline: dial a fresh plain libp2p host, open a stream, one
		// echo round trip.
		d, err = firstEcho(ctx, alice.Host)
		if err != nil {
			b.fail("chat first-message baseline", err)
			return
		}
		firstBase.Add(d)
	}
	b.chatRow("first message to an unknown nick", fmt.Sprintf("%d fresh nicks", trials), &firstBase, &first, 0)
	b.chatRowBase("libp2p dial + stream + echo", fmt.Sprintf("%d fresh hosts", trials), &firstBase)

	// Send-to-acknowledgement on the established connection.
	info := connKind(alice, bob.ID())
	var rtt, base Latencies
	warm := min(50, b.cfg.ChatMessages)
	for range warm {
		if _, err := alice.send(ctx, bob.Nick()); err != nil {
			b.fail("chat warm-up", err)
			return
		}
	}
	for range b.cfg.ChatMessages {
		d, err := alice.send(ctx, bob.Nick())
		if err != nil {
			b.fail("chat send-to-ack", err)
			return
		}
		rtt.Add(d)
	}
	if err := echoRTT(ctx, alice.Host, bob.ID(), b.cfg.ChatMessages, &base); err != nil {
		b.fail("chat echo baseline", err)
		return
	}
	b.chatRowBase("libp2p echo round trip", info, &base)
	var floor Latencies
	if err := commitFloor(ctx, alice, bob, b.cfg.ChatMessages, &floor); err != nil {
		b.fail("chat floor", err)
		return
	}
	b.chatRowBase(chatFloorRow, info, &floor)
	b.chatRow("send-to-ack round trip", info, &base, &rtt, 0)

	// Sustained: send as fast as Send accepts, until all are acknowledged.
	n := b.cfg.ChatMessages
	before := alice.deliveries()
	start := time.Now()
	for range n {
		if _, err := alice.Send(ctx, bob.Nick(), chatText); err != nil {
			b.fail("chat sustained send", err)
			return
		}
	}
	if err := alice.waitCount(ctx, before+n); err != nil {
		b.fail("chat sustained", err)
		return
	}
	elapsed := time.Since(start)
	baseElapsed, err := echoPipelined(ctx, alice.Host, bob.ID(), n)
	if err != nil {
		b.fail("chat pipelined echo baseline", err)
		return
	}
	baseRow := result{Group: "chat", Name: "libp2p echo, pipelined", Mode: info, Clients: 1, Ops: n,
		OpsPerSec: float64(n) / baseElapsed.Seconds()}
	b.rep.Results = append(b.rep.Results, baseRow)
	b.rep.Results = append(b.rep.Results, result{Group: "chat", Name: "sustained messages/s (sent → all acked)", Mode: info, Clients: 1, Ops: n,
		OpsPerSec: float64(n) / elapsed.Seconds(), Baseline: baseRow.Name, RatioOf: "ops/s",
		Ratio: (float64(n) / elapsed.Seconds()) / baseRow.OpsPerSec})
	b.logf("chat: sustained %.0f msgs/s (echo pipelined %.0f/s)", float64(n)/elapsed.Seconds(), baseRow.OpsPerSec)
}

// chatFloorRow names the floor of a chat round trip by design: the
// receiver's fsync'd commit, one echo round trip, the sender's fsync'd
// commit of the delivered mark.
const chatFloorRow = "floor: echo round trip + 2 fsync'd commits"

// commitFloor measures n times one bbolt commit in the receiver's data
// dir, one echo round trip and one bbolt commit in the sender's data dir,
// in a row: what a message costs at the least when each side commits it
// once (the sender's own pending commit overlaps the frame).
func commitFloor(ctx context.Context, from, to *chatNode, n int, lat *Latencies) error {
	var dbs [2]*bolt.DB
	for i, dir := range []string{to.dir, from.dir} {
		db, err := bolt.Open(filepath.Join(dir, "floor.db"), 0o600, nil)
		if err != nil {
			return fmt.Errorf("floor db: %w", err)
		}
		defer db.Close()
		dbs[i] = db
	}
	s, err := from.Host.NewStream(ctx, to.ID(), EchoProtocolID)
	if err != nil {
		return fmt.Errorf("open echo stream: %w", err)
	}
	defer s.Close()
	stop := context.AfterFunc(ctx, func() { s.Reset() })
	defer stop()
	c := newEchoClient(s, chatReqSize, chatRespSize)
	val := make([]byte, 200)
	commit := func(db *bolt.DB, k uint64) error {
		return db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists([]byte("floor"))
			if err != nil {
				return err
			}
			return b.Put(binary.BigEndian.AppendUint64(nil, k), val)
		})
	}
	for i := range n {
		start := time.Now()
		if err := commit(dbs[0], uint64(i)); err != nil {
			return err
		}
		if err := c.do(); err != nil {
			s.Reset()
			return err
		}
		if err := commit(dbs[1], uint64(i)); err != nil {
			return err
		}
		lat.Add(time.Since(start))
	}
	return nil
}

// firstEcho dials a fresh plain libp2p host (TCP and QUIC, like a chat
// node) from h, opens an echo stream and does one round trip.
func firstEcho(ctx context.Context, h host.Host) (time.Duration, error) {
	eh, err := newEchoHost(true)
	if err != nil {
		return 0, err
	}
	defer eh.Close()
	start := time.Now()
	if err := h.Connect(ctx, peer.AddrInfo{ID: eh.ID(), Addrs: eh.Addrs()}); err != nil {
		return 0, err
	}
	var lat Latencies
	if err := echoRTT(ctx, h, eh.ID(), 1, &lat); err != nil {
		return 0, err
	}
	d := time.Since(start)
	_ = h.Network().ClosePeer(eh.ID())
	return d, nil
}

// connKind describes the connection between a and p: "tcp", "quic".
func connKind(a *chatNode, p peer.ID) string {
	conns := a.Host.Network().ConnsToPeer(p)
	if len(conns) == 0 {
		return "no conn"
	}
	if _, err := conns[0].RemoteMultiaddr().ValueForProtocol(multiaddr.P_QUIC_V1); err == nil {
		return "quic conn"
	}
	return "tcp conn"
}

func (b *bench) chatRowBase(name, mode string, lat *Latencies) {
	s := lat.Summarize()
	b.rep.Results = append(b.rep.Results, result{Group: "chat", Name: name, Mode: mode, Clients: 1, Ops: s.Count,
		P50: s.P50, P99: s.P99, Max: s.Max})
}

func (b *bench) chatRow(name, mode string, base, lat *Latencies, _ int) {
	s := lat.Summarize()
	bs := base.Summarize()
	r := result{Group: "chat", Name: name, Mode: mode, Clients: 1, Ops: s.Count, P50: s.P50, P99: s.P99, Max: s.Max}
	b.logf("chat: %s p50 %.3f ms p99 %.3f ms (baseline p50 %.3f ms)", name, s.P50, s.P99, bs.P50)
	b.rep.Results = append(b.rep.Results, r)
}

// evaluateChat sets the chat rows' ratios and targets.
func (b *bench) evaluateChat() {
	for i := range b.rep.Results {
		r := &b.rep.Results[i]
		if r.Group != "chat" {
			continue
		}
		switch r.Name {
		case "send-to-ack round trip":
			if base := b.find("chat", chatFloorRow); base != nil && base.P50 > 0 {
				r.Baseline, r.RatioOf, r.Ratio = base.Name, "p50", r.P50/base.P50
			}
			r.Target = "p50 ≤ 1.3× floor"
			r.Pass = boolp(r.Ratio > 0 && r.Ratio <= 1.3)
		case "sustained messages/s (sent → all acked)":
			if base := b.find("chat", chatFloorRow); base != nil && base.P50 > 0 {
				floorRate := 1000 / base.P50
				r.Baseline, r.RatioOf, r.Ratio = base.Name+" (as 1/p50 per second)", "ops/s", r.OpsPerSec/floorRate
			}
			r.Target = "≥ 1/1.3 × floor rate"
			r.Pass = boolp(r.Ratio >= 1/1.3)
		case "first message to an unknown nick":
			if base := b.find("chat", "libp2p dial + stream + echo"); base != nil && base.P50 > 0 {
				r.Baseline, r.RatioOf, r.Ratio = base.Name, "p50", r.P50/base.P50
			}
			r.Target = "< 10 ms"
			r.Pass = boolp(r.P50 > 0 && r.P50 < 10)
		}
	}
}
