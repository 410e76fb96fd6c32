package main

import (
	"flag"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/p2p-messaging/p2p-messaging/chat"
	"github.com/p2p-messaging/p2p-messaging/internal/paths"
)

const (
	daemonA = "/ip4/127.0.0.1/tcp/4001/p2p/" + aliceID
	daemonB = "/ip4/127.0.0.1/tcp/4002/p2p/" + bobID
)

func envFrom(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestParseConfigFlagsEnvDefaults(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())

	// Flags only.
	cfg, err := parseConfig([]string{"-nick", "alice", "-rendezvous", daemonA + "," + daemonB + ",/ip6/::1/udp/4001/quic-v1/p2p/" + aliceID,
		"-listen", "/ip4/127.0.0.1/tcp/0, /ip4/127.0.0.1/udp/0/quic-v1", "-room", "dev", "-json", "-reachability", "private",
		"-log-level", "debug", "-data-dir", "/tmp/x"}, envFrom(nil), io.Discard)
	require.NoError(t, err)
	require.Equal(t, "alice", cfg.nick)
	require.Len(t, cfg.rendezvous, 2, "addresses of one daemon are grouped")
	for _, ai := range cfg.rendezvous {
		if ai.ID.String() == aliceID {
			require.Len(t, ai.Addrs, 2)
		}
	}
	require.Len(t, cfg.listen, 2)
	require.Equal(t, "dev", cfg.room)
	require.True(t, cfg.json)
	require.Equal(t, chat.ReachabilityPrivate, cfg.reachability)
	require.Equal(t, slog.LevelDebug, cfg.logLevel)
	require.Equal(t, "/tmp/x", cfg.dataDir)

	// Environment only.
	env := envFrom(map[string]string{
		"CHAT_NICK": "bob", "CHAT_RENDEZVOUS": daemonB, "CHAT_DATA_DIR": "/tmp/y", "CHAT_LISTEN": "/ip4/127.0.0.1/tcp/0",
		"CHAT_ROOM": "ops", "CHAT_JSON": "1", "CHAT_REACHABILITY": "public", "CHAT_LOG_LEVEL": "warn",
	})
	cfg, err = parseConfig(nil, env, io.Discard)
	require.NoError(t, err)
	require.Equal(t, "bob", cfg.nick)
	require.Len(t, cfg.rendezvous, 1)
	require.Equal(t, bobID, cfg.rendezvous[0].ID.String())
	require.Equal(t, "/tmp/y", cfg.dataDir)
	require.Len(t, cfg.listen, 1)
	require.Equal(t, "ops", cfg.room)
	require.True(t, cfg.json)
	require.Equal(t, chat.ReachabilityPublic, cfg.reachability)
	require.Equal(t, slog.LevelWarn, cfg.logLevel)

	// A flag beats the environment.
	cfg, err = parseConfig([]string{"-nick", "carol", "-json=false", "-room", "x", "-data-dir", "/tmp/z"}, env, io.Discard)
	require.NoError(t, err)
	require.Equal(t, "carol", cfg.nick)
	require.False(t, cfg.json)
	require.Equal(t, "x", cfg.room)
	require.Equal(t, "/tmp/z", cfg.dataDir)

	// Defaults: per-nick data dir, auto reachability, default room left to
	// the chat package.
	cfg, err = parseConfig([]string{"-nick", "dave", "-rendezvous", daemonA}, envFrom(nil), io.Discard)
	require.NoError(t, err)
	want, err := paths.ChatDataDir("dave")
	require.NoError(t, err)
	require.Equal(t, want, cfg.dataDir)
	require.Equal(t, chat.ReachabilityAuto, cfg.reachability)
	require.Equal(t, slog.LevelInfo, cfg.logLevel)
	require.Empty(t, cfg.room)
	require.False(t, cfg.json)
	require.Empty(t, cfg.listen)
}

