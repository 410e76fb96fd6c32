package main

import (
	"fmt"
	"strconv"
	"strings"

	tea "charm.land/bubbletea/v2"

	"github.com/p2p-messaging/p2p-messaging/chat"
)

// View and layout. Every row is built from plain text padded by the
// model's own width method, then styled; no row is ever wider than the
// terminal, so the renderer never wraps one.

// sidebarWidth is the sidebar's width including its separator, 0 when the
// terminal is too narrow for one.
func (m *model) sidebarWidth() int {
	if m.width < sidebarMin {
		return 0
	}
	return min(max(m.width/6, 12), 20) + 1
}

func (m *model) paneWidth() int { return max(m.width-m.sidebarWidth(), 1) }

// promptText is the input's prompt: the visible conversation's name.
func (m *model) promptText() string {
	c := m.cur()
	if c.key == "" {
		return "> "
	}
	return truncateTo(m.wm, c.title(), max(m.width/3, 4)) + "> "
}

func (m *model) inputRows() (rows []string, cy, cx int) {
	pw := widthOf(m.wm, m.promptText())
	return m.in.rows(m.wm, max(m.width-pw, 1))
}

// paneHeight is what the conversation gets: all but the status line and
// the input box.
func (m *model) paneHeight() int {
	rows, _, _ := m.inputRows()
	return max(m.height-1-min(len(rows), maxInputRows), 1)
}

// convRows renders conversation c bottom-up until it has need rows (or
// the conversation ends), with a separator before each new day.
func (m *model) convRows(c *conv, w, need int) []string {
	var rev [][]string
	n := 0
	for i := len(c.lines) - 1; i >= 0 && n < need; i-- {
		l := c.lines[i]
		rows := m.renderRows(l, w)
		if i == 0 || !sameDay(c.lines[i-1].time.In(m.loc), l.time.In(m.loc)) {
			rows = append([]string{m.st.day.Render(truncateTo(m.wm, daySeparator(l.time.In(m.loc)), w))}, rows...)
		}
		rev = append(rev, rows)
		n += len(rows)
	}
	out := make([]string, 0, n)
	for i := len(rev) - 1; i >= 0; i-- {
		out = append(out, rev[i]...)
	}
	return out
}

// totalRows is how many rows conversation c takes at the pane's width.
func (m *model) totalRows(c *conv) int {
	return len(m.convRows(c, m.paneWidth(), 1<<30))
}

// paneRows is the visible part of the active conversation, exactly h rows.
func (m *model) paneRows(w, h int) []string {
	c := m.cur()
	rows := m.convRows(c, w, h+c.scroll)
	end := len(rows) - c.scroll
	if end < 0 {
		end = 0
	}
	start := max(end-h, 0)
	vis := append([]string(nil), rows[start:end]...)
	for len(vis) < h {
		vis = append([]string{""}, vis...)
	}
	if c.scroll > 0 {
		more := "── more below: PgDn ──"
		if c.below > 0 {
			more = fmt.Sprintf("── %d new message(s) below: PgDn ──", c.below)
		}
		vis[h-1] = m.st.unread.Render(truncateTo(m.wm, more, w))
	}
	return vis
}

// sidebarRows lists the conversations: number, name, unread count; the
// visible one reversed, one with a mention in the mention style and "!".
func (m *model) sidebarRows(h int) []string {
	w := m.sidebarWidth() - 1
	rows := make([]string, h)
	for i := range rows {
		if i >= len(m.convs) {
			rows[i] = strings.Repeat(" ", w)
			continue
		}
		c := m.convs[i]
		count := ""
		if c.unread > 0 {
			count = " " + strconv.Itoa(c.unread)
		}
		if c.mention {
			count += "!"
		}
		label := strconv.Itoa(i+1) + " " + c.title()
		cw := widthOf(m.wm, count)
		text := padTo(m.wm, label, w-cw) + count
		switch {
		case i == m.active:
			rows[i] = m.st.active.Render(text)
		case c.mention:
			rows[i] = m.st.mention.Render(text)
		case c.unread > 0:
			rows[i] = m.st.unread.Render(text)
		case c.key != "" && !c.isRoom():
			if ps := m.peers[c.key]; ps != nil && ps.known && !ps.online {
				rows[i] = m.st.info.Render(text) // offline: dimmed
				continue
			}
			rows[i] = text
		default:
			rows[i] = text
		}
	}
	return rows
}

