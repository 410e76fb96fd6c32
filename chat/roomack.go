package chat

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"google.golang.org/protobuf/encoding/protowire"
)

// This file is the stored mark of our own room messages: the sender asks
// a few members whether they have stored its message, and marks it (in
// chat.db, EventDelivered with To "#room") once one says yes. GossipSub
// carries no acknowledgements, and a receipt from every member would be a
// flood the author did not ask for: so the author asks, and only a few.
//
// Protocol /p2p-messaging/room-ack/1.0.0, one question per stream. The
// asker A writes one frame (unsigned-varint length, protobuf fields
// 1 topic string, 2 id bytes(16)) and closes its side; the member B
// answers one frame (field 3 status uint64):
//
//	0 stored      B holds A's message id in topic (committed to its history)
//	1 not in room B is not in that room, or A may not ask there (an
//	              invite-only room A has not proven it holds the key of)
//	2 busy        over A's rate or B's cap on questions waiting
//	3 bad request
//	4 not seen    B did not get the message within ackWait
//
// A may only ask about its own messages: the author is the authenticated
// peer of the stream, never a field, so nobody learns through it what B
// got from others. B waits (at most ackWait) for a message it has not got
// yet instead of answering "not seen" at once, since a question can
// overtake the gossip; it keeps at most ackWaiting questions waiting and
// answers each peer at most ackRate a second (bursts of ackBurst). A
// question over 1 KiB, or one not written within ackTimeout, resets the
// stream.
//
// A asks ackPeers members at once, chosen at random among the room's
// topic peers and the members shown online, and if none says stored, up
// to ackRounds rounds in all, ackPause apart, asking others each time
// (a round with nobody new to ask waits for the next). A
// message none of them confirms keeps no mark, as does one sent while no
// other member was online: the question is asked when the message is
// sent, not again after a restart.

// RoomAckProtocol is the stored-mark question protocol ID.
const RoomAckProtocol = protocol.ID("/p2p-messaging/room-ack/1.0.0")

const (
	ackWait     = 10 * time.Second // a member waits this long for a message it has not got
	ackTimeout  = ackWait + 5*time.Second
	ackPeers    = 2
	ackRounds   = 6
	ackPause    = 2 * time.Second
	ackWaiting  = 256 // questions a member keeps waiting at once
	ackRate     = 2 * DefaultRoomRate
	ackBurst    = 2 * DefaultRoomBurst
	maxAckFrame = 1 << 10

	ackFieldTopic  protowire.Number = 1
	ackFieldID     protowire.Number = 2
	ackFieldStatus protowire.Number = 3

	ackStored   = 0
	ackNoRoom   = 1
	ackBusy     = 2
	ackBadReq   = 3
	ackNotSeen  = 4
	ackIDLength = 16
)

// ackServer answers stored-mark questions and wakes the ones waiting when
// a message is committed.
type ackServer struct {
	rs      *rooms
	buckets *peerLimits
	wait    atomic.Int64 // time.Duration: how long a question waits (ackWait; tests shorten it)
	sem     chan struct{}

	mu      sync.Mutex
	waiting map[string][]chan struct{} // topic || author || id -> questions waiting
}

func newAckServer(rs *rooms) *ackServer {
	a := &ackServer{
		rs:      rs,
		buckets: newPeerLimits(ackRate, ackBurst, maxHistoryPeers),
		sem:     make(chan struct{}, ackWaiting),
		waiting: map[string][]chan struct{}{},
	}
	a.wait.Store(int64(ackWait))
	rs.n.h.SetStreamHandler(RoomAckProtocol, a.handle)
	return a
}

func (a *ackServer) close() { a.rs.n.h.RemoveStreamHandler(RoomAckProtocol) }

func ackKey(topic string, author peer.ID, id []byte) string {
	return topic + "\x00" + string(author) + string(id)
}

// committed wakes the questions waiting for a message: called once it is
// in the history (stored now, or a duplicate of one stored before).
func (a *ackServer) committed(topic string, author peer.ID, id []byte) {
	k := ackKey(topic, author, id)
	a.mu.Lock()
	chs := a.waiting[k]
	delete(a.waiting, k)
	a.mu.Unlock()
	for _, ch := range chs {
		close(ch)
	}
}

func (a *ackServer) await(k string) (<-chan struct{}, func()) {
	ch := make(chan struct{})
	a.mu.Lock()
	a.waiting[k] = append(a.waiting[k], ch)
	a.mu.Unlock()
	return ch, func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		chs := a.waiting[k]
		for i, c := range chs {
			if c == ch {
				chs = append(chs[:i], chs[i+1:]...)
				break
			}
		}
		if len(chs) == 0 {
			delete(a.waiting, k)
		} else {
			a.waiting[k] = chs
		}
	}
}

func encodeAckQuestion(topic string, id []byte) []byte {
	b := protowire.AppendTag(nil, ackFieldTopic, protowire.BytesType)
	b = protowire.AppendString(b, topic)
	b = protowire.AppendTag(b, ackFieldID, protowire.BytesType)
	return protowire.AppendBytes(b, id)
}

func encodeAckAnswer(status uint64) []byte {
	b := protowire.AppendTag(nil, ackFieldStatus, protowire.VarintType)
	return protowire.AppendVarint(b, status)
}

