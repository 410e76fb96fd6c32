package rendezvous

import (
	"errors"
	"fmt"
	"slices"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
)

// AddServer adds a server to a running client (a server learnt after the
// start, e.g. from peer exchange): kept registrations are made on it as
// well and kept there, running watches subscribe to it, and multi-server
// calls include it from then on. A server the client has already only gets
// the new addresses; added reports whether it was new.
func (c *Client) AddServer(s peer.AddrInfo) (added bool, err error) {
	if s.ID == "" {
		return false, errors.New("rendezvous client: server without peer ID")
	}
	if s.ID == c.h.ID() {
		return false, fmt.Errorf("rendezvous client: server %s is this host", s.ID)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false, ErrClientClosed
	}
	c.smu.Lock()
	if _, ok := c.srv[s.ID]; ok {
		c.smu.Unlock()
		c.h.Peerstore().AddAddrs(s.ID, s.Addrs, peerstore.PermanentAddrTTL)
		return false, nil
	}
	sc := &serverConn{c: c, info: peer.AddrInfo{ID: s.ID, Addrs: slices.Clone(s.Addrs)}}
	c.order = append(c.order, s.ID)
	c.srv[s.ID] = sc
	c.smu.Unlock()
	c.h.Peerstore().AddAddrs(s.ID, s.Addrs, peerstore.PermanentAddrTTL)
	c.h.ConnManager().Protect(s.ID, connProtectTag)
	for _, k := range c.kept {
		k.addServer(s.ID)
	}
	for w := range c.watches {
		c.wg.Add(1)
		w.addServer(sc)
	}
	c.log.Debug("server added", "peer", s.ID)
	return true, nil
}
