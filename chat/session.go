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
	"github.com/libp2p/go-msgio/pbio"

	"github.com/p2p-messaging/p2p-messaging/chat/pb"
)

// peerState is what the node knows about one remote peer. Guarded by Node.mu.
type peerState struct {
	id      peer.ID
	nick    string // verified nick, "" until known
	streams map[*chatStream]struct{}
	active  *chatStream     // the one stream our messages go out on (sticky, for order)
	regs    map[string]bool // namespaces where rendezvous lists the peer
	dead    bool            // evidence it is gone (stream lost); cleared by new life
	online  bool            // last computed presence
	conn    ConnInfo        // last connection info announced
	rtt     time.Duration
	dialing bool
	backoff time.Duration
	nextTry time.Time
	// graceUntil: a relayed connection to the peer ended without evidence
	// that the peer is gone (relay limit, a re-dial for hole punching);
	// until then it keeps its presence and failed reconnects are retried
	// quickly instead of counting as it being gone. Zero: no grace.
	graceUntil time.Time
	// punchRearms counts punchAgain re-dials (bounded).
	punchRearms int
}

// peer returns p's state, creating it. Call with n.mu held (or before the
// node is shared).
func (n *Node) peer(p peer.ID) *peerState {
	ps, ok := n.peers[p]
	if !ok {
		ps = &peerState{id: p, streams: map[*chatStream]struct{}{}, regs: map[string]bool{}}
		n.peers[p] = ps
	}
	return ps
}

// updatePresenceLocked recomputes p's presence and emits EventPresence on a
// change (only for peers whose nick is known).
func (n *Node) updatePresenceLocked(ps *peerState) {
	online := len(ps.streams) > 0 || (!ps.dead && (len(ps.regs) > 0 || !ps.graceUntil.IsZero()))
	if online == ps.online {
		return
	}
	ps.online = online
	if ps.nick != "" {
		n.log.Debug("presence", "peer", ps.id, "peer_nick", ps.nick, "online", online)
		n.ev.emit(EventPresence{Nick: ps.nick, Peer: ps.id, Online: online})
	}
}

// chatStream is one live chat stream. The reader goroutine (runStream) owns
// its lifetime; writers serialise on wmu and reset the stream on failure,
// which ends the reader.
type chatStream struct {
	s        network.Stream
	peer     peer.ID
	limited  bool
	relayed  bool // over a relay (limited or not)
	outgoing bool

	wmu sync.Mutex
	w   pbio.Writer

	kickw chan struct{} // wakes the message writer
	done  chan struct{} // closed when the stream has ended

	lastRecv  atomic.Int64 // unix nanos of the last frame received
	lastPing  atomic.Int64 // unix nanos of the last ping sent
	pingNonce atomic.Uint64
	timedOut  atomic.Bool
}

func newChatStream(s network.Stream, outgoing bool) *chatStream {
	cs := &chatStream{
		s:        s,
		peer:     s.Conn().RemotePeer(),
		limited:  s.Conn().Stat().Limited,
		relayed:  isRelayed(s.Conn().RemoteMultiaddr()),
		outgoing: outgoing,
		w:        pbio.NewDelimitedWriter(s),
		kickw:    make(chan struct{}, 1),
		done:     make(chan struct{}),
	}
	cs.lastRecv.Store(time.Now().UnixNano())
	return cs
}

// write sends frames, in order and not interleaved with other writers'; a
// failure resets the stream.
func (cs *chatStream) write(fs ...*pb.Frame) error {
	cs.wmu.Lock()
	defer cs.wmu.Unlock()
	_ = cs.s.SetWriteDeadline(time.Now().Add(writeTimeout))
	var err error
	for _, f := range fs {
		if err = cs.w.WriteMsg(f); err != nil {
			break
		}
	}
	_ = cs.s.SetWriteDeadline(time.Time{})
	if err != nil {
		cs.s.Reset()
		return fmt.Errorf("write frame: %w", err)
	}
	return nil
}

// handleStream serves an incoming chat stream.
func (n *Node) handleStream(s network.Stream) {
	cs := newChatStream(s, false)
	if !n.spawn(func() { n.runStream(cs) }) {
		s.Reset()
	}
}

