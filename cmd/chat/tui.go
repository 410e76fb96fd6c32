package main

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/charmbracelet/bubbles/textinput"
	"github.com/charmbracelet/bubbles/viewport"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/muesli/termenv"

	"github.com/p2p-messaging/p2p-messaging/chat"
)

const (
	// maxScrollback bounds the lines kept in the message pane.
	maxScrollback = 5000
	// startupHistory is how many messages of the last conversation are
	// shown on start.
	startupHistory = 20
	// maxEarlyDelivered bounds the delivery acks remembered for messages
	// whose send result has not reached the UI yet.
	maxEarlyDelivered = 1024
)

// Messages that enter the model besides keys and window sizes.
type (
	eventMsg        struct{ ev chat.Event }
	eventsClosedMsg struct{}
	startedMsg      struct{ err error }
	// resultMsg is the result of a command run off the UI goroutine; seq
	// ties a send to the pending line shown when Enter was pressed.
	resultMsg struct {
		seq int
		v   any
	}
)

type lineKind int

const (
	lineInfo lineKind = iota
	lineIn
	lineOut
	lineError
	lineWarning
)

type mark int

const (
	markNone mark = iota
	markPending
	markDelivered
	markFailed
)

// chatLine is one entry of the message pane.
type chatLine struct {
	kind lineKind
	time time.Time
	from string  // sender nick (lineIn, lineOut)
	to   string  // recipient nick (lineOut)
	peer peer.ID // the other side, for its colour
	text string
	mark mark
	id   string // message ID once known
}

type peerState struct {
	id     peer.ID
	online bool
	known  bool // online is meaningful
	conn   chat.ConnInfo
}

// styles are bound to one renderer so NO_COLOR and tests are honoured.
type styles struct {
	r       *lipgloss.Renderer
	time    lipgloss.Style
	info    lipgloss.Style
	err     lipgloss.Style
	warn    lipgloss.Style
	self    lipgloss.Style
	status  lipgloss.Style
	pending lipgloss.Style
	ok      lipgloss.Style
	palette []lipgloss.Style
}

var peerPalette = []string{"#e06c75", "#98c379", "#e5c07b", "#61afef", "#c678dd", "#56b6c2", "#d19a66", "#ff79c6", "#8be9fd", "#50fa7b"}

func newStyles(r *lipgloss.Renderer) styles {
	s := styles{
		r:       r,
		time:    r.NewStyle().Faint(true),
		info:    r.NewStyle().Foreground(lipgloss.Color("245")),
		err:     r.NewStyle().Foreground(lipgloss.Color("9")).Bold(true),
		warn:    r.NewStyle().Foreground(lipgloss.Color("11")).Bold(true),
		self:    r.NewStyle().Bold(true),
		status:  r.NewStyle().Foreground(lipgloss.Color("230")).Background(lipgloss.Color("238")),
		pending: r.NewStyle().Foreground(lipgloss.Color("245")),
		ok:      r.NewStyle().Foreground(lipgloss.Color("10")),
	}
	for _, c := range peerPalette {
		s.palette = append(s.palette, r.NewStyle().Foreground(lipgloss.Color(c)).Bold(true))
	}
	return s
}

