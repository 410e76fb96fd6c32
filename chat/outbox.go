package chat

import (
	"container/list"

	"github.com/libp2p/go-libp2p/core/peer"
)

// The outbox lives on disk (store) and, for sending, in memory: the
// stream writers take messages from here, so a message goes on the wire
// while its pending record is still being committed, and an ack is
// matched without a database read.

// outMsg is one unacknowledged outgoing message. Guarded by Node.mu.
type outMsg struct {
	m      Message
	seq    uint64 // node-wide order of entry into the outbox
	stored bool   // its pending record is committed
	acked  bool   // acknowledged before stored: Send finishes the delivery
	gone   bool   // left the outbox (acknowledged, or its store failed)
	elem   *list.Element
}

// peerOutbox is one peer's unacknowledged messages, oldest first.
type peerOutbox struct {
	l    *list.List // of *outMsg
	byID map[string]*outMsg
}

// outboxAddLocked appends m to p's outbox. Call with n.mu held.
func (n *Node) outboxAddLocked(m Message, stored bool) *outMsg {
	ob := n.outbox[m.Peer]
	if ob == nil {
		ob = &peerOutbox{l: list.New(), byID: map[string]*outMsg{}}
		n.outbox[m.Peer] = ob
	}
	n.outSeq++
	o := &outMsg{m: m, seq: n.outSeq, stored: stored}
	o.elem = ob.l.PushBack(o)
	ob.byID[m.ID] = o
	return o
}

// outboxRemoveLocked takes o out of its peer's outbox. Call with n.mu held.
func (n *Node) outboxRemoveLocked(o *outMsg) {
	if o.gone {
		return
	}
	o.gone = true
	ob := n.outbox[o.m.Peer]
	if ob == nil {
		return
	}
	ob.l.Remove(o.elem)
	delete(ob.byID, o.m.ID)
	if ob.l.Len() == 0 {
		delete(n.outbox, o.m.Peer)
	}
}

// pendingLocked reports whether p has unacknowledged messages. Call with
// n.mu held.
func (n *Node) pendingLocked(p peer.ID) bool {
	ob := n.outbox[p]
	return ob != nil && ob.l.Len() > 0
}

// toWriteLocked returns what cs should write now, oldest first: the
// messages that entered p's outbox after *upTo and, with resend, those
// written on cs more than AckTimeout ago and still unacknowledged. It
// advances *upTo. Call with n.mu held.
func (n *Node) toWriteLocked(cs *chatStream, upTo *uint64, sent map[*outMsg]int64, resend bool, now int64) []*outMsg {
	ob := n.outbox[cs.peer]
	if ob == nil {
		return nil
	}
	var out []*outMsg
	if resend {
		limit := int64(n.cfg.AckTimeout)
		for e := ob.l.Front(); e != nil; e = e.Next() {
			o := e.Value.(*outMsg)
			if o.seq > *upTo {
				break
			}
			if at, ok := sent[o]; ok && now-at >= limit {
				out = append(out, o)
			}
		}
	}
	first := len(out)
	for e := ob.l.Back(); e != nil; e = e.Prev() {
		o := e.Value.(*outMsg)
		if o.seq <= *upTo {
			break
		}
		out = append(out, o)
	}
	// The new ones were collected newest first.
	for i, j := first, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	if len(out) > first {
		*upTo = out[len(out)-1].seq
	}
	return out
}
