package main

import (
	"context"
	"errors"
	"io"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/muesli/termenv"
	"github.com/stretchr/testify/require"

	"github.com/p2p-messaging/p2p-messaging/chat"
)

// testModel is a UI model without a node: the tests feed it tea.Msg values
// directly, as the Bubble Tea runtime would, and never run its commands.
func testModel(t *testing.T, r *lipgloss.Renderer) model {
	t.Helper()
	if r == nil {
		r = newRenderer(io.Discard, true)
	}
	sess := newSession(nil, "")
	m := newModel(context.Background(), nil, sess, nil, selfInfo{nick: "alice", id: mustPeer(t, aliceID), room: "lobby"}, r)
	return update(t, m, tea.WindowSizeMsg{Width: 80, Height: 24})
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

func typeText(s string) tea.KeyMsg {
	return tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune(s)}
}

func viewLines(m model) []string {
	return strings.Split(m.View(), "\n")
}

func incoming(t *testing.T, id, text string) eventMsg {
	return eventMsg{chat.EventMessage{Message: chat.Message{ID: id, From: "bob", To: "alice", Peer: mustPeer(t, bobID), Text: text, Time: time.Now(), Status: chat.StatusDelivered}}}
}

func TestModelIncomingMessageLeavesInputIntact(t *testing.T) {
	m := testModel(t, nil)
	m = update(t, m, typeText("hello wor"), tea.KeyMsg{Type: tea.KeyLeft})
	require.Equal(t, "hello wor", m.input.Value())
	pos := m.input.Position()

	m = update(t, m, incoming(t, "m1", "are you there?"))

	require.Equal(t, "hello wor", m.input.Value(), "the half-typed line is untouched")
	require.Equal(t, pos, m.input.Position(), "the cursor did not move")
	lines := viewLines(m)
	require.Len(t, lines, 24)
	pane := strings.Join(lines[:len(lines)-2], "\n")
	require.Contains(t, pane, "bob: are you there?")
	require.NotContains(t, pane, "hello wor")
	input := lines[len(lines)-1]
	require.True(t, strings.HasPrefix(input, "> hello wo"), "input line %q", input)
	require.NotContains(t, input, "are you there")

	// Typing goes on where it stopped.
	m = update(t, m, tea.KeyMsg{Type: tea.KeyEnd}, typeText("ld"))
	require.Equal(t, "hello world", m.input.Value())
}

func TestModelManyMessagesWhileTyping(t *testing.T) {
	m := testModel(t, nil)
	m = update(t, m, typeText("draft"))
	for i := range 100 {
		m = update(t, m, incoming(t, "id"+strconv.Itoa(i), "line "+strconv.Itoa(i)))
	}
	require.Equal(t, "draft", m.input.Value())
	// The pane follows the newest line.
	require.Contains(t, m.View(), "bob: line 99")
	require.Len(t, viewLines(m), 24)
}

func TestModelScrolledUpIsNotYanked(t *testing.T) {
	m := testModel(t, nil)
	for i := range 60 {
		m = update(t, m, incoming(t, "id"+strconv.Itoa(i), "line "+strconv.Itoa(i)))
	}
	m = update(t, m, tea.KeyMsg{Type: tea.KeyPgUp})
	require.False(t, m.vp.AtBottom())
	off := m.vp.YOffset
	m = update(t, m, incoming(t, "new", "newest"))
	require.Equal(t, off, m.vp.YOffset, "reading scrollback is not interrupted")
	m = update(t, m, tea.KeyMsg{Type: tea.KeyPgDown}, tea.KeyMsg{Type: tea.KeyPgDown}, tea.KeyMsg{Type: tea.KeyPgDown})
	require.True(t, m.vp.AtBottom())
	require.Contains(t, m.View(), "newest")
}