// peerStyle is a stable colour per peer: a hash of its peer ID (or of the
// nick while the ID is unknown) picks from the palette.
func (s styles) peerStyle(id peer.ID, nick string) lipgloss.Style {
	key := string(id)
	if key == "" {
		key = nick
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	return s.palette[h.Sum32()%uint32(len(s.palette))]
}

// newRenderer returns the renderer for the UI on out: the terminal's colour
// profile, or no styling at all when NO_COLOR is set (https://no-color.org).
// A profile given in force replaces detection (tests).
func newRenderer(out io.Writer, noColor bool, force ...termenv.Profile) *lipgloss.Renderer {
	r := lipgloss.NewRenderer(out)
	if len(force) > 0 {
		r.SetColorProfile(force[0])
	}
	if noColor {
		r.SetColorProfile(termenv.Ascii)
	}
	return r
}

type selfInfo struct {
	nick string
	id   peer.ID
	room string
}

// model is the Bubble Tea model of the terminal UI. The message pane
// (viewport) and the input line (textinput) are separate components: events
// only ever change the pane, keys only ever change the input.
type model struct {
	ctx   context.Context
	node  *chat.Node // used only inside commands
	sess  *session
	start func(context.Context) error
	st    styles
	now   func() time.Time

	vp     viewport.Model
	input  textinput.Model
	width  int
	height int

	self  selfInfo
	ready bool
	lines []*chatLine
	byID  map[string]*chatLine
	bySeq map[int]*chatLine
	early map[string]bool // delivered before the send result arrived
	seq   int
	peers map[string]*peerState
	fatal error

	// Input history, recalled with Up and Down.
	hist    []string
	histPos int    // len(hist) = the line being edited
	draft   string // the line being edited while browsing history
}

func newModel(ctx context.Context, node *chat.Node, sess *session, start func(context.Context) error, self selfInfo, r *lipgloss.Renderer) model {
	st := newStyles(r)
	in := textinput.New()
	in.Prompt = "> "
	in.Placeholder = "type a message, or /help"
	in.CharLimit = chat.MaxTextLen + 64 // room for "/msg <nick> "
	in.PromptStyle = r.NewStyle().Bold(true)
	in.TextStyle = r.NewStyle()
	in.PlaceholderStyle = r.NewStyle().Faint(true)
	in.CompletionStyle = r.NewStyle().Faint(true)
	// The cursor is reverse video, not a colour, so it stays visible under
	// NO_COLOR too.
	cr := lipgloss.NewRenderer(io.Discard)
	cr.SetColorProfile(termenv.ANSI)
	in.Cursor.Style = cr.NewStyle()
	in.Cursor.TextStyle = r.NewStyle()
	in.Focus()

	m := model{
		ctx:   ctx,
		node:  node,
		sess:  sess,
		start: start,
		st:    st,
		now:   time.Now,
		vp:    viewport.New(80, 20),
		input: in,
		self:  self,
		byID:  make(map[string]*chatLine),
		bySeq: make(map[int]*chatLine),
		early: make(map[string]bool),
		peers: make(map[string]*peerState),
	}
	// Keys for the pane: page keys only, so that arrows, letters and space
	// keep editing the input.
	m.vp.KeyMap.Up.SetKeys("ctrl+up")
	m.vp.KeyMap.Down.SetKeys("ctrl+down")
	m.vp.KeyMap.PageUp.SetKeys("pgup")
	m.vp.KeyMap.PageDown.SetKeys("pgdown")
	m.vp.KeyMap.HalfPageUp.SetEnabled(false) // ctrl+u/ctrl+d edit the input
	m.vp.KeyMap.HalfPageDown.SetEnabled(false)
	m.vp.KeyMap.Left.SetEnabled(false)
	m.vp.KeyMap.Right.SetEnabled(false)
	m.addLine(&chatLine{kind: lineInfo, text: fmt.Sprintf("connecting as %s (%s)… /help lists the commands", self.nick, shortID(self.id))})
	return m
}

func (m model) Init() tea.Cmd {
	cmds := []tea.Cmd{textinput.Blink, m.waitEvent(), m.startCmd()}
	if to := m.sess.target(); to != "" {
		cmds = append(cmds, m.historyCmd(to, startupHistory), m.whoisCmd(to))
	}
	return tea.Batch(cmds...)
}

func (m model) waitEvent() tea.Cmd {
	node, ctx := m.node, m.ctx
	return func() tea.Msg {
		ch := node.Events()
		select {
		case ev, ok := <-ch:
			if !ok {
				return eventsClosedMsg{}
			}
			return eventMsg{ev}
		case <-ctx.Done():
			return nil
		}
	}
}

func (m model) startCmd() tea.Cmd {
	start, ctx := m.start, m.ctx
	return func() tea.Msg { return startedMsg{err: start(ctx)} }
}

func (m model) historyCmd(nick string, n int) tea.Cmd {
	return m.execCmd(0, command{kind: cmdHistory, nick: nick, n: n})
}

// whoisCmd refreshes what the status line shows about nick; its result is
// not printed.
func (m model) whoisCmd(nick string) tea.Cmd {
	sess, ctx := m.sess, m.ctx
	return func() tea.Msg {
		v := sess.exec(ctx, command{kind: cmdWhois, nick: nick})
		if w, ok := v.(whoisResult); ok {
			return quietWhoisMsg{w.Whois}
		}
		return nil
	}
}

type quietWhoisMsg struct{ w chat.Whois }

func (m model) execCmd(seq int, c command) tea.Cmd {
	sess, ctx := m.sess, m.ctx
	return func() tea.Msg { return resultMsg{seq: seq, v: sess.exec(ctx, c)} }
}

func (m model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.resize(msg.Width, msg.Height)
		return m, nil
	case tea.KeyMsg:
		return m.handleKey(msg)
	case eventMsg:
		m.handleEvent(msg.ev)
		return m, m.waitEvent()
	case eventsClosedMsg:
		return m, nil
	case startedMsg:
		if msg.err != nil {
			if errors.Is(msg.err, chat.ErrNickTaken) {
				m.fatal = fmt.Errorf("nick %q is taken on a rendezvous daemon: %w", m.self.nick, msg.err)
			} else {
				m.fatal = fmt.Errorf("start: %w", msg.err)
			}
			return m, tea.Quit
		}
		return m, nil
	case resultMsg:
		return m.handleResult(msg)
	case quietWhoisMsg:
		m.notePeer(msg.w.Nick, msg.w.Peer, &msg.w.Online, &msg.w.Conn)
		return m, nil
	}
	var cmd tea.Cmd
	m.input, cmd = m.input.Update(msg)
	return m, cmd
}

