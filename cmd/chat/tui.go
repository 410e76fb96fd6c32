package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/colorprofile"
	"github.com/charmbracelet/x/ansi"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/p2p-messaging/p2p-messaging/chat"
)

// The terminal UI: Bubble Tea v2. Events only ever change conversations;
// keys only ever change the input; the two meet in View. Layout, top to
// bottom: the sidebar and the visible conversation, one status line, the
// input box (1 to maxInputRows rows).

const (
	// startupHistory is how many messages a conversation shows when it
	// opens.
	startupHistory = 20
	// maxEarlyDelivered bounds the delivery acks remembered for messages
	// whose send result has not reached the UI yet.
	maxEarlyDelivered = 1024
	// sidebarMin is the narrowest terminal with a sidebar; below it the
	// status line lists the conversations with activity.
	sidebarMin = 50
)

// Messages that enter the model besides keys and window sizes.
type (
	eventMsg        struct{ ev chat.Event }
	eventsClosedMsg struct{}
	startedMsg      struct{ err error }
	// resultMsg is the result of a command run off the UI goroutine; seq
	// ties a send to the pending line shown when Enter was pressed, conv
	// is the conversation the command was typed in.
	resultMsg struct {
		seq  int
		conv string
		v    any
	}
	quietWhoisMsg     struct{ w chat.Whois }
	historyLoadedMsg  struct{ h historyResult }
	contactsLoadedMsg struct{ cs []chat.Contact }
)

type peerState struct {
	id     peer.ID
	online bool
	known  bool // online is meaningful
	conn   chat.ConnInfo
	punch  string // why the last hole punch failed; "" after a success
}

type selfInfo struct {
	nick string
	id   peer.ID
	room string
}

type model struct {
	ctx   context.Context
	node  *chat.Node // used only inside commands; nil in model tests
	sess  *session
	start func(context.Context) error
	st    styles
	now   func() time.Time
	loc   *time.Location // the zone times are shown in
	wm    ansi.Method    // how the renderer counts cells
	bell  bool           // ring for a message outside the visible conversation

	width, height int

	self   selfInfo
	ready  bool
	convs  []*conv
	active int
	byID   map[string]*chatLine
	bySeq  map[int]*chatLine
	early  map[string]bool // delivered before the send result arrived
	seq    int
	peers  map[string]*peerState
	fatal  error
	files  fileView // files_tui.go

	in       editor
	comp     *completion
	lastFrom string // who /r answers
}

func newModel(ctx context.Context, node *chat.Node, sess *session, start func(context.Context) error, self selfInfo, profile colorprofile.Profile) model {
	m := model{
		ctx:   ctx,
		node:  node,
		sess:  sess,
		start: start,
		st:    newStyles(profile),
		now:   time.Now,
		loc:   time.Local,
		wm:    ansi.WcWidth,
		bell:  true,
		self:  self,
		byID:  make(map[string]*chatLine),
		bySeq: make(map[int]*chatLine),
		early: make(map[string]bool),
		peers: make(map[string]*peerState),
	}
	m.conv("")
	m.addTo(m.convs[0], &chatLine{kind: lineInfo, text: fmt.Sprintf("connecting as %s (%s)… /help lists the commands, Alt-1..9 or Ctrl-N/Ctrl-P switch conversations", self.nick, shortID(self.id))})
	if to := sess.target(); to != "" {
		m.conv(to)
		m.switchTo(len(m.convs) - 1)
	}
	return m
}

func (m model) Init() tea.Cmd {
	cmds := []tea.Cmd{m.waitEvent(), m.startCmd(), m.contactsCmd()}
	if c := m.cur(); c.key != "" && !c.isRoom() {
		cmds = append(cmds, m.historyCmd(c.key, startupHistory), m.whoisCmd(c.key))
	}
	return tea.Batch(cmds...)
}

func (m model) waitEvent() tea.Cmd {
	if m.node == nil {
		return nil
	}
	node, ctx := m.node, m.ctx
	return func() tea.Msg {
		select {
		case ev, ok := <-node.Events():
			if !ok {
				return eventsClosedMsg{}
			}
			return eventMsg{ev}
		case <-ctx.Done():
			return nil
		}
	}
}