// connect opens a chat stream to p (dialing it if needed) and runs it. With
// upgrade, it opens a new stream even if one exists (to move off a limited
// connection).
func (n *Node) connect(p peer.ID, upgrade bool) {
	n.mu.Lock()
	ps := n.peer(p)
	if n.closed || ps.dialing || (len(ps.streams) > 0 && !upgrade) || p == n.h.ID() {
		n.mu.Unlock()
		return
	}
	ps.dialing = true
	n.mu.Unlock()

	ok := n.spawn(func() {
		err := n.openStream(p)
		n.mu.Lock()
		ps.dialing = false
		if err != nil {
			if ps.backoff == 0 {
				ps.backoff = n.cfg.RetryInterval
			} else {
				ps.backoff = min(ps.backoff*2, maxBackoff)
			}
			ps.nextTry = time.Now().Add(ps.backoff)
			if time.Now().Before(ps.graceUntil) {
				ps.nextTry = time.Now().Add(graceRetry)
			} else if len(ps.streams) == 0 && !ps.dead {
				ps.dead = true
				n.updatePresenceLocked(ps)
			}
		} else {
			ps.backoff = 0
		}
		n.mu.Unlock()
		if err != nil {
			n.log.Debug("open chat stream", "peer", p, "err", err)
		}
	})
	if !ok {
		n.mu.Lock()
		ps.dialing = false
		n.mu.Unlock()
	}
}

func (n *Node) openStream(p peer.ID) error {
	ctx, cancel := context.WithTimeout(n.ctx, dialTimeout)
	defer cancel()
	looked := false
	if n.h.Network().Connectedness(p) != network.Connected && len(n.h.Peerstore().Addrs(p)) == 0 {
		if !n.lookupAddrs(ctx, p) {
			return errors.New("no known addresses")
		}
		looked = true
	}
	ctx = network.WithAllowLimitedConn(ctx, "chat")
	s, err := n.h.NewStream(ctx, p, ProtocolID)
	if err != nil && !looked && ctx.Err() == nil {
		// Stale addresses: look the peer up again and retry once.
		n.h.Network().Peerstore().ClearAddrs(p)
		if n.lookupAddrs(ctx, p) {
			s, err = n.h.NewStream(ctx, p, ProtocolID)
		}
	}
	if err != nil {
		return err
	}
	cs := newChatStream(s, true)
	if !n.spawn(func() { n.runStream(cs) }) {
		s.Reset()
		return ErrClosed
	}
	return nil
}

// runStream runs one chat stream to its end: Hello both ways, then frames
// until EOF, an error, an invalid frame or a liveness timeout.
func (n *Node) runStream(cs *chatStream) {
	defer close(cs.done)
	p := cs.peer
	log := n.log.With("peer", p, "outgoing", cs.outgoing)
	r := newFrameReader(cs.s)

	if err := cs.s.Scope().SetService("p2p-messaging-chat"); err != nil {
		log.Debug("chat stream: resource scope", "err", err)
		cs.s.Reset()
		return
	}
	if err := cs.write(&pb.Frame{Body: &pb.Frame_Hello{Hello: &pb.Hello{Nick: n.cfg.Nick}}}); err != nil {
		log.Debug("chat stream: write hello", "err", err)
		return
	}
	_ = cs.s.SetReadDeadline(time.Now().Add(n.cfg.HelloTimeout))
	f, err := r.next()
	if err != nil {
		log.Debug("chat stream reset: bad hello", "err", err)
		cs.s.Reset()
		return
	}
	hello := f.GetHello()
	if hello == nil {
		log.Debug("chat stream reset: first frame is not hello")
		cs.s.Reset()
		return
	}
	_ = cs.s.SetReadDeadline(time.Time{})
	cs.lastRecv.Store(time.Now().UnixNano())
	name := n.identify(n.ctx, p, hello.GetNick())

	if !n.streamUp(cs) {
		cs.s.Reset()
		return
	}
	cs.kick()
	n.spawn(func() { n.messageWriter(cs) })
	acks := make(chan ackJob, maxUnstoredPerStream)
	ackDone := make(chan struct{})
	if !n.spawn(func() { defer close(ackDone); n.ackWriter(cs, acks) }) {
		cs.s.Reset()
		n.streamDown(cs)
		return
	}

	eof := false
	for {
		f, err := r.next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				log.Debug("chat stream closed by peer")
				eof = true
			} else {
				if cs.timedOut.Load() {
					log.Debug("chat stream reset: liveness timeout")
				} else if n.ctx.Err() == nil {
					log.Debug("chat stream reset", "err", err)
				}
				cs.s.Reset()
			}
			break
		}
		cs.lastRecv.Store(time.Now().UnixNano())
		if err := n.handleFrame(cs, name, f, acks); err != nil {
			log.Debug("chat stream reset", "err", err)
			cs.s.Reset()
			break
		}
	}
	// Acknowledge what is being stored before closing our side.
	close(acks)
	<-ackDone
	if eof {
		cs.s.Close()
	}
	n.streamDown(cs)
}

