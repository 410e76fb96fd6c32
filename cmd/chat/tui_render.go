package main

import (
	"fmt"
	"hash/fnv"
	"image/color"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"charm.land/lipgloss/v2"
	"github.com/charmbracelet/colorprofile"
	"github.com/charmbracelet/x/ansi"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/rivo/uniseg"

	"github.com/p2p-messaging/p2p-messaging/chat"
)

// This file is how the terminal UI draws text: widths, wrapping, colours
// and the lines of the message pane.
//
// Width. Bubble Tea v2's renderer places every grapheme cluster in cells
// and counts its width by wcwidth unless the terminal reports Unicode core
// mode (DECRQM 2027), in which case it counts by grapheme cluster. The
// model measures with the same method (widthMethod, updated from the
// terminal's mode report), so the layout and the renderer always agree on
// where a line ends. Terminals that do not report mode 2027 disagree with
// each other about zero-width joiners and emoji variation selectors (tmux
// 3.3a draws a ZWJ family in 2 cells, wcwidth counts 6); in that mode the
// displayed text drops those two code points (displayText), so what the
// terminal draws is exactly what was counted. Skin-tone modifiers, flags,
// combining marks, CJK and right-to-left text measure the same everywhere
// and are kept.

// nickColor is one entry of the nick palette in every colour depth.
type nickColor struct {
	ansi    ansi.BasicColor // 16 colours: only the six normal hues
	ansi256 ansi.IndexedColor
	hex     string // true colour: the same cell of the 6×6×6 cube
}

// nickPalette: mid-lightness hues, each at least 3.4:1 against black and
// 3.8:1 against white (TestNickPaletteReadable), so nicks stay readable on
// dark and light backgrounds. No grey and no colour from the 232–255 ramp.
var nickPalette = []nickColor{
	{1, 161, "#d7005f"},
	{3, 130, "#af5f00"},
	{2, 28, "#008700"},
	{6, 30, "#008787"},
	{4, 26, "#005fd7"},
	{5, 98, "#875fd7"},
	{5, 127, "#af00af"},
	{1, 166, "#d75f00"},
	{2, 64, "#5f8700"},
	{6, 31, "#0087af"},
	{5, 132, "#af5f87"},
	{3, 100, "#878700"},
}

// styles are built for one colour profile; Ascii and NoTTY draw no colour
// (NO_COLOR), only bold, faint and reverse.
type styles struct {
	profile colorprofile.Profile
	time    lipgloss.Style
	info    lipgloss.Style
	notice  lipgloss.Style
	err     lipgloss.Style
	warn    lipgloss.Style
	self    lipgloss.Style
	status  lipgloss.Style
	pending lipgloss.Style
	ok      lipgloss.Style
	day     lipgloss.Style
	active  lipgloss.Style
	mention lipgloss.Style
	unread  lipgloss.Style
	prompt  lipgloss.Style
	palette []lipgloss.Style
}

func newStyles(p colorprofile.Profile) styles {
	colour := p > colorprofile.ASCII
	fg := func(s lipgloss.Style, c color.Color) lipgloss.Style {
		if colour {
			return s.Foreground(p.Convert(c))
		}
		return s
	}
	st := styles{
		profile: p,
		time:    lipgloss.NewStyle().Faint(true),
		info:    lipgloss.NewStyle().Faint(true),
		notice:  lipgloss.NewStyle().Faint(true),
		err:     fg(lipgloss.NewStyle().Bold(true), ansi.Red),
		warn:    fg(lipgloss.NewStyle().Bold(true), ansi.Yellow),
		self:    lipgloss.NewStyle().Bold(true),
		status:  lipgloss.NewStyle().Reverse(true),
		pending: lipgloss.NewStyle().Faint(true),
		ok:      fg(lipgloss.NewStyle(), ansi.Green),
		day:     lipgloss.NewStyle().Faint(true),
		active:  lipgloss.NewStyle().Reverse(true),
		mention: fg(lipgloss.NewStyle().Bold(true), ansi.Magenta),
		unread:  lipgloss.NewStyle().Bold(true),
		prompt:  lipgloss.NewStyle().Bold(true),
	}
	for _, c := range nickPalette {
		st.palette = append(st.palette, fg(lipgloss.NewStyle().Bold(true), paletteColor(p, c)))
	}
	return st
}

// paletteColor is c at the depth p can show.
func paletteColor(p colorprofile.Profile, c nickColor) color.Color {
	switch {
	case p >= colorprofile.TrueColor:
		return lipgloss.Color(c.hex)
	case p == colorprofile.ANSI256:
		return c.ansi256
	default:
		return c.ansi
	}
}

// peerStyle is a stable colour per peer: a hash of its peer ID (or of the
// nick while the ID is unknown) picks from the palette.
func (s styles) peerStyle(id peer.ID, nick string) lipgloss.Style {
	return s.palette[paletteIndex(id, nick)]
}