func (m *model) resize(w, h int) {
	follow := m.following()
	m.width, m.height = w, h
	m.input.Width = max(w-lipgloss.Width(m.input.Prompt)-1, 1)
	m.vp.Width = max(w, 1)
	m.vp.Height = max(h-2, 1) // status line and input line
	m.renderFollow(follow)
}

func (m model) handleKey(k tea.KeyMsg) (tea.Model, tea.Cmd) {
	switch k.Type {
	case tea.KeyCtrlC:
		return m, tea.Quit
	case tea.KeyEnter:
		line := m.input.Value()
		m.input.Reset()
		m.remember(line)
		return m.submit(line)
	case tea.KeyUp, tea.KeyDown:
		m.browseHistory(k.Type == tea.KeyUp)
		return m, nil
	case tea.KeyPgUp, tea.KeyPgDown, tea.KeyCtrlUp, tea.KeyCtrlDown:
		var cmd tea.Cmd
		m.vp, cmd = m.vp.Update(k)
		return m, cmd
	}
	var cmd tea.Cmd
	m.input, cmd = m.input.Update(k)
	return m, cmd
}

// maxInputHistory bounds the lines Up and Down recall.
const maxInputHistory = 200

func (m *model) remember(line string) {
	if strings.TrimSpace(line) != "" && (len(m.hist) == 0 || m.hist[len(m.hist)-1] != line) {
		m.hist = append(m.hist, line)
		if len(m.hist) > maxInputHistory {
			m.hist = m.hist[len(m.hist)-maxInputHistory:]
		}
	}
	m.histPos, m.draft = len(m.hist), ""
}

func (m *model) browseHistory(back bool) {
	switch {
	case back && m.histPos > 0:
		if m.histPos == len(m.hist) {
			m.draft = m.input.Value()
		}
		m.histPos--
		m.input.SetValue(m.hist[m.histPos])
	case !back && m.histPos < len(m.hist):
		m.histPos++
		if m.histPos == len(m.hist) {
			m.input.SetValue(m.draft)
		} else {
			m.input.SetValue(m.hist[m.histPos])
		}
	default:
		return
	}
	m.input.CursorEnd()
}

