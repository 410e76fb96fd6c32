package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/colorprofile"
	"github.com/charmbracelet/x/ansi"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/rivo/uniseg"
	"github.com/stretchr/testify/require"

	"github.com/p2p-messaging/p2p-messaging/chat"
)

var updateTUIGolden = flag.Bool("update-tui", false, "rewrite testdata/tui/*.golden")

// testNow is the fixed clock of the model tests (UTC).
var testNow = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

// testModel is a UI model without a node: the tests feed it tea.Msg values
// as the Bubble Tea runtime would, and never run its commands.
func testModel(t *testing.T, w, h int, profile colorprofile.Profile) model {
	t.Helper()
	m := newModel(context.Background(), nil, newSession(nil, ""), nil, selfInfo{nick: "alice", id: mustPeer(t, aliceID), room: "lobby"}, profile)
	m.now = func() time.Time { return testNow }
	m.loc = time.UTC
	m.convs[0].lines[0].time = testNow
	return update(t, m, tea.WindowSizeMsg{Width: w, Height: h})
}

func update(t *testing.T, m model, msgs ...tea.Msg) model {
	t.Helper()
	for _, msg := range msgs {
		next, _ := m.Update(msg)
		var ok bool
		m, ok = next.(model)
		require.True(t, ok)
	}
	return m
}

// typed is s as the terminal input decoder delivers it: one key press per
// grapheme cluster, Enter for a newline.
func typed(s string) []tea.Msg {
	var out []tea.Msg
	g := uniseg.NewGraphemes(s)
	for g.Next() {
		cl := g.Str()
		if cl == "\n" {
			out = append(out, key(tea.KeyEnter, 0))
			continue
		}
		r := []rune(cl)
		out = append(out, tea.KeyPressMsg{Code: r[0], Text: cl})
	}
	return out
}

func typeIn(t *testing.T, m model, s string) model {
	t.Helper()
	return update(t, m, typed(s)...)
}

func key(code rune, mod tea.KeyMod) tea.KeyPressMsg { return tea.KeyPressMsg{Code: code, Mod: mod} }

var enter = key(tea.KeyEnter, 0)

// screen is what the terminal shows: the rows without escapes.
func screen(m model) []string {
	rows, _, _ := m.screen()
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i] = strings.TrimRight(ansi.Strip(r), " ")
	}
	return out
}

func screenText(m model) string { return strings.Join(screen(m), "\n") }

