package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/charmbracelet/x/ansi"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestTUIInTmux runs the built chat binary in a real terminal (tmux, as
// issue 12 was found: TERM=tmux-256color), types into it with send-keys and
// reads the screen with capture-pane. The peer on the other side is a
// -json chat binary. It checks what a new user sees: the conversation in
// the sidebar with its unread count, switching, the Unicode samples on
// both sides with the status line in place, a burst of 200 typed
// characters arriving intact, and the status line after the peer is
// killed.
func TestTUIInTmux(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binaries in tmux")
	}
	tmuxBin, err := exec.LookPath("tmux")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("tmux is not installed (.ci/run installs it)")
		}
		t.Skip("tmux is not installed")
	}
	chatBin, rvBin := buildBinaries(t)
	rv := startBin(t, "rendezvous", true, rvBin, "-listen", "/ip4/127.0.0.1/tcp/0", "-data-dir", t.TempDir(), "-log-format", "json")
	rvAddr := rv.awaitKey("msg", "listening", nil, e2eWait)["addr"].(string)
	rv.awaitKey("msg", "ready", nil, e2eWait)

	bob := startBin(t, "bob", false, chatBin, "-json", "-nick", "bob", "-listen", "/ip4/127.0.0.1/tcp/0",
		"-rendezvous", rvAddr, "-data-dir", t.TempDir(), "-log-level", "warn")
	bob.await("ready", map[string]any{"nick": "bob"})

	const width, height = 100, 30
	sock := filepath.Join(t.TempDir(), "tmux.sock")
	t.Cleanup(func() { _ = exec.Command(tmuxBin, "-S", sock, "kill-server").Run() })
	startTUI := func(nick string) *tmux {
		tm := &tmux{t: t, bin: tmuxBin, sock: sock, session: nick}
		tm.run("-f", "/dev/null", "new-session", "-d", "-x", fmt.Sprint(width), "-y", fmt.Sprint(height), "-s", nick,
			"env", "TERM=tmux-256color", "NO_COLOR=", chatBin, "-nick", nick, "-listen", "/ip4/127.0.0.1/tcp/0",
			"-rendezvous", rvAddr, "-data-dir", t.TempDir())
		tm.waitFor(nick+" ready", func(s []string) bool { return strings.Contains(strings.Join(s, "\n"), "ready: "+nick) })
		return tm
	}
	tm := startTUI("alice")
	carol := startTUI("carol")

	statusOf := func(nick string) func(s []string) bool {
		return func(s []string) bool {
			return len(s) == height && strings.HasPrefix(s[height-2], " "+nick+" (") && strings.Contains(s[height-1], "> ") &&
				strings.Count(strings.Join(s, "\n"), " "+nick+" (") == 1
		}
	}
	statusIntact := statusOf("alice")

	// bob writes: a conversation with an unread count appears.
	bob.send("/msg alice hello from bob")
	// The sidebar numbers conversations in the order they appeared (the
	// room's may come first), so the test reads bob's number off it.
	var bobKey string
	tm.waitFor("bob's conversation with 1 unread", func(s []string) bool {
		bobKey = sidebarKey(s, unreadRow)
		return bobKey != ""
	})
	require.Equal(t, "(1) chat alice", tm.paneTitle(), "the window title shows the unread count")
	tm.keys("M-" + bobKey)
	tm.waitFor("bob's conversation shown", func(s []string) bool {
		return strings.Contains(strings.Join(s, "\n"), "bob: hello from bob") && strings.HasPrefix(s[height-1], "bob> ")
	})

	// bob's nick is drawn in a palette colour of the 256-colour cube
	// (never the near-black 232 of issue 12).
	m := nickSGR.FindStringSubmatch(tm.run("capture-pane", "-e", "-p", "-t", tm.session))
	require.NotNil(t, m, "bob's nick in a 256-colour SGR")
	inPalette := false
	for _, c := range nickPalette {
		inPalette = inPalette || fmt.Sprint(int(c.ansi256)) == m[1]
	}
	require.True(t, inPalette, "colour %s is not in the nick palette", m[1])

	// Every Unicode sample, received and sent: the layout holds.
	for _, sample := range unicodeSamples {
		text := strings.TrimSpace(sample.text)
		bob.send("/msg alice " + text)
		bob.await("sent", nil)
		tm.typeText(text)
		tm.keys("Enter")
		got := bob.await("message", map[string]any{"from": "alice", "text": text})
		require.Equal(t, text, got["text"], sample.name)
		tm.waitFor(sample.name+" on screen, status line intact", func(s []string) bool {
			return statusIntact(s) && strings.HasPrefix(s[height-1], "bob> ") && strings.Count(strings.Join(s, "\n"), "alice (") == 1
		})
	}
	// The same samples to carol, in a terminal UI too: her screen keeps
	// its status line with each of them, in her conversation with alice.
	for i, sample := range unicodeSamples {
		tm.typeText("/msg carol " + strings.TrimSpace(sample.text))
		tm.keys("Enter")
		if i == 0 {
			var aliceKey string
			carol.waitFor("alice's conversation on carol's side", func(s []string) bool {
				aliceKey = sidebarKey(s, aliceRow)
				return aliceKey != ""
			})
			carol.keys("M-" + aliceKey)
		}
		shown := "alice: " + strings.Fields(displayText(ansi.WcWidth, sample.text))[0]
		carol.waitFor(sample.name+" on carol's screen, status line intact", func(s []string) bool {
			return statusOf("carol")(s) && strings.HasPrefix(s[height-1], "alice> ") && strings.Contains(strings.Join(s, "\n"), shown)
		})
	}
	t.Logf("carol's screen:\n%s", strings.Join(carol.capture(), "\n"))
	// Two direct conversations on alice's side now.
	tm.waitFor("carol in alice's sidebar", func(s []string) bool { return sidebarKey(s, carolRow) != "" })

	// The skin-tone sample, the one that corrupted both screens, is
	// still drawn with the status line in place after a redraw.
	tm.keys("C-l")
	tm.waitFor("redrawn, status line intact", statusIntact)
	t.Logf("screen after the Unicode samples:\n%s", strings.Join(tm.capture(), "\n"))

	// 200 characters typed in one burst (one send-keys write), including
	// words that name keys.
	burst := strings.Repeat("up left home end delete backspace ", 6)[:200]
	tm.typeText(burst)
	tm.keys("Enter")
	got := bob.await("message", map[string]any{"from": "alice", "text": strings.TrimSpace(burst)})
	require.Equal(t, strings.TrimSpace(burst), got["text"])

	// A three-line message (Alt-Enter between lines).
	tm.typeText("line one")
	tm.keys("M-Enter")
	tm.typeText("line two")
	tm.keys("M-Enter")
	tm.typeText("line three")
	tm.keys("Enter")
	bob.await("message", map[string]any{"from": "alice", "text": "line one\nline two\nline three"})

	// bob is killed: the status line says offline, not the old connection.
	tm.waitFor("bob's connection in the status line", func(s []string) bool { return strings.Contains(s[height-2], "to bob: direct") })
	require.NoError(t, bob.cmd.Process.Signal(syscall.SIGKILL))
	tm.waitFor("bob offline in the status line", func(s []string) bool { return strings.Contains(s[height-2], "to bob: offline") })

	tm.keys("C-c")
	require.Eventually(t, func() bool {
		return exec.Command(tmuxBin, "-S", tm.sock, "has-session", "-t", "alice").Run() != nil
	}, e2eWait, 20*time.Millisecond, "Ctrl-C ends the chat")
}