// streamUp registers a stream whose Hello exchange is done.
func (n *Node) streamUp(cs *chatStream) bool {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return false
	}
	ps := n.peer(cs.peer)
	ps.streams[cs] = struct{}{}
	var retire []*chatStream
	if len(ps.streams) > maxStreamsPerPeer {
		// Bound what one peer can hold open: retire the least recently
		// active stream.
		var oldest *chatStream
		for o := range ps.streams {
			if o != cs && (oldest == nil || o.lastRecv.Load() < oldest.lastRecv.Load()) {
				oldest = o
			}
		}
		retire = append(retire, oldest)
	}
	ps.dead = false
	ps.graceUntil = time.Time{}
	ps.backoff = 0
	ps.nextTry = time.Time{}
	// Messages stay on one stream while it lives, so they arrive in order;
	// they move only off a limited stream or off a stream that ended.
	if ps.active == nil || (ps.active.limited && !cs.limited) {
		ps.active = cs
	}
	active := ps.active
	n.updatePresenceLocked(ps)
	// A stream on a direct connection retires those on limited ones.
	if !cs.limited {
		for o := range ps.streams {
			if o != cs && o.limited && (len(retire) == 0 || retire[0] != o) {
				retire = append(retire, o)
			}
		}
	}
	n.mu.Unlock()
	for _, o := range retire {
		n.log.Debug("retiring chat stream", "peer", cs.peer, "limited", o.limited)
		o.s.Close()
	}
	active.kick()
	n.updateConn(cs.peer)
	return true
}

// streamDown unregisters a finished stream. When it was the last one the
// peer counts as gone until it shows new life; a reconnect is tried at once.
func (n *Node) streamDown(cs *chatStream) {
	n.mu.Lock()
	ps := n.peer(cs.peer)
	delete(ps.streams, cs)
	var next *chatStream
	if ps.active == cs {
		ps.active = nil
		for o := range ps.streams {
			if next == nil || (next.limited && !o.limited) ||
				(next.limited == o.limited && o.lastRecv.Load() > next.lastRecv.Load()) {
				next = o
			}
		}
		ps.active = next
	}
	last := len(ps.streams) == 0
	if last {
		ps.nextTry = time.Time{}
		// A relayed stream also ends when the relay's per-connection limit
		// (time, bytes) runs out, or when either side replaces the relayed
		// connection to set up a hole punch (punchWhenReady): reconnect
		// first, and let a failed reconnect decide. Anything else ending
		// means the peer is gone.
		if !cs.relayed || cs.timedOut.Load() {
			ps.dead = true
		} else if g := time.Now().Add(relayGrace); g.After(ps.graceUntil) {
			ps.graceUntil = g
		}
		n.updatePresenceLocked(ps)
	}
	closed := n.closed
	n.mu.Unlock()
	if next != nil {
		next.kick() // it resends everything still pending
	}
	if last && !closed {
		n.kickRetry()
	}
}

// activeStream returns the stream our messages to p go out on, or nil.
func (n *Node) activeStream(p peer.ID) *chatStream {
	n.mu.Lock()
	defer n.mu.Unlock()
	if ps, ok := n.peers[p]; ok {
		return ps.active
	}
	return nil
}

// kick wakes the stream's message writer.
func (cs *chatStream) kick() {
	select {
	case cs.kickw <- struct{}{}:
	default:
	}
}

// messageWriter sends the peer's outbox on cs while cs is the peer's
// active stream, oldest first: everything pending when it becomes active (a
// resend after a reconnect; the receiver deduplicates), then each new
// message when Send kicks it, and again whatever stayed unacknowledged for
// AckTimeout (the receiver could not store it, or the ack got lost). One
// active stream per peer keeps messages in order.
func (n *Node) messageWriter(cs *chatStream) {
	sent := map[*outMsg]int64{} // written on cs (unix nanos), not acknowledged yet
	var upTo uint64             // outbox entries up to this seq were written on cs
	t := time.NewTicker(n.cfg.AckTimeout / 2)
	defer t.Stop()
	for {
		resend := false
		select {
		case <-cs.kickw:
		case <-t.C:
			resend = true
		case <-cs.done:
			return
		case <-n.ctx.Done():
			return
		}
		now := time.Now().UnixNano()
		n.mu.Lock()
		var batch []*outMsg
		if ps := n.peers[cs.peer]; ps != nil && ps.active == cs {
			if resend {
				for o := range sent {
					if o.gone {
						delete(sent, o)
					}
				}
			}
			batch = n.toWriteLocked(cs, &upTo, sent, resend, now)
		}
		n.mu.Unlock()
		if len(batch) == 0 {
			continue
		}
		frames := make([]*pb.Frame, len(batch))
		for i, o := range batch {
			frames[i] = messageFrame(o.m)
		}
		if err := cs.write(frames...); err != nil {
			return // the stream is reset; the next one resends
		}
		for _, o := range batch {
			sent[o] = now
		}
	}
}