func paletteIndex(id peer.ID, nick string) int {
	key := string(id)
	if key == "" {
		key = nick
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	return int(h.Sum32() % uint32(len(nickPalette)))
}

// widthOf is the cells s takes on screen, measured as the renderer does.
func widthOf(wm ansi.Method, s string) int { return wm.StringWidth(s) }

// displayText is s as it is drawn: safe (sanitize) and, when the terminal
// has not confirmed grapheme clustering, without the code points terminals
// draw at different widths (ZWJ, VS16).
func displayText(wm ansi.Method, s string) string {
	s = sanitize(s)
	if wm == ansi.WcWidth && strings.ContainsAny(s, "\u200d\ufe0f") {
		s = strings.NewReplacer("\u200d", "", "\ufe0f", "").Replace(s)
	}
	return s
}

// wrapText breaks plain text (no escapes) into rows of at most w cells, at
// spaces where it can and inside a word where it must, never inside a
// grapheme cluster. Newlines start a new row.
func wrapText(wm ansi.Method, s string, w int) []string {
	w = max(w, 1)
	var rows []string
	for _, para := range strings.Split(s, "\n") {
		rows = append(rows, wrapLine(wm, para, w)...)
	}
	return rows
}

func wrapLine(wm ansi.Method, s string, w int) []string {
	if widthOf(wm, s) <= w {
		return []string{s}
	}
	var rows []string
	var cur strings.Builder
	curW := 0
	lastSpace := -1 // byte offset in cur after the last space
	g := uniseg.NewGraphemes(s)
	for g.Next() {
		cl := g.Str()
		cw := widthOf(wm, cl)
		if curW+cw > w && curW > 0 {
			line := cur.String()
			rest := ""
			if lastSpace > 0 && cl != " " {
				line, rest = line[:lastSpace], line[lastSpace:]
			}
			rows = append(rows, strings.TrimRight(line, " "))
			cur.Reset()
			rest = strings.TrimLeft(rest, " ")
			cur.WriteString(rest)
			curW = widthOf(wm, rest)
			lastSpace = -1
			if cl == " " {
				continue
			}
		}
		cur.WriteString(cl)
		curW += cw
		if cl == " " {
			lastSpace = cur.Len()
		}
	}
	if cur.Len() > 0 || len(rows) == 0 {
		rows = append(rows, cur.String())
	}
	return rows
}

// truncateTo cuts plain text to at most w cells, with "…" when cut.
func truncateTo(wm ansi.Method, s string, w int) string {
	if widthOf(wm, s) <= w {
		return s
	}
	if w <= 1 {
		return strings.Repeat(".", max(w, 0))
	}
	var b strings.Builder
	used := 0
	g := uniseg.NewGraphemes(s)
	for g.Next() {
		cw := widthOf(wm, g.Str())
		if used+cw > w-1 {
			break
		}
		b.WriteString(g.Str())
		used += cw
	}
	return b.String() + "…"
}

// padTo pads plain text with spaces to exactly w cells (truncating first).
// fitWidth cuts a styled row to at most w cells as wm measures them. x/ansi's
// Truncate measures some clusters (a skin-tone modifier after a digit, in
// wcwidth mode) narrower than its StringWidth does, so a row it cut can
// still be too wide: cut further until it fits.
func fitWidth(wm ansi.Method, r string, w int) string {
	for t := w; wm.StringWidth(r) > w; t-- {
		if t <= 0 {
			return ""
		}
		r = wm.Truncate(r, t, "")
	}
	return r
}

func padTo(wm ansi.Method, s string, w int) string {
	s = truncateTo(wm, s, w)
	if n := w - widthOf(wm, s); n > 0 {
		s += strings.Repeat(" ", n)
	}
	return s
}

// stamp is the time column: HH:MM today, the full date otherwise (both
// times in the zone to show).
func stamp(t, now time.Time) string {
	if sameDay(t, now) {
		return t.Format("15:04")
	}
	return t.Format("2006-01-02 15:04")
}

func sameDay(a, b time.Time) bool {
	ay, am, ad := a.Date()
	by, bm, bd := b.Date()
	return ay == by && am == bm && ad == bd
}

// daySeparator is the line drawn before the first line of a new day.
func daySeparator(t time.Time) string {
	return "── " + t.Format("Monday, 2 January 2006") + " ──"
}

// peerIDPattern finds peer IDs in warning texts, to shorten them.
var peerIDPattern = regexp.MustCompile(`\b(12D3KooW|Qm)[1-9A-HJ-NP-Za-km-z]{40,50}\b`)

// shortenIDs replaces every peer ID in s by its short form.
func shortenIDs(s string) string {
	return peerIDPattern.ReplaceAllStringFunc(s, func(id string) string {
		p, err := peer.Decode(id)
		if err != nil {
			return id
		}
		return shortID(p)
	})
}

// renderRows draws one pane line as rows of at most w cells, styled. The
// first row starts with the time column; continuation rows (wrapping and
// the lines of a multi-line message) are indented under the text, so no
// row of a message can pass for a line of its own.
func (m *model) renderRows(l *chatLine, w int) []string {
	st := m.st
	wm := m.wm
	ts := stamp(l.time.In(m.loc), m.now().In(m.loc))
	var head, headStyled string // sender part, plain and styled
	text := displayText(wm, l.text)
	style := lipgloss.NewStyle()
	switch l.kind {
	case lineIn:
		from := displayText(wm, l.from)
		head = from + ": "
		headStyled = st.peerStyle(l.peer, l.from).Render(from) + ": "
	case lineOut:
		from := displayText(wm, l.from)
		head = from + ": "
		headStyled = st.self.Render(from) + ": "
		switch l.mark {
		case markPending:
			text += " …" + storedSuffix(l.stored)
		case markDelivered:
			text += " ✓"
		case markFailed:
			text += " ✗"
		}
	case lineError:
		head, headStyled = "error: ", st.err.Render("error:")+" "
		style = st.err
	case lineWarning:
		head, headStyled = "warning: ", st.warn.Render("warning:")+" "
		style = st.warn
	case lineNotice:
		text = "· " + l.noticeText()
		style = st.notice
	default:
		style = st.info
	}
	indent := widthOf(wm, ts) + 1
	if w-indent < 12 {
		indent = 0
	}
	var rows []string
	if indent == 0 {
		// Too narrow for a time column: the time on a row of its own.
		rows = append(rows, st.time.Render(truncateTo(wm, ts, w)))
		for _, r := range wrapText(wm, head+text, max(w, 2)) {
			rows = append(rows, style.Render(r))
		}
		return rows
	}
	body := wrapText(wm, text, max(w-indent-widthOf(wm, head), 4))
	headW := widthOf(wm, head)
	pad := strings.Repeat(" ", indent+headW)
	for i, r := range body {
		if i == 0 {
			rows = append(rows, st.time.Render(ts)+" "+headStyled+m.styleText(l, style, r))
			continue
		}
		rows = append(rows, pad+m.styleText(l, style, r))
	}
	return rows
}

// styleText styles one row of a line's text; a delivery mark at its end
// gets its own colour.
func (m *model) styleText(l *chatLine, style lipgloss.Style, r string) string {
	if l.kind == lineOut {
		for _, mk := range []struct {
			s     string
			style lipgloss.Style
		}{{" …", m.st.pending}, {" ✓", m.st.ok}, {" ✗", m.st.err}} {
			if strings.HasSuffix(r, mk.s) {
				return strings.TrimSuffix(r, mk.s) + " " + mk.style.Render(mk.s[1:])
			}
		}
		return r
	}
	if l.kind == lineIn {
		return r
	}
	return style.Render(r)
}

// sanitize makes remote text safe to print: no terminal escapes or other
// control characters, no bidi overrides that reorder the line. Newlines
// stay (a multi-line message is drawn indented, row by row); tabs become a
// space.
func sanitize(s string) string {
	clean := true
	for _, r := range s {
		if r != '\n' && unsafeRune(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\n':
			b.WriteByte('\n')
		case r == '\t':
			b.WriteByte(' ')
		case unsafeRune(r):
			b.WriteRune(utf8.RuneError)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// oneLine is s for places with room for one row only (nicks, the status
// line): sanitized, newlines shown as ⏎.
func oneLine(s string) string {
	return strings.ReplaceAll(sanitize(s), "\n", " ⏎ ")
}

func unsafeRune(r rune) bool {
	return r < 0x20 || (r >= 0x7f && r < 0xa0) || (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) || r == utf8.RuneError
}

// describeConn is e.g. "direct quic IPv6" or "relayed tcp IPv4 (limited)".
func describeConn(c chat.ConnInfo, withAddr bool) string {
	if c.Kind == "" || c.Kind == chat.ConnNone {
		return "not connected"
	}
	parts := []string{string(c.Kind)}
	if c.Transport != "" {
		parts = append(parts, c.Transport)
	}
	if c.IPVersion != 0 {
		parts = append(parts, fmt.Sprintf("IPv%d", c.IPVersion))
	}
	s := strings.Join(parts, " ")
	if c.Limited {
		s += " (limited)"
	}
	if withAddr && c.Remote != nil {
		s += " via " + c.Remote.String()
	}
	return s
}

// shortID is the start and the distinctive end of a peer ID.
func shortID(id peer.ID) string {
	s := id.String()
	if id == "" {
		return "?"
	}
	if len(s) <= 12 {
		return s
	}
	return s[:4] + "…" + s[len(s)-6:]
}
