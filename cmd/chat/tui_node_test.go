package main

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
	"github.com/stretchr/testify/require"

	"github.com/p2p-messaging/p2p-messaging/chat"
)

func startNode(t *testing.T, ctx context.Context, nick string, rv peer.AddrInfo) *chat.Node {
	t.Helper()
	p, err := chat.Open(chat.HostConfig{
		ListenAddrs: []multiaddr.Multiaddr{multiaddr.StringCast("/ip4/127.0.0.1/tcp/0")},
		DisableDHT:  true,
	}, chat.Config{
		Nick:       nick,
		DataDir:    t.TempDir(),
		Rendezvous: []peer.AddrInfo{rv},
	})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, p.Close()) })
	require.NoError(t, p.Start(ctx))
	return p.Node
}

// pumpUntil feeds the node's events into the model, as the Bubble Tea
// runtime does, until cond holds.
func pumpUntil(t *testing.T, m model, what string, cond func(model) bool) model {
	t.Helper()
	deadline := time.Now().Add(e2eWait)
	for !cond(m) {
		require.True(t, time.Now().Before(deadline), "timed out waiting for %s; view:\n%s", what, m.View())
		msg := m.waitEvent()()
		require.IsType(t, eventMsg{}, msg, "waiting for %s", what)
		m = update(t, m, msg)
	}
	return m
}

// TestModelWithRealNode drives the UI model with a real chat.Node: a
// message from another peer arrives while a line is half typed.
func TestModelWithRealNode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*e2eWait)
	defer cancel()
	h, _ := daemon(t)
	rv := peer.AddrInfo{ID: h.ID(), Addrs: h.Addrs()}
	alice := startNode(t, ctx, "alice", rv)
	bob := startNode(t, ctx, "bob", rv)

	m := newModel(ctx, alice, newSession(alice, t.TempDir()), nil,
		selfInfo{nick: alice.Nick(), id: alice.ID(), room: alice.Room()}, newRenderer(io.Discard, true))
	m = update(t, m, tea.WindowSizeMsg{Width: 100, Height: 20}, typeText("half a li"))

	_, err := bob.Send(ctx, "alice", "ping from bob")
	require.NoError(t, err)
	m = pumpUntil(t, m, "bob's message", func(m model) bool { return strings.Contains(m.View(), "bob: ping from bob") })
	require.Equal(t, "half a li", m.input.Value())
	lines := viewLines(m)
	require.Equal(t, "> half a li", strings.TrimRight(stripANSI(lines[len(lines)-1]), " "))

	// Finish the line as a reply: it is shown pending, then delivered.
	m = update(t, m, tea.KeyMsg{Type: tea.KeyCtrlU}, typeText("/msg bob pong"))
	next, cmd := m.Update(tea.KeyMsg{Type: tea.KeyEnter})
	m = next.(model)
	require.Contains(t, m.View(), "alice → bob: pong …")
	m = update(t, m, cmd())
	m = pumpUntil(t, m, "the delivery mark", func(m model) bool { return strings.Contains(m.View(), "alice → bob: pong ✓") })

	// /to and /history against the real store.
	m = update(t, m, typeText("/to bob"), tea.KeyMsg{Type: tea.KeyEnter})
	require.Equal(t, "bob", m.sess.target())
	next, _ = m.Update(typeText("/history"))
	m = next.(model)
	next, cmd = m.Update(tea.KeyMsg{Type: tea.KeyEnter})
	m = next.(model)
	m = update(t, m, cmd())
	require.Contains(t, m.View(), "last 2 message(s) with bob")
}

func stripANSI(s string) string {
	return sgr.ReplaceAllString(s, "")
}