func TestModelResize(t *testing.T) {
	m := testModel(t, nil)
	long := strings.Repeat("word ", 30)
	m = update(t, m, typeText("abc"), incoming(t, "m1", long))

	m = update(t, m, tea.WindowSizeMsg{Width: 100, Height: 30})
	require.Equal(t, 100, m.vp.Width)
	require.Equal(t, 28, m.vp.Height)
	require.Len(t, viewLines(m), 30)

	m = update(t, m, tea.WindowSizeMsg{Width: 40, Height: 10})
	lines := viewLines(m)
	require.Len(t, lines, 10)
	for _, l := range lines {
		require.LessOrEqual(t, lipgloss.Width(l), 40, "line %q", l)
	}
	// The long message wrapped instead of being cut.
	require.Equal(t, 30, strings.Count(strings.Join(lines[:8], " "), "word"), "all words visible after wrapping")
	require.Equal(t, "abc", m.input.Value())

	// Shrinking while following keeps the newest line in view.
	for i := range 50 {
		m = update(t, m, incoming(t, "f"+strconv.Itoa(i), "flood "+strconv.Itoa(i)))
	}
	m = update(t, m, tea.WindowSizeMsg{Width: 60, Height: 15})
	require.True(t, m.vp.AtBottom())
	require.Contains(t, m.View(), "flood 49")
	m = update(t, m, tea.WindowSizeMsg{Width: 120, Height: 40})
	require.True(t, m.vp.AtBottom())
	require.Contains(t, m.View(), "flood 49")

	// Tiny terminals do not crash.
	m = update(t, m, tea.WindowSizeMsg{Width: 1, Height: 1})
	require.NotEmpty(t, m.View())
}

func TestModelDeliveryMark(t *testing.T) {
	m := testModel(t, nil)
	m = update(t, m, typeText("/msg bob hi bob"), tea.KeyMsg{Type: tea.KeyEnter})
	require.Empty(t, m.input.Value(), "Enter clears the input")
	require.Contains(t, m.View(), "alice → bob: hi bob …")

	bob := mustPeer(t, bobID)
	m = update(t, m, resultMsg{seq: 1, v: sentResult{Message: chat.Message{ID: "m1", From: "alice", To: "bob", Peer: bob, Text: "hi bob", Time: time.Now(), Outgoing: true}}})
	require.Contains(t, m.View(), "alice → bob: hi bob …")
	m = update(t, m, eventMsg{chat.EventSent{ID: "m1", To: "bob"}})
	require.Contains(t, m.View(), "alice → bob: hi bob …")

	m = update(t, m, eventMsg{chat.EventDelivered{ID: "m1", To: "bob"}})
	require.Contains(t, m.View(), "alice → bob: hi bob ✓", "marked in place")
	require.NotContains(t, m.View(), "hi bob …")
	require.Equal(t, 1, strings.Count(m.View(), "hi bob"), "updated in place, not appended")

	// The ack can beat the send result to the UI.
	m = update(t, m, tea.KeyMsg{Type: tea.KeyEnter}) // empty line: nothing
	m = update(t, m, typeText("/msg bob again"), tea.KeyMsg{Type: tea.KeyEnter})
	m = update(t, m, eventMsg{chat.EventDelivered{ID: "m2", To: "bob"}})
	require.Contains(t, m.View(), "alice → bob: again …")
	m = update(t, m, resultMsg{seq: 2, v: sentResult{Message: chat.Message{ID: "m2", From: "alice", To: "bob", Peer: bob, Text: "again", Outgoing: true}}})
	require.Contains(t, m.View(), "alice → bob: again ✓")

	// A failed send is marked and explained.
	m = update(t, m, typeText("/msg carol hello"), tea.KeyMsg{Type: tea.KeyEnter})
	m = update(t, m, resultMsg{seq: 3, v: errorResult{Err: errors.New("send to carol: unknown nick")}})
	require.Contains(t, m.View(), "alice → carol: hello ✗")
	require.Contains(t, m.View(), "error: send to carol: unknown nick")
}