var (
	unreadRow = regexp.MustCompile(`^([1-9]) bob +1!?│`)
	aliceRow  = regexp.MustCompile(`^([1-9]) alice\b`)
	carolRow  = regexp.MustCompile(`^([1-9]) carol\b`)
	nickSGR   = regexp.MustCompile(`38;5;(\d+)m(?:\x1b\[[0-9;]*m)*bob\x1b`)
)

type tmux struct {
	t       *testing.T
	bin     string
	sock    string
	session string
}

func (tm *tmux) run(args ...string) string {
	tm.t.Helper()
	out, err := exec.Command(tm.bin, append([]string{"-S", tm.sock}, args...)...).CombinedOutput()
	require.NoError(tm.t, err, "tmux %v: %s", args, out)
	return string(out)
}

func (tm *tmux) keys(keys ...string) {
	tm.t.Helper()
	tm.run(append([]string{"send-keys", "-t", tm.session}, keys...)...)
}

// typeText types s literally in one write to the terminal.
func (tm *tmux) typeText(s string) {
	tm.t.Helper()
	tm.run("send-keys", "-t", tm.session, "-l", s)
}

func (tm *tmux) paneTitle() string {
	tm.t.Helper()
	return strings.TrimSpace(tm.run("display-message", "-p", "-t", tm.session, "#{pane_title}"))
}

// capture is the visible screen, one string per row, without trailing
// spaces.
func (tm *tmux) capture() []string {
	out, err := exec.Command(tm.bin, "-S", tm.sock, "capture-pane", "-p", "-t", tm.session).Output()
	if err != nil {
		return nil
	}
	rows := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	for i := range rows {
		rows[i] = strings.TrimRight(rows[i], " ")
	}
	return rows
}

// waitFor polls the screen until cond holds.
func (tm *tmux) waitFor(what string, cond func([]string) bool) {
	tm.t.Helper()
	var last []string
	ok := false
	assert.Eventually(tm.t, func() bool {
		last = tm.capture()
		ok = len(last) > 2 && cond(last)
		return ok
	}, e2eWait, 20*time.Millisecond)
	if !ok {
		tm.t.Fatalf("%s; screen:\n%s", what, strings.Join(last, "\n"))
	}
}

// sidebarKey is the number (the Alt key) of the first sidebar row that
// matches re, whose first group is that number; "" if none does.
func sidebarKey(screen []string, re *regexp.Regexp) string {
	for _, row := range screen {
		if m := re.FindStringSubmatch(row); m != nil {
			return m[1]
		}
	}
	return ""
}