// contactsCmd lists the contacts quietly at start: each gets its
// conversation in the sidebar (dimmed while offline), up to
// maxStartupConvs.
func (m model) contactsCmd() tea.Cmd {
	if m.node == nil {
		return nil
	}
	node := m.node
	return func() tea.Msg {
		cs, err := node.Contacts()
		if err != nil {
			return nil
		}
		return contactsLoadedMsg{cs}
	}
}

func (m model) startCmd() tea.Cmd {
	if m.start == nil {
		return nil
	}
	start, ctx := m.start, m.ctx
	return func() tea.Msg { return startedMsg{err: start(ctx)} }
}

// historyCmd loads a conversation's stored messages into it, quietly.
func (m model) historyCmd(nick string, n int) tea.Cmd {
	if m.node == nil {
		return nil
	}
	sess, ctx := m.sess, m.ctx
	return func() tea.Msg {
		v := sess.exec(ctx, command{kind: cmdHistory, nick: nick, n: n})
		if h, ok := v.(historyResult); ok {
			return historyLoadedMsg{h}
		}
		return nil
	}
}

// whoisCmd refreshes what the status line shows about nick; its result is
// not printed.
func (m model) whoisCmd(nick string) tea.Cmd {
	if m.node == nil {
		return nil
	}
	sess, ctx := m.sess, m.ctx
	return func() tea.Msg {
		if w, ok := sess.exec(ctx, command{kind: cmdWhois, nick: nick}).(whoisResult); ok {
			return quietWhoisMsg{w.Whois}
		}
		return nil
	}
}

func (m model) execCmd(seq int, conv string, c command) tea.Cmd {
	if m.node == nil {
		return nil
	}
	sess, ctx := m.sess, m.ctx
	return func() tea.Msg { return resultMsg{seq: seq, conv: conv, v: sess.exec(ctx, c)} }
}

func (m model) fetch(f switchFetch) tea.Cmd {
	var cmds []tea.Cmd
	if f.history != "" {
		cmds = append(cmds, m.historyCmd(f.history, startupHistory))
	}
	if f.whois != "" {
		cmds = append(cmds, m.whoisCmd(f.whois))
	}
	return tea.Batch(cmds...)
}

func (m model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
		return m, nil
	case tea.ModeReportMsg:
		if msg.Mode == ansi.ModeUnicodeCore && (msg.Value == ansi.ModeSet || msg.Value == ansi.ModeReset || msg.Value == ansi.ModePermanentlySet) {
			m.wm = ansi.GraphemeWidth // the renderer switches too (tea.go)
		}
		return m, nil
	case tea.ColorProfileMsg:
		m.st = newStyles(msg.Profile)
		return m, nil
	case tea.KeyPressMsg:
		return m.handleKey(msg)
	case tea.PasteMsg:
		m.comp = nil
		m.paste(msg.Content)
		return m, nil
	case eventMsg:
		cmd := m.handleEvent(msg.ev)
		return m, tea.Batch(cmd, m.waitEvent())
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
	case contactsLoadedMsg:
		m.openContacts(msg.cs)
		return m, nil
	case historyLoadedMsg:
		m.fillHistory(msg.h.With, msg.h.Messages)
		return m, nil
	case quietWhoisMsg:
		m.notePeer(msg.w.Nick, msg.w.Peer, &msg.w.Online, &msg.w.Conn)
		return m, nil
	}
	return m, nil
}

// paste inserts pasted text with its newlines, or refuses all of it when
// the input would pass maxInput.
func (m *model) paste(s string) {
	s = normalizePaste(s)
	if !m.in.insert(s) {
		m.addTo(m.cur(), &chatLine{kind: lineError, text: fmt.Sprintf("paste of %d bytes refused: the input holds at most %d bytes (%d messages)", len(s), maxInput, maxInput/chat.MaxTextLen)})
	}
}