// submit runs one typed line.
func (m model) submit(line string) (tea.Model, tea.Cmd) {
	c, err := parseCommand(line)
	if err != nil {
		m.addLine(&chatLine{kind: lineError, text: err.Error()})
		return m, nil
	}
	switch c.kind {
	case cmdNone:
		return m, nil
	case cmdQuit:
		return m, tea.Quit
	case cmdSay, cmdMsg:
		to := c.nick
		if c.kind == cmdSay {
			to = m.sess.target()
			if to == "" {
				m.addLine(&chatLine{kind: lineError, text: errNoTarget.Error()})
				return m, nil
			}
		}
		m.seq++
		l := &chatLine{kind: lineOut, from: m.self.nick, to: to, text: c.text, mark: markPending}
		if ps := m.peers[to]; ps != nil {
			l.peer = ps.id
		}
		m.bySeq[m.seq] = l
		m.addLine(l)
		return m, m.execCmd(m.seq, c)
	case cmdTo:
		v := m.sess.exec(m.ctx, c)
		return m.handleResult(resultMsg{v: v})
	default:
		return m, m.execCmd(0, c)
	}
}

func (m model) handleResult(r resultMsg) (tea.Model, tea.Cmd) {
	var pending *chatLine
	if r.seq != 0 {
		pending = m.bySeq[r.seq]
		delete(m.bySeq, r.seq)
	}
	switch v := r.v.(type) {
	case sentResult:
		if pending != nil {
			pending.id = v.Message.ID
			pending.time = v.Message.Time
			if v.Message.Peer != "" {
				pending.peer = v.Message.Peer
			}
			m.byID[v.Message.ID] = pending
			if v.Message.Status == chat.StatusDelivered || m.early[v.Message.ID] {
				pending.mark = markDelivered
				delete(m.early, v.Message.ID)
			}
			m.render()
		}
	case errorResult:
		if pending != nil {
			pending.mark = markFailed
		}
		m.addLine(&chatLine{kind: lineError, text: v.Err.Error()})
	case toResult:
		m.addLine(&chatLine{kind: lineInfo, text: fmt.Sprintf("talking to %s: plain lines go there now", v.Nick)})
		return m, tea.Batch(m.historyCmd(v.Nick, 10), m.whoisCmd(v.Nick))
	case peersResult:
		m.showPeers(v.Peers)
	case whoisResult:
		m.showWhois(v.Whois)
	case serversResult:
		for _, l := range serversLines(v) {
			m.addLine(&chatLine{kind: lineInfo, text: l})
		}
	case joinedResult:
		m.self.room = v.Room
		m.addLine(&chatLine{kind: lineInfo, text: "joined room " + v.Room})
	case historyResult:
		m.showHistory(v)
	case idResult:
		m.addLine(&chatLine{kind: lineInfo, text: fmt.Sprintf("you are %s, peer %s, room %s", v.Nick, v.Peer, v.Room)})
		for _, a := range v.Addrs {
			m.addLine(&chatLine{kind: lineInfo, text: "  " + a.String()})
		}
	case helpResult:
		for _, l := range v.Lines {
			m.addLine(&chatLine{kind: lineInfo, text: l})
		}
		m.addLine(&chatLine{kind: lineInfo, text: "PgUp/PgDn (or Ctrl-Up/Ctrl-Down) scroll the messages; Up/Down recall earlier input; Ctrl-C quits"})
	case requestsResult:
		if len(v.Requests) == 0 {
			m.addLine(&chatLine{kind: lineInfo, text: "no requests from strangers"})
		}
		for _, r := range v.Requests {
			m.addLine(&chatLine{kind: lineInfo, text: fmt.Sprintf("request from %s (%s): %s", r.From, r.Peer, r.Text)})
		}
	case allowedResult, blockedResult:
		// The node's EventAllowed / EventBlocked reports it.
	case quitResult:
		return m, tea.Quit
	}
	return m, nil
}