// maxUnstoredPerStream bounds the received messages of one stream waiting
// for their commit and ack; beyond it the stream's reader waits.
const maxUnstoredPerStream = 256

// ackJob is a received message on its way to the database; stored yields
// whether it was committed (new or duplicate), i.e. whether to ack it.
type ackJob struct {
	id     []byte
	stored chan bool
}

// ackWriter acknowledges the messages received on cs, in order, each once
// the transaction holding it has committed. Acks that become due together
// (one group commit) go out in one write. It drains acks until the reader
// closes it, even after the stream failed.
func (n *Node) ackWriter(cs *chatStream, acks <-chan ackJob) {
	var q []ackJob
	var frames []*pb.Frame
	broken := false
	for {
		if len(q) == 0 {
			j, ok := <-acks
			if !ok {
				return
			}
			q = append(q, j)
		}
	drain:
		for acks != nil {
			select {
			case j, ok := <-acks:
				if !ok {
					acks = nil
					break drain
				}
				q = append(q, j)
			default:
				break drain
			}
		}
		// Wait for the oldest, then take the later ones already committed.
		frames = frames[:0]
		i := 0
	ready:
		for ; i < len(q); i++ {
			var stored bool
			if i == 0 {
				stored = <-q[0].stored
			} else {
				select {
				case stored = <-q[i].stored:
				default:
					break ready
				}
			}
			if stored {
				frames = append(frames, &pb.Frame{Body: &pb.Frame_Ack{Ack: &pb.Ack{Id: q[i].id}}})
			}
		}
		q = append(q[:0], q[i:]...)
		if len(frames) > 0 && !broken {
			broken = cs.write(frames...) != nil
		}
		if acks == nil && len(q) == 0 {
			return
		}
	}
}

func messageFrame(m Message) *pb.Frame {
	id, _ := hex.DecodeString(m.ID)
	return &pb.Frame{Body: &pb.Frame_Message{Message: &pb.Message{Id: id, SentUnixMs: m.Time.UnixMilli(), Text: m.Text}}}
}

// handleFrame processes one validated frame after the Hello. name is how the
// peer is shown (its verified nick or its peer ID).
func (n *Node) handleFrame(cs *chatStream, name string, f *pb.Frame, acks chan<- ackJob) error {
	switch b := f.GetBody().(type) {
	case *pb.Frame_Hello:
		return nil // a repeated Hello changes nothing
	case *pb.Frame_Message:
		m := Message{
			ID:     hex.EncodeToString(b.Message.GetId()),
			From:   name,
			To:     n.cfg.Nick,
			Peer:   cs.peer,
			Text:   b.Message.GetText(),
			Time:   time.UnixMilli(b.Message.GetSentUnixMs()).UTC(),
			Status: StatusDelivered,
		}
		// The writer commits the message together with whatever else is
		// queued; ackWriter acknowledges it once that commit is done, and
		// meanwhile this reader goes on with the next frame.
		job := ackJob{id: b.Message.GetId(), stored: make(chan bool, 1)}
		err := n.db.addIncomingAsync(m, func(dup bool, err error) {
			if err != nil {
				// Not stored, so not acknowledged: the sender retries later.
				n.log.Error("store incoming message", "peer", cs.peer, "err", err)
				job.stored <- false
				return
			}
			if !dup {
				n.ev.emit(EventMessage{Message: m})
			}
			job.stored <- true
		})
		if err != nil {
			n.log.Debug("store incoming message", "peer", cs.peer, "err", err)
			return nil
		}
		acks <- job // waits while maxUnstoredPerStream are being stored
	case *pb.Frame_Ack:
		// Matched in memory: an ack may overtake the commit of the
		// message's pending record (Send then reports the delivery).
		n.mu.Lock()
		if ob := n.outbox[cs.peer]; ob != nil {
			if o := ob.byID[hex.EncodeToString(b.Ack.GetId())]; o != nil {
				n.outboxRemoveLocked(o)
				if o.stored {
					n.deliveredLocked(o)
				} else {
					o.acked = true
				}
			}
		}
		n.mu.Unlock()
	case *pb.Frame_Ping:
		return cs.write(&pb.Frame{Body: &pb.Frame_Pong{Pong: &pb.Pong{Nonce: b.Ping.GetNonce()}}})
	case *pb.Frame_Pong:
		if b.Pong.GetNonce() == cs.pingNonce.Load() {
			rtt := time.Duration(time.Now().UnixNano() - cs.lastPing.Load())
			n.mu.Lock()
			n.peer(cs.peer).rtt = rtt
			n.mu.Unlock()
		}
	}
	return nil
}

