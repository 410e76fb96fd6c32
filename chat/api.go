package chat

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
)

// Send sends text to nick (or to a peer ID string). It resolves the nick
// (pinned contacts, then the rendezvous daemons, then the DHT; a nick found
// for the first time is pinned), hands the message to the peer's stream
// (if one is up) while storing it as pending in the history and the outbox,
// and returns once that record is committed, after emitting EventSent.
// Delivery happens in the background, now if the peer is reachable,
// otherwise as soon as it is next online; EventDelivered follows the
// acknowledgement. If Send fails to store the message it returns an error;
// the frame may already have reached the peer.
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
	p, err := n.resolve(ctx, nick, true)
	if err != nil {
		return Message{}, fmt.Errorf("send to %q: %w", nick, err)
	}
	if p == n.h.ID() {
		return Message{}, fmt.Errorf("send to %q: that is this node", nick)
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
		Time:     time.Now().UTC().Truncate(time.Millisecond),
		Outgoing: true,
		Status:   StatusPending,
	}
	// The frame goes out while the pending record is being committed (the
	// group-commit writer batches it with other writes); Send returns once
	// the record is durable. An ack that overtakes the commit is held by
	// the outbox entry and reported here, after EventSent.
	n.mu.Lock()
	o := n.outboxAddLocked(m, false)
	n.mu.Unlock()
	if cs := n.activeStream(p); cs != nil {
		cs.kick()
	} else {
		n.connect(p, false)
	}
	stored := make(chan error, 1)
	if err := n.db.addOutgoingAsync(m, func(err error) { stored <- err }); err != nil {
		stored <- err
	}
	if err := <-stored; err != nil {
		n.mu.Lock()
		n.outboxRemoveLocked(o)
		n.mu.Unlock()
		if errors.Is(err, ErrClosed) {
			return Message{}, ErrClosed
		}
		return Message{}, fmt.Errorf("send to %q: store: %w", nick, err)
	}
	n.mu.Lock()
	o.stored = true
	n.ev.emit(EventSent{ID: m.ID, To: nick})
	if o.acked {
		n.deliveredLocked(o)
	}
	n.mu.Unlock()
	return m, nil
}

func (n *Node) isClosed() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.closed
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
	// Delivered marks are written lazily: let the queued ones land first.
	if err := n.db.flush(); err != nil && !errors.Is(err, ErrClosed) {
		return nil, fmt.Errorf("history %q: %w", nick, err)
	}
	return n.db.history(p, limit)
}

// Peers returns the peers known to be online (contacts and room members),
// with their connection and round-trip time, sorted by nick.
func (n *Node) Peers(ctx context.Context) []PeerStatus {
	n.mu.Lock()
	var out []PeerStatus
	for id, ps := range n.peers {
		if !ps.online || id == n.h.ID() {
			continue
		}
		nick := ps.nick
		if nick == "" {
			nick = id.String() // not introduced yet; Send accepts a peer ID too
		}
		out = append(out, PeerStatus{Nick: nick, Peer: id, Online: true, RTT: ps.rtt})
	}
	n.mu.Unlock()
	for i := range out {
		out[i].Conn = n.connInfo(out[i].Peer)
		if out[i].RTT == 0 && out[i].Conn.Kind != ConnNone {
			out[i].RTT = n.h.Peerstore().LatencyEWMA(out[i].Peer)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Nick != out[j].Nick {
			return out[i].Nick < out[j].Nick
		}
		return out[i].Peer < out[j].Peer
	})
	return out
}

// Whois describes a nick or a peer ID: the peer, its known addresses,
// whether the nick is pinned, presence and connection. A nick that is not
// pinned is looked up (rendezvous, then DHT) without pinning it.
func (n *Node) Whois(ctx context.Context, nickOrPeerID string) (Whois, error) {
	w := Whois{Nick: nickOrPeerID}
	c, ok, err := n.db.contact(nickOrPeerID)
	if err != nil {
		return Whois{}, err
	}
	switch {
	case ok:
		w.Peer, w.Pinned = c.Peer, true
	case nickOrPeerID == n.cfg.Nick:
		w.Peer = n.h.ID()
	default:
		if p, err := peer.Decode(nickOrPeerID); err == nil {
			w.Peer = p
			w.Nick = n.nickOf(p)
			w.Pinned = w.Nick != ""
		} else if w.Peer, err = n.resolve(ctx, nickOrPeerID, false); err != nil {
			return Whois{}, fmt.Errorf("whois %q: %w", nickOrPeerID, err)
		}
	}
	if w.Peer == n.h.ID() {
		w.Addrs = n.Addrs()
		w.Online = true
		return w, nil
	}
	w.Addrs = n.h.Peerstore().Addrs(w.Peer)
	if len(w.Addrs) == 0 && ok {
		w.Addrs = c.Addrs
	}
	n.mu.Lock()
	if ps, ok := n.peers[w.Peer]; ok {
		w.Online = ps.online
	}
	n.mu.Unlock()
	w.Conn = n.connInfo(w.Peer)
	return w, nil
}

