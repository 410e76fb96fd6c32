package main

import (
	"sort"
	"strings"

	"github.com/charmbracelet/x/ansi"
	"github.com/rivo/uniseg"

	"github.com/p2p-messaging/p2p-messaging/chat"
)

// The input editor. Bubble Tea v2 decodes the terminal's input into one
// key event per key (printable text is one event per grapheme cluster,
// however many arrive in one read) and a bracketed paste into one
// PasteMsg, so a burst of typing is text, never cursor keys. The editor
// inserts a key's text whenever it has any and no Ctrl/Alt modifier;
// editing keys are matched by key code, never by the text they spell.
//
// The buffer is a string with the cursor at a byte offset on a grapheme
// boundary; it may hold newlines (Alt-Enter, Shift-Enter, Ctrl-J, or a
// pasted newline). A line longer than one message is sent as several
// (splitMessage); the buffer itself is bounded by maxInput, and a paste
// that would pass it is refused whole, with the count shown.

const (
	// maxInput bounds the input buffer in bytes: 16 messages.
	maxInput = 16 * chat.MaxTextLen
	// maxInputRows is the most rows the input box grows to.
	maxInputRows = 6
	// maxInputHistory bounds the lines Up and Down recall.
	maxInputHistory = 200
)

type editor struct {
	text string
	cur  int // byte offset, on a grapheme boundary

	hist    []string
	histPos int    // len(hist) = the line being edited
	draft   string // the line being edited while browsing history
}

func (e *editor) value() string { return e.text }

func (e *editor) set(s string) {
	e.text = s
	e.cur = len(s)
}

func (e *editor) reset() { e.text, e.cur = "", 0 }

// insert puts s at the cursor. It reports false, inserting nothing, when
// the buffer would pass maxInput.
func (e *editor) insert(s string) bool {
	if len(e.text)+len(s) > maxInput {
		return false
	}
	e.text = e.text[:e.cur] + s + e.text[e.cur:]
	e.cur += len(s)
	return true
}

// prevBoundary is the grapheme boundary before i.
func prevBoundary(s string, i int) int {
	last := 0
	g := uniseg.NewGraphemes(s[:i])
	for g.Next() {
		from, _ := g.Positions()
		last = from
	}
	return last
}

// nextBoundary is the grapheme boundary after i.
func nextBoundary(s string, i int) int {
	if i >= len(s) {
		return len(s)
	}
	cl, _, _, _ := uniseg.FirstGraphemeClusterInString(s[i:], -1)
	return i + len(cl)
}

func (e *editor) left() {
	if e.cur > 0 {
		e.cur = prevBoundary(e.text, e.cur)
	}
}

func (e *editor) right() { e.cur = nextBoundary(e.text, e.cur) }

func (e *editor) backspace() {
	if e.cur > 0 {
		p := prevBoundary(e.text, e.cur)
		e.text = e.text[:p] + e.text[e.cur:]
		e.cur = p
	}
}

func (e *editor) del() {
	if e.cur < len(e.text) {
		n := nextBoundary(e.text, e.cur)
		e.text = e.text[:e.cur] + e.text[n:]
	}
}

// home and end move within the current line of a multi-line buffer.
func (e *editor) home() {
	e.cur = strings.LastIndexByte(e.text[:e.cur], '\n') + 1
}

func (e *editor) end() {
	if i := strings.IndexByte(e.text[e.cur:], '\n'); i >= 0 {
		e.cur += i
		return
	}
	e.cur = len(e.text)
}

// deleteWord removes the word before the cursor (Ctrl-W).
func (e *editor) deleteWord() {
	i := e.cur
	for i > 0 && (e.text[i-1] == ' ' || e.text[i-1] == '\n') {
		i--
	}
	for i > 0 && e.text[i-1] != ' ' && e.text[i-1] != '\n' {
		i--
	}
	e.text = e.text[:i] + e.text[e.cur:]
	e.cur = i
}

func (e *editor) killLineBefore() {
	start := strings.LastIndexByte(e.text[:e.cur], '\n') + 1
	e.text = e.text[:start] + e.text[e.cur:]
	e.cur = start
}

func (e *editor) killLineAfter() {
	end := len(e.text)
	if i := strings.IndexByte(e.text[e.cur:], '\n'); i >= 0 {
		end = e.cur + i
	}
	e.text = e.text[:e.cur] + e.text[end:]
}

func (e *editor) remember(line string) {
	if strings.TrimSpace(line) != "" && (len(e.hist) == 0 || e.hist[len(e.hist)-1] != line) {
		e.hist = append(e.hist, line)
		if len(e.hist) > maxInputHistory {
			e.hist = e.hist[len(e.hist)-maxInputHistory:]
		}
	}
	e.histPos, e.draft = len(e.hist), ""
}

func (e *editor) browse(back bool) {
	switch {
	case back && e.histPos > 0:
		if e.histPos == len(e.hist) {
			e.draft = e.text
		}
		e.histPos--
		e.set(e.hist[e.histPos])
	case !back && e.histPos < len(e.hist):
		e.histPos++
		if e.histPos == len(e.hist) {
			e.set(e.draft)
		} else {
			e.set(e.hist[e.histPos])
		}
	}
}

// normalizePaste turns CR LF and lone CR into LF, tabs into spaces and
// drops other control characters.
func normalizePaste(s string) string {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	s = strings.ReplaceAll(s, "\r", "\n")
	return strings.Map(func(r rune) rune {
		switch {
		case r == '\n':
			return r
		case r == '\t':
			return ' '
		case unsafeRune(r):
			return -1
		}
		return r
	}, s)
}

