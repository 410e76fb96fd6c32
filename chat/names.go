package chat

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
)

// errNotAuthorized is what a nameService returns when a daemon refuses a
// registration (E_NOT_AUTHORIZED: another peer holds an exclusive name).
var errNotAuthorized = errors.New("not authorized")

type watchKind int

const (
	watchRegistered watchKind = iota
	watchUnregistered
	watchSynced
)

type watchEvent struct {
	kind watchKind
	peer peer.AddrInfo
}

// nameService is what the node needs from the rendezvous client.
type nameService interface {
	Register(ctx context.Context, ns string, ttl time.Duration) error
	Unregister(ctx context.Context, ns string) error
	Discover(ctx context.Context, ns string, limit int) ([]peer.AddrInfo, error)
	Watch(ctx context.Context, ns string) (<-chan watchEvent, error)
	Close() error
}

// newNameService builds the rendezvous-backed nameService (rdv.go).
var newNameService func(h host.Host, servers []peer.AddrInfo, log *slog.Logger) (nameService, error)

// resolve maps a nick (or a peer ID string) to a peer: the pinned contact
// first, then the rendezvous daemons, then the DHT. A nick found for the
// first time is pinned when pin is true.
func (n *Node) resolve(ctx context.Context, nick string, pin bool) (peer.ID, error) {
	c, ok, err := n.db.contact(nick)
	if err != nil {
		return "", err
	}
	if ok {
		return c.Peer, nil
	}
	if p, err := peer.Decode(nick); err == nil {
		return p, nil
	}
	if !ValidNick(nick) {
		return "", ErrUnknownNick
	}
	var found []peer.AddrInfo
	if n.rdv != nil {
		infos, err := n.rdv.Discover(ctx, userNS(nick), 10)
		if err != nil {
			n.log.Debug("rendezvous look-up", "ns", userNS(nick), "err", err)
		}
		found = infos
	}
	if len(found) == 0 && n.disc != nil {
		dctx, cancel := context.WithTimeout(ctx, resolveTimeout)
		ch, err := n.disc.FindPeers(dctx, userNS(nick))
		if err == nil {
			for ai := range ch {
				if ai.ID != n.h.ID() && !containsPeer(found, ai.ID) {
					found = append(found, ai)
				}
				if len(found) > 1 {
					break
				}
			}
		}
		cancel()
	}
	found = dropPeer(found, n.h.ID())
	switch {
	case len(found) == 0:
		return "", ErrUnknownNick
	case len(found) > 1:
		n.warn(nick, found[1].ID, fmt.Sprintf("several peers claim nick %q (%s, %s); not pinning", nick, found[0].ID, found[1].ID))
		return "", fmt.Errorf("ambiguous nick: %d peers claim it", len(found))
	}
	ai := found[0]
	n.h.Peerstore().AddAddrs(ai.ID, ai.Addrs, peerstore.AddressTTL)
	if !pin {
		return ai.ID, nil
	}
	pinned, err := n.db.pin(nick, ai.ID, ai.Addrs, time.Now())
	if err != nil {
		return "", fmt.Errorf("pin %q: %w", nick, err)
	}
	n.learnNick(pinned, nick)
	return pinned, nil
}

func containsPeer(infos []peer.AddrInfo, p peer.ID) bool {
	for _, ai := range infos {
		if ai.ID == p {
			return true
		}
	}
	return false
}

func dropPeer(infos []peer.AddrInfo, p peer.ID) []peer.AddrInfo {
	out := infos[:0:0]
	for _, ai := range infos {
		if ai.ID != p {
			out = append(out, ai)
		}
	}
	return out
}