func (m model) handleKey(k tea.KeyPressMsg) (tea.Model, tea.Cmd) {
	if k.Code != tea.KeyTab {
		m.comp = nil
	}
	ctrl, alt := k.Mod.Contains(tea.ModCtrl), k.Mod.Contains(tea.ModAlt)
	// Text first: whatever a key types is text, whatever it spells.
	if k.Text != "" && !ctrl && !alt {
		if !m.in.insert(normalizePaste(k.Text)) {
			m.addTo(m.cur(), &chatLine{kind: lineError, text: fmt.Sprintf("input full (%d bytes)", maxInput)})
		}
		return m, nil
	}
	if alt && !ctrl && k.Code >= '1' && k.Code <= '9' {
		return m, m.fetch(m.switchTo(int(k.Code - '1')))
	}
	switch {
	case k.Code == 'c' && ctrl:
		return m, tea.Quit
	case k.Code == tea.KeyEnter && (alt || k.Mod.Contains(tea.ModShift)), k.Code == 'j' && ctrl:
		m.in.insert("\n")
		return m, nil
	case k.Code == tea.KeyEnter:
		line := m.in.value()
		m.in.reset()
		m.in.remember(line)
		return m.submit(line)
	case k.Code == 'n' && ctrl, k.Code == tea.KeyRight && alt:
		return m, m.fetch(m.switchTo((m.active + 1) % len(m.convs)))
	case k.Code == 'p' && ctrl, k.Code == tea.KeyLeft && alt:
		return m, m.fetch(m.switchTo((m.active + len(m.convs) - 1) % len(m.convs)))
	case k.Code == tea.KeyTab:
		m.complete()
	case k.Code == tea.KeyUp:
		m.in.browse(true)
	case k.Code == tea.KeyDown:
		m.in.browse(false)
	case k.Code == tea.KeyPgUp:
		m.scroll(m.paneHeight() - 1)
	case k.Code == tea.KeyPgDown:
		m.scroll(-(m.paneHeight() - 1))
	case k.Code == tea.KeyLeft, k.Code == 'b' && ctrl:
		m.in.left()
	case k.Code == tea.KeyRight, k.Code == 'f' && ctrl:
		m.in.right()
	case k.Code == tea.KeyHome, k.Code == 'a' && ctrl:
		m.in.home()
	case k.Code == tea.KeyEnd, k.Code == 'e' && ctrl:
		m.in.end()
	case k.Code == tea.KeyBackspace, k.Code == 'h' && ctrl:
		m.in.backspace()
	case k.Code == tea.KeyDelete, k.Code == 'd' && ctrl:
		m.in.del()
	case k.Code == 'w' && ctrl, k.Code == tea.KeyBackspace && alt:
		m.in.deleteWord()
	case k.Code == 'u' && ctrl:
		m.in.killLineBefore()
	case k.Code == 'k' && ctrl:
		m.in.killLineAfter()
	}
	return m, nil
}

// scroll moves the visible conversation by rows (positive: up).
func (m *model) scroll(rows int) {
	c := m.cur()
	c.scroll = max(c.scroll+rows, 0)
	if total := m.totalRows(c); c.scroll > total-m.paneHeight() {
		c.scroll = max(total-m.paneHeight(), 0)
	}
	if c.scroll == 0 {
		c.below = 0
	}
}

// submit runs one typed line in the visible conversation.
func (m model) submit(line string) (tea.Model, tea.Cmd) {
	here := m.cur()
	c, err := parseCommand(line)
	if err != nil {
		m.addTo(here, &chatLine{kind: lineError, text: err.Error()})
		return m, nil
	}
	switch c.kind {
	case cmdNone:
		return m, nil
	case cmdQuit:
		return m, tea.Quit
	case cmdReply:
		if m.lastFrom == "" {
			m.addTo(here, &chatLine{kind: lineError, text: lastSenderHint})
			return m, nil
		}
		c = command{kind: cmdMsg, nick: m.lastFrom, text: c.text}
		fallthrough
	case cmdSay, cmdMsg:
		to := c.nick
		if c.kind == cmdSay {
			to = here.key
			if to == "" {
				m.addTo(here, &chatLine{kind: lineError, text: "this is the status window: switch to a conversation (Alt-2…, Ctrl-N) or use /to <nick> or /msg <nick> <text>"})
				return m, nil
			}
		}
		var cmds []tea.Cmd
		dest := m.conv(to)
		for _, part := range splitMessage(c.text) {
			m.seq++
			l := &chatLine{kind: lineOut, from: m.self.nick, to: to, text: part, mark: markPending}
			if ps := m.peers[to]; ps != nil {
				l.peer = ps.id
			}
			m.bySeq[m.seq] = l
			m.addTo(dest, l)
			cmds = append(cmds, m.execCmd(m.seq, to, command{kind: cmdMsg, nick: to, text: part}))
		}
		// One's own line brings the view back down. The parts of a long
		// text go out one after another, in order.
		dest.scroll, dest.below = 0, 0
		return m, tea.Sequence(cmds...)
	case cmdTo:
		v := m.sess.exec(m.ctx, c)
		return m.handleResult(resultMsg{conv: here.key, v: v})
	default:
		return m, m.execCmd(0, here.key, c)
	}
}

