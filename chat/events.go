package chat

import (
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
)

// EventBuffer is the capacity of the Events channel.
const EventBuffer = 1024

// Event is something the UI shows. Receive them from Node.Events.
type Event interface{ isEvent() }

// EventReady: the node is registered and ready.
type EventReady struct {
	Nick  string
	Peer  peer.ID
	Addrs []multiaddr.Multiaddr
}

// EventSent: a message was accepted for sending (its pending record is
// committed).
type EventSent struct{ ID, To string }

// EventDelivered: the receiver acknowledged a message and the delivered
// mark is committed; once per message.
type EventDelivered struct{ ID, To string }

// EventStored: a message the recipient did not take directly was left,
// sealed to it, in the mailbox of Daemons rendezvous daemons
// (chat/mailbox.go); EventDelivered still follows its ack or receipt.
type EventStored struct {
	ID, To  string
	Daemons int
}

// EventMessage: an incoming message, emitted once per message ID.
type EventMessage struct{ Message Message }

// EventRequest: a stranger (neither pinned nor written to nor allowed)
// sent its first message. Nick is its verified nick or its peer ID. Later
// messages wait at the sender until the user allows it (Allow).
type EventRequest struct {
	Peer peer.ID
	Nick string
	Text string
	ID   string
	Time time.Time
}

// EventAllowed: the user allowed a peer (Allow).
type EventAllowed struct{ Peer peer.ID }

// EventBlocked: the user blocked a peer (Block).
type EventBlocked struct{ Peer peer.ID }

// EventUnblocked: the user lifted a block (Unblock).
type EventUnblocked struct{ Peer peer.ID }

// EventPresence: a peer went online or offline (emitted on change only).
// With Room, a member joined or left that room (coalesced: a member back
// within Config.RoomPresenceGrace is not shown leaving).
type EventPresence struct {
	Nick   string
	Peer   peer.ID
	Online bool
	Room   string
}

// EventConn: the connection kind to a peer changed (e.g. relayed -> direct,
// or none once it went offline).
type EventConn struct {
	Nick string
	Peer peer.ID
	Conn ConnInfo
}

// EventHolePunch: a hole punch attempt ended (DCUtR's tracer), including an
// attempt that broke off with a protocol error (Err starts with
// "protocol: ") and a direct dial that made a punch unnecessary. A Host
// from NewHost also publishes it on its event bus.
type EventHolePunch struct {
	Peer     peer.ID
	Success  bool
	Attempts int
	Elapsed  time.Duration
	Err      string
	// Reason is why the punch failed in one short phrase, as Peers shows
	// it (PeerStatus.Punch); "" on success.
	Reason string
}

// EventWarning: something the user must see, e.g. a peer impersonating a
// pinned nick.
type EventWarning struct {
	Text string
	Nick string
	Peer peer.ID
}

func (EventReady) isEvent()     {}
func (EventSent) isEvent()      {}
func (EventDelivered) isEvent() {}
func (EventStored) isEvent()    {}
func (EventMessage) isEvent()   {}
func (EventRequest) isEvent()   {}
func (EventAllowed) isEvent()   {}
func (EventBlocked) isEvent()   {}
func (EventUnblocked) isEvent() {}
func (EventPresence) isEvent()  {}
func (EventConn) isEvent()      {}
func (EventHolePunch) isEvent() {}
func (EventWarning) isEvent()   {}

// maxQueuedEvents caps the internal queue behind the Events channel.
const maxQueuedEvents = 1 << 16

// eventQueue decouples producers (stream readers, watchers, the hole-punch
// tracer) from the consumer. emit never blocks: it appends to an in-memory
// queue that one pump goroutine drains into the bounded Events channel. If
// the consumer stops reading and the queue reaches maxQueuedEvents, the
// oldest queued event is dropped and counted (a warning is logged). Nothing
// the UI needs is lost for good that way: messages and their states stay in
// the database (History).
type eventQueue struct {
	log *slog.Logger
	out chan Event

	mu      sync.Mutex
	q       []Event
	dropped uint64
	closed  bool
	wake    chan struct{}
	done    chan struct{}
	stopped chan struct{}
}

func newEventQueue(log *slog.Logger) *eventQueue {
	e := &eventQueue{
		log:     log,
		out:     make(chan Event, EventBuffer),
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		stopped: make(chan struct{}),
	}
	go e.pump()
	return e
}

func (e *eventQueue) emit(ev Event) {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return
	}
	if len(e.q) >= maxQueuedEvents {
		e.q[0] = nil
		e.q = e.q[1:]
		e.dropped++
		if e.dropped == 1 || e.dropped%1000 == 0 {
			e.log.Warn("event consumer too slow, dropping oldest events", "dropped", e.dropped)
		}
	}
	e.q = append(e.q, ev)
	e.mu.Unlock()
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

func (e *eventQueue) pump() {
	defer close(e.stopped)
	defer close(e.out)
	for {
		e.mu.Lock()
		var ev Event
		if len(e.q) > 0 {
			ev = e.q[0]
			e.q[0] = nil
			e.q = e.q[1:]
		}
		e.mu.Unlock()
		if ev == nil {
			select {
			case <-e.wake:
				continue
			case <-e.done:
				return
			}
		}
		select {
		case e.out <- ev:
		case <-e.done:
			e.flush(ev)
			return
		}
	}
}

// flush hands what still fits into the channel buffer, without blocking.
func (e *eventQueue) flush(first Event) {
	e.mu.Lock()
	q := append([]Event{first}, e.q...)
	e.q = nil
	e.mu.Unlock()
	for _, ev := range q {
		select {
		case e.out <- ev:
		default:
			return
		}
	}
}

// close stops the pump after delivering what the channel buffer can still
// take without blocking, then closes the Events channel.
func (e *eventQueue) close() {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return
	}
	e.closed = true
	e.mu.Unlock()
	close(e.done)
	<-e.stopped
}