func TestModelPlainLineNeedsTarget(t *testing.T) {
	m := testModel(t, nil)
	m = update(t, m, typeText("hello"), tea.KeyMsg{Type: tea.KeyEnter})
	require.Contains(t, m.View(), "error: no peer selected")

	m = update(t, m, typeText("/to bob"), tea.KeyMsg{Type: tea.KeyEnter})
	require.Equal(t, "bob", m.sess.target())
	require.Contains(t, m.View(), "talking to bob")
	m = update(t, m, typeText("hello"), tea.KeyMsg{Type: tea.KeyEnter})
	require.Contains(t, m.View(), "alice → bob: hello …")

	m = update(t, m, typeText("/bogus"), tea.KeyMsg{Type: tea.KeyEnter})
	require.Contains(t, m.View(), "error: unknown command /bogus")
}

func TestModelStatusLine(t *testing.T) {
	m := testModel(t, nil)
	status := func() string { l := viewLines(m); return l[len(l)-2] }
	require.Contains(t, status(), "alice (12D3…x7wGL8)")
	require.Contains(t, status(), "room lobby")
	require.Contains(t, status(), "no /to peer")
	require.Contains(t, status(), "connecting…")

	m = update(t, m, eventMsg{chat.EventReady{Nick: "alice", Peer: mustPeer(t, aliceID)}})
	require.NotContains(t, status(), "connecting")

	m = update(t, m, typeText("/to bob"), tea.KeyMsg{Type: tea.KeyEnter})
	m = update(t, m, eventMsg{chat.EventPresence{Nick: "bob", Peer: mustPeer(t, bobID), Online: true}})
	require.Contains(t, status(), "to bob: online")
	m = update(t, m, eventMsg{chat.EventConn{Nick: "bob", Peer: mustPeer(t, bobID), Conn: chat.ConnInfo{Kind: chat.ConnRelayed, Transport: "tcp", IPVersion: 4, Limited: true}}})
	require.Contains(t, status(), "to bob: relayed tcp IPv4 (limited)")
	m = update(t, m, eventMsg{chat.EventConn{Nick: "bob", Peer: mustPeer(t, bobID), Conn: chat.ConnInfo{Kind: chat.ConnDirect, Transport: "quic", IPVersion: 6}}})
	require.Contains(t, status(), "to bob: direct quic IPv6")
	require.Contains(t, m.View(), "bob: direct quic IPv6")
}

func TestModelWarningAndEscapes(t *testing.T) {
	m := testModel(t, nil)
	m = update(t, m, eventMsg{chat.EventWarning{Text: "bob is pinned to another peer", Nick: "bob", Peer: mustPeer(t, aliceID)}})
	require.Contains(t, m.View(), "warning: bob is pinned to another peer")

	// Remote text cannot drive the terminal or fake a line.
	m = update(t, m, incoming(t, "evil", "\x1b[2J\x1b]0;title\x07gotcha\n12:00 carol: fake\u202e"))
	lines := viewLines(m)
	v := strings.Join(lines[:len(lines)-1], "\n") // the input line has the cursor
	require.NotContains(t, v, "\x1b")
	require.NotContains(t, v, "\u202e")
	require.Contains(t, v, "gotcha ⏎ 12:00 carol: fake")
}

func TestModelInputHistory(t *testing.T) {
	m := testModel(t, nil)
	up, down := tea.KeyMsg{Type: tea.KeyUp}, tea.KeyMsg{Type: tea.KeyDown}
	m = update(t, m, typeText("/peers"), tea.KeyMsg{Type: tea.KeyEnter}, typeText("/id"), tea.KeyMsg{Type: tea.KeyEnter}, typeText("draft"))
	m = update(t, m, up)
	require.Equal(t, "/id", m.input.Value())
	m = update(t, m, up, up)
	require.Equal(t, "/peers", m.input.Value())
	m = update(t, m, down)
	require.Equal(t, "/id", m.input.Value())
	m = update(t, m, down, down)
	require.Equal(t, "draft", m.input.Value(), "the unfinished line comes back")
	// An incoming message while browsing does not change the input either.
	m = update(t, m, up, incoming(t, "h1", "hey"))
	require.Equal(t, "/id", m.input.Value())
}