func TestParseConfigAddrFile(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())

	// No flag, no env, no daemon on this machine: no error, the chat
	// serves rendezvous itself (chat/embed_start.go).
	cfg, err := parseConfig([]string{"-nick", "alice"}, envFrom(nil), io.Discard)
	require.NoError(t, err)
	require.Empty(t, cfg.rendezvous)

	file, err := paths.DefaultAddrFile()
	require.NoError(t, err)
	require.NoError(t, os.MkdirAll(filepath.Dir(file), 0o700))

	// An empty file is no daemon either.
	require.NoError(t, os.WriteFile(file, []byte("\n  \n"), 0o600))
	cfg, err = parseConfig([]string{"-nick", "alice"}, envFrom(nil), io.Discard)
	require.NoError(t, err)
	require.Empty(t, cfg.rendezvous)

	// What the daemon writes: one multiaddr per line, loopback first.
	require.NoError(t, os.WriteFile(file, []byte(daemonA+"\n/ip6/::1/tcp/4001/p2p/"+aliceID+"\n"), 0o600))
	cfg, err = parseConfig([]string{"-nick", "alice"}, envFrom(nil), io.Discard)
	require.NoError(t, err)
	require.Len(t, cfg.rendezvous, 1)
	require.Len(t, cfg.rendezvous[0].Addrs, 2)

	// The flag wins over the file.
	cfg, err = parseConfig([]string{"-nick", "alice", "-rendezvous", daemonB}, envFrom(nil), io.Discard)
	require.NoError(t, err)
	require.Equal(t, bobID, cfg.rendezvous[0].ID.String())
}

func TestParseConfigErrors(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	tests := []struct {
		args    []string
		env     map[string]string
		wantErr string
	}{
		{args: nil, wantErr: "-nick is required"},
		{args: []string{"-nick", "a b", "-rendezvous", daemonA}, wantErr: "-nick"},
		{args: []string{"-nick", "../x", "-rendezvous", daemonA}, wantErr: "-nick"},
		{args: []string{"-nick", "alice", "-rendezvous", "/ip4/127.0.0.1/tcp/4001"}, wantErr: "missing /p2p/<peer-id>"},
		{args: []string{"-nick", "alice", "-rendezvous", "nonsense"}, wantErr: "-rendezvous"},
		{args: []string{"-nick", "alice", "-rendezvous", daemonA, "-listen", "/ip4/1.2.3.4/tcp/x"}, wantErr: "-listen"},
		{args: []string{"-nick", "alice", "-rendezvous", daemonA, "-reachability", "sometimes"}, wantErr: "want auto, public or private"},
		{args: []string{"-nick", "alice", "-rendezvous", daemonA, "-log-level", "loud"}, wantErr: "-log-level"},
		{args: []string{"-nick", "alice", "-rendezvous", daemonA, "-room", "a/b"}, wantErr: "-room"},
		{args: []string{"-nick", "alice", "-rendezvous", daemonA, "extra"}, wantErr: "unexpected argument"},
		{args: []string{"-nick", "alice", "-rendezvous", daemonA}, env: map[string]string{"CHAT_JSON": "maybe"}, wantErr: "CHAT_JSON"},
		{args: []string{"-bogus"}, wantErr: "flag provided but not defined"},
	}
	for _, tt := range tests {
		_, err := parseConfig(tt.args, envFrom(tt.env), io.Discard)
		require.ErrorContains(t, err, tt.wantErr, "args %q", tt.args)
	}
}

func TestParseConfigHelpListsEnv(t *testing.T) {
	var out strings.Builder
	_, err := parseConfig([]string{"-h"}, envFrom(nil), &out)
	require.ErrorIs(t, err, flag.ErrHelp)
	for _, env := range []string{"CHAT_NICK", "CHAT_RENDEZVOUS", "CHAT_DATA_DIR", "CHAT_LISTEN", "CHAT_ROOM", "CHAT_REACHABILITY", "CHAT_LOG_LEVEL", "CHAT_JSON"} {
		require.Contains(t, out.String(), "["+env+"]")
	}
}

func TestParseConfigAddrFileBadLine(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	file, err := paths.DefaultAddrFile()
	require.NoError(t, err)
	require.NoError(t, os.MkdirAll(filepath.Dir(file), 0o700))
	require.NoError(t, os.WriteFile(file, []byte(daemonA+"\nnot-an-addr\n"), 0o600))
	// A bad file is ignored with a one-line note: the chat then serves
	// rendezvous itself (chat/embed_start.go).
	var note strings.Builder
	bad, err := parseConfig([]string{"-nick", "alice"}, envFrom(nil), &note)
	require.NoError(t, err)
	require.Empty(t, bad.rendezvous)
	require.Contains(t, note.String(), `"not-an-addr"`)

	// An empty environment variable is unset: the file is used.
	require.NoError(t, os.WriteFile(file, []byte(daemonA+"\n"), 0o600))
	cfg, err := parseConfig([]string{"-nick", "alice"}, envFrom(map[string]string{"CHAT_RENDEZVOUS": ""}), io.Discard)
	require.NoError(t, err)
	require.Len(t, cfg.rendezvous, 1)
}
