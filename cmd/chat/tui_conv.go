package main

import (
	"sort"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/p2p-messaging/p2p-messaging/chat"
)

// Conversations. The first one is the status window (key ""): command
// output with no other home, notices, requests from strangers. Every
// direct chat is a conversation keyed by the other side's nick (or peer ID
// string while its nick is unverified); a room is one keyed "#name". Each
// has its own scrollback, unread count and mention flag; the sidebar lists
// them in order of creation, Alt-1..9 picks one, Ctrl-N/Ctrl-P step.
//
// A feature that brings its own conversations (rooms) only needs
// m.conv("#name") and m.add(key, line): sending to the active
// conversation goes through the session's target, whatever its kind.

const (
	// maxScrollback bounds the lines kept per conversation.
	maxScrollback = 5000
	// maxConvs bounds the conversations (a stranger per conversation
	// must not grow the sidebar without end); the oldest quiet direct
	// conversation goes first.
	maxConvs = 64
	// noticeCoalesce merges notices arriving within this window into one
	// line of the conversation.
	noticeCoalesce = 10 * time.Second
	// maxNoticeItems bounds the peers named in one coalesced notice line.
	maxNoticeItems = 8
)

type lineKind int

const (
	lineInfo lineKind = iota
	lineIn
	lineOut
	lineError
	lineWarning
	lineNotice // presence and connection changes: dimmed, coalesced
)

type mark int

const (
	markNone mark = iota
	markPending
	markDelivered
	markFailed
)

// chatLine is one entry of a conversation.
type chatLine struct {
	kind  lineKind
	time  time.Time
	from  string  // sender nick (lineIn, lineOut)
	to    string  // recipient (lineOut)
	peer  peer.ID // the other side, for its colour
	text  string
	mark  mark
	id    string // message ID once known
	notes []note // lineNotice
	// stored: the daemons holding it in their mailboxes (mailbox.go)
	stored int
}

// note is one peer's part of a coalesced notice line.
type note struct{ who, text string }

func (l *chatLine) noticeText() string {
	parts := make([]string, 0, len(l.notes))
	for _, n := range l.notes {
		parts = append(parts, n.who+" "+n.text)
	}
	return strings.Join(parts, " · ")
}

type conv struct {
	key     string // "" status window, "bob", "#room"
	lines   []*chatLine
	ids     map[string]bool // message IDs shown, so history never repeats a line
	unread  int
	mention bool
	scroll  int // rows scrolled up from the bottom; 0 follows new lines
	below   int // lines that arrived while scrolled up
	loaded  bool
}

func (c *conv) isRoom() bool { return strings.HasPrefix(c.key, "#") }

// title is how the sidebar and the prompt name the conversation.
func (c *conv) title() string {
	if c.key == "" {
		return "status"
	}
	if p, err := peer.Decode(c.key); err == nil {
		return shortID(p)
	}
	return c.key
}

// convKey is the conversation a message belongs to: its room, or the
// other side of a direct chat.
func convKey(msg chat.Message) string {
	if strings.HasPrefix(msg.To, "#") {
		return msg.To
	}
	if msg.Outgoing {
		return msg.To
	}
	return msg.From
}

// conv returns the conversation for key, creating it (and loading its
// history once the node runs) when it is new.
func (m *model) conv(key string) *conv {
	for _, c := range m.convs {
		if c.key == key {
			return c
		}
	}
	c := &conv{key: key, ids: map[string]bool{}}
	if len(m.convs) >= maxConvs {
		m.dropQuietConv()
	}
	m.convs = append(m.convs, c)
	return c
}

// dropQuietConv forgets the oldest direct conversation that is neither
// active nor unread (its history stays on disk).
func (m *model) dropQuietConv() {
	for i, c := range m.convs {
		if i == 0 || i == m.active || c.unread > 0 || c.isRoom() {
			continue
		}
		for _, l := range c.lines {
			if l.id != "" && m.byID[l.id] == l {
				delete(m.byID, l.id)
			}
		}
		m.convs = append(m.convs[:i], m.convs[i+1:]...)
		if m.active > i {
			m.active--
		}
		return
	}
}

func (m *model) cur() *conv { return m.convs[m.active] }

func (m *model) index(key string) int {
	for i, c := range m.convs {
		if c.key == key {
			return i
		}
	}
	return -1
}

// add appends l to conversation key. A line in a conversation that is not
// shown counts as unread (notices and info do not); one scrolled up keeps
// its place and counts what arrived below.
func (m *model) add(key string, l *chatLine) *conv {
	c := m.conv(key)
	m.addTo(c, l)
	return c
}

