package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
	"github.com/stretchr/testify/require"

	"github.com/p2p-messaging/p2p-messaging/chat"
)

// TestStartErrorJSON: a start that fails writes one error event on stdout
// in -json mode, one sentence, and run returns the error.
func TestStartErrorJSON(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "identity.key"), []byte("not a key"), 0o600))
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"-json", "-nick", "alice", "-data-dir", dir, "-listen", "/ip4/127.0.0.1/tcp/0"},
		strings.NewReader(""), &out, &errOut)
	require.Error(t, err)
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	require.Len(t, lines, 1, "one line: %q", out.String())
	var ev map[string]any
	require.NoError(t, json.Unmarshal([]byte(lines[0]), &ev))
	require.Equal(t, "error", ev["event"])
	require.NotContains(t, ev["error"], "\n")
	require.Contains(t, ev["error"], "start node")
}

// TestNoDaemonNoError: with no daemon configured and no addrs file the
// configuration is valid: the chat will serve rendezvous itself.
func TestNoDaemonNoError(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	cfg, err := parseConfig([]string{"-nick", "alice"}, func(string) string { return "" }, &bytes.Buffer{})
	require.NoError(t, err)
	require.Empty(t, cfg.rendezvous)
	require.Equal(t, chat.EmbedAuto, cfg.serve.Mode)
	cfg, err = parseConfig([]string{"-nick", "alice", "-serve"}, func(string) string { return "" }, &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, chat.EmbedServe, cfg.serve.Mode)
}

func TestServersRendering(t *testing.T) {
	id, err := peer.Decode("12D3KooWQYmDe586NjPkJWLrjtjxZzMtnsefdi1J7SJAc1QSw3aE")
	require.NoError(t, err)
	r := serversResult{Servers: []chat.ServerInfo{{
		Peer: id, Addrs: []multiaddr.Multiaddr{multiaddr.StringCast("/ip4/127.0.0.1/tcp/4001")},
		Kind: chat.ServerChat, Source: "peer exchange via x", Reachable: true,
	}}}
	j := serversJSON(r)
	require.Equal(t, "servers", j.Event)
	require.Equal(t, "/ip4/127.0.0.1/tcp/4001/p2p/"+id.String(), j.Servers[0].Addr)
	require.Equal(t, "chat", j.Servers[0].Kind)
	require.True(t, j.Servers[0].Reachable)
	lines := serversLines(r)
	require.Len(t, lines, 2)
	require.Contains(t, lines[1], "names unverified")
	require.Contains(t, lines[1], "peer exchange via x")
	require.Contains(t, serversLines(serversResult{})[0], "no rendezvous server")
	c, err := parseCommand("/servers")
	require.NoError(t, err)
	require.Equal(t, cmdServers, c.kind)
	_, err = parseCommand("/servers x")
	require.Error(t, err)
}