// requireGolden compares the screen with testdata/tui/<name>.golden.
func requireGolden(t *testing.T, name string, m model) {
	t.Helper()
	got := screenText(m) + "\n"
	path := filepath.Join("testdata", "tui", name+".golden")
	if *updateTUIGolden {
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		require.NoError(t, os.WriteFile(path, []byte(got), 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "run go test -run %s -update-tui to create it", t.Name())
	require.Equal(t, string(want), got, "screen differs from %s", path)
}

// requireFits checks every row fits the terminal as the renderer counts.
func requireFits(t *testing.T, m model) {
	t.Helper()
	rows, cx, cy := m.screen()
	require.Len(t, rows, m.height)
	for i, r := range rows {
		require.LessOrEqual(t, m.wm.StringWidth(r), m.width, "row %d %q is wider than the terminal", i, ansi.Strip(r))
	}
	require.Less(t, cx, m.width)
	require.Less(t, cy, m.height)
}

// statusRow is the index of the status line on the screen.
func statusRow(m model) int {
	rows, _, _ := m.inputRows()
	return m.height - 1 - m.inputShown(len(rows))
}

func msgFrom(t *testing.T, id, from, pid, text string, at time.Time) eventMsg {
	return eventMsg{chat.EventMessage{Message: chat.Message{ID: id, From: from, To: "alice", Peer: mustPeer(t, pid), Text: text, Time: at, Status: chat.StatusDelivered}}}
}

const carolID = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"

func incoming(t *testing.T, id, text string) eventMsg {
	return msgFrom(t, id, "bob", bobID, text, testNow)
}

func TestTUIGoldenConversations(t *testing.T) {
	m := testModel(t, 80, 14, colorprofile.ANSI256)
	m = update(t, m, eventMsg{chat.EventReady{Nick: "alice", Peer: mustPeer(t, aliceID)}})
	m.convs[0].lines[1].time = testNow
	m = update(t, m, incoming(t, "b1", "hi alice, lunch?"))
	m = update(t, m, msgFrom(t, "c1", "carol", carolID, "ping", testNow), msgFrom(t, "c2", "carol", carolID, "alice: are you there?", testNow))
	// A room is a conversation like any other.
	room := m.conv("#lobby")
	m.addTo(room, &chatLine{kind: lineIn, time: testNow, from: "dave", text: "welcome to #lobby"})
	requireFits(t, m)
	requireGolden(t, "conversations-status", m)

	// Alt-2 shows bob; his count is gone, carol's (with a mention) stays.
	m = update(t, m, key('2', tea.ModAlt))
	require.Equal(t, "bob", m.cur().key)
	require.Equal(t, "bob", m.sess.target(), "plain lines now go to bob")
	requireGolden(t, "conversations-bob", m)

	// Ctrl-N steps to carol, Ctrl-P back to bob, Ctrl-N twice to the room.
	m = update(t, m, key('n', tea.ModCtrl))
	require.Equal(t, "carol", m.cur().key)
	require.Zero(t, m.cur().unread)
	require.False(t, m.cur().mention)
	m = update(t, m, key('p', tea.ModCtrl))
	require.Equal(t, "bob", m.cur().key)
	m = update(t, m, key('n', tea.ModCtrl), key('n', tea.ModCtrl))
	require.Equal(t, "#lobby", m.cur().key)
	m = update(t, m, key('n', tea.ModCtrl))
	require.Equal(t, "", m.cur().key, "it wraps around to the status window")

	// A plain line goes to the visible conversation; /to switches.
	m = update(t, m, key('3', tea.ModAlt))
	m = typeIn(t, m, "on my way\n")
	l := m.cur().lines[len(m.cur().lines)-1]
	require.Equal(t, lineOut, l.kind)
	require.Equal(t, "carol", l.to)
	m = typeIn(t, m, "/to bob\n")
	require.Equal(t, "bob", m.cur().key)
	m = typeIn(t, m, "/to erin\n")
	require.Equal(t, "erin", m.cur().key, "/to opens a new conversation")
	require.Len(t, m.convs, 5)
}

func TestTUIUnreadBellAndTitle(t *testing.T) {
	m := testModel(t, 80, 12, colorprofile.ANSI)
	require.Equal(t, "chat alice", m.title())

	next, cmd := m.Update(incoming(t, "b1", "hello"))
	m = next.(model)
	require.Equal(t, "(1) chat alice", m.View().WindowTitle)
	require.NotNil(t, cmd)
	require.True(t, cmdYields(cmd, tea.RawMsg{Msg: "\a"}), "the bell rings for a message in another conversation")

	// In the visible conversation: no bell, no count.
	m = update(t, m, key('2', tea.ModAlt))
	require.Equal(t, "chat alice", m.title())
	_, cmd = m.Update(incoming(t, "b2", "again"))
	require.False(t, cmdYields(cmd, tea.RawMsg{Msg: "\a"}))

	// -bell=false: never.
	m.bell = false
	m = update(t, m, key('1', tea.ModAlt))
	_, cmd = m.Update(incoming(t, "b3", "and again"))
	require.False(t, cmdYields(cmd, tea.RawMsg{Msg: "\a"}))

	// A mention marks the conversation and the title.
	m = update(t, m, msgFrom(t, "c1", "carol", carolID, "hey Alice!", testNow))
	require.True(t, m.conv("carol").mention)
	require.True(t, strings.HasPrefix(m.title(), "!("))
	require.False(t, mentions("malice", "alice"))
	require.True(t, mentions("ALICE: hi", "alice"))
}

// cmdYields runs cmd (and the commands of a batch) and reports whether
// one of them produced want.
func cmdYields(cmd tea.Cmd, want tea.Msg) bool {
	if cmd == nil {
		return false
	}
	switch msg := cmd().(type) {
	case tea.BatchMsg:
		for _, c := range msg {
			if cmdYields(c, want) {
				return true
			}
		}
		return false
	default:
		return msg == want
	}
}

// The Unicode samples of issue 12, each typed and received, at a fixed
// size, with both width methods the renderer may use. The screen must fit
// the terminal row by row (what broke the status line), and keep the
// status line and the prompt where they belong.
var unicodeSamples = []struct{ name, text string }{
	{"skin-tone", "skin tone 👍🏽"},
	{"zwj-family", "family 👨‍👩‍👧‍👦"},
	{"flag", "flag 🇩🇪🇯🇵"},
	{"combining", "combining e\u0301 a\u0308 n\u0303"},
	{"cjk", "CJK 日本語のテキスト 한국어 中文"},
	{"arabic", "Arabic مرحبا بالعالم"},
	{"vs16", "heart ❤️ star ⭐"},
	{"mixed-wrap", strings.Repeat("👍🏽日本🇩🇪e\u0301 ", 12)},
}

func TestTUIUnicode(t *testing.T) {
	for _, method := range []ansi.Method{ansi.WcWidth, ansi.GraphemeWidth} {
		for _, s := range unicodeSamples {
			name := s.name + "-wc"
			if method == ansi.GraphemeWidth {
				name = s.name + "-grapheme"
			}
			t.Run(name, func(t *testing.T) {
				m := testModel(t, 40, 10, colorprofile.TrueColor)
				if method == ansi.GraphemeWidth {
					m = update(t, m, tea.ModeReportMsg{Mode: ansi.ModeUnicodeCore, Value: ansi.ModeReset})
				}
				require.Equal(t, method, m.wm)
				m = update(t, m, key('2', tea.ModAlt))
				m = update(t, m, incoming(t, "u1", s.text))
				m = update(t, m, key('2', tea.ModAlt))
				m = typeIn(t, m, s.text)
				require.Equal(t, s.text, m.in.value(), "typed text arrives intact")
				requireFits(t, m)
				require.Contains(t, screen(m)[statusRow(m)], "alice (", "the status line is in place")
				requireGolden(t, "unicode-"+name, m)
				m = update(t, m, enter)
				requireFits(t, m)
				require.Contains(t, screen(m)[m.height-2], "alice (")
				require.True(t, strings.HasPrefix(screen(m)[m.height-1], "bob> "))
			})
		}
	}
}

func TestDisplayTextPerWidthMethod(t *testing.T) {
	family := "👨‍👩‍👧"
	require.Equal(t, "👨👩👧", displayText(ansi.WcWidth, family), "wcwidth terminals disagree on ZWJ: drawn apart")
	require.Equal(t, family, displayText(ansi.GraphemeWidth, family))
	require.Equal(t, 6, ansi.WcWidth.StringWidth(displayText(ansi.WcWidth, family)))
	require.Equal(t, "👍🏽", displayText(ansi.WcWidth, "👍🏽"), "modifiers are kept")
	require.Equal(t, "a\ufffdb\nc", displayText(ansi.WcWidth, "a\x1bb\nc"), "escapes never reach the terminal")
}

// TestTUIBurstInOneRead runs the real Bubble Tea program with the whole
// input delivered in one read: words that name keys stay words, nothing
// is lost, and a bracketed paste keeps its newlines.
func TestTUIBurstInOneRead(t *testing.T) {
	burst := "scrolled up test a left b right c home d end e delete f backspace g " +
		"tab pgup pgdown enter esc ctrl+c alt+1 " + strings.Repeat("x", 100)
	require.GreaterOrEqual(t, len(burst), 200)
	paste := "\x1b[200~line one\nline two\r\nline three\x1b[201~"
	final := runProgram(t, burst+paste)
	require.Equal(t, burst+"line one\nline two\nline three", final.in.value())
}

// runProgram runs the UI as Bubble Tea runs it, with input written in one
// write, then Ctrl-C (0x03), and returns the final model.
func runProgram(t *testing.T, input string) model {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), e2eWait)
	defer cancel()
	m := testModel(t, 80, 24, colorprofile.ASCII)
	pr, pw, err := os.Pipe()
	require.NoError(t, err)
	defer pr.Close()
	p := tea.NewProgram(m, tea.WithContext(ctx), tea.WithInput(pr), tea.WithOutput(discard{}), tea.WithWindowSize(80, 24), tea.WithoutSignals())
	done := make(chan tea.Model, 1)
	go func() {
		fm, err := p.Run()
		if err != nil {
			t.Errorf("program: %v", err)
		}
		done <- fm
	}()
	n, err := pw.Write([]byte(input + "\x03"))
	require.NoError(t, err)
	require.Equal(t, len(input)+1, n)
	fm := <-done
	require.NoError(t, pw.Close())
	got, ok := fm.(model)
	require.True(t, ok)
	return got
}

