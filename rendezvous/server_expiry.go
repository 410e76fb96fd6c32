package rendezvous

import (
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// sweepInterval is how often expired registrations and idle rate limiters
// are freed, at the latest.
const sweepInterval = 30 * time.Second

// minSweepGap spaces the sweeps that readers trigger.
const minSweepGap = time.Second

// watchConnectedness removes the registrations of peers whose last
// connection closed and who did not come back within the grace period.
func (s *Server) watchConnectedness() {
	defer s.wg.Done()
	for {
		select {
		case <-s.ctx.Done():
			return
		case ev, ok := <-s.sub.Out():
			if !ok {
				return
			}
			e := ev.(event.EvtPeerConnectednessChanged)
			if e.Connectedness == network.Connected {
				s.mu.Lock()
				if t := s.grace[e.Peer]; t != nil {
					t.Stop()
					delete(s.grace, e.Peer)
				}
				s.mu.Unlock()
				continue
			}
			if e.Connectedness != network.NotConnected || !s.st.hasPeer(e.Peer) {
				continue
			}
			if s.cfg.grace == 0 {
				s.dropPeer(e.Peer)
				continue
			}
			p := e.Peer
			s.mu.Lock()
			if t := s.grace[p]; t != nil {
				t.Stop()
			}
			s.grace[p] = time.AfterFunc(s.cfg.grace, func() { s.graceOver(p) })
			s.mu.Unlock()
		}
	}
}

func (s *Server) graceOver(p peer.ID) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	delete(s.grace, p)
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	if s.h.Network().Connectedness(p) != network.NotConnected {
		return // came back (possibly only through a relay)
	}
	s.dropPeer(p)
}

func (s *Server) dropPeer(p peer.ID) {
	if n := s.st.removePeer(p, reasonDisconnect); n > 0 {
		s.log.Debug("peer disconnected, registrations removed", "peer", p, "registrations", n)
	}
}

// sweeper frees expired registrations periodically, and soon after a
// reader has skipped one (at most once per minSweepGap, since a sweep walks
// the whole index under the write lock).
func (s *Server) sweeper() {
	defer s.wg.Done()
	t := time.NewTicker(sweepInterval)
	defer t.Stop()
	var (
		last    time.Time
		delayed <-chan time.Time
	)
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		case <-delayed:
		case <-s.st.expiredSeen:
			if wait := minSweepGap - time.Since(last); wait > 0 {
				if delayed == nil {
					delayed = time.After(wait)
				}
				continue
			}
		}
		delayed = nil
		last = time.Now()
		now := s.cfg.now()
		if n := s.st.sweep(now.UnixNano()); n > 0 {
			s.log.Debug("expired registrations removed", "registrations", n)
		}
		s.rl.sweep(now)
		s.names.sweep(now.UnixNano()) // name leases (lease.go)
	}
}
