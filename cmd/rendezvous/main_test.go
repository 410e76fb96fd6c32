package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/p2p-messaging/p2p-messaging/internal/identity"
	"github.com/p2p-messaging/p2p-messaging/internal/paths"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestRunBadFlags(t *testing.T) {
	dir := t.TempDir()
	var stderr bytes.Buffer
	err := run(context.Background(), []string{"-data-dir", dir, "-rate", "-5"}, io.Discard, &stderr)
	require.ErrorContains(t, err, "request rate -5 must be positive")
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Empty(t, entries, "nothing written for a rejected config")

	// A metrics address that cannot be bound fails the start and cleans up.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	err = run(context.Background(), []string{"-listen", "/ip4/127.0.0.1/tcp/0", "-data-dir", dir, "-metrics", l.Addr().String()}, io.Discard, io.Discard)
	require.ErrorContains(t, err, "metrics listener")
	_, err = os.Stat(filepath.Join(dir, paths.AddrFileName))
	require.ErrorIs(t, err, os.ErrNotExist)

	// A key file with loose permissions is refused, not silently used.
	if runtime.GOOS != "windows" {
		require.NoError(t, os.Chmod(filepath.Join(dir, identity.FileName), 0o644))
		err = run(context.Background(), []string{"-listen", "/ip4/127.0.0.1/tcp/0", "-data-dir", dir}, io.Discard, io.Discard)
		require.ErrorContains(t, err, "want 0600")
	}
}