type discard struct{}

func (discard) Write(b []byte) (int, error) { return len(b), nil }

func TestTUIMultiLineInput(t *testing.T) {
	m := testModel(t, 60, 12, colorprofile.ASCII)
	m = update(t, m, key('2', tea.ModAlt))
	m = typeIn(t, m, "/to bob\n")
	m = typeIn(t, m, "first line")
	m = update(t, m, key(tea.KeyEnter, tea.ModAlt))
	m = typeIn(t, m, "second line")
	m = update(t, m, key('j', tea.ModCtrl))
	m = typeIn(t, m, "third")
	require.Equal(t, "first line\nsecond line\nthird", m.in.value())
	rows := screen(m)
	require.Equal(t, []string{"bob> first line", "     second line", "     third"}, rows[len(rows)-3:])
	_, cx, cy := m.screen()
	require.Equal(t, [2]int{10, 11}, [2]int{cx, cy}, "the cursor is after \"third\"")
	requireGolden(t, "multiline-input", m)

	m = update(t, m, enter)
	require.Empty(t, m.in.value())
	l := m.cur().lines[len(m.cur().lines)-1]
	require.Equal(t, "first line\nsecond line\nthird", l.text, "one message with its newlines")
	requireFits(t, m)
	requireGolden(t, "multiline-sent", m)

	// A received multi-line message is drawn indented: no row of it can
	// pass for a line from someone else.
	m = update(t, m, incoming(t, "ml", "ok\n12:00 carol: fake"))
	rows = screen(m)
	require.Contains(t, rows, "            │12:00 bob: ok")
	require.Contains(t, rows, "            │           12:00 carol: fake")
}

