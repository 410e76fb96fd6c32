package main

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

func writeRandomFile(t *testing.T, path string, size int64) string {
	t.Helper()
	f, err := os.Create(path)
	require.NoError(t, err)
	h := sha256.New()
	_, err = io.CopyN(io.MultiWriter(f, h), rand.Reader, size)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	return hex.EncodeToString(h.Sum(nil))
}

func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	h := sha256.New()
	_, err = io.Copy(h, f)
	require.NoError(t, err)
	return hex.EncodeToString(h.Sum(nil))
}

// TestBinaryFileTransfer runs what the harness checks, with the
// built binaries: a random file arrives with its hash, a transfer whose
// recipient is SIGKILLed completes after the restart without starting
// over, a hidden-file name lands as a plain name, and a rejected offer
// writes nothing.
func TestBinaryFileTransfer(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binaries")
	}
	chatBin, rvBin := buildBinaries(t)
	rv := startBin(t, "rendezvous", true, rvBin, "-listen", "/ip4/127.0.0.1/tcp/0", "-data-dir", t.TempDir(), "-log-format", "json")
	rvAddr := rv.awaitKey("msg", "listening", nil, e2eWait)["addr"].(string)
	rv.awaitKey("msg", "ready", nil, e2eWait)

	dirs := map[string]string{"ann": t.TempDir(), "ben": t.TempDir()}
	downloads := t.TempDir()
	startPeer := func(nick string) *binProc {
		return startBin(t, nick, false, chatBin, "-json", "-nick", nick, "-listen", "/ip4/127.0.0.1/tcp/0",
			"-rendezvous", rvAddr, "-data-dir", dirs[nick], "-download-dir", downloads, "-log-level", "warn")
	}
	ann, ben := startPeer("ann"), startPeer("ben")
	annID := ann.await("ready", nil)["peer"].(string)
	ben.await("ready", nil)

	src := t.TempDir()
	// 1. A rejected offer writes nothing.
	small := filepath.Join(src, "notes.txt")
	require.NoError(t, os.WriteFile(small, []byte("hello"), 0o644))
	ann.send("/send ben " + small)
	off := ann.await("file_offered", map[string]any{"to": "ben", "name": "notes.txt", "size": 5})
	offer := ben.await("file_offer", map[string]any{"id": off["id"], "from": "ann", "peer": annID, "name": "notes.txt"})
	ben.send("/reject " + offer["id"].(string))
	ben.await("file_rejected", map[string]any{"id": off["id"]})
	ann.await("file_failed", map[string]any{"id": off["id"]})
	entries, err := os.ReadDir(downloads)
	require.NoError(t, err)
	require.Empty(t, entries)

	// 2. A hidden-file name lands as a plain name in the download dir.
	hidden := filepath.Join(src, ".bashrc")
	hiddenHash := writeRandomFile(t, hidden, 1000)
	ann.send("/send ben " + hidden)
	id := ann.await("file_offered", map[string]any{"name": ".bashrc"})["id"].(string)
	ben.await("file_offer", map[string]any{"id": id, "name": "bashrc", "hash": hiddenHash})
	ben.send("/accept " + id[:8])
	ben.await("file_accepted", map[string]any{"id": id})
	done := ben.await("file_done", map[string]any{"id": id, "hash": hiddenHash})
	require.Equal(t, filepath.Join(downloads, "bashrc"), done["path"])
	ann.await("file_done", map[string]any{"id": id})

	// 3. A 256 MiB random file; ben is SIGKILLed a quarter of the way and
	// restarted: the transfer resumes where it stopped and the file
	// arrives with its hash.
	big := filepath.Join(src, "big.bin")
	const size = 256 << 20
	bigHash := writeRandomFile(t, big, size)
	ann.send("/send ben " + big)
	id = ann.await("file_offered", map[string]any{"name": "big.bin"})["id"].(string)
	ben.await("file_offer", map[string]any{"id": id, "hash": bigHash})
	ben.send("/accept " + id)
	ben.await("file_accepted", map[string]any{"id": id})
	var atKill float64
	for {
		ev := ben.await("file_progress", map[string]any{"id": id})
		if atKill = ev["bytes"].(float64); atKill >= size/4 {
			break
		}
	}
	ben.signal(syscall.SIGKILL)
	ben.wait()
	if ben.count(`"event":"file_done"`, id) > 0 {
		t.Skip("the transfer finished before the kill landed")
	}
	ben = startPeer("ben")
	ben.await("ready", nil)
	first := ben.await("file_progress", map[string]any{"id": id})
	t.Logf("progress at the kill %.0f, first progress after the restart %.0f", atKill, first["bytes"])
	require.GreaterOrEqual(t, first["bytes"].(float64), atKill-float64(1<<20), "what arrived before the kill is kept")
	done = ben.await("file_done", map[string]any{"id": id, "hash": bigHash})
	require.Equal(t, filepath.Join(downloads, "big.bin"), done["path"])
	require.Equal(t, bigHash, fileSHA256(t, done["path"].(string)))
	ann.await("file_done", map[string]any{"id": id})
	entries, err = os.ReadDir(downloads)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	require.Equal(t, "bashrc big.bin", strings.Join(names, " "), "no partial file left")

	ben.send("/transfers")
	list := ben.await("transfers", nil)["transfers"].([]any)
	require.NotEmpty(t, list)

	for _, p := range []*binProc{ann, ben} {
		p.signal(syscall.SIGTERM)
		require.Zero(t, p.wait())
	}
}
