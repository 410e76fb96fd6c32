package chat

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-msgio/pbio"
	"golang.org/x/time/rate"

	"github.com/p2p-messaging/p2p-messaging/chat/pb"
)

// This file is the direct-message protocol service: the ProtocolID
// stream handler and the life of each chat stream. A stream has exactly
// two goroutines: its reader (serve), which owns the stream's lifetime and
// never writes, and its writer (writeLoop), the only one that writes: the
// Hello, the peer's outbox, acks and pongs handed over on a bounded queue,
// and pings on its own ticker. The wire format is in doc.go.

// ProtocolID is the chat stream protocol.
const ProtocolID protocol.ID = "/p2p-messaging/chat/1.0.0"

// Wire and API limits.
const (
	// MaxFrameSize bounds one length-prefixed frame on a chat stream.
	MaxFrameSize = 64 << 10
	// MaxTextLen bounds the UTF-8 text of one message, in bytes.
	MaxTextLen = 4096
	// MaxNickLen bounds a nick, in bytes.
	MaxNickLen = 64
	// MaxRoomLen bounds a room name, in bytes.
	MaxRoomLen = 128
	// IDLen is the length of a message ID in bytes (hex in the API).
	IDLen = 16
)

const (
	// maxUnstoredPerStream bounds the received messages of one stream
	// waiting for their commit; beyond it new messages are not taken (not
	// acknowledged: the sender writes them again later) while the reader
	// goes on reading pings and acks.
	maxUnstoredPerStream = 256
	// ctrlQueue bounds the acks and pongs waiting for the writer; what does
	// not fit is dropped (an unacknowledged message is written again, a
	// missing pong costs one round-trip sample).
	ctrlQueue = maxUnstoredPerStream + 64
	// maxWriteBatch bounds the frames written in one go.
	maxWriteBatch = 128
	// streamMemory is reserved in the stream's resource scope: the largest
	// frame plus the reader's buffer.
	streamMemory = MaxFrameSize + 4096
	// recvLimiters bounds the per-peer receive-rate state kept in memory.
	recvLimiters = 4096
)

// dm serves and opens chat streams.
type dm struct {
	n *Node

	mu     sync.Mutex
	closed bool
	live   map[*chatStream]struct{} // every stream being served, Hello phase included
	rates  *peerLimits              // receive rate per peer, at most recvLimiters kept
}

func newDM(n *Node) *dm {
	d := &dm{n: n, live: map[*chatStream]struct{}{}, rates: newPeerLimits(rate.Limit(n.cfg.ReceiveRate), n.cfg.ReceiveBurst, recvLimiters)}
	n.h.SetStreamHandler(ProtocolID, d.handle)
	return d
}

// close removes the handler and closes every stream.
func (d *dm) close() {
	d.n.h.RemoveStreamHandler(ProtocolID)
	d.mu.Lock()
	d.closed = true
	live := make([]*chatStream, 0, len(d.live))
	for cs := range d.live {
		live = append(live, cs)
	}
	d.mu.Unlock()
	for _, cs := range live {
		cs.retire()
	}
}

// chatStream is one live chat stream.
type chatStream struct {
	s        network.Stream
	peer     peer.ID
	limited  bool
	relayed  bool // over a relay (limited or not)
	outgoing bool

	ctrl    chan *pb.Frame // acks and pongs for the writer
	kickw   chan struct{}  // outbox changed
	up      chan struct{}  // closed once the Hello exchange is done and the peer table has the stream
	finish  chan struct{}  // closed by the reader: write what is queued, then stop
	written chan struct{}  // closed when the writer has stopped

	active    atomic.Bool  // the peer table made it the stream our messages go out on
	lastRecv  atomic.Int64 // unix nanos of the last frame received
	timedOut  atomic.Bool
	rtt       atomic.Int64 // nanoseconds, last ping round trip
	pingNonce atomic.Uint64
	pingSent  atomic.Int64 // unix nanos of the last ping written
	pongAt    atomic.Int64 // unix nanos of the last matching pong
	unstored  atomic.Int32 // received messages waiting for their commit
	retired   atomic.Bool
}

func newChatStream(s network.Stream, outgoing bool) *chatStream {
	cs := &chatStream{
		s:        s,
		peer:     s.Conn().RemotePeer(),
		limited:  s.Conn().Stat().Limited,
		relayed:  isRelayed(s.Conn().RemoteMultiaddr()),
		outgoing: outgoing,
		ctrl:     make(chan *pb.Frame, ctrlQueue),
		kickw:    make(chan struct{}, 1),
		up:       make(chan struct{}),
		finish:   make(chan struct{}),
		written:  make(chan struct{}),
	}
	cs.lastRecv.Store(time.Now().UnixNano())
	return cs
}