func (m *model) handleEvent(ev chat.Event) {
	switch e := ev.(type) {
	case chat.EventReady:
		m.ready = true
		m.self.nick, m.self.id = e.Nick, e.Peer
		m.addLine(&chatLine{kind: lineInfo, text: fmt.Sprintf("ready: %s (%s) in room %s", e.Nick, shortID(e.Peer), m.self.room)})
	case chat.EventSent:
		// Shown when Enter was pressed; the send result binds the ID.
	case chat.EventDelivered:
		if l := m.byID[e.ID]; l != nil {
			l.mark = markDelivered
			m.render()
			return
		}
		if len(m.early) >= maxEarlyDelivered {
			clear(m.early)
		}
		m.early[e.ID] = true
	case chat.EventMessage:
		msg := e.Message
		m.notePeer(msg.From, msg.Peer, nil, nil)
		m.addLine(&chatLine{kind: lineIn, time: msg.Time, from: msg.From, to: msg.To, peer: msg.Peer, text: msg.Text, id: msg.ID})
	case chat.EventRequest:
		m.addLine(&chatLine{kind: lineWarning, text: fmt.Sprintf("request from stranger %s: %q (/allow %s or /block %s)", e.Nick, e.Text, e.Peer, e.Peer)})
	case chat.EventAllowed:
		m.addLine(&chatLine{kind: lineInfo, text: fmt.Sprintf("allowed %s: its messages now arrive", e.Peer)})
	case chat.EventBlocked:
		m.addLine(&chatLine{kind: lineInfo, text: fmt.Sprintf("blocked %s", e.Peer)})
	case chat.EventPresence:
		online := e.Online
		m.notePeer(e.Nick, e.Peer, &online, nil)
		state := "offline"
		if e.Online {
			state = "online"
		}
		m.addLine(&chatLine{kind: lineInfo, text: fmt.Sprintf("%s is %s", e.Nick, state)})
	case chat.EventConn:
		conn := e.Conn
		m.notePeer(e.Nick, e.Peer, nil, &conn)
		m.addLine(&chatLine{kind: lineInfo, text: fmt.Sprintf("%s: %s", e.Nick, describeConn(e.Conn, true))})
	case chat.EventHolePunch:
		if e.Success {
			m.addLine(&chatLine{kind: lineInfo, text: fmt.Sprintf("hole punch with %s succeeded (%d attempt(s), %s)", m.nickOf(e.Peer), e.Attempts, e.Elapsed.Round(time.Millisecond))})
		} else {
			m.addLine(&chatLine{kind: lineInfo, text: fmt.Sprintf("hole punch with %s failed after %d attempt(s): %s; staying relayed", m.nickOf(e.Peer), e.Attempts, e.Err)})
		}
	case chat.EventWarning:
		text := e.Text
		if e.Nick != "" || e.Peer != "" {
			text = fmt.Sprintf("%s (nick %s, peer %s)", e.Text, e.Nick, e.Peer)
		}
		m.addLine(&chatLine{kind: lineWarning, text: text})
	}
}

// notePeer records what is known about nick for the status line.
func (m *model) notePeer(nick string, id peer.ID, online *bool, conn *chat.ConnInfo) {
	if nick == "" {
		return
	}
	ps := m.peers[nick]
	if ps == nil {
		ps = &peerState{}
		m.peers[nick] = ps
	}
	if id != "" {
		ps.id = id
	}
	if online != nil {
		ps.online, ps.known = *online, true
	}
	if conn != nil {
		ps.conn = *conn
	}
}

func (m *model) nickOf(id peer.ID) string {
	for nick, ps := range m.peers {
		if ps.id == id {
			return nick
		}
	}
	return shortID(id)
}