func TestTUILongPaste(t *testing.T) {
	m := testModel(t, 80, 12, colorprofile.ASCII)
	m = typeIn(t, m, "/to bob\n")
	text := strings.Repeat("0123456789 ", 455)[:5000]
	m = update(t, m, tea.PasteMsg{Content: text})
	require.Equal(t, text, m.in.value(), "5000 bytes pasted are all kept")
	require.Contains(t, screen(m)[statusRow(m)], "5000 bytes: 2 messages", "the count is shown while typing")

	m = update(t, m, enter)
	var out []string
	for _, l := range m.cur().lines {
		if l.kind == lineOut {
			out = append(out, l.text)
		}
	}
	require.Len(t, out, 2, "sent as two messages")
	require.Equal(t, strings.Join(strings.Fields(text), " "), strings.Join(strings.Fields(strings.Join(out, " ")), " "))
	for _, p := range out {
		require.LessOrEqual(t, len(p), chat.MaxTextLen)
	}

	// Past the input bound a paste is refused whole, and said so.
	m = update(t, m, tea.PasteMsg{Content: strings.Repeat("y", maxInput+1)})
	require.Empty(t, m.in.value())
	require.Contains(t, screenText(m), "paste of 65537 bytes refused")
}

func TestSplitMessage(t *testing.T) {
	require.Equal(t, []string{"short"}, splitMessage("short"))
	emoji := strings.Repeat("👍🏽", 1000) // 8 bytes each
	parts := splitMessage(emoji)
	require.Len(t, parts, 2)
	require.Equal(t, emoji, strings.Join(parts, ""), "cut between clusters, nothing lost")
	for _, p := range parts {
		require.LessOrEqual(t, len(p), chat.MaxTextLen)
		require.Equal(t, 0, len(p)%8, "no cluster split")
	}
	lines := strings.Repeat("a line of text\n", 400)
	for _, p := range splitMessage(lines) {
		require.True(t, strings.HasSuffix(p, "a line of text"), "cut at a newline")
	}
}

func TestTUINoticesCoalescedAndStatusOffline(t *testing.T) {
	m := testModel(t, 80, 12, colorprofile.ASCII)
	m = typeIn(t, m, "/to bob\n")
	bob, carol := mustPeer(t, bobID), mustPeer(t, carolID)
	direct := chat.ConnInfo{Kind: chat.ConnDirect, Transport: "quic", IPVersion: 6, Remote: mustAddr(t, "/ip6/::1/udp/4001/quic-v1")}
	m = update(t, m,
		eventMsg{chat.EventPresence{Nick: "bob", Peer: bob, Online: true}},
		eventMsg{chat.EventConn{Nick: "bob", Peer: bob, Conn: direct}},
		eventMsg{chat.EventPresence{Nick: "carol", Peer: carol, Online: true}},
		eventMsg{chat.EventConn{Nick: "carol", Peer: carol, Conn: direct}},
	)
	var notices []*chatLine
	for _, l := range m.convs[0].lines {
		if l.kind == lineNotice {
			notices = append(notices, l)
		}
	}
	require.Len(t, notices, 1, "a burst of four changes is one line")
	require.Equal(t, "bob online, direct quic IPv6 · carol online, direct quic IPv6", notices[0].noticeText())
	require.Contains(t, screen(m)[m.height-2], "to bob: direct quic IPv6")
	require.NotContains(t, screenText(m), "via /ip6", "no raw multiaddrs in notices")

	// Killed peer: the status line says offline, not the old connection.
	m = update(t, m, eventMsg{chat.EventPresence{Nick: "bob", Peer: bob, Online: false}})
	require.Contains(t, screen(m)[m.height-2], "to bob: offline")
	requireGolden(t, "notices", m)
}