func TestModelQuit(t *testing.T) {
	m := testModel(t, nil)
	_, cmd := m.Update(tea.KeyMsg{Type: tea.KeyCtrlC})
	require.NotNil(t, cmd)
	require.IsType(t, tea.QuitMsg{}, cmd())

	m = update(t, m, typeText("/quit"))
	_, cmd = m.Update(tea.KeyMsg{Type: tea.KeyEnter})
	require.NotNil(t, cmd)
	require.IsType(t, tea.QuitMsg{}, cmd())

	// A taken nick ends the UI with a clear error.
	next, cmd := m.Update(startedMsg{err: chat.ErrNickTaken})
	require.IsType(t, tea.QuitMsg{}, cmd())
	require.ErrorIs(t, next.(model).fatal, chat.ErrNickTaken)
}

var sgr = regexp.MustCompile("\x1b\\[([0-9;]*)m")

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

func TestModelNoColor(t *testing.T) {
	feed := func(m model) model {
		m = update(t, m, typeText("half"), eventMsg{chat.EventReady{Nick: "alice", Peer: mustPeer(t, aliceID)}},
			incoming(t, "m1", "hi"), eventMsg{chat.EventWarning{Text: "careful"}})
		return update(t, m, tea.KeyMsg{Type: tea.KeyEnter}, typeText("/bogus"), tea.KeyMsg{Type: tea.KeyEnter}, typeText("x"))
	}

	// A colour terminal gets colours: a colour per peer, red errors.
	colour := feed(testModel(t, newRenderer(io.Discard, false, termenv.TrueColor)))
	require.NotEmpty(t, colourParams(colour.View()))

	// The same terminal with NO_COLOR: no colour at all; the message pane and
	// the status line carry no escape sequence whatsoever. Only the input's
	// cursor stays visible, as reverse video (an attribute, not a colour).
	plain := feed(testModel(t, newRenderer(io.Discard, true, termenv.TrueColor)))
	v := plain.View()
	require.Empty(t, colourParams(v))
	lines := strings.Split(v, "\n")
	require.NotContains(t, strings.Join(lines[:len(lines)-1], "\n"), "\x1b")
	require.Contains(t, v, "bob: hi")
	require.Contains(t, v, "error: unknown command /bogus")
	require.Contains(t, lines[len(lines)-1], "x\x1b[7m \x1b[0m", "the cursor is visible")
}

func TestLipglossHonoursNoColor(t *testing.T) {
	t.Setenv("TERM", "xterm-256color")
	t.Setenv("COLORTERM", "truecolor")
	t.Setenv("NO_COLOR", "")
	r := lipgloss.NewRenderer(io.Discard, termenv.WithTTY(true))
	require.NotEqual(t, termenv.Ascii, r.ColorProfile())

	t.Setenv("NO_COLOR", "1")
	r = lipgloss.NewRenderer(io.Discard, termenv.WithTTY(true))
	require.Equal(t, termenv.Ascii, r.ColorProfile())
}

func TestPeerColourStable(t *testing.T) {
	st := newStyles(newRenderer(io.Discard, false, termenv.TrueColor))
	a1 := st.peerStyle(mustPeer(t, aliceID), "alice").Render("x")
	a2 := st.peerStyle(mustPeer(t, aliceID), "other-nick").Render("x")
	require.Equal(t, a1, a2, "the colour follows the peer ID, not the nick")
}

func TestShortIDAndDescribeConn(t *testing.T) {
	require.Equal(t, "12D3…x7wGL8", shortID(mustPeer(t, aliceID))[:len("12D3…x7wGL8")])
	require.Equal(t, "?", shortID(""))
	require.Equal(t, "not connected", describeConn(chat.ConnInfo{}, true))
	require.Equal(t, "direct tcp IPv4 via /ip4/127.0.0.1/tcp/1",
		describeConn(chat.ConnInfo{Kind: chat.ConnDirect, Transport: "tcp", IPVersion: 4, Remote: mustAddr(t, "/ip4/127.0.0.1/tcp/1")}, true))
}
