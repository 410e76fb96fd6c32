package rendezvous

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/p2p-messaging/p2p-messaging/internal/backoff"
)

// keeper keeps one namespace registered on every server: one goroutine that
// re-registers each server when its refresh is due (about half the granted
// TTL), when the host's addresses change, when the server's connection
// comes back, and, with exponential backoff, while a server fails.
type keeper struct {
	c     *Client
	ns    string
	ttl   time.Duration
	state map[peer.ID]*keptServer // owned by the goroutine

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	wake   chan struct{} // cap 1

	mu      sync.Mutex
	pending map[peer.ID]bool // server -> forced; "" means every server
	added   []peer.ID        // servers added since (AddServer)
}

// keptServer is the keeper's view of one server.
type keptServer struct {
	due     time.Time
	failing bool
	retry   *backoff.Backoff
	granted time.Duration
	conn    network.Conn // connection of the last successful REGISTER
}

func newKeptServer(c *Client) *keptServer {
	return &keptServer{retry: backoff.New(c.cfg.retryMin, c.cfg.retryMax)}
}

func (st *keptServer) succeeded(now time.Time, granted, asked time.Duration, conn network.Conn) {
	st.failing = false
	st.retry.Reset()
	st.granted = granted
	st.conn = conn
	st.due = now.Add(refreshDelay(granted, asked, rand.Float64()))
}

func (st *keptServer) failed(now time.Time) {
	st.failing = true
	st.conn = nil
	st.due = now.Add(st.retry.Next())
}

// refreshDelay is when to renew a registration granted for granted (asked
// for asked; 0 = server default): at half its life, ±10% jitter so many
// clients don't refresh in step.
func refreshDelay(granted, asked time.Duration, r float64) time.Duration {
	if granted <= 0 {
		granted = asked
	}
	if granted <= 0 {
		granted = DefaultTTL
	}
	d := time.Duration(float64(granted) * (0.45 + 0.1*r))
	return max(d, 100*time.Millisecond)
}

func newKeeper(c *Client, ns string, ttl time.Duration, state map[peer.ID]*keptServer) *keeper {
	k := &keeper{
		c:       c,
		ns:      ns,
		ttl:     ttl,
		state:   state,
		done:    make(chan struct{}),
		wake:    make(chan struct{}, 1),
		pending: make(map[peer.ID]bool),
	}
	k.ctx, k.cancel = context.WithCancel(c.ctx)
	go k.run()
	return k
}

// stop ends the goroutine and waits for it (in-flight requests are reset).
func (k *keeper) stop() {
	k.cancel()
	<-k.done
}

// poke asks for a re-registration on server ("" = all). Unless forced, a
// server whose last registration went over a connection still open is left
// alone (a reconnect notification for a connection we made ourselves).
func (k *keeper) poke(server peer.ID, force bool) {
	k.mu.Lock()
	k.pending[server] = k.pending[server] || force
	k.mu.Unlock()
	select {
	case k.wake <- struct{}{}:
	default:
	}
}

// addServer makes the keeper register on a server added to the client.
func (k *keeper) addServer(id peer.ID) {
	k.mu.Lock()
	k.added = append(k.added, id)
	k.mu.Unlock()
	select {
	case k.wake <- struct{}{}:
	default:
	}
}

func (k *keeper) applyPending(now time.Time) {
	k.mu.Lock()
	pending := k.pending
	k.pending = make(map[peer.ID]bool)
	added := k.added
	k.added = nil
	k.mu.Unlock()
	for _, id := range added {
		if _, ok := k.state[id]; !ok {
			st := newKeptServer(k.c)
			st.due = now
			k.state[id] = st
		}
	}
	for id, force := range pending {
		for sid, st := range k.state {
			if id != "" && id != sid {
				continue
			}
			if !force && st.conn != nil && !st.conn.IsClosed() {
				continue
			}
			st.due = now
			st.retry.Reset()
		}
	}
}

func (k *keeper) run() {
	defer close(k.done)
	clock := k.c.cfg.clock
	timer := clock.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := clock.Now()
		k.applyPending(now)
		var due []peer.ID
		next := now.Add(time.Hour)
		for id, st := range k.state {
			if !st.due.After(now) {
				due = append(due, id)
			} else if st.due.Before(next) {
				next = st.due
			}
		}
		if len(due) > 0 {
			k.refresh(due)
			if k.ctx.Err() != nil {
				return
			}
			continue
		}
		timer.Reset(next.Sub(now))
		select {
		case <-k.ctx.Done():
			return
		case <-timer.C():
		case <-k.wake:
		}
	}
}

// refresh re-registers on the given servers concurrently and reschedules
// them.
func (k *keeper) refresh(servers []peer.ID) {
	type result struct {
		id      peer.ID
		granted time.Duration
		conn    network.Conn
		err     error
	}
	results := make([]result, len(servers))
	var wg sync.WaitGroup
	for i, id := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sc, err := k.c.server(id)
			if err != nil {
				results[i] = result{id: id, err: err}
				return
			}
			d, conn, err := sc.register(k.ctx, k.ns, k.ttl)
			results[i] = result{id, d, conn, err}
		}()
	}
	wg.Wait()
	if k.ctx.Err() != nil {
		return
	}
	now := k.c.cfg.clock.Now()
	for _, r := range results {
		st := k.state[r.id]
		if r.err == nil {
			if st.failing || st.conn == nil {
				k.c.log.Debug("registration renewed", "ns", k.ns, "peer", r.id, "ttl", r.granted)
			}
			st.succeeded(now, r.granted, k.ttl, r.conn)
			continue
		}
		st.failed(now)
		if isRefusal(r.err) {
			// A refusal (name taken, TTL out of range...) is not transient.
			k.c.log.Warn("registration refused", "ns", k.ns, "peer", r.id, "err", r.err)
		} else {
			k.c.log.Debug("registration failed; will retry", "ns", k.ns, "peer", r.id, "err", r.err, "retry_in", st.due.Sub(now))
		}
	}
}
