package main

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/p2p-messaging/p2p-messaging/chat"
)

// /r, /contacts and /trust: parsing, execution, results, and how both
// front ends show them.

type (
	contactsResult struct {
		Contacts []chat.Contact
		Now      time.Time
	}
	trustResult struct {
		Check chat.KeyCheck
	}
)

// parseContactCommand parses /r, /contacts and /trust (name lower case).
func parseContactCommand(name, rest string) (command, error) {
	args := strings.Fields(rest)
	switch name {
	case "/r", "/reply":
		if strings.TrimSpace(rest) == "" {
			return command{}, errors.New("usage: /r <text>")
		}
		return command{kind: cmdReply, text: strings.TrimSpace(rest)}, nil
	case "/contacts":
		if len(args) != 0 {
			return command{}, errors.New("usage: /contacts")
		}
		return command{kind: cmdContacts}, nil
	default: // /trust
		if len(args) < 1 {
			return command{}, errors.New("usage: /trust <nick> [safety-number]")
		}
		nick, err := target(args[0])
		if err != nil {
			return command{}, err
		}
		number := strings.Join(args[1:], "")
		for _, r := range number {
			if r < '0' || r > '9' {
				return command{}, errors.New("usage: /trust <nick> [safety-number] (the number is digits)")
			}
		}
		return command{kind: cmdTrust, nick: nick, text: number}, nil
	}
}

// noteSender records who wrote last, for /r.
func (s *session) noteSender(nick string) {
	s.mu.Lock()
	s.lastFrom = nick
	s.mu.Unlock()
}

func (s *session) lastSender() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastFrom
}

func (s *session) execContact(ctx context.Context, c command) any {
	switch c.kind {
	case cmdReply:
		to := s.lastSender()
		if to == "" {
			return errorResult{errors.New(lastSenderHint)}
		}
		return s.send(ctx, to, c.text)
	case cmdContacts:
		cs, err := s.node.Contacts()
		if err != nil {
			return errorResult{err}
		}
		return contactsResult{Contacts: cs, Now: time.Now()}
	default: // cmdTrust
		kc, err := s.node.CheckKey(ctx, c.nick, c.text)
		if err != nil {
			return errorResult{err}
		}
		return trustResult{Check: kc}
	}
}

// withContacts is the online peers followed by every contact that is not
// online, so /peers lists known contacts from the first command on.
func withContacts(n *chat.Node) []chat.PeerStatus {
	out := n.Peers()
	cs, err := n.Contacts()
	if err != nil {
		return out
	}
	seen := map[string]bool{}
	for _, p := range out {
		seen[p.Peer.String()] = true
	}
	for _, c := range cs {
		if !seen[c.Peer.String()] {
			out = append(out, chat.PeerStatus{Nick: c.Nick, Peer: c.Peer, Online: c.Online, Conn: c.Conn})
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Online != out[j].Online {
			return out[i].Online
		}
		return out[i].Nick < out[j].Nick
	})
	return out
}

// lastSeenText is "online", "last seen 14:03", "last seen 2026-11-30
// 09:12" or "never seen".
func lastSeenText(c chat.Contact, now time.Time) string {
	switch {
	case c.Online:
		return "online, " + describeConn(c.Conn, false)
	case c.LastSeen.IsZero():
		return "offline, never seen"
	default:
		return "offline, last seen " + stamp(c.LastSeen.Local(), now.Local())
	}
}

// contactLines is the TUI's rendering of /contacts.
func contactLines(r contactsResult) []string {
	if len(r.Contacts) == 0 {
		return []string{"no contacts yet: /msg <nick> <text> makes one"}
	}
	out := []string{fmt.Sprintf("%d contact(s):", len(r.Contacts))}
	for _, c := range r.Contacts {
		out = append(out, fmt.Sprintf("  %-16s %s %s", oneLine(c.Nick), shortID(c.Peer), lastSeenText(c, r.Now)))
	}
	return out
}

func (m *model) showContacts(c *conv, r contactsResult) {
	for _, ct := range r.Contacts {
		online, conn := ct.Online, ct.Conn
		m.notePeer(ct.Nick, ct.Peer, &online, &conn)
	}
	for _, l := range contactLines(r) {
		m.addTo(c, &chatLine{kind: lineInfo, text: l})
	}
}

// trustLines is the TUI's rendering of /trust.
func trustLines(r trustResult) []string {
	k := r.Check
	switch {
	case k.Accepted:
		return []string{fmt.Sprintf("%s's new key %s is accepted and pinned (safety number %s)", k.Nick, shortID(k.New), k.Safety)}
	case k.New != "" && k.Pinned != "":
		return []string{
			fmt.Sprintf("%s's key changed: pinned %s, now %s", k.Nick, shortID(k.Pinned), shortID(k.New)),
			fmt.Sprintf("safety number with the new key: %s", k.Safety),
			fmt.Sprintf("compare it with %s (they see the same digits), then: /trust %s %s", k.Nick, k.Nick, strings.ReplaceAll(k.Safety, " ", "")),
		}
	case k.New != "":
		return []string{fmt.Sprintf("%s is not a contact yet; its key %s, safety number %s", k.Nick, shortID(k.New), k.Safety)}
	default:
		return []string{fmt.Sprintf("%s: key %s, unchanged; safety number %s", k.Nick, shortID(k.Pinned), k.Safety)}
	}
}

// maxStartupConvs bounds the contacts that get a conversation at start.
const maxStartupConvs = 16

// openContacts gives every known contact (the first maxStartupConvs by
// nick) a conversation in the sidebar, with its presence, so Alt-N
// reaches it from the start.
func (m *model) openContacts(cs []chat.Contact) {
	for i, c := range cs {
		if i >= maxStartupConvs {
			break
		}
		online, conn := c.Online, c.Conn
		m.notePeer(c.Nick, c.Peer, &online, &conn)
		m.conv(c.Nick)
	}
}