// kickRetry wakes the retry loop.
func (n *Node) kickRetry() {
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

// retryLoop opens chat streams to the peers that need one: those with
// pending messages (with exponential backoff), and room members and
// contacts the daemons list (for presence and quick sends), up to
// maxAutoSessions.
func (n *Node) retryLoop() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		case <-n.kick:
		}
		now := time.Now()
		var todo []peer.ID
		n.mu.Lock()
		sessions := 0
		for _, ps := range n.peers {
			if len(ps.streams) > 0 {
				sessions++
			}
		}
		for id, ps := range n.peers {
			if !ps.graceUntil.IsZero() && !now.Before(ps.graceUntil) {
				// The grace ran out without a new stream: gone after all.
				ps.graceUntil = time.Time{}
				if len(ps.streams) == 0 {
					ps.dead = true
				}
				n.updatePresenceLocked(ps)
			}
			if len(ps.streams) > 0 || ps.dialing || now.Before(ps.nextTry) || id == n.h.ID() {
				continue
			}
			if n.pendingLocked(id) || !ps.graceUntil.IsZero() {
				todo = append(todo, id)
			} else if len(ps.regs) > 0 && sessions < maxAutoSessions {
				todo = append(todo, id)
				sessions++
			}
		}
		for id := range n.outbox {
			if _, ok := n.peers[id]; !ok {
				todo = append(todo, id)
			}
		}
		// Chats still on a relayed stream although a direct connection
		// exists (the connection event came while a dial was under way).
		var upgrade []peer.ID
		for id, ps := range n.peers {
			if ps.active != nil && ps.active.limited && !ps.dialing && !now.Before(ps.nextTry) {
				upgrade = append(upgrade, id)
			}
		}
		n.mu.Unlock()
		for _, p := range todo {
			n.connect(p, false)
		}
		for _, p := range upgrade {
			for _, c := range n.h.Network().ConnsToPeer(p) {
				if !c.Stat().Limited && !c.IsClosed() {
					n.connect(p, true)
					break
				}
			}
		}
	}
}

// pingLoop keeps every chat stream alive and resets those that stayed
// silent for PingTimeout, so a peer whose network is cut goes offline.
func (n *Node) pingLoop() {
	tick := min(time.Second, n.cfg.PingInterval/2)
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		var all []*chatStream
		n.mu.Lock()
		for _, ps := range n.peers {
			for cs := range ps.streams {
				all = append(all, cs)
			}
		}
		n.mu.Unlock()
		for _, cs := range all {
			if now.Sub(time.Unix(0, cs.lastRecv.Load())) > n.cfg.PingTimeout {
				cs.timedOut.Store(true)
				cs.s.Reset()
				continue
			}
			if now.Sub(time.Unix(0, cs.lastPing.Load())) >= n.cfg.PingInterval {
				nonce := cs.pingNonce.Add(1)
				cs.lastPing.Store(now.UnixNano())
				n.spawn(func() {
					_ = cs.write(&pb.Frame{Body: &pb.Frame_Ping{Ping: &pb.Ping{Nonce: nonce}}})
				})
			}
		}
	}
}

// deliveredLocked reports o (acknowledged, its pending record committed)
// delivered and queues the delivered mark, which is written lazily: if it
// is lost in a crash, the message is resent after the restart and the
// receiver deduplicates it and acknowledges it again. Call with n.mu held.
func (n *Node) deliveredLocked(o *outMsg) {
	id, _ := parseID(o.m.ID)
	p := o.m.Peer
	err := n.db.markDelivered(p, id, func(err error) {
		if err != nil {
			n.log.Error("store delivered mark", "peer", p, "err", err)
		}
	})
	if err != nil {
		n.log.Debug("store delivered mark", "peer", p, "err", err)
	}
	n.ev.emit(EventDelivered{ID: o.m.ID, To: o.m.To})
}
