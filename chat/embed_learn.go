package chat

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"

	"github.com/p2p-messaging/p2p-messaging/internal/addrfile"
)

// Servers learnt while the chat runs (after Open's start-up): a daemon that
// appears in the local addrs file (a daemon started on the machine, or
// another chat's service), and the servers of the chats this one meets,
// asked by peer exchange once per peer. They join the rendezvous client
// (rendezvous.Client.AddServer) and /servers. Bounds: maxServers in all, of
// which at most maxLearnt learnt from other chats (a hostile chat cannot
// fill the list), one question per peer per pexAskEvery, at most
// maxPexAsked peers remembered, pexQueue questions waiting (more are
// dropped), at most maxLearnDials dials per answer. Kept peers that were
// down at the start are dialled again, at most maxKeptRetry a round, each
// with a wait doubling from keptRetryEvery to maxKeptBackoff.

const (
	maxLearnt      = 4
	maxPexAsked    = 256
	pexAskEvery    = 10 * time.Minute
	pexQueue       = 16
	maxLearnDials  = 4
	addrFileEvery  = 10 * time.Second
	learnDialLimit = 5 * time.Second
	keptRetryEvery = 15 * time.Second
	maxKeptBackoff = 10 * time.Minute
	maxKeptRetry   = 8 // kept peers dialled per round
)

// learner is the goroutine that asks and learns; Start runs it.
type learner struct {
	n     *Node
	queue chan peer.ID
	asked map[peer.ID]time.Time // owned by the goroutine

	// Kept peers that stay down are dialled less and less often (from
	// keptRetryEvery doubling to maxKeptBackoff): a record aiming at an
	// address nobody answers costs little.
	mu   sync.Mutex
	next map[peer.ID]time.Time
	wait map[peer.ID]time.Duration
}

func newLearner(n *Node) *learner {
	return &learner{n: n, queue: make(chan peer.ID, pexQueue), asked: map[peer.ID]time.Time{},
		next: map[peer.ID]time.Time{}, wait: map[peer.ID]time.Duration{}}
}

// offer queues a peer that speaks peer exchange; never blocks.
func (l *learner) offer(p peer.ID) {
	if l == nil {
		return
	}
	select {
	case l.queue <- p:
	default:
	}
}

func (l *learner) run(ctx context.Context, addrFile string) {
	var tick <-chan time.Time
	if addrFile != "" {
		t := time.NewTicker(addrFileEvery)
		defer t.Stop()
		tick = t.C
	}
	retry := time.NewTicker(keptRetryEvery)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-retry.C:
			l.n.retryKept(ctx)
		case <-tick:
			l.n.checkAddrFile(ctx, addrFile)
		case p := <-l.queue:
			if at, ok := l.asked[p]; ok && time.Since(at) < pexAskEvery {
				continue
			}
			if len(l.asked) >= maxPexAsked {
				clear(l.asked)
			}
			l.asked[p] = time.Now()
			l.n.learnFrom(ctx, p)
		}
	}
}

// learnFrom asks p which servers it knows and adds the rendezvous servers
// among them (never authorities).
func (n *Node) learnFrom(ctx context.Context, p peer.ID) {
	entries, err := askPex(ctx, n.h, p)
	if err != nil {
		n.log.Debug("peer exchange failed", "peer", p, "err", err)
		return
	}
	dials := 0
	for _, e := range entries {
		if e.Kind != PexRendezvous || n.usesServer(e.Peer.ID) || dials >= maxLearnDials {
			continue
		}
		dials++
		n.learnServer(ctx, e.Peer, "peer exchange via "+p.String(), false, e.Envelope)
	}
}

// checkAddrFile adds the servers of the local addrs file the node does not
// use yet: a daemon started on the machine after the chat.
func (n *Node) checkAddrFile(ctx context.Context, file string) {
	addrs, err := addrfile.Read(file)
	if err != nil {
		return
	}
	infos, err := peer.AddrInfosFromP2pAddrs(addrs...)
	if err != nil {
		return
	}
	for _, ai := range infos {
		if !n.usesServer(ai.ID) && ai.ID != n.h.ID() {
			n.learnServer(ctx, ai, "addrs file", true, nil)
		}
	}
}

func (n *Node) usesServer(p peer.ID) bool {
	if n.srv == nil {
		return true
	}
	n.srv.mu.Lock()
	defer n.srv.mu.Unlock()
	return slices.ContainsFunc(n.srv.servers, func(s ServerInfo) bool { return s.Peer == p })
}