// onConnChange runs from the network notifier (must not block).
func (n *Node) onConnChange(p peer.ID, connected bool, c network.Conn) {
	n.spawn(func() {
		n.updateConn(p)
		if !connected {
			return
		}
		n.mu.Lock()
		ps, known := n.peers[p]
		upgrade := false
		if known {
			// New life: reset the backoff.
			ps.backoff = 0
			ps.nextTry = time.Time{}
			if !c.Stat().Limited && len(ps.streams) > 0 {
				upgrade = true
				for cs := range ps.streams {
					if !cs.limited {
						upgrade = false
					}
				}
			}
		}
		pending := n.pendingLocked(p)
		n.mu.Unlock()
		switch {
		case upgrade:
			// A hole punch (or a direct dial) made a direct connection while
			// the chat ran over the relay: move to a new stream on it.
			n.log.Debug("direct connection: reopening chat stream", "peer", p)
			n.connect(p, true)
		case pending:
			n.kickRetry()
		}
	})
}

// updateConn emits EventConn when the best connection to p changed kind.
func (n *Node) updateConn(p peer.ID) {
	ci := n.connInfo(p)
	n.mu.Lock()
	ps, ok := n.peers[p]
	if !ok || ps.nick == "" {
		n.mu.Unlock()
		return
	}
	if sameConn(ps.conn, ci) {
		n.mu.Unlock()
		return
	}
	ps.conn = ci
	nick := ps.nick
	n.mu.Unlock()
	n.ev.emit(EventConn{Nick: nick, Peer: p, Conn: ci})
}

func sameConn(a, b ConnInfo) bool {
	if a.Kind != b.Kind || a.Transport != b.Transport || a.IPVersion != b.IPVersion || a.Limited != b.Limited {
		return false
	}
	if a.Remote == nil || b.Remote == nil {
		return a.Remote == nil && b.Remote == nil
	}
	return a.Remote.Equal(b.Remote)
}

// connInfo describes the best open connection to p.
func (n *Node) connInfo(p peer.ID) ConnInfo {
	var best network.Conn
	for _, c := range n.h.Network().ConnsToPeer(p) {
		if c.IsClosed() {
			continue
		}
		if best == nil || betterConn(c, best) {
			best = c
		}
	}
	if best == nil {
		return ConnInfo{Kind: ConnNone}
	}
	return describeConn(best)
}

func isRelayed(a multiaddr.Multiaddr) bool {
	_, err := a.ValueForProtocol(multiaddr.P_CIRCUIT)
	return err == nil
}

func betterConn(a, b network.Conn) bool {
	al, bl := a.Stat().Limited, b.Stat().Limited
	if al != bl {
		return !al
	}
	ar, br := isRelayed(a.RemoteMultiaddr()), isRelayed(b.RemoteMultiaddr())
	if ar != br {
		return !ar
	}
	return a.Stat().Opened.After(b.Stat().Opened)
}

func describeConn(c network.Conn) ConnInfo {
	ra := c.RemoteMultiaddr()
	ci := ConnInfo{Kind: ConnDirect, Remote: ra, Limited: c.Stat().Limited}
	if isRelayed(ra) {
		ci.Kind = ConnRelayed
	}
	for _, comp := range ra {
		switch comp.Protocol().Code {
		case multiaddr.P_IP4:
			if ci.IPVersion == 0 {
				ci.IPVersion = 4
			}
		case multiaddr.P_IP6:
			if ci.IPVersion == 0 {
				ci.IPVersion = 6
			}
		case multiaddr.P_TCP:
			if ci.Transport == "" {
				ci.Transport = "tcp"
			}
		case multiaddr.P_QUIC_V1, multiaddr.P_QUIC:
			ci.Transport = "quic"
		case multiaddr.P_CIRCUIT:
			return ci
		}
	}
	return ci
}
