package chat

import (
	"context"
	"slices"
	"sync"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/host/eventbus"
)

// maxRecords bounds the signed peer records a recordBook keeps.
const maxRecords = 512

// recordBook keeps the signed peer record each peer sent in identify (the
// host's event bus carries it; go-libp2p's peerstore does not keep it), so
// that peer exchange can hand out records whose signatures prove the
// addresses. One goroutine drains the subscription.
type recordBook struct {
	mu   sync.Mutex
	recs map[peer.ID][]byte
	// onPex, when set, hears of every identified peer that speaks peer
	// exchange (embed_learn.go); it must not block.
	onPex func(peer.ID)
	sub   event.Subscription
	done  chan struct{}
	// changed is closed and replaced whenever a record arrives.
	changed chan struct{}
}

func newRecordBook(bus event.Bus) (*recordBook, error) {
	sub, err := bus.Subscribe(new(event.EvtPeerIdentificationCompleted), eventbus.Name("chat-pex-records"))
	if err != nil {
		return nil, err
	}
	b := &recordBook{recs: map[peer.ID][]byte{}, sub: sub, done: make(chan struct{}), changed: make(chan struct{})}
	go func() {
		defer close(b.done)
		for e := range sub.Out() {
			ev := e.(event.EvtPeerIdentificationCompleted)
			if slices.Contains(ev.Protocols, PexProtocolID) {
				b.mu.Lock()
				f := b.onPex
				b.mu.Unlock()
				if f != nil {
					f(ev.Peer)
				}
			}
			if ev.SignedPeerRecord == nil {
				continue
			}
			raw, err := ev.SignedPeerRecord.Marshal()
			if err != nil || len(raw) > MaxPexRecord {
				continue
			}
			b.mu.Lock()
			if _, ok := b.recs[ev.Peer]; !ok && len(b.recs) >= maxRecords {
				for k := range b.recs {
					delete(b.recs, k)
					break
				}
			}
			b.recs[ev.Peer] = raw
			close(b.changed)
			b.changed = make(chan struct{})
			b.mu.Unlock()
		}
	}()
	return b, nil
}

func (b *recordBook) setOnPex(f func(peer.ID)) {
	if b == nil {
		return
	}
	b.mu.Lock()
	b.onPex = f
	b.mu.Unlock()
}

func (b *recordBook) get(p peer.ID) []byte {
	if b == nil {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.recs[p]
}

// wait returns p's record, waiting for identify to deliver it until ctx
// ends (a connection was just made; its identification is under way).
func (b *recordBook) wait(ctx context.Context, p peer.ID) []byte {
	if b == nil {
		return nil
	}
	for {
		b.mu.Lock()
		rec, ch := b.recs[p], b.changed
		b.mu.Unlock()
		if rec != nil {
			return rec
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil
		}
	}
}

func (b *recordBook) close() {
	if b == nil {
		return
	}
	b.sub.Close()
	<-b.done
}
