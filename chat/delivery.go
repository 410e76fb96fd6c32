package chat

import (
	"container/list"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// This file is delivery: Send, the outbox in memory, acknowledgements and
// the history. The outbox lives on disk (store) and, for sending, in
// memory: the stream writers take messages from here, so a message goes on
// the wire while its pending record is still being committed, and an ack
// is matched without a database read.

// MessageStatus is the delivery state of a message.
type MessageStatus int

const (
	// StatusPending: sent but not acknowledged yet (still in the outbox).
	StatusPending MessageStatus = iota
	// StatusDelivered: acknowledged by the receiver (or an incoming message).
	StatusDelivered
)

func (s MessageStatus) String() string {
	if s == StatusDelivered {
		return "delivered"
	}
	return "pending"
}

// Message is one chat message, incoming or outgoing.
type Message struct {
	ID       string  // 32 hex characters
	From, To string  // nicks
	Peer     peer.ID // the other side
	Text     string
	Time     time.Time // the sender's timestamp
	Outgoing bool
	Status   MessageStatus
	Room     string // a room message's room (To is then "#room"); "" for direct messages
}

// Send sends text to nick (or to a peer ID string). It resolves the nick
// (pinned contacts, then the rendezvous daemons; a nick verified for the
// first time is pinned), stores the message as pending in the history and
// the outbox while the peer's stream (if one is up) puts it on the wire,
// and returns once that record is committed, after EventSent. Delivery
// happens in the background, now if the peer is reachable, otherwise as
// soon as it is next online; EventDelivered follows the acknowledgement,
// once its delivered mark is committed. If ctx ends before the commit,
// Send returns ctx's error; the message stays queued, and EventSent still
// follows if the commit succeeds.
func (n *Node) Send(ctx context.Context, nick, text string) (Message, error) {
	if err := validateText(text); err != nil {
		return Message{}, fmt.Errorf("send to %q: %w", nick, err)
	}
	if n.isClosed() {
		return Message{}, ErrClosed
	}
	if nick == n.cfg.Nick {
		return Message{}, fmt.Errorf("send to %q: that is our own nick", nick)
	}
	p, err := n.names.resolve(ctx, nick)
	if err != nil {
		return Message{}, fmt.Errorf("send to %q: %w", nick, err)
	}
	if p == n.h.ID() {
		return Message{}, fmt.Errorf("send to %q: that is this node", nick)
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	if err := checkSentTime(now.UnixMilli(), now); err != nil {
		// Receivers would refuse it: the system clock is wrong.
		return Message{}, fmt.Errorf("send to %q: system clock: %w", nick, err)
	}
	id, err := newID()
	if err != nil {
		return Message{}, err
	}
	m := Message{
		ID:       id,
		From:     n.cfg.Nick,
		To:       nick,
		Peer:     p,
		Text:     text,
		Time:     now,
		Outgoing: true,
		Status:   StatusPending,
	}
	// Whoever we write to is a contact: their replies are not requests.
	if err := n.names.allow(p); err != nil {
		return Message{}, fmt.Errorf("send to %q: %w", nick, err)
	}
	// The pending record is queued before the frame can go out, so the
	// delivered mark an ack queues always lands after it (the writer keeps
	// submission order), and EventSent always precedes EventDelivered.
	o := n.out.add(m)
	stored := make(chan error, 1)
	err = n.db.addOutgoingAsync(m, func(err error) {
		if err != nil {
			n.out.drop(o)
		} else {
			n.mbox.sent(o) // mailbox.go: deposits it unless acknowledged soon (before EventSent: a Close right after it still deposits)
			n.ev.emit(EventSent{ID: m.ID, To: nick})
		}
		stored <- err
	})
	if err != nil {
		n.out.drop(o)
		return Message{}, fmt.Errorf("send to %q: store: %w", nick, err)
	}
	n.peers.wantStream(p)
	select {
	case err = <-stored:
	case <-ctx.Done():
		return Message{}, fmt.Errorf("send to %q: waiting for the commit: %w", nick, ctx.Err())
	}
	if err != nil {
		if errors.Is(err, ErrClosed) {
			return Message{}, ErrClosed
		}
		return Message{}, fmt.Errorf("send to %q: store: %w", nick, err)
	}
	return m, nil
}

// acked handles an Ack from p: the message leaves the outbox, and its
// delivered mark is queued; EventDelivered follows its commit, and only if
// the message was pending until then, so each message is reported
// delivered once, also across a crash (a lost mark means a resend after
// the restart, a new ack, and the one report). If the writer's queue is
// full the ack is ignored: the message stays in the outbox and is written
// again after AckTimeout.
func (n *Node) acked(p peer.ID, id []byte) {
	o := n.out.get(p, hex.EncodeToString(id))
	if o == nil {
		return // unknown, or already acknowledged
	}
	queued := n.db.tryMarkDelivered(p, id, func(dm Message, ok bool, err error) {
		switch {
		case err != nil:
			n.log.Error("store delivered mark", "peer", p, "err", err)
		case ok:
			n.ev.emit(EventDelivered{ID: dm.ID, To: dm.To})
		}
	})
	if queued {
		n.out.drop(o)
	}
}

// History returns up to limit messages (limit <= 0: all) exchanged with
// nick (or a peer ID string), oldest first. It works offline, from the
// database.
func (n *Node) History(nick string, limit int) ([]Message, error) {
	c, ok, err := n.db.contact(nick)
	if err != nil {
		return nil, err
	}
	var p peer.ID
	if ok {
		p = c.Peer
	} else if p, err = peer.Decode(nick); err != nil {
		return nil, fmt.Errorf("history %q: %w", nick, ErrUnknownNick)
	}
	return n.db.history(p, limit)
}

// outMsg is one unacknowledged outgoing message.
type outMsg struct {
	m    Message
	seq  uint64 // node-wide order of entry into the outbox
	gone bool   // left the outbox (acknowledged, or its store failed)
	elem *list.Element
}

// peerOutbox is one peer's unacknowledged messages, oldest first.
type peerOutbox struct {
	l    *list.List // of *outMsg
	byID map[string]*outMsg
}

// outbox is every peer's unacknowledged messages in memory, under one
// small lock that is never held across I/O or a channel send.
type outbox struct {
	mu     sync.Mutex
	seq    uint64
	byPeer map[peer.ID]*peerOutbox
}

func newOutbox() *outbox { return &outbox{byPeer: map[peer.ID]*peerOutbox{}} }

// add appends m to its peer's outbox.
func (ob *outbox) add(m Message) *outMsg {
	ob.mu.Lock()
	defer ob.mu.Unlock()
	po := ob.byPeer[m.Peer]
	if po == nil {
		po = &peerOutbox{l: list.New(), byID: map[string]*outMsg{}}
		ob.byPeer[m.Peer] = po
	}
	ob.seq++
	o := &outMsg{m: m, seq: ob.seq}
	o.elem = po.l.PushBack(o)
	po.byID[m.ID] = o
	return o
}

// get returns p's pending message id, or nil.
func (ob *outbox) get(p peer.ID, id string) *outMsg {
	ob.mu.Lock()
	defer ob.mu.Unlock()
	if po := ob.byPeer[p]; po != nil {
		return po.byID[id]
	}
	return nil
}

// drop takes o out of the outbox.
func (ob *outbox) drop(o *outMsg) {
	ob.mu.Lock()
	defer ob.mu.Unlock()
	if o.gone {
		return
	}
	o.gone = true
	po := ob.byPeer[o.m.Peer]
	if po == nil {
		return
	}
	po.l.Remove(o.elem)
	delete(po.byID, o.m.ID)
	if po.l.Len() == 0 {
		delete(ob.byPeer, o.m.Peer)
	}
}

// pending reports whether p has unacknowledged messages.
func (ob *outbox) pending(p peer.ID) bool {
	ob.mu.Lock()
	defer ob.mu.Unlock()
	return ob.byPeer[p] != nil
}

// peers returns the peers with unacknowledged messages.
func (ob *outbox) peers() []peer.ID {
	ob.mu.Lock()
	defer ob.mu.Unlock()
	out := make([]peer.ID, 0, len(ob.byPeer))
	for p := range ob.byPeer {
		out = append(out, p)
	}
	return out
}

// sendCursor is what one stream has written of its peer's outbox.
type sendCursor struct {
	upTo uint64            // entries up to this seq were written
	sent map[*outMsg]int64 // written (unix nanos), not acknowledged yet
}

// next returns what a stream should write now, oldest first: the
// messages that entered p's outbox after the cursor and, with resend,
// those written more than ackTimeout ago and still unacknowledged. It
// advances the cursor.
func (ob *outbox) next(p peer.ID, c *sendCursor, resend bool, now int64, ackTimeout time.Duration) []*outMsg {
	ob.mu.Lock()
	defer ob.mu.Unlock()
	if resend {
		for o := range c.sent {
			if o.gone {
				delete(c.sent, o)
			}
		}
	}
	po := ob.byPeer[p]
	if po == nil {
		return nil
	}
	var out []*outMsg
	if resend {
		for e := po.l.Front(); e != nil; e = e.Next() {
			o := e.Value.(*outMsg)
			if o.seq > c.upTo {
				break
			}
			if at, ok := c.sent[o]; ok && now-at >= int64(ackTimeout) {
				out = append(out, o)
			}
		}
	}
	first := len(out)
	for e := po.l.Back(); e != nil; e = e.Prev() {
		o := e.Value.(*outMsg)
		if o.seq <= c.upTo {
			break
		}
		out = append(out, o)
	}
	// The new ones were collected newest first.
	for i, j := first, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	if len(out) > first {
		c.upTo = out[len(out)-1].seq
	}
	return out
}