func (m model) handleResult(r resultMsg) (tea.Model, tea.Cmd) {
	var pending *chatLine
	if r.seq != 0 {
		pending = m.bySeq[r.seq]
		delete(m.bySeq, r.seq)
	}
	here := m.conv(r.conv)
	info := func(text string) { m.addTo(here, &chatLine{kind: lineInfo, text: text}) }
	switch v := r.v.(type) {
	case sentResult:
		if pending != nil {
			pending.id = v.Message.ID
			pending.time = v.Message.Time
			if v.Message.Peer != "" {
				pending.peer = v.Message.Peer
			}
			m.byID[v.Message.ID] = pending
			here.ids[v.Message.ID] = true
			if v.Message.Status == chat.StatusDelivered || m.early[v.Message.ID] {
				pending.mark = markDelivered
				delete(m.early, v.Message.ID)
			}
		}
	case errorResult:
		if pending != nil {
			pending.mark = markFailed
		}
		m.addTo(here, &chatLine{kind: lineError, text: v.Err.Error()})
	case toResult:
		i := m.index(v.Nick)
		if i < 0 {
			m.conv(v.Nick)
			i = len(m.convs) - 1
		}
		return m, m.fetch(m.switchTo(i))
	case peersResult:
		m.showPeers(here, v.Peers)
	case contactsResult:
		m.showContacts(here, v)
	case trustResult:
		for _, l := range trustLines(v) {
			info(l)
		}
	case whoisResult:
		m.showWhois(here, v.Whois)
	case serversResult:
		for _, l := range serversLines(v) {
			info(l)
		}
	case joinedResult:
		m.roomJoined(here, v) // rooms_tui.go
	case historyResult:
		m.showHistory(here, v)
	case idResult:
		info(fmt.Sprintf("you are %s, peer %s, room %s", v.Nick, v.Peer, v.Room))
		for _, a := range v.Addrs {
			info("  " + a.String())
		}
	case helpResult:
		for _, l := range v.Lines {
			info(l)
		}
		info("Alt-1..9, Ctrl-N/Ctrl-P switch conversations; Tab completes; Alt-Enter starts a new line")
		info("PgUp/PgDn scroll; Up/Down recall earlier input; Ctrl-C quits")
	case requestsResult:
		if len(v.Requests) == 0 {
			info("no requests from strangers")
		}
		for _, r := range v.Requests {
			info(fmt.Sprintf("request from %s (%s): %s", r.From, shortID(r.Peer), oneLine(r.Text)))
		}
	case allowedResult, blockedResult, unblockedResult:
		// The node's EventAllowed / EventBlocked / EventUnblocked reports it.
	case fileOfferedResult, fileAcceptedResult, fileRejectedResult, fileSendingResult, fileFailedResult, transfersResult:
		return m, m.handleFile(v) // files_tui.go
	case leftResult, createdResult, inviteResult, membersResult:
		m.roomResult(here, v) // rooms_tui.go
	case quitResult:
		return m, tea.Quit
	}
	return m, nil
}