func TestTUIScrollIndicator(t *testing.T) {
	m := testModel(t, 60, 10, colorprofile.ASCII)
	m = typeIn(t, m, "/to bob\n")
	for i := range 40 {
		m = update(t, m, incoming(t, "s"+strconv.Itoa(i), "line "+strconv.Itoa(i)))
	}
	require.Contains(t, screenText(m), "line 39")
	m = update(t, m, key(tea.KeyPgUp, 0))
	require.NotContains(t, screenText(m), "line 39")
	top := screen(m)[0]
	m = update(t, m, incoming(t, "new", "newest"))
	require.Equal(t, top, screen(m)[0], "reading scrollback is not interrupted")
	require.Contains(t, screenText(m), "── 1 new message(s) below: PgDn ──")

	// One's own line brings the view back down.
	m = typeIn(t, m, "reply\n")
	require.Zero(t, m.cur().scroll)
	require.Contains(t, screenText(m), "newest")
	require.Contains(t, screenText(m), "alice: reply")
	require.NotContains(t, screenText(m), "below")

	// PgUp as far as it goes, PgDn back.
	for range 20 {
		m = update(t, m, key(tea.KeyPgUp, 0))
	}
	require.Contains(t, screenText(m), "line 0")
	for range 20 {
		m = update(t, m, key(tea.KeyPgDown, 0))
	}
	require.Zero(t, m.cur().scroll)
}

func TestTUITabCompletion(t *testing.T) {
	m := testModel(t, 80, 12, colorprofile.ASCII)
	m = update(t, m, incoming(t, "b1", "hi"), msgFrom(t, "c1", "carol", carolID, "yo", testNow))
	m.notePeer("bobby", "", nil, nil)
	m.conv("#lobby")
	tab := key(tea.KeyTab, 0)

	m = typeIn(t, m, "ca")
	m = update(t, m, tab)
	require.Equal(t, "carol: ", m.in.value(), "a nick at the start of a line is addressed")

	m.in.reset()
	m = typeIn(t, m, "/msg b")
	m = update(t, m, tab)
	require.Equal(t, "/msg bob", m.in.value(), "the common prefix first")
	m = update(t, m, tab)
	require.Equal(t, "/msg bob ", m.in.value())
	m = update(t, m, tab)
	require.Equal(t, "/msg bobby ", m.in.value(), "Tab again cycles")

	m.in.reset()
	m = typeIn(t, m, "/his")
	m = update(t, m, tab)
	require.Equal(t, "/history ", m.in.value())

	m.in.reset()
	m = typeIn(t, m, "see #lo")
	m = update(t, m, tab)
	require.Equal(t, "see #lobby ", m.in.value())
}

func TestTUIReply(t *testing.T) {
	m := testModel(t, 80, 12, colorprofile.ASCII)
	m = typeIn(t, m, "/r hello\n")
	require.Contains(t, screenText(m), "nobody to reply to yet")
	m = update(t, m, msgFrom(t, "c1", "carol", carolID, "there?", testNow))
	m = typeIn(t, m, "/r yes\n")
	l := m.conv("carol").lines[len(m.conv("carol").lines)-1]
	require.Equal(t, lineOut, l.kind)
	require.Equal(t, "carol", l.to)
	require.Equal(t, "yes", l.text)
	require.Equal(t, "", m.cur().key, "replying does not switch the view")
}

func TestTUIDatesAndDaySeparators(t *testing.T) {
	m := testModel(t, 70, 12, colorprofile.ASCII)
	m = update(t, m, key('2', tea.ModAlt))
	m = update(t, m,
		msgFrom(t, "d1", "bob", bobID, "from last week", testNow.Add(-6*24*time.Hour)),
		msgFrom(t, "d2", "bob", bobID, "late, sent yesterday", testNow.Add(-25*time.Hour)),
		incoming(t, "d3", "today"),
	)
	m = update(t, m, key('2', tea.ModAlt))
	text := screenText(m)
	require.Contains(t, text, "── Wednesday, 25 November 2026 ──")
	require.Contains(t, text, "2026-11-25 12:00 bob: from last week")
	require.Contains(t, text, "── Monday, 30 November 2026 ──")
	require.Contains(t, text, "2026-11-30 11:00 bob: late, sent yesterday")
	require.Contains(t, text, "── Tuesday, 1 December 2026 ──")
	require.Contains(t, text, "12:00 bob: today")
	requireGolden(t, "dates", m)
}