// statusText is the status line's text: who we are, the room, the
// visible conversation's peer and connection, activity elsewhere, and the
// input's size once it is long.
func (m *model) statusText() string {
	parts := []string{fmt.Sprintf("%s (%s)", m.self.nick, shortID(m.self.id))}
	if c := m.cur(); c.key != "" && !c.isRoom() {
		s := "to " + c.title()
		if ps := m.peers[c.key]; ps != nil {
			switch {
			case ps.known && !ps.online:
				s += ": offline"
			case ps.conn.Kind != "" && ps.conn.Kind != chat.ConnNone:
				s += ": " + describeConn(ps.conn, false)
				if ps.conn.Kind != chat.ConnDirect && ps.punch != "" {
					s += " (punch failed: " + ps.punch + ")"
				}
			case ps.known:
				s += ": online"
			}
		}
		parts = append(parts, s)
	} else if c.key != "" {
		parts = append(parts, c.key)
	}
	var act []string
	for i, c := range m.convs {
		if i != m.active && c.unread > 0 {
			a := strconv.Itoa(i + 1)
			if c.mention {
				a += "!"
			}
			act = append(act, a)
		}
	}
	if len(act) > 0 {
		parts = append(parts, "act "+strings.Join(act, ","))
	}
	if n := len(m.in.value()); n > chat.MaxTextLen/2 || strings.Contains(m.in.value(), "\n") {
		s := fmt.Sprintf("%d/%d bytes", n, chat.MaxTextLen)
		if k := len(splitMessage(m.in.value())); k > 1 {
			s = fmt.Sprintf("%d bytes: %d messages", n, k)
		}
		parts = append(parts, s)
	}
	if m.self.room != "" {
		parts = append(parts, "room "+m.self.room)
	}
	if !m.ready {
		parts = append(parts, "connecting…")
	}
	return " " + strings.Join(parts, " │ ")
}

// title is the window title: the unread count while there is any.
func (m *model) title() string {
	if n, mention := m.unreadTotal(); n > 0 {
		t := fmt.Sprintf("(%d) chat %s", n, m.self.nick)
		if mention {
			t = "!" + t
		}
		return t
	}
	return "chat " + m.self.nick
}

// screen is the whole screen as rows, and where the cursor is.
// inputShown is how many of the input's n rows are on screen: at most
// maxInputRows, and never so many that the pane (one row at least) and the
// status line do not fit above them.
func (m *model) inputShown(n int) int {
	return max(min(n, maxInputRows, m.height-2), 1)
}

func (m *model) screen() (rows []string, cx, cy int) {
	if m.width <= 0 || m.height <= 0 {
		return nil, 0, 0
	}
	in, icy, icx := m.inputRows()
	shown := m.inputShown(len(in))
	first := 0
	if icy >= shown {
		first = icy - shown + 1
	}
	in = in[first : first+shown]
	ph := max(m.height-1-shown, 1)
	sw := m.sidebarWidth()
	pane := m.paneRows(m.paneWidth(), ph)
	var side []string
	if sw > 0 {
		side = m.sidebarRows(ph)
	}
	for i := 0; i < ph; i++ {
		r := pane[i]
		if sw > 0 {
			r = side[i] + m.st.info.Render("│") + r
		}
		rows = append(rows, r)
	}
	rows = append(rows, m.st.status.Render(padTo(m.wm, m.statusText(), m.width)))
	prompt := m.promptText()
	pw := widthOf(m.wm, prompt)
	for i, r := range in {
		if i == 0 && first == 0 {
			rows = append(rows, m.st.prompt.Render(prompt)+r)
		} else {
			rows = append(rows, strings.Repeat(" ", pw)+r)
		}
	}
	if len(m.in.value()) == 0 {
		rows[len(rows)-1] += m.st.info.Render(truncateTo(m.wm, "type a message, or /help", max(m.width-pw-1, 0)))
	}
	rows = rows[:min(len(rows), m.height)]
	for i, r := range rows {
		// A glyph wider than a tiny terminal: cut rather than let the
		// terminal wrap the row.
		rows[i] = fitWidth(m.wm, r, m.width)
	}
	cy = ph + 1 + icy - first
	cx = pw + icx
	return rows, min(cx, m.width-1), min(cy, m.height-1)
}

func (m model) View() tea.View {
	var v tea.View
	v.AltScreen = true
	if m.fatal != nil {
		return v
	}
	rows, cx, cy := m.screen()
	v.SetContent(strings.Join(rows, "\n"))
	v.Cursor = tea.NewCursor(cx, cy)
	v.Cursor.Blink = false
	v.WindowTitle = m.title()
	return v
}