// kick wakes the writer: the outbox changed or the stream became active.
func (cs *chatStream) kick() {
	select {
	case cs.kickw <- struct{}{}:
	default:
	}
}

// queue hands a control frame to the writer without waiting.
func (cs *chatStream) queue(f *pb.Frame) bool {
	select {
	case cs.ctrl <- f:
		return true
	default:
		return false
	}
}

// retire ends the stream cleanly: the peer sees EOF, and our reader ends
// at once (what the peer still had in flight it writes again on another
// stream).
func (cs *chatStream) retire() {
	if cs.retired.CompareAndSwap(false, true) {
		_ = cs.s.Close()
	}
}

func (d *dm) handle(s network.Stream) {
	cs := newChatStream(s, false)
	if !d.n.spawn(func() { d.serve(cs) }) {
		s.Reset()
	}
}

// open opens a chat stream to p, dialling it if needed, and serves it.
func (d *dm) open(p peer.ID) error {
	n := d.n
	ctx, cancel := context.WithTimeout(n.ctx, dialTimeout)
	defer cancel()
	looked := false
	if n.h.Network().Connectedness(p) == network.NotConnected && len(n.h.Peerstore().Addrs(p)) == 0 {
		if !n.names.lookupAddrs(ctx, p) {
			return errors.New("no known addresses")
		}
		looked = true
	}
	ctx = network.WithAllowLimitedConn(ctx, "chat")
	s, err := n.h.NewStream(ctx, p, ProtocolID)
	if err != nil && !looked && ctx.Err() == nil {
		// Stale addresses: look the peer up again and retry once.
		n.h.Peerstore().ClearAddrs(p)
		if n.names.lookupAddrs(ctx, p) {
			s, err = n.h.NewStream(ctx, p, ProtocolID)
		}
	}
	if err != nil {
		return err
	}
	cs := newChatStream(s, true)
	if !n.spawn(func() { d.serve(cs) }) {
		s.Reset()
		return ErrClosed
	}
	return nil
}

func (d *dm) track(cs *chatStream) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return false
	}
	d.live[cs] = struct{}{}
	return true
}

func (d *dm) untrack(cs *chatStream) {
	d.mu.Lock()
	delete(d.live, cs)
	d.mu.Unlock()
}

// serve runs one chat stream to its end: Hello both ways, then frames
// until EOF, an error, an invalid frame or a liveness timeout (the writer
// resets the stream then). Exactly one of Close or Reset ends it.
func (d *dm) serve(cs *chatStream) {
	n := d.n
	p := cs.peer
	log := n.log.With("peer", p, "outgoing", cs.outgoing)
	if !d.track(cs) {
		cs.s.Reset()
		return
	}
	defer d.untrack(cs)
	if err := cs.s.Scope().SetService("p2p-messaging-chat"); err != nil {
		log.Debug("chat stream: resource scope", "err", err)
		cs.s.Reset()
		return
	}
	if err := cs.s.Scope().ReserveMemory(streamMemory, network.ReservationPriorityAlways); err != nil {
		log.Debug("chat stream: reserve memory", "err", err)
		cs.s.Reset()
		return
	}
	defer cs.s.Scope().ReleaseMemory(streamMemory)
	stop := context.AfterFunc(n.ctx, func() { cs.s.Reset() })
	defer stop()
	if n.names.isBlocked(p) {
		log.Debug("chat stream reset: blocked peer")
		cs.s.Reset()
		return
	}
	if !n.spawn(func() { d.writeLoop(cs) }) {
		cs.s.Reset()
		return
	}
	ok := false
	defer func() {
		close(cs.finish)
		<-cs.written
		if ok {
			cs.s.Close()
		} else {
			cs.s.Reset()
		}
	}()

	r := newFrameReader(cs.s)
	_ = cs.s.SetReadDeadline(time.Now().Add(n.cfg.HelloTimeout))
	f, err := r.next()
	if err != nil {
		log.Debug("chat stream reset: bad hello", "err", err)
		return
	}
	hello := f.GetHello()
	if hello == nil {
		log.Debug("chat stream reset: first frame is not hello")
		return
	}
	_ = cs.s.SetReadDeadline(time.Time{})
	cs.lastRecv.Store(time.Now().UnixNano())
	name, verified := n.names.identify(n.ctx, p, hello.GetNick())
	nick := ""
	if verified {
		nick = name
	}
	if !n.peers.streamUp(cs, nick) {
		return
	}
	close(cs.up)
	defer n.peers.streamDown(cs)

	for {
		f, err := r.next()
		if err != nil {
			switch {
			case cs.retired.Load():
				log.Debug("chat stream retired")
				ok = true
			case errors.Is(err, io.EOF):
				log.Debug("chat stream closed by peer")
				ok = d.awaitStored(cs)
			case cs.timedOut.Load():
				log.Debug("chat stream reset: liveness timeout")
			case n.ctx.Err() == nil:
				log.Debug("chat stream reset", "err", err)
			}
			return
		}
		cs.lastRecv.Store(time.Now().UnixNano())
		if err := d.handleFrame(cs, name, f); err != nil {
			log.Debug("chat stream reset", "err", err)
			return
		}
	}
}

