package main

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/colorprofile"
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
		require.True(t, time.Now().Before(deadline), "timed out waiting for %s; screen:\n%s", what, screenText(m))
		msg := m.waitEvent()()
		require.IsType(t, eventMsg{}, msg, "waiting for %s", what)
		m = update(t, m, msg)
	}
	return m
}

// runCmd executes cmd as the runtime would, feeding what it returns back in
// (batches and sequences in order).
func runCmd(t *testing.T, m model, cmd tea.Cmd) model {
	t.Helper()
	if cmd == nil {
		return m
	}
	switch msg := cmd().(type) {
	case nil:
		return m
	case tea.BatchMsg:
		for _, c := range msg {
			m = runCmd(t, m, c)
		}
		return m
	default:
		if msgs, ok := sequenceOf(msg); ok {
			for _, c := range msgs {
				m = runCmd(t, m, c)
			}
			return m
		}
		next, more := m.Update(msg)
		return runCmd(t, next.(model), more)
	}
}

// sequenceOf unpacks a tea.Sequence message (its type is unexported).
func sequenceOf(msg tea.Msg) ([]tea.Cmd, bool) {
	v := reflect.ValueOf(msg)
	if v.Kind() != reflect.Slice || !v.Type().ConvertibleTo(reflect.TypeFor[[]tea.Cmd]()) {
		return nil, false
	}
	return v.Convert(reflect.TypeFor[[]tea.Cmd]()).Interface().([]tea.Cmd), true
}

// TestModelWithRealNode drives the UI model with a real chat.Node: a
// message from another peer arrives in its conversation while a line is
// half typed, the reply is delivered, the history is stored.
func TestModelWithRealNode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*e2eWait)
	defer cancel()
	h, _ := daemon(t)
	rv := peer.AddrInfo{ID: h.ID(), Addrs: h.Addrs()}
	alice := startNode(t, ctx, "alice", rv)
	bob := startNode(t, ctx, "bob", rv)

	m := newModel(ctx, alice, newSession(alice, t.TempDir()), nil,
		selfInfo{nick: alice.Nick(), id: alice.ID(), room: alice.Room()}, colorprofile.ASCII)
	m = update(t, m, tea.WindowSizeMsg{Width: 100, Height: 20})
	m = typeIn(t, m, "half a li")

	_, err := bob.Send(ctx, "alice", "ping from bob")
	require.NoError(t, err)
	m = pumpUntil(t, m, "bob's message", func(m model) bool { return m.index("bob") > 0 && m.conv("bob").unread == 1 })
	require.Equal(t, "half a li", m.in.value())
	require.Regexp(t, `(?m)^[1-9] bob +1│`, screenText(m)) // numbered in order of appearance (the room may come first)

	next, cmd := m.Update(key(rune('1'+m.index("bob")), tea.ModAlt))
	m = runCmd(t, next.(model), cmd)
	require.Contains(t, screenText(m), "bob: ping from bob")
	m = update(t, m, key('u', tea.ModCtrl))
	m = typeIn(t, m, "pong")
	next, cmd = m.Update(enter)
	m = next.(model)
	require.Contains(t, screenText(m), "alice: pong …")
	m = runCmd(t, m, cmd)
	m = pumpUntil(t, m, "the delivery mark", func(m model) bool { return strings.Contains(screenText(m), "alice: pong ✓") })

	m = typeIn(t, m, "/history")
	next, cmd = m.Update(enter)
	m = runCmd(t, next.(model), cmd)
	require.Contains(t, screenText(m), "last 2 message(s) with bob")
}
