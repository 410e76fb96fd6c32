package identity

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/stretchr/testify/require"
)

func TestLoadOrCreatePersists(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "identity.key")

	k1, created, err := LoadOrCreate(path)
	require.NoError(t, err)
	require.True(t, created)
	require.Equal(t, crypto.Ed25519, int(k1.Type()))

	fi, err := os.Stat(path)
	require.NoError(t, err)
	if runtime.GOOS != "windows" {
		require.Equal(t, FileMode, fi.Mode().Perm())
		di, err := os.Stat(filepath.Dir(path))
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o700), di.Mode().Perm())
	}

	k2, created, err := LoadOrCreate(path)
	require.NoError(t, err)
	require.False(t, created)
	id1, err := peer.IDFromPrivateKey(k1)
	require.NoError(t, err)
	id2, err := peer.IDFromPrivateKey(k2)
	require.NoError(t, err)
	require.Equal(t, id1, id2)

	// No temp files are left behind.
	entries, err := os.ReadDir(filepath.Dir(path))
	require.NoError(t, err)
	require.Len(t, entries, 1)
}

func TestLoadRejects(t *testing.T) {
	dir := t.TempDir()

	garbage := filepath.Join(dir, "garbage.key")
	require.NoError(t, os.WriteFile(garbage, []byte("not a key"), 0o600))
	_, _, err := LoadOrCreate(garbage)
	require.ErrorContains(t, err, "decode identity key")
	// The broken file is not overwritten: the operator decides.
	b, err := os.ReadFile(garbage)
	require.NoError(t, err)
	require.Equal(t, "not a key", string(b))

	_, _, err = LoadOrCreate(dir)
	require.ErrorContains(t, err, "not a regular file")

	if runtime.GOOS != "windows" {
		loose := filepath.Join(dir, "loose.key")
		k, _, err := LoadOrCreate(loose)
		require.NoError(t, err)
		require.NotNil(t, k)
		require.NoError(t, os.Chmod(loose, 0o644))
		_, err = Load(loose)
		require.ErrorContains(t, err, "want 0600")
	}
}