// rows lays the buffer out in rows of w cells, drawn as displayText
// draws them, and returns the rows and the cursor's row and column.
func (e *editor) rows(wm ansi.Method, w int) (rows []string, cy, cx int) {
	if w < 1 {
		w = 1
	}
	var cur strings.Builder
	curW := 0
	flush := func() {
		rows = append(rows, cur.String())
		cur.Reset()
		curW = 0
	}
	cy, cx = -1, 0
	g := uniseg.NewGraphemes(e.text)
	for {
		more := g.Next()
		pos := len(e.text)
		if more {
			pos, _ = g.Positions()
		}
		if pos == e.cur && cy < 0 {
			if curW >= w {
				flush()
			}
			cy, cx = len(rows), curW
		}
		if !more {
			break
		}
		cl := g.Str()
		if cl == "\n" {
			flush()
			continue
		}
		cl = displayText(wm, cl)
		cw := widthOf(wm, cl)
		if curW+cw > w {
			flush()
			if pos == e.cur {
				cy, cx = len(rows), 0
			}
		}
		cur.WriteString(cl)
		curW += cw
	}
	flush()
	if cy < 0 {
		cy, cx = len(rows)-1, curW
	}
	return rows, cy, cx
}

// splitMessage cuts text into messages of at most chat.MaxTextLen bytes,
// at a newline or a space where it can, never inside a grapheme cluster.
func splitMessage(text string) []string {
	var parts []string
	for len(text) > chat.MaxTextLen {
		cut, lastNL, lastSpace := 0, 0, 0
		g := uniseg.NewGraphemes(text)
		for g.Next() {
			_, to := g.Positions()
			if to > chat.MaxTextLen {
				break
			}
			cut = to
			switch g.Str() {
			case "\n":
				lastNL = to
			case " ":
				lastSpace = to
			}
		}
		switch {
		case lastNL > chat.MaxTextLen/2:
			cut = lastNL
		case lastSpace > chat.MaxTextLen/2:
			cut = lastSpace
		}
		if cut == 0 { // a single cluster longer than a message
			cut = chat.MaxTextLen
			for cut > 0 && !utf8RuneStart(text[cut]) {
				cut--
			}
		}
		part := strings.TrimRight(text[:cut], " \n")
		if part != "" {
			parts = append(parts, part)
		}
		text = strings.TrimLeft(text[cut:], " \n")
	}
	if text = strings.TrimRight(text, " \n"); strings.TrimSpace(text) != "" {
		parts = append(parts, text)
	}
	return parts
}

func utf8RuneStart(b byte) bool { return b&0xc0 != 0x80 }

// completion is the state of Tab completion: the word being completed, its
// candidates and which one is shown.
type completion struct {
	start  int    // byte offset of the word in the buffer
	prefix string // what was typed
	cands  []string
	i      int
	suffix string // added after a candidate: ": " at the start of a line, else " "
}

// complete completes the word before the cursor: commands after a leading
// "/", rooms after "#", otherwise nicks. Each further Tab shows the next
// candidate.
func (m *model) complete() {
	e := &m.in
	if c := m.comp; c != nil && len(c.cands) > 0 {
		c.i = (c.i + 1) % len(c.cands)
		e.text = e.text[:c.start] + c.cands[c.i] + c.suffix + e.text[e.cur:]
		e.cur = c.start + len(c.cands[c.i]) + len(c.suffix)
		return
	}
	start := strings.LastIndexAny(e.text[:e.cur], " \n") + 1
	word := e.text[start:e.cur]
	var pool []string
	switch {
	case start == 0 && strings.HasPrefix(word, "/"):
		pool = commandNames()
	case strings.HasPrefix(word, "#"):
		for _, c := range m.convs {
			if c.isRoom() {
				pool = append(pool, c.key)
			}
		}
		if r := m.self.room; r != "" {
			pool = append(pool, "#"+r)
		}
	default:
		pool = m.knownNicks()
	}
	var cands []string
	seen := map[string]bool{}
	lw := strings.ToLower(word)
	for _, p := range pool {
		if !seen[p] && strings.HasPrefix(strings.ToLower(p), lw) {
			seen[p] = true
			cands = append(cands, p)
		}
	}
	if len(cands) == 0 {
		return
	}
	sort.Strings(cands)
	suffix := " "
	if start == 0 && !strings.HasPrefix(word, "/") && !strings.HasPrefix(word, "#") {
		suffix = ": "
	}
	if len(cands) > 1 {
		// First complete the common prefix; the next Tab cycles.
		if cp := commonPrefix(cands); len(cp) > len(word) {
			e.text = e.text[:start] + cp + e.text[e.cur:]
			e.cur = start + len(cp)
			return
		}
	}
	m.comp = &completion{start: start, prefix: word, cands: cands, suffix: suffix}
	e.text = e.text[:start] + cands[0] + suffix + e.text[e.cur:]
	e.cur = start + len(cands[0]) + len(suffix)
}

func commonPrefix(ss []string) string {
	p := ss[0]
	for _, s := range ss[1:] {
		for !strings.HasPrefix(s, p) {
			p = p[:len(p)-1]
		}
	}
	return p
}

// knownNicks are the nicks Tab completes: conversations and every peer the
// UI has heard of.
func (m *model) knownNicks() []string {
	var out []string
	for _, c := range m.convs {
		if c.key != "" && !c.isRoom() {
			out = append(out, c.key)
		}
	}
	for nick := range m.peers {
		out = append(out, nick)
	}
	return out
}

// commandNames are the commands Tab completes, from the help text (so a
// command another feature adds to helpLines completes too).
func commandNames() []string {
	var out []string
	for _, l := range helpLines {
		if strings.HasPrefix(l, "/") {
			name, _ := cutWord(l)
			out = append(out, name)
		}
	}
	return out
}