// handleEvent applies a node event; the command it returns rings the bell.
func (m *model) handleEvent(ev chat.Event) tea.Cmd {
	status := m.convs[0]
	switch e := ev.(type) {
	case chat.EventReady:
		m.ready = true
		m.self.nick, m.self.id = e.Nick, e.Peer
		m.addTo(status, &chatLine{kind: lineInfo, text: fmt.Sprintf("ready: %s (%s) in room %s", e.Nick, shortID(e.Peer), m.self.room)})
	case chat.EventSent:
		// Shown when Enter was pressed; the send result binds the ID.
	case chat.EventStored:
		m.storedEvent(e) // mailbox.go
	case chat.EventDelivered:
		if l := m.byID[e.ID]; l != nil {
			l.mark = markDelivered
			return nil
		}
		if len(m.early) >= maxEarlyDelivered {
			clear(m.early)
		}
		m.early[e.ID] = true
	case chat.EventMessage:
		return m.incoming(e.Message)
	case chat.EventRequest:
		c := m.add("", &chatLine{kind: lineWarning, text: fmt.Sprintf("request from stranger %s: %q (/allow %s or /block %s)", shortenIDs(e.Nick), oneLine(e.Text), e.Peer, e.Peer)})
		return m.alert(c)
	case chat.EventAllowed:
		m.addTo(m.cur(), &chatLine{kind: lineInfo, text: fmt.Sprintf("allowed %s: its messages now arrive", m.nickOf(e.Peer))})
	case chat.EventBlocked:
		m.addTo(m.cur(), &chatLine{kind: lineInfo, text: fmt.Sprintf("blocked %s", m.nickOf(e.Peer))})
	case chat.EventUnblocked:
		m.addTo(m.cur(), &chatLine{kind: lineInfo, text: fmt.Sprintf("unblocked %s", m.nickOf(e.Peer))})
	case chat.EventPresence:
		if e.Room != "" {
			m.roomPresence(e) // rooms_tui.go
			return nil
		}
		online := e.Online
		ps := m.notePeer(e.Nick, e.Peer, &online, nil)
		if !online {
			ps.conn = chat.ConnInfo{}
		}
		m.notice(e.Nick, presenceText(ps))
	case chat.EventConn:
		conn := e.Conn
		ps := m.notePeer(e.Nick, e.Peer, nil, &conn)
		m.notice(e.Nick, presenceText(ps))
	case chat.EventHolePunch:
		nick := m.nickOf(e.Peer)
		if ps := m.peers[nick]; ps != nil {
			ps.punch = e.Reason
		}
		if e.Success {
			m.notice(nick, fmt.Sprintf("hole punch succeeded (%d attempt(s), %s)", e.Attempts, e.Elapsed.Round(time.Millisecond)))
		} else {
			m.notice(nick, fmt.Sprintf("hole punch failed after %d attempt(s), staying relayed: %s", e.Attempts, cmp.Or(e.Reason, "no reason given")))
		}
	case chat.EventFileOffer, chat.EventFileProgress, chat.EventFileState, chat.EventFileDone, chat.EventFileFailed:
		return m.handleFile(ev) // files_tui.go
	case chat.EventWarning:
		text := shortenIDs(e.Text)
		if e.Nick != "" && strings.Contains(e.Text, "pinned to") {
			text += fmt.Sprintf(" — compare keys with /trust %s", e.Nick)
		}
		l := &chatLine{kind: lineWarning, text: text}
		m.addTo(status, l)
		if m.active != 0 {
			m.addTo(m.cur(), &chatLine{kind: lineWarning, text: text})
		}
	}
	return nil
}

// incoming shows a message in its conversation (convKey), with unread
// count, mention, bell and title when that conversation is not the
// visible one.
func (m *model) incoming(msg chat.Message) tea.Cmd { return m.incomingIn(convKey(msg), msg) }

// incomingIn is incoming in conversation key: a room's messages come in
// through it with key "#name".
func (m *model) incomingIn(key string, msg chat.Message) tea.Cmd {
	m.notePeer(msg.From, msg.Peer, nil, nil)
	c := m.conv(key)
	if c.ids[msg.ID] {
		return nil
	}
	if !msg.Outgoing && !strings.HasPrefix(key, "#") {
		m.lastFrom = msg.From
		m.sess.noteSender(msg.From)
	}
	l := &chatLine{kind: lineIn, time: msg.Time, from: msg.From, to: msg.To, peer: msg.Peer, text: msg.Text, id: msg.ID}
	m.addTo(c, l)
	var load tea.Cmd
	if !c.loaded && !c.isRoom() {
		c.loaded = true
		load = m.historyCmd(key, startupHistory)
	}
	if mentions(msg.Text, m.self.nick) && m.cur() != c {
		c.mention = true
	}
	return tea.Batch(load, m.alert(c))
}

// bellChar is the terminal bell, written as is (a string: tea.Raw prints its
// argument with fmt).
const bellChar = "\a"

// alert rings the bell for activity outside the visible conversation
// (the window title shows the unread count in View).
func (m *model) alert(c *conv) tea.Cmd {
	if !m.bell || m.cur() == c {
		return nil
	}
	return tea.Raw(bellChar)
}