// awaitStored waits (bounded) until the messages received on cs are
// committed, so their acks are queued before our side closes.
func (d *dm) awaitStored(cs *chatStream) bool {
	deadline := time.Now().Add(writeTimeout)
	for cs.unstored.Load() > 0 {
		if time.Now().After(deadline) || d.n.ctx.Err() != nil {
			return false
		}
		if err := d.n.db.flush(); err != nil {
			return false
		}
	}
	return true
}

// handleFrame processes one validated frame after the Hello. name is how
// the peer is shown (its verified nick or its peer ID).
func (d *dm) handleFrame(cs *chatStream, name string, f *pb.Frame) error {
	n := d.n
	switch b := f.GetBody().(type) {
	case *pb.Frame_Hello:
		// A repeated Hello changes nothing.
	case *pb.Frame_Message:
		d.receive(cs, name, b.Message)
	case *pb.Frame_Ack:
		n.acked(cs.peer, b.Ack.GetId())
	case *pb.Frame_Ping:
		cs.queue(&pb.Frame{Body: &pb.Frame_Pong{Pong: &pb.Pong{Nonce: b.Ping.GetNonce()}}})
	case *pb.Frame_Pong:
		cs.pong(b.Pong.GetNonce())
	}
	return nil
}

// receive takes one incoming message. It never waits: a message it cannot
// take now (the peer's rate or storage quota, too many waiting for their
// commit, the writer's queue full) is not acknowledged, and the sender
// writes it again later. A stranger's message becomes its request.
func (d *dm) receive(cs *chatStream, name string, pm *pb.Message) {
	n := d.n
	p := cs.peer
	if !d.rates.allow(p) {
		n.log.Debug("message over the peer's receive rate: not taken", "peer", p)
		return
	}
	if cs.unstored.Load() >= maxUnstoredPerStream {
		return
	}
	m := Message{
		ID:     hex.EncodeToString(pm.GetId()),
		From:   name,
		To:     n.cfg.Nick,
		Peer:   p,
		Text:   pm.GetText(),
		Time:   time.UnixMilli(pm.GetSentUnixMs()).UTC(),
		Status: StatusDelivered,
	}
	ack := &pb.Frame{Body: &pb.Frame_Ack{Ack: &pb.Ack{Id: pm.GetId()}}}
	cs.unstored.Add(1)
	var queued bool
	if n.names.isContact(p) {
		queued = n.db.tryAddIncoming(m, uint64(n.cfg.PeerQuota), func(res incomingResult, err error) {
			defer cs.unstored.Add(-1)
			switch {
			case err != nil:
				n.log.Error("store incoming message", "peer", p, "err", err)
			case res == inOverQuota:
				n.names.warn(name, p, fmt.Sprintf("%s used up its storage quota (%d bytes): its messages are not taken", name, n.cfg.PeerQuota))
			case res == inStored:
				n.ev.emit(EventMessage{Message: m})
				n.names.talkedWith(p)
				cs.queue(ack)
			default:
				cs.queue(ack) // a duplicate: ack again, show once
			}
		})
	} else {
		queued = n.db.tryAddRequest(m, n.cfg.MaxRequests, func(res requestResult, err error) {
			defer cs.unstored.Add(-1)
			switch {
			case err != nil:
				n.log.Error("store request", "peer", p, "err", err)
			case res == reqStored:
				n.ev.emit(EventRequest{Peer: p, Nick: m.From, Text: m.Text, ID: m.ID, Time: m.Time})
				cs.queue(ack)
			case res == reqSame:
				cs.queue(ack)
			}
		})
	}
	if !queued {
		cs.unstored.Add(-1)
	}
}