func (m *model) showPeers(ps []chat.PeerStatus) {
	if len(ps) == 0 {
		m.addLine(&chatLine{kind: lineInfo, text: "no known peers online"})
		return
	}
	m.addLine(&chatLine{kind: lineInfo, text: fmt.Sprintf("%d peer(s):", len(ps))})
	for _, p := range ps {
		online, conn := p.Online, p.Conn
		m.notePeer(p.Nick, p.Peer, &online, &conn)
		state := "offline"
		if p.Online {
			state = "online"
		}
		rtt := ""
		if p.RTT > 0 {
			rtt = fmt.Sprintf(", rtt %s", p.RTT.Round(10*time.Microsecond))
		}
		m.addLine(&chatLine{kind: lineInfo, text: fmt.Sprintf("  %-16s %s %s, %s%s", p.Nick, shortID(p.Peer), state, describeConn(p.Conn, true), rtt)})
	}
}

func (m *model) showWhois(w chat.Whois) {
	online, conn := w.Online, w.Conn
	m.notePeer(w.Nick, w.Peer, &online, &conn)
	pinned := "not pinned"
	if w.Pinned {
		pinned = "pinned"
	}
	state := "offline"
	if w.Online {
		state = "online"
	}
	m.addLine(&chatLine{kind: lineInfo, text: fmt.Sprintf("%s: peer %s, %s, %s, %s", w.Nick, w.Peer, pinned, state, describeConn(w.Conn, true))})
	for _, a := range w.Addrs {
		m.addLine(&chatLine{kind: lineInfo, text: "  " + a.String()})
	}
}

func (m *model) showHistory(h historyResult) {
	if len(h.Messages) == 0 {
		m.addLine(&chatLine{kind: lineInfo, text: "no history with " + h.With})
		return
	}
	m.addLine(&chatLine{kind: lineInfo, text: fmt.Sprintf("── last %d message(s) with %s ──", len(h.Messages), h.With)})
	for _, msg := range h.Messages {
		l := &chatLine{kind: lineIn, time: msg.Time, from: msg.From, to: msg.To, peer: msg.Peer, text: msg.Text, id: msg.ID}
		if msg.Outgoing {
			l.kind = lineOut
			l.mark = markPending
			if msg.Status == chat.StatusDelivered || m.early[msg.ID] {
				l.mark = markDelivered
			}
			// A still-pending message gets its tick when the outbox delivers it.
			if l.mark == markPending {
				m.byID[msg.ID] = l
			}
		}
		m.lines = append(m.lines, l)
	}
	m.addLine(&chatLine{kind: lineInfo, text: "──"})
}

// addLine appends to the pane, trims the scrollback and re-renders.
func (m *model) addLine(l *chatLine) {
	if l.time.IsZero() {
		l.time = m.now()
	}
	m.lines = append(m.lines, l)
	if over := len(m.lines) - maxScrollback; over > 0 {
		for _, old := range m.lines[:over] {
			if old.id != "" && m.byID[old.id] == old {
				delete(m.byID, old.id)
			}
		}
		m.lines = append([]*chatLine(nil), m.lines[over:]...)
	}
	m.render()
}

// render rebuilds the pane, following new lines only if the user has not
// scrolled up.
func (m *model) render() {
	m.renderFollow(m.following())
}

// following reports whether the pane shows its last line.
func (m *model) following() bool {
	return m.vp.AtBottom() || m.vp.TotalLineCount() <= m.vp.Height
}

func (m *model) renderFollow(follow bool) {
	var b strings.Builder
	for i, l := range m.lines {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(m.renderLine(l))
	}
	m.vp.SetContent(b.String())
	if follow {
		m.vp.GotoBottom()
	}
}