// decodeAck reads a question (topic, id) or an answer (status); fields
// of the other kind are refused.
func decodeAck(b []byte, answer bool) (topic string, id []byte, status uint64, err error) {
	seen := 0
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return "", nil, 0, errBadHistory
		}
		b = b[n:]
		switch {
		case !answer && (num == ackFieldTopic || num == ackFieldID) && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return "", nil, 0, errBadHistory
			}
			if num == ackFieldTopic {
				topic = string(v)
			} else {
				id = v
			}
			b = b[n:]
			seen++
		case answer && num == ackFieldStatus && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return "", nil, 0, errBadHistory
			}
			status, b = v, b[n:]
			seen++
		default:
			return "", nil, 0, errBadHistory
		}
	}
	switch {
	case answer && seen != 1:
		return "", nil, 0, errBadHistory
	case !answer && (seen != 2 || topic == "" || len(id) != ackIDLength):
		return "", nil, 0, errBadHistory
	}
	return topic, id, status, nil
}

func (a *ackServer) handle(s network.Stream) {
	_ = s.SetDeadline(time.Now().Add(ackTimeout))
	p := s.Conn().RemotePeer()
	answer := func(status uint64) { _ = finish(s, encodeAckAnswer(status)) }
	if a.rs.n.names.isBlocked(p) {
		_ = s.Reset()
		return
	}
	b, err := readRequest(s, maxAckFrame)
	if err != nil {
		_ = s.Reset()
		return
	}
	topic, id, _, err := decodeAck(b, false)
	if err != nil {
		answer(ackBadReq)
		return
	}
	if !a.buckets.allow(p) {
		answer(ackBusy)
		return
	}
	r := a.rs.byTopicName(topic)
	if r == nil || (r.spec.private() && !r.isProven(p)) {
		answer(ackNoRoom)
		return
	}
	select {
	case a.sem <- struct{}{}:
		defer func() { <-a.sem }()
	default:
		answer(ackBusy)
		return
	}
	// Wait first, then look: a commit between the look and the wait
	// would otherwise be missed.
	ch, cancel := a.await(ackKey(topic, p, id))
	defer cancel()
	if a.rs.n.db.hasRoomMessage(topic, p, id) {
		answer(ackStored)
		return
	}
	t := time.NewTimer(time.Duration(a.wait.Load()))
	defer t.Stop()
	select {
	case <-ch:
		answer(ackStored)
	case <-t.C:
		answer(ackNotSeen)
	case <-r.ctx.Done():
		_ = s.Reset()
	}
}

// ask asks p whether it has stored our message id in r.
func (rs *rooms) ask(ctx context.Context, r *room, p peer.ID, id []byte) (uint64, error) {
	b, err := rs.exchange(ctx, p, RoomAckProtocol, "room ack", ackTimeout, encodeAckQuestion(r.spec.Topic, id), maxAckFrame)
	if err != nil {
		return 0, err
	}
	_, _, status, err := decodeAck(b, true)
	if err != nil {
		return 0, fmt.Errorf("room ack answer: %w", err)
	}
	return status, nil
}

// confirm asks members whether they stored our message (see the top of
// the file) and marks it once one did.
func (rs *rooms) confirm(r *room, idHex string, id []byte) {
	asked := map[peer.ID]bool{}
	for round := range ackRounds {
		if round > 0 {
			t := time.NewTimer(rs.ackPause)
			select {
			case <-t.C:
			case <-r.ctx.Done():
				t.Stop()
				return
			}
		}
		var cands []peer.ID
		for _, p := range rs.onlineMembers(r) {
			if !asked[p] && !rs.n.names.isBlocked(p) && (!r.spec.private() || r.isProven(p)) {
				cands = append(cands, p)
			}
		}
		rand.Shuffle(len(cands), func(i, j int) { cands[i], cands[j] = cands[j], cands[i] })
		cands = cands[:min(len(cands), ackPeers)]
		if len(cands) == 0 {
			continue
		}
		yes := make(chan bool, len(cands))
		ctx, cancel := context.WithCancel(r.ctx)
		for _, p := range cands {
			asked[p] = true
			go func() {
				st, err := rs.ask(ctx, r, p, id)
				if err != nil {
					rs.n.log.Debug("room ack", "room", r.spec.Name, "peer", p, "err", err)
				}
				yes <- err == nil && st == ackStored
			}()
		}
		stored := false
		for range cands {
			if <-yes && !stored {
				stored = true
				cancel() // the others need not answer
			}
		}
		cancel()
		if stored {
			rs.markStored(r, idHex, id)
			return
		}
	}
}

// onlineMembers are the members to ask: the room's topic peers, and the
// members shown online that GossipSub does not list (reached through the
// daemons' watch, and by history sync).
func (rs *rooms) onlineMembers(r *room) []peer.ID {
	out := r.topic.ListPeers()
	in := make(map[peer.ID]bool, len(out))
	for _, p := range out {
		in[p] = true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for p, m := range r.members {
		if m.shown && !in[p] && p != rs.n.h.ID() {
			out = append(out, p)
		}
	}
	return out
}

// markStored records that a member stored our message and, the first
// time, tells the user (EventDelivered, To "#room").
func (rs *rooms) markStored(r *room, idHex string, id []byte) {
	err := rs.n.db.markRoomStored(r.spec.Topic, rs.n.h.ID(), id, func(changed bool, err error) {
		if err != nil {
			rs.n.log.Error("store room mark", "room", r.spec.Name, "err", err)
			return
		}
		if changed {
			rs.n.ev.emit(EventDelivered{ID: idHex, To: "#" + r.spec.Name})
		}
	})
	if err != nil {
		rs.n.log.Debug("store room mark", "room", r.spec.Name, "err", err)
	}
}