func (m *model) addTo(c *conv, l *chatLine) {
	if l.time.IsZero() {
		l.time = m.now()
	}
	if l.id != "" {
		c.ids[l.id] = true
	}
	c.lines = append(c.lines, l)
	if over := len(c.lines) - maxScrollback; over > 0 {
		for _, old := range c.lines[:over] {
			if old.id != "" {
				delete(c.ids, old.id)
				if m.byID[old.id] == old {
					delete(m.byID, old.id)
				}
			}
		}
		c.lines = append([]*chatLine(nil), c.lines[over:]...)
	}
	if c.scroll > 0 {
		// Keep the rows on screen where they are.
		c.scroll += len(m.renderRows(l, m.paneWidth()))
		c.below++
	}
	if m.convs[m.active] != c && (l.kind == lineIn || l.kind == lineWarning) {
		c.unread++
	}
}

// addNotice records a presence or connection change of who in conversation
// key: merged into the last line when that is a notice from the last few
// seconds, so a burst of changes is one dimmed line.
func (m *model) addNotice(key, who, text string) {
	c := m.conv(key)
	now := m.now()
	if n := len(c.lines); n > 0 {
		last := c.lines[n-1]
		if last.kind == lineNotice && now.Sub(last.time) < noticeCoalesce {
			for i := range last.notes {
				if last.notes[i].who == who {
					last.notes[i].text = text
					return
				}
			}
			if len(last.notes) < maxNoticeItems {
				last.notes = append(last.notes, note{who, text})
				return
			}
		}
	}
	m.addTo(c, &chatLine{kind: lineNotice, time: now, notes: []note{{who, text}}})
}

// switchTo makes conversation i the visible one. A direct conversation
// or a room becomes the target of plain lines.
func (m *model) switchTo(i int) switchFetch {
	if i < 0 || i >= len(m.convs) {
		return switchFetch{}
	}
	m.active = i
	c := m.convs[i]
	c.unread, c.mention = 0, false
	var t switchFetch
	if c.key != "" && c.key != m.sess.target() {
		if err := m.sess.setTarget(c.key); err != nil {
			m.addTo(c, &chatLine{kind: lineError, text: err.Error()})
		}
	}
	if !c.loaded && c.key != "" && !c.isRoom() {
		c.loaded = true
		t.history = c.key
	}
	if c.key != "" && !c.isRoom() {
		t.whois = c.key
	}
	return t
}

// switchFetch is what a conversation switch asks the runtime to fetch.
type switchFetch struct{ history, whois string }

// unreadTotal is the unread count over every conversation but the visible
// one.
func (m *model) unreadTotal() (n int, mention bool) {
	for i, c := range m.convs {
		if i != m.active {
			n += c.unread
			mention = mention || c.mention
		}
	}
	return n, mention
}

// fillHistory puts stored messages in front of what conversation key shows,
// skipping those already shown.
func (m *model) fillHistory(key string, msgs []chat.Message) {
	c := m.conv(key)
	var older []*chatLine
	for _, msg := range msgs {
		if c.ids[msg.ID] {
			continue
		}
		l := &chatLine{kind: lineIn, time: msg.Time, from: msg.From, to: msg.To, peer: msg.Peer, text: msg.Text, id: msg.ID}
		if msg.Outgoing {
			l.kind = lineOut
			l.mark = markPending
			if msg.Status == chat.StatusDelivered || m.early[msg.ID] {
				l.mark = markDelivered
			}
			if l.mark == markPending {
				m.byID[msg.ID] = l // its tick comes when the outbox delivers it
			}
		}
		c.ids[msg.ID] = true
		older = append(older, l)
	}
	sort.SliceStable(older, func(i, j int) bool { return older[i].time.Before(older[j].time) })
	c.lines = append(older, c.lines...)
	if len(c.lines) > maxScrollback {
		c.lines = c.lines[len(c.lines)-maxScrollback:]
	}
}

// mentions reports whether text names nick as a word (case-insensitive).
func mentions(text, nick string) bool {
	if nick == "" {
		return false
	}
	lt, ln := strings.ToLower(text), strings.ToLower(nick)
	for i := 0; ; {
		j := strings.Index(lt[i:], ln)
		if j < 0 {
			return false
		}
		j += i
		end := j + len(ln)
		if (j == 0 || !nickByte(lt[j-1])) && (end == len(lt) || !nickByte(lt[end])) {
			return true
		}
		i = j + 1
	}
}

func nickByte(b byte) bool {
	return b >= 'a' && b <= 'z' || b >= '0' && b <= '9' || b == '-' || b == '_' || b >= 0x80
}

// presenceText is what a notice says about a peer's state.
func presenceText(ps *peerState) string {
	switch {
	case ps.known && !ps.online:
		return "offline"
	case ps.conn.Kind != "" && ps.conn.Kind != chat.ConnNone:
		return "online, " + describeConn(ps.conn, false)
	default:
		return "online"
	}
}

// lastSenderHint is the line /r without a sender shows.
const lastSenderHint = "nobody to reply to yet: /r <text> answers the last peer who wrote"