func (m *model) renderLine(l *chatLine) string {
	st := m.st
	ts := st.time.Render(l.time.Local().Format("15:04"))
	text, from, to := sanitize(l.text), sanitize(l.from), sanitize(l.to)
	var body string
	switch l.kind {
	case lineIn:
		body = st.peerStyle(l.peer, l.from).Render(from) + ": " + text
	case lineOut:
		body = st.self.Render(from) + " → " + st.peerStyle(l.peer, l.to).Render(to) + ": " + text
		switch l.mark {
		case markPending:
			body += " " + st.pending.Render("…")
		case markDelivered:
			body += " " + st.ok.Render("✓")
		case markFailed:
			body += " " + st.err.Render("✗")
		}
	case lineError:
		body = st.err.Render("error: " + text)
	case lineWarning:
		body = st.warn.Render("warning: " + text)
	default:
		body = st.info.Render(text)
	}
	line := ts + " " + body
	if w := m.vp.Width; w > 0 && lipgloss.Width(line) > w {
		// Wrap long lines inside the pane, continuation lines indented
		// under the text; the wrapping style carries no colour.
		indent := lipgloss.Width(ts) + 1
		if w-indent < 10 {
			indent = 0
		}
		wrapped := strings.Split(st.r.NewStyle().Width(w-indent).Render(body), "\n")
		for i := range wrapped {
			wrapped[i] = strings.TrimRight(wrapped[i], " ")
		}
		pad := strings.Repeat(" ", indent)
		if indent == 0 {
			return ts + "\n" + strings.Join(wrapped, "\n")
		}
		return ts + " " + strings.Join(wrapped, "\n"+pad)
	}
	return line
}

func (m model) statusLine() string {
	parts := []string{fmt.Sprintf("%s (%s)", m.self.nick, shortID(m.self.id))}
	if m.self.room != "" {
		parts = append(parts, "room "+m.self.room)
	}
	if to := m.sess.target(); to != "" {
		s := "to " + to
		if ps := m.peers[to]; ps != nil {
			switch {
			case ps.conn.Kind != "" && ps.conn.Kind != chat.ConnNone:
				s += ": " + describeConn(ps.conn, false)
			case ps.known && !ps.online:
				s += ": offline"
			case ps.known:
				s += ": online"
			}
		}
		parts = append(parts, s)
	} else {
		parts = append(parts, "no /to peer")
	}
	if !m.ready {
		parts = append(parts, "connecting…")
	}
	line := " " + strings.Join(parts, " │ ")
	if m.width > 0 {
		if lipgloss.Width(line) > m.width {
			line = truncate(line, m.width)
		}
		return m.st.status.Width(m.width).Render(line)
	}
	return m.st.status.Render(line)
}

func (m model) View() string {
	if m.fatal != nil {
		return ""
	}
	return m.vp.View() + "\n" + m.statusLine() + "\n" + m.input.View()
}

// sanitize makes remote text safe to print: no terminal escapes or other
// control characters, no bidi overrides that reorder the line, no line
// breaks that could fake a line from someone else.
func sanitize(s string) string {
	clean := true
	for _, r := range s {
		if unsafeRune(r) {
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
			b.WriteString(" ⏎ ")
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

func truncate(s string, w int) string {
	rs := []rune(s)
	for len(rs) > 0 && lipgloss.Width(string(rs)) > w-1 {
		rs = rs[:len(rs)-1]
	}
	return string(rs) + "…"
}

// runTUI runs the terminal UI until Ctrl-C, /quit or ctx ends, then closes
// the node (unregister, flush).
func runTUI(ctx context.Context, node *chat.Node, start func(context.Context) error, dataDir string, stdin io.Reader, stdout io.Writer, log *slog.Logger) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r := newRenderer(stdout, os.Getenv("NO_COLOR") != "")
	self := selfInfo{nick: node.Nick(), id: node.ID(), room: node.Room()}
	m := newModel(ctx, node, newSession(node, dataDir), start, self, r)
	p := tea.NewProgram(m, tea.WithAltScreen(), tea.WithContext(ctx), tea.WithInput(stdin), tea.WithOutput(stdout))
	final, err := p.Run()
	cancel()
	log.Info("shutting down")
	cerr := node.Close()
	if cerr != nil {
		cerr = fmt.Errorf("close node: %w", cerr)
	}
	if err != nil && !errors.Is(err, tea.ErrProgramKilled) && !errors.Is(err, tea.ErrInterrupted) {
		return errors.Join(fmt.Errorf("terminal ui: %w", err), cerr)
	}
	if fm, ok := final.(model); ok && fm.fatal != nil {
		return errors.Join(fm.fatal, cerr)
	}
	return cerr
}