// learnServer connects to ai, tells what it is, and adds it when it is a
// rendezvous server and there is room. configured: the user's own
// configuration named it (the addrs file), so a daemon is an authority.
// rec is the server's signed record when one came with the news.
func (n *Node) learnServer(ctx context.Context, ai peer.AddrInfo, source string, configured bool, rec []byte) {
	if n.srv == nil || n.rdv == nil || ai.ID == n.h.ID() {
		return
	}
	if n.embedded != nil && ai.ID == n.embedded.Host.ID() {
		return
	}
	n.srv.mu.Lock()
	total, learnt := len(n.srv.servers), 0
	for _, s := range n.srv.servers {
		if !s.Authority && s.Kind != ServerSelf {
			learnt++
		}
	}
	n.srv.mu.Unlock()
	if total >= maxServers || (!configured && learnt >= maxLearnt) {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, learnDialLimit)
	defer cancel()
	n.h.Peerstore().AddAddrs(ai.ID, ai.Addrs, peerstore.TempAddrTTL)
	if err := n.h.Connect(network.WithForceDirectDial(cctx, "learn server"), ai); err != nil {
		n.log.Debug("learnt server unreachable", "peer", ai.ID, "source", source, "err", err)
		return
	}
	kind, relay, isServer, _ := classify(n.h, ai.ID)
	if !isServer || kind == ServerRelay {
		return
	}
	authority := configured && kind == ServerDaemon
	if !configured && kind == ServerDaemon {
		if a, _ := n.h.Peerstore().Get(ai.ID, "AgentVersion"); a != DaemonAgent {
			kind = ServerChat
		}
	}
	info := peer.AddrInfo{ID: ai.ID, Addrs: n.h.Peerstore().Addrs(ai.ID)}
	n.srv.mu.Lock()
	if slices.ContainsFunc(n.srv.servers, func(s ServerInfo) bool { return s.Peer == ai.ID }) || len(n.srv.servers) >= maxServers {
		n.srv.mu.Unlock()
		return
	}
	n.srv.servers = append(n.srv.servers, ServerInfo{Peer: ai.ID, Addrs: info.Addrs, Kind: kind, Source: source, Authority: authority, Relay: relay})
	n.srv.mu.Unlock()
	if _, err := n.rdv.AddServer(info); err != nil {
		n.log.Debug("add server", "peer", ai.ID, "err", err)
		return
	}
	n.log.Info("server added", "peer", ai.ID, "kind", kind, "source", source, "authority", authority)
	n.ev.emit(EventWarning{Text: "now also using " + string(kind) + " server " + ai.ID.String() + " (" + source + ")"})
	if rec == nil {
		wctx, cancel := context.WithTimeout(ctx, recordWait)
		rec = n.records.wait(wctx, ai.ID)
		cancel()
	}
	n.saveKept(rec, PexRendezvous, source)
}

// saveKept adds a server to PeersFileName for the next start.
func (n *Node) saveKept(rec []byte, kind PexKind, source string) {
	if rec == nil {
		return
	}
	n.srv.mu.Lock()
	if len(n.srv.peers) < maxKeptPeers {
		n.srv.peers = append(n.srv.peers, keptPeer{Kind: kind, Source: source, Record: rec})
	}
	kept := slices.Clone(n.srv.peers)
	n.srv.mu.Unlock()
	if err := saveKeptPeers(n.srv.file, kept); err != nil {
		n.log.Debug("keep peers", "err", err)
	}
}

// startLearning runs the learner once the node has started.
func (n *Node) startLearning() {
	if n.learn == nil {
		return
	}
	l := n.learn
	if !n.spawn(func() { l.run(n.ctx, n.srv.addrFile) }) {
		return
	}
	n.records.setOnPex(l.offer)
}

// retryKept dials, a few per round, the kept peers that are not connected
// (they were down at the start): a chat that comes back is then asked for
// its servers (identify tells the learner), a server is added.
func (n *Node) retryKept(ctx context.Context) {
	if n.srv == nil {
		return
	}
	n.srv.mu.Lock()
	kept := slices.Clone(n.srv.peers)
	n.srv.mu.Unlock()
	tried := 0
	for _, e := range verifyKept(kept, n.h.ID()) {
		if tried >= maxKeptRetry || ctx.Err() != nil {
			return
		}
		if n.h.Network().Connectedness(e.Peer.ID) == network.Connected || e.Peer.ID == n.h.ID() {
			continue
		}
		if n.embedded != nil && e.Peer.ID == n.embedded.Host.ID() {
			continue
		}
		if !n.learn.due(e.Peer.ID) {
			continue
		}
		tried++
		if e.Kind == PexRendezvous {
			if !n.usesServer(e.Peer.ID) {
				n.learnServer(ctx, e.Peer, "kept on disk", false, e.Envelope)
			}
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, learnDialLimit)
		n.h.Peerstore().AddAddrs(e.Peer.ID, e.Peer.Addrs, peerstore.TempAddrTTL)
		if err := n.h.Connect(network.WithForceDirectDial(cctx, "kept peer"), e.Peer); err != nil {
			n.log.Debug("kept peer still unreachable", "peer", e.Peer.ID, "err", err)
		}
		cancel()
	}
}

// verifyKept turns kept entries back into verified peers.
func verifyKept(kept []keptPeer, self peer.ID) []PexEntry {
	raw := make([]rawPexEntry, 0, len(kept))
	for _, k := range kept {
		kind := k.Kind
		if kind == 0 {
			kind = PexDHT
		}
		raw = append(raw, rawPexEntry{kind: uint64(kind), record: k.Record})
	}
	return verifyPexEntries(raw, self)
}

// due reports whether kept peer p may be dialled now, and schedules the
// next try after a longer wait.
func (l *learner) due(p peer.ID) bool {
	if l == nil {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if t, ok := l.next[p]; ok && now.Before(t) {
		return false
	}
	w := l.wait[p]
	if w == 0 {
		w = keptRetryEvery
	} else {
		w = min(2*w, maxKeptBackoff)
	}
	if len(l.wait) >= maxKeptPeers*2 {
		clear(l.wait)
		clear(l.next)
	}
	l.wait[p], l.next[p] = w, now.Add(w)
	return true
}
