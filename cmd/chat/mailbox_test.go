package main

import (
	"encoding/json"
	"io"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/p2p-messaging/p2p-messaging/chat"
)

func TestMailboxFlag(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	base := []string{"-nick", "alice", "-rendezvous", daemonA, "-data-dir", t.TempDir()}
	cfg, err := parseConfig(base, envFrom(nil), io.Discard)
	require.NoError(t, err)
	require.False(t, cfg.noDeposit, "deposits are on by default")
	cfg, err = parseConfig(append(base, "-mailbox=false"), envFrom(nil), io.Discard)
	require.NoError(t, err)
	require.True(t, cfg.noDeposit)
	cfg, err = parseConfig(base, envFrom(map[string]string{"CHAT_MAILBOX": "false"}), io.Discard)
	require.NoError(t, err)
	require.True(t, cfg.noDeposit)
}

func TestStoredJSON(t *testing.T) {
	b, err := json.Marshal(toJSON(chat.EventStored{ID: "00ff", To: "bob", Daemons: 2}))
	require.NoError(t, err)
	require.JSONEq(t, `{"event":"stored","id":"00ff","to":"bob","daemons":2}`, string(b))
}

func TestStoredMark(t *testing.T) {
	require.Equal(t, "", storedSuffix(0))
	require.Equal(t, " ✉ stored on 1 daemon", storedSuffix(1))
	require.Equal(t, " ✉ stored on 3 daemons", storedSuffix(3))
	require.Contains(t, storedLine(chat.EventStored{ID: "ab", To: "bob", Daemons: 2}), "to bob ✉ stored on 2 daemons")
}