// identify decides how to name peer p that claims nick in its Hello. It
// returns the nick if the claim holds: the nick is pinned to p, or it is not
// pinned yet and the rendezvous daemons list p under it (or no daemon
// answers: trust on first use), in which case it is pinned now. Otherwise
// it warns once and returns p's ID string.
func (n *Node) identify(ctx context.Context, p peer.ID, claimed string) string {
	if claimed == n.cfg.Nick {
		n.warn(claimed, p, fmt.Sprintf("peer %s claims our own nick %q", p, claimed))
		return p.String()
	}
	c, ok, err := n.db.contact(claimed)
	if err != nil {
		n.log.Warn("read contact", "nick", claimed, "err", err)
		return p.String()
	}
	if ok {
		if c.Peer == p {
			n.learnNick(p, claimed)
			return claimed
		}
		n.warnImpersonation(claimed, p, c.Peer)
		return p.String()
	}
	if n.rdv != nil {
		vctx, cancel := context.WithTimeout(ctx, verifyTimeout)
		infos, err := n.rdv.Discover(vctx, userNS(claimed), 10)
		cancel()
		switch {
		case err != nil:
			// No daemon answers: fall back to trust on first use.
			n.log.Debug("verify nick at rendezvous", "peer", p, "ns", userNS(claimed), "err", err)
		case containsPeer(infos, p):
			// Verified: the exclusive namespace is held by this peer.
		case len(infos) > 0:
			n.warn(claimed, p, fmt.Sprintf("peer %s claims nick %q, which the rendezvous daemons list for %s; not accepted", p, claimed, infos[0].ID))
			return p.String()
		default:
			n.warn(claimed, p, fmt.Sprintf("peer %s claims nick %q, which it has not registered at the rendezvous daemons; shown by peer ID", p, claimed))
			return p.String()
		}
	}
	// Pin the nick to this peer (verified, or trust on first use).
	pinned, err := n.db.pin(claimed, p, n.h.Peerstore().Addrs(p), time.Now())
	if err != nil {
		n.log.Warn("pin contact", "nick", claimed, "peer", p, "err", err)
		return p.String()
	}
	if pinned != p {
		n.warnImpersonation(claimed, p, pinned)
		return p.String()
	}
	n.learnNick(p, claimed)
	return claimed
}

// learnNick records p's verified nick and starts watching its user
// namespace.
func (n *Node) learnNick(p peer.ID, nick string) {
	n.mu.Lock()
	ps := n.peer(p)
	had := ps.nick
	ps.nick = nick
	if had != nick && ps.online {
		// The peer is online but was not announced under this nick yet.
		n.ev.emit(EventPresence{Nick: nick, Peer: p, Online: true})
	}
	n.mu.Unlock()
	n.watchContact(nick)
}

func (n *Node) warnImpersonation(nick string, claimer, pinned peer.ID) {
	n.warn(nick, claimer, fmt.Sprintf("peer %s claims nick %q, which is pinned to %s; not accepted (messages to %q still go to %s only)", claimer, nick, pinned, nick, pinned))
}

// warn emits an EventWarning once per (nick, peer).
func (n *Node) warn(nick string, p peer.ID, text string) {
	key := nick + "/" + p.String()
	n.mu.Lock()
	seen := n.warned[key]
	n.warned[key] = true
	n.mu.Unlock()
	if seen {
		return
	}
	n.log.Warn("warning", "text", text, "peer", p, "claimed_nick", nick)
	n.ev.emit(EventWarning{Text: text, Nick: nick, Peer: p})
}

// startRoomWatch follows the room namespace on the daemons.
func (n *Node) startRoomWatch(room string) {
	ctx, cancel := context.WithCancel(n.ctx)
	n.mu.Lock()
	if n.closed || n.room != room {
		n.mu.Unlock()
		cancel()
		return
	}
	if n.roomCancel != nil {
		n.roomCancel()
	}
	n.roomCancel = cancel
	n.mu.Unlock()
	n.watch(ctx, roomNS(room), "")
}