// resetPeer resets every stream to p (it was just blocked).
func (d *dm) resetPeer(p peer.ID) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for cs := range d.live {
		if cs.peer == p {
			cs.s.Reset()
		}
	}
}

// ping state lives with the writer; the reader reports pongs here.
func (cs *chatStream) pong(nonce uint64) {
	sent := cs.pingSent.Load()
	if nonce == cs.pingNonce.Load() && sent != 0 {
		now := time.Now().UnixNano()
		cs.rtt.Store(now - sent)
		cs.pongAt.Store(now)
	}
}

// writeLoop is the stream's only writer: the Hello at once, then, once the
// stream is up, the peer's outbox while the stream is active (everything
// pending when it becomes active, each new message when Send kicks it,
// and whatever stayed unacknowledged for AckTimeout), queued acks and
// pongs, and a ping every PingInterval. A stream on which nothing arrived
// for PingTimeout is reset. A write failure resets the stream, which ends
// the reader.
func (d *dm) writeLoop(cs *chatStream) {
	n := d.n
	defer close(cs.written)
	w := pbio.NewDelimitedWriter(cs.s)
	batch := make([]*pb.Frame, 0, maxWriteBatch)
	write := func() bool {
		if len(batch) == 0 {
			return true
		}
		_ = cs.s.SetWriteDeadline(time.Now().Add(writeTimeout))
		var err error
		for _, f := range batch {
			if err = w.WriteMsg(f); err != nil {
				break
			}
		}
		_ = cs.s.SetWriteDeadline(time.Time{})
		clear(batch)
		batch = batch[:0]
		if err != nil {
			n.log.Debug("chat stream: write", "peer", cs.peer, "err", err)
			cs.s.Reset()
			return false
		}
		return true
	}
	batch = append(batch, &pb.Frame{Body: &pb.Frame_Hello{Hello: &pb.Hello{Nick: n.cfg.Nick}}})
	if !write() {
		return
	}
	select {
	case <-cs.up:
	case <-cs.finish:
		return
	}
	// drainCtrl takes the queued acks and pongs into the batch.
	drainCtrl := func() {
		for len(batch) < maxWriteBatch {
			select {
			case f := <-cs.ctrl:
				batch = append(batch, f)
			default:
				return
			}
		}
	}
	cur := sendCursor{sent: map[*outMsg]int64{}}
	pingEvery := n.cfg.PingInterval
	ticker := time.NewTicker(min(pingEvery, n.cfg.AckTimeout/2))
	defer ticker.Stop()
	lastPing, lastResend := time.Time{}, time.Now()
	for {
		resend := false
		select {
		case <-cs.finish:
			drainCtrl()
			write()
			return
		case f := <-cs.ctrl:
			batch = append(batch, f)
			drainCtrl()
		case <-cs.kickw:
		case now := <-ticker.C:
			if now.Sub(time.Unix(0, cs.lastRecv.Load())) > n.cfg.PingTimeout {
				cs.timedOut.Store(true)
				cs.s.Reset()
				return
			}
			if now.Sub(lastPing) >= pingEvery {
				lastPing = now
				nonce := cs.pingNonce.Add(1)
				cs.pingSent.Store(now.UnixNano())
				batch = append(batch, &pb.Frame{Body: &pb.Frame_Ping{Ping: &pb.Ping{Nonce: nonce}}})
			}
			if now.Sub(lastResend) >= n.cfg.AckTimeout/2 {
				lastResend = now
				resend = true
			}
		}
		var msgs []*outMsg
		now := time.Now().UnixNano()
		if cs.active.Load() {
			msgs = n.out.next(cs.peer, &cur, resend, now, n.cfg.AckTimeout)
			for _, o := range msgs {
				batch = append(batch, messageFrame(o.m))
			}
		}
		if !write() {
			return
		}
		for _, o := range msgs {
			cur.sent[o] = now
		}
	}
}

func messageFrame(m Message) *pb.Frame {
	id, _ := hex.DecodeString(m.ID)
	return &pb.Frame{Body: &pb.Frame_Message{Message: &pb.Message{Id: id, SentUnixMs: m.Time.UnixMilli(), Text: m.Text}}}
}