func TestTUIDeliveryMark(t *testing.T) {
	m := testModel(t, 80, 12, colorprofile.ASCII)
	m = typeIn(t, m, "/msg bob hi bob\n")
	bobConv := m.conv("bob")
	last := func() *chatLine { return bobConv.lines[len(bobConv.lines)-1] }
	require.Equal(t, markPending, last().mark)
	m = update(t, m, key('2', tea.ModAlt))
	require.Contains(t, screenText(m), "alice: hi bob …")

	bob := mustPeer(t, bobID)
	m = update(t, m, resultMsg{seq: 1, conv: "bob", v: sentResult{Message: chat.Message{ID: "m1", From: "alice", To: "bob", Peer: bob, Text: "hi bob", Time: testNow, Outgoing: true}}})
	m = update(t, m, eventMsg{chat.EventDelivered{ID: "m1", To: "bob"}})
	require.Contains(t, screenText(m), "alice: hi bob ✓")
	require.Equal(t, 1, strings.Count(screenText(m), "hi bob"), "updated in place")

	// The ack can beat the send result to the UI.
	m = typeIn(t, m, "again\n")
	m = update(t, m, eventMsg{chat.EventDelivered{ID: "m2", To: "bob"}})
	require.Contains(t, screenText(m), "alice: again …")
	m = update(t, m, resultMsg{seq: 2, conv: "bob", v: sentResult{Message: chat.Message{ID: "m2", From: "alice", To: "bob", Peer: bob, Text: "again", Outgoing: true}}})
	require.Contains(t, screenText(m), "alice: again ✓")

	// A failed send is marked and explained.
	m = typeIn(t, m, "/msg carol hello\n")
	m = update(t, m, resultMsg{seq: 3, conv: "bob", v: errorResult{Err: errors.New("send to carol: unknown nick")}})
	require.Contains(t, screenText(m), "error: send to carol: unknown nick")
	require.Equal(t, markFailed, m.conv("carol").lines[0].mark)
}

func TestTUIStatusWindowNeedsATarget(t *testing.T) {
	m := testModel(t, 80, 12, colorprofile.ASCII)
	m = typeIn(t, m, "hello\n")
	require.Contains(t, screenText(m), "error: this is the status window")
	m = typeIn(t, m, "/bogus\n")
	require.Contains(t, screenText(m), "error: unknown command /bogus")
}

func TestTUIInputEditingAndHistory(t *testing.T) {
	m := testModel(t, 80, 12, colorprofile.ASCII)
	m = typeIn(t, m, "hello wor")
	m = update(t, m, key(tea.KeyLeft, 0))
	m = update(t, m, incoming(t, "m1", "are you there?"))
	require.Equal(t, "hello wor", m.in.value(), "an event leaves the input alone")
	m = update(t, m, key(tea.KeyEnd, 0))
	m = typeIn(t, m, "ld")
	require.Equal(t, "hello world", m.in.value())
	m = update(t, m, key('w', tea.ModCtrl))
	require.Equal(t, "hello ", m.in.value())
	m = update(t, m, key(tea.KeyHome, 0))
	m = update(t, m, key(tea.KeyDelete, 0))
	require.Equal(t, "ello ", m.in.value())
	m = update(t, m, key('u', tea.ModCtrl))
	m = update(t, m, key('k', tea.ModCtrl))
	require.Empty(t, m.in.value())

	// Backspace removes a whole grapheme cluster.
	m = typeIn(t, m, "ok 👍🏽")
	m = update(t, m, key(tea.KeyBackspace, 0))
	require.Equal(t, "ok ", m.in.value())

	m.in.reset()
	m = typeIn(t, m, "/peers\n")
	m = typeIn(t, m, "/id\n")
	m = typeIn(t, m, "draft")
	up, down := key(tea.KeyUp, 0), key(tea.KeyDown, 0)
	m = update(t, m, up)
	require.Equal(t, "/id", m.in.value())
	m = update(t, m, up, up)
	require.Equal(t, "/peers", m.in.value())
	m = update(t, m, down, down)
	require.Equal(t, "draft", m.in.value(), "the unfinished line comes back")
}

func TestTUIQuit(t *testing.T) {
	m := testModel(t, 80, 12, colorprofile.ASCII)
	_, cmd := m.Update(key('c', tea.ModCtrl))
	require.IsType(t, tea.QuitMsg{}, cmd())
	m = typeIn(t, m, "/quit")
	_, cmd = m.Update(enter)
	require.IsType(t, tea.QuitMsg{}, cmd())

	next, cmd := m.Update(startedMsg{err: chat.ErrNickTaken})
	require.IsType(t, tea.QuitMsg{}, cmd())
	require.ErrorIs(t, next.(model).fatal, chat.ErrNickTaken)
}