// watchContact follows a pinned contact's user namespace (bounded number).
func (n *Node) watchContact(nick string) {
	if n.rdv == nil {
		return
	}
	n.mu.Lock()
	if !n.started || n.closed || len(n.contactWatch) >= maxContactWatch {
		n.mu.Unlock()
		return
	}
	if _, ok := n.contactWatch[nick]; ok {
		n.mu.Unlock()
		return
	}
	ctx, cancel := context.WithCancel(n.ctx)
	n.contactWatch[nick] = cancel
	n.mu.Unlock()
	n.watch(ctx, userNS(nick), nick)
}

// watch consumes a rendezvous watch on ns. For a user namespace, nick is the
// pinned nick it belongs to.
func (n *Node) watch(ctx context.Context, ns, nick string) {
	n.spawn(func() {
		ch, err := n.rdv.Watch(ctx, ns)
		if err != nil {
			n.log.Debug("watch", "ns", ns, "err", err)
			return
		}
		for ev := range ch {
			n.onWatch(ctx, ns, nick, ev)
		}
	})
}

func (n *Node) onWatch(ctx context.Context, ns, nick string, ev watchEvent) {
	p := ev.peer.ID
	if ev.kind == watchSynced || p == n.h.ID() || p == "" {
		return
	}
	if nick != "" && ev.kind == watchRegistered {
		c, ok, err := n.db.contact(nick)
		if err == nil && ok && c.Peer != p {
			n.warnImpersonation(nick, p, c.Peer)
			return
		}
		if ok && len(ev.peer.Addrs) > 0 {
			_ = n.db.setAddrs(nick, p, ev.peer.Addrs)
		}
	}
	if ctx.Err() != nil {
		return
	}
	n.mu.Lock()
	ps := n.peer(p)
	switch ev.kind {
	case watchRegistered:
		if len(ev.peer.Addrs) > 0 {
			n.h.Peerstore().AddAddrs(p, ev.peer.Addrs, peerstore.AddressTTL)
		}
		// A registration is not proof of life (the daemons keep a killed
		// peer listed for a moment, and watches replay snapshots): a peer
		// we saw die stays offline until a new stream to it comes up,
		// which the retry loop now attempts.
		ps.regs[ns] = true
		ps.nextTry = time.Time{}
		ps.backoff = 0
	case watchUnregistered:
		delete(ps.regs, ns)
	}
	n.updatePresenceLocked(ps)
	n.mu.Unlock()
	if ev.kind == watchRegistered {
		// It may have restarted on the same addresses: forget failed dials.
		if sw, ok := n.h.Network().(interface{ Backoff() *swarm.DialBackoff }); ok {
			sw.Backoff().Clear(p)
		}
		n.kickRetry()
	}
}

// lookupAddrs refreshes p's addresses from the rendezvous daemons (its user
// namespace if pinned, the room) and the DHT. It reports whether any were
// found.
func (n *Node) lookupAddrs(ctx context.Context, p peer.ID) bool {
	var nss []string
	if nick := n.nickOf(p); nick != "" {
		nss = append(nss, userNS(nick))
	}
	nss = append(nss, roomNS(n.Room()))
	if n.rdv != nil {
		for _, ns := range nss {
			infos, err := n.rdv.Discover(ctx, ns, 100)
			if err != nil {
				n.log.Debug("rendezvous look-up", "ns", ns, "err", err)
				continue
			}
			for _, ai := range infos {
				if ai.ID == p && len(ai.Addrs) > 0 {
					n.h.Peerstore().AddAddrs(p, ai.Addrs, peerstore.AddressTTL)
					return true
				}
			}
		}
	}
	if n.dht != nil {
		dctx, cancel := context.WithTimeout(ctx, resolveTimeout)
		defer cancel()
		ai, err := n.dht.FindPeer(dctx, p)
		if err == nil && len(ai.Addrs) > 0 {
			n.h.Peerstore().AddAddrs(p, ai.Addrs, peerstore.AddressTTL)
			return true
		}
	}
	return false
}

// nickOf returns p's verified nick, or "".
func (n *Node) nickOf(p peer.ID) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if ps, ok := n.peers[p]; ok {
		return ps.nick
	}
	return ""
}