// notice puts a presence or connection change in the status window and in
// the peer's own conversation, if there is one.
func (m *model) notice(nick, text string) {
	m.addNotice("", nick, text)
	if i := m.index(nick); i > 0 {
		m.addNotice(nick, nick, text)
	}
}

// notePeer records what is known about nick for the status line.
func (m *model) notePeer(nick string, id peer.ID, online *bool, conn *chat.ConnInfo) *peerState {
	if nick == "" {
		return &peerState{}
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
	return ps
}

func (m *model) nickOf(id peer.ID) string {
	for nick, ps := range m.peers {
		if ps.id == id {
			return nick
		}
	}
	return shortID(id)
}

func (m *model) showPeers(c *conv, ps []chat.PeerStatus) {
	info := func(text string) { m.addTo(c, &chatLine{kind: lineInfo, text: text}) }
	if len(ps) == 0 {
		info("no known peers")
		return
	}
	info(fmt.Sprintf("%d peer(s):", len(ps)))
	for _, p := range ps {
		online, conn := p.Online, p.Conn
		m.notePeer(p.Nick, p.Peer, &online, &conn)
		state := "offline"
		if p.Online {
			state = "online, " + describeConn(p.Conn, false)
		}
		rtt := ""
		if p.RTT > 0 {
			rtt = fmt.Sprintf(", rtt %s", p.RTT.Round(10*time.Microsecond))
		}
		info(fmt.Sprintf("  %-16s %s %s%s", oneLine(p.Nick), shortID(p.Peer), state, rtt) + punchNote(p))
	}
}

func (m *model) showWhois(c *conv, w chat.Whois) {
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
	m.addTo(c, &chatLine{kind: lineInfo, text: fmt.Sprintf("%s: peer %s, %s, %s, %s", oneLine(w.Nick), w.Peer, pinned, state, describeConn(w.Conn, true))})
	for _, a := range w.Addrs {
		m.addTo(c, &chatLine{kind: lineInfo, text: "  " + a.String()})
	}
}

// showHistory answers /history: the messages as a block in the
// conversation the command was typed in.
func (m *model) showHistory(c *conv, h historyResult) {
	if len(h.Messages) == 0 {
		m.addTo(c, &chatLine{kind: lineInfo, text: "no history with " + h.With})
		return
	}
	m.addTo(c, &chatLine{kind: lineInfo, text: fmt.Sprintf("── last %d message(s) with %s ──", len(h.Messages), h.With)})
	for _, msg := range h.Messages {
		l := &chatLine{kind: lineIn, time: msg.Time, from: msg.From, to: msg.To, peer: msg.Peer, text: msg.Text}
		if msg.Outgoing {
			l.kind, l.mark = lineOut, markPending
			if msg.Status == chat.StatusDelivered {
				l.mark = markDelivered
			}
		}
		m.addTo(c, l)
	}
	m.addTo(c, &chatLine{kind: lineInfo, text: "──"})
}

// runTUI runs the terminal UI until Ctrl-C, /quit or ctx ends, then closes
// the node (unregister, flush).
func runTUI(ctx context.Context, node *chat.Node, start func(context.Context) error, dataDir string, bell bool, stdin io.Reader, stdout io.Writer, log *slog.Logger) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	profile := colorprofile.Detect(stdout, os.Environ())
	if os.Getenv("NO_COLOR") != "" {
		profile = colorprofile.ASCII
	}
	self := selfInfo{nick: node.Nick(), id: node.ID(), room: node.Room()}
	m := newModel(ctx, node, newSession(node, dataDir), start, self, profile)
	m.bell = bell
	p := tea.NewProgram(m, tea.WithContext(ctx), tea.WithInput(stdin), tea.WithOutput(stdout), tea.WithColorProfile(profile))
	final, err := p.Run()
	cancel()
	log.Info("shutting down")
	cerr := node.Close()
	if cerr != nil {
		cerr = fmt.Errorf("close node: %w", cerr)
	}
	if err != nil && !errors.Is(err, tea.ErrProgramKilled) && !errors.Is(err, tea.ErrInterrupted) && !errors.Is(err, context.Canceled) {
		return errors.Join(fmt.Errorf("terminal ui: %w", err), cerr)
	}
	if fm, ok := final.(model); ok && fm.fatal != nil {
		return errors.Join(fm.fatal, cerr)
	}
	return cerr
}