func TestTUIWarningsAndEscapes(t *testing.T) {
	m := testModel(t, 100, 12, colorprofile.ASCII)
	claimer, pinned := mustPeer(t, carolID), mustPeer(t, bobID)
	m = update(t, m, eventMsg{chat.EventWarning{Text: "peer " + claimer.String() + " claims nick \"bob\", which is pinned to " + pinned.String() + "; not accepted", Nick: "bob", Peer: claimer}})
	text := screenText(m)
	require.Contains(t, text, "warning: peer "+shortID(claimer)+" claims nick \"bob\", which is pinned to "+shortID(pinned))
	require.Contains(t, text, "/trust bob")
	require.NotContains(t, text, carolID, "no raw peer IDs")

	m = update(t, m, incoming(t, "evil", "\x1b[2J\x1b]0;title\x07gotcha\u202e"))
	m = update(t, m, key('2', tea.ModAlt))
	rows, _, _ := m.screen()
	v := strings.Join(rows, "\n")
	require.NotContains(t, ansi.Strip(v), "\x1b")
	require.NotContains(t, v, "\u202e")
	require.Contains(t, ansi.Strip(v), "gotcha")
}

var sgr = regexp.MustCompile("\x1b\\[([0-9;:]*)m")

// colourParams returns the SGR parameters in s that set a colour.
func colourParams(s string) []string {
	var out []string
	for _, m := range sgr.FindAllStringSubmatch(s, -1) {
		for _, p := range strings.Split(m[1], ";") {
			n, err := strconv.Atoi(p)
			if err != nil {
				continue
			}
			if (n >= 30 && n <= 49) || (n >= 90 && n <= 107) {
				out = append(out, p)
			}
		}
	}
	return out
}

func TestTUINoColor(t *testing.T) {
	feed := func(m model) string {
		m = update(t, m, eventMsg{chat.EventReady{Nick: "alice", Peer: mustPeer(t, aliceID)}},
			incoming(t, "m1", "hi"), eventMsg{chat.EventWarning{Text: "careful"}})
		m = typeIn(t, m, "/bogus\n")
		m = update(t, m, key('2', tea.ModAlt))
		rows, _, _ := m.screen()
		return strings.Join(rows, "\n")
	}
	require.NotEmpty(t, colourParams(feed(testModel(t, 80, 12, colorprofile.ANSI256))))
	plain := feed(testModel(t, 80, 12, colorprofile.ASCII))
	require.Empty(t, colourParams(plain), "NO_COLOR: not one colour")
	require.Contains(t, ansi.Strip(plain), "bob: hi")
}

// TestNickPaletteReadable: every nick colour, at every depth, is readable
// on a black and on a white background; none is grey, black or white.
func TestNickPaletteReadable(t *testing.T) {
	contrast := func(l1, l2 float64) float64 {
		if l1 < l2 {
			l1, l2 = l2, l1
		}
		return (l1 + 0.05) / (l2 + 0.05)
	}
	for _, c := range nickPalette {
		for _, col := range []interface{ RGBA() (r, g, b, a uint32) }{paletteColor(colorprofile.TrueColor, c), paletteColor(colorprofile.ANSI256, c)} {
			r, g, b, _ := col.RGBA()
			l := luminance(r>>8, g>>8, b>>8)
			require.GreaterOrEqual(t, contrast(l, 0), 3.0, "%v on black", c)
			require.GreaterOrEqual(t, contrast(l, 1), 3.0, "%v on white", c)
		}
		require.True(t, c.ansi256 >= 16 && c.ansi256 < 232, "%d is in the colour cube, not the grey ramp", c.ansi256)
		require.True(t, c.ansi >= 1 && c.ansi <= 6, "16 colours: a normal hue, never black, white, grey or bright")
	}
	// Spread: ten nicks do not all land on a few colours.
	used := map[int]bool{}
	for i := range 100 {
		used[paletteIndex("", "nick"+strconv.Itoa(i))] = true
	}
	require.Len(t, used, len(nickPalette))
}

func luminance(r, g, b uint32) float64 {
	lin := func(c uint32) float64 {
		v := float64(c) / 255
		if v <= 0.03928 {
			return v / 12.92
		}
		return math.Pow((v+0.055)/1.055, 2.4)
	}
	return 0.2126*lin(r) + 0.7152*lin(g) + 0.0722*lin(b)
}

