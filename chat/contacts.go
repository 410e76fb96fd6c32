package chat

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// This file is the contact list and key changes: every pinned nick with
// its presence and when it was last seen, and the user's way to accept a
// friend's new key (a reinstall) after comparing a safety number.

// Contact is one pinned nick.
type Contact struct {
	Nick     string
	Peer     peer.ID
	Online   bool
	LastSeen time.Time // when its presence last changed, else its last message; zero if never
	Conn     ConnInfo
}

// Contacts returns every pinned contact, online or not, sorted by nick.
func (n *Node) Contacts() ([]Contact, error) {
	cs, err := n.db.contacts()
	if err != nil {
		return nil, fmt.Errorf("contacts: %w", err)
	}
	type state struct {
		online bool
		seen   time.Time
	}
	states := map[peer.ID]state{}
	n.peers.call(func() {
		for _, c := range cs {
			if ps, ok := n.peers.peers[c.Peer]; ok {
				states[c.Peer] = state{ps.online, ps.lastSeen}
			}
		}
	})
	out := make([]Contact, 0, len(cs))
	for _, c := range cs {
		st := states[c.Peer]
		ct := Contact{Nick: c.Nick, Peer: c.Peer, Online: st.online, LastSeen: st.seen}
		if st.online {
			ct.LastSeen = time.Now()
			ct.Conn = connInfo(n.h.Network(), c.Peer)
		}
		if !st.online && c.LastSeen.After(ct.LastSeen) {
			ct.LastSeen = c.LastSeen // from an earlier run
		}
		if ct.LastSeen.IsZero() {
			if msgs, err := n.db.history(c.Peer, 1); err == nil && len(msgs) == 1 && !msgs[0].Outgoing {
				ct.LastSeen = msgs[0].Time
			}
		}
		if ct.Conn.Kind == "" {
			ct.Conn.Kind = ConnNone
		}
		out = append(out, ct)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Nick < out[j].Nick })
	return out, nil
}

// KeyCheck is what /trust shows about a contact's key.
type KeyCheck struct {
	Nick   string
	Pinned peer.ID // the key the nick is pinned to ("" if not pinned)
	// New is a different key that now holds the nick (the daemons list it,
	// or it claimed the nick over a chat stream); "" when there is none.
	New peer.ID
	// Safety is the safety number of this node's key and the key the
	// check is about (New if set, else Pinned): both sides compute the
	// same digits, so reading them to each other compares both keys.
	Safety   string
	Accepted bool // New replaced Pinned
}

// ErrSafetyMismatch: the safety number given does not match the key.
var ErrSafetyMismatch = errors.New("safety number does not match")

// CheckKey describes nick's key: the pinned one and a new one, if a
// different peer now holds the nick, with the safety number to compare.
// With confirm set to that safety number (spaces ignored), the new key
// replaces the pin; any other confirm is ErrSafetyMismatch and changes
// nothing. A nick not pinned yet is looked up and reported, not pinned.
func (n *Node) CheckKey(ctx context.Context, nick, confirm string) (KeyCheck, error) {
	kc := KeyCheck{Nick: nick}
	c, pinned, err := n.db.contact(nick)
	if err != nil {
		return kc, fmt.Errorf("trust %q: %w", nick, err)
	}
	if pinned {
		kc.Pinned = c.Peer
	}
	var cand peer.AddrInfo
	if n.rdv != nil {
		if ai, ok := n.names.lookupNick(ctx, nick).holder(); ok && ai.ID != kc.Pinned {
			cand = ai
		}
	}
	if cand.ID == "" && pinned {
		if p := n.names.claimer(nick); p != "" && p != kc.Pinned {
			cand = peer.AddrInfo{ID: p, Addrs: n.h.Peerstore().Addrs(p)}
		}
	}
	kc.New = cand.ID
	subject := kc.New
	if subject == "" {
		subject = kc.Pinned
	}
	if subject == "" {
		return kc, fmt.Errorf("trust %q: %w", nick, ErrUnknownNick)
	}
	if kc.Safety, err = SafetyNumber(n.h.ID(), subject); err != nil {
		return kc, fmt.Errorf("trust %q: %w", nick, err)
	}
	if confirm == "" {
		return kc, nil
	}
	if digitsOnly(confirm) != digitsOnly(kc.Safety) {
		return kc, fmt.Errorf("trust %q: %w", nick, ErrSafetyMismatch)
	}
	if kc.New == "" {
		// Nothing to change: the pin is confirmed as it is.
		return kc, nil
	}
	if err := n.names.accept(nick, cand); err != nil {
		return kc, fmt.Errorf("trust %q: %w", nick, err)
	}
	kc.Accepted = true
	return kc, nil
}

// SafetyNumber is a short number both peers derive from their two public
// keys, whichever side computes it: SHA-256 over the two marshalled keys
// in byte order, read as six groups of five digits.
func SafetyNumber(a, b peer.ID) (string, error) {
	ka, err := marshalKey(a)
	if err != nil {
		return "", err
	}
	kb, err := marshalKey(b)
	if err != nil {
		return "", err
	}
	if bytes.Compare(ka, kb) > 0 {
		ka, kb = kb, ka
	}
	h := sha256.New()
	h.Write([]byte("p2p-messaging safety number v1\x00"))
	h.Write(ka)
	h.Write(kb)
	sum := h.Sum(nil)
	groups := make([]string, 6)
	for i := range groups {
		v := binary.BigEndian.Uint32(sum[4*i:]) % 100000
		groups[i] = fmt.Sprintf("%05d", v)
	}
	return strings.Join(groups, " "), nil
}

func marshalKey(p peer.ID) ([]byte, error) {
	pk, err := p.ExtractPublicKey()
	if err != nil {
		return nil, fmt.Errorf("public key of %s: %w", p, err)
	}
	return crypto.MarshalPublicKey(pk)
}

func digitsOnly(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' {
			return r
		}
		return -1
	}, s)
}