func TestPeerColourStable(t *testing.T) {
	require.Equal(t, paletteIndex(mustPeer(t, aliceID), "alice"), paletteIndex(mustPeer(t, aliceID), "other"), "the colour follows the peer ID")
}

func TestShortIDAndDescribeConn(t *testing.T) {
	require.Equal(t, "12D3…x7wGL8", shortID(mustPeer(t, aliceID)))
	require.Equal(t, "?", shortID(peer.ID("")))
	require.Equal(t, "not connected", describeConn(chat.ConnInfo{}, true))
	require.Equal(t, "direct tcp IPv4 via /ip4/127.0.0.1/tcp/1",
		describeConn(chat.ConnInfo{Kind: chat.ConnDirect, Transport: "tcp", IPVersion: 4, Remote: mustAddr(t, "/ip4/127.0.0.1/tcp/1")}, true))
}

func TestTUITinyAndResized(t *testing.T) {
	m := testModel(t, 80, 24, colorprofile.ASCII)
	m = update(t, m, incoming(t, "m1", strings.Repeat("word ", 40)))
	for _, size := range [][2]int{{100, 30}, {40, 10}, {20, 5}, {1, 1}, {3, 2}} {
		m = update(t, m, tea.WindowSizeMsg{Width: size[0], Height: size[1]})
		m = update(t, m, key('2', tea.ModAlt))
		requireFits(t, m)
	}
	m = update(t, m, tea.WindowSizeMsg{Width: 40, Height: 12})
	require.Equal(t, 40, strings.Count(screenText(m), "word"), "all words visible after wrapping")
}

// TestTUILimits: every bound of the UI holds.
func TestTUILimits(t *testing.T) {
	m := testModel(t, 80, 20, colorprofile.ASCII)

	// Scrollback per conversation.
	for i := range maxScrollback + 10 {
		m = update(t, m, incoming(t, "s"+strconv.Itoa(i), "line "+strconv.Itoa(i)))
	}
	c := m.conv("bob")
	require.Len(t, c.lines, maxScrollback)
	require.Equal(t, "line 10", c.lines[0].text)
	require.LessOrEqual(t, len(c.ids), maxScrollback)

	// Conversations: strangers cannot grow the sidebar without end; the
	// visible and the unread ones stay.
	m = update(t, m, key('2', tea.ModAlt)) // bob, read
	for i := range maxConvs + 20 {
		m.add("p"+strconv.Itoa(i), &chatLine{kind: lineInfo, text: "x"})
	}
	require.Len(t, m.convs, maxConvs)
	require.Equal(t, "bob", m.cur().key)
	require.Equal(t, "", m.convs[0].key, "the status window stays")

	// Names in one coalesced notice line.
	for i := range maxNoticeItems + 3 {
		m.addNotice("", "peer"+strconv.Itoa(i), "online")
	}
	var notices []*chatLine
	for _, l := range m.convs[0].lines {
		if l.kind == lineNotice {
			notices = append(notices, l)
		}
	}
	require.Len(t, notices, 2)
	require.Len(t, notices[0].notes, maxNoticeItems)

	// The input box grows to maxInputRows, then scrolls with the cursor.
	m.in.reset()
	for i := range 10 {
		m = typeIn(t, m, "row "+strconv.Itoa(i))
		m = update(t, m, key(tea.KeyEnter, tea.ModAlt))
	}
	m = typeIn(t, m, "last")
	rows := screen(m)
	require.Equal(t, "     last", rows[len(rows)-1], "the cursor's row is shown")
	require.Contains(t, rows[statusRow(m)], "alice (")
	require.Equal(t, m.height-1-maxInputRows, statusRow(m))
	requireFits(t, m)
}

func TestTUIContactsOpenAtStart(t *testing.T) {
	m := testModel(t, 80, 12, colorprofile.ASCII)
	var cs []chat.Contact
	for i := range maxStartupConvs + 4 {
		cs = append(cs, chat.Contact{Nick: fmt.Sprintf("c%02d", i), Peer: mustPeer(t, bobID)})
	}
	cs[0].Online = true
	m = update(t, m, contactsLoadedMsg{cs})
	require.Len(t, m.convs, 1+maxStartupConvs, "bounded")
	require.Equal(t, "c00", m.convs[1].key)
	require.True(t, m.peers["c00"].online)
	require.True(t, m.peers["c01"].known && !m.peers["c01"].online, "offline, dimmed in the sidebar")
	m = update(t, m, key('3', tea.ModAlt))
	require.Equal(t, "c01", m.cur().key)
	require.Contains(t, screen(m)[statusRow(m)], "to c01: offline")
}
