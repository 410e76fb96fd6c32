package main

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/p2p-messaging/p2p-messaging/rendezvous/mailbox"
)

// TestBinaryMailbox is issue 10's check, on the built binaries: two
// daemons and headless chats; Alice writes to Bob while Bob is offline and
// quits; one daemon is stopped; Bob starts and gets the message exactly
// once, and quits; Alice starts later and gets delivered exactly once. No
// daemon's database holds the text.
func TestBinaryMailbox(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binaries")
	}
	chatBin, rvBin := buildBinaries(t)
	rvDirs := []string{t.TempDir(), t.TempDir()}
	var rvs []*binProc
	rvAddrs := ""
	for i, dir := range rvDirs {
		rv := startBin(t, "rendezvous"+string(rune('A'+i)), true, rvBin, "-listen", "/ip4/127.0.0.1/tcp/0", "-data-dir", dir, "-log-format", "json")
		addr := rv.awaitKey("msg", "listening", nil, e2eWait)["addr"].(string)
		rv.awaitKey("msg", "ready", nil, e2eWait)
		rvs = append(rvs, rv)
		if rvAddrs != "" {
			rvAddrs += ","
		}
		rvAddrs += addr
	}
	dirs := map[string]string{"alice": t.TempDir(), "bob": t.TempDir()}
	start := func(nick string) *binProc {
		p := startBin(t, nick, false, chatBin, "-json", "-nick", nick, "-listen", "/ip4/127.0.0.1/tcp/0",
			"-rendezvous", rvAddrs, "-data-dir", dirs[nick], "-log-level", "warn")
		p.await("ready", map[string]any{"nick": nick})
		return p
	}
	quit := func(p *binProc) {
		p.send("/quit")
		require.Equal(t, 0, p.wait(), "%s exits cleanly", p.name)
	}

	alice, bob := start("alice"), start("bob")
	alice.send("/msg bob hello")
	id := alice.await("sent", map[string]any{"to": "bob"})["id"].(string)
	bob.await("message", map[string]any{"id": id, "from": "alice"})
	alice.await("delivered", map[string]any{"id": id})
	quit(bob)
	alice.await("presence", map[string]any{"nick": "bob", "online": false})

	const text = "left in the mailbox at night"
	alice.send("/msg bob " + text)
	id = alice.await("sent", map[string]any{"to": "bob"})["id"].(string)
	alice.await("stored", map[string]any{"id": id, "to": "bob", "daemons": float64(2)})
	quit(alice)

	for _, dir := range rvDirs {
		raw, err := os.ReadFile(filepath.Join(dir, mailbox.DBFileName))
		require.NoError(t, err)
		require.NotContains(t, string(raw), text, "a daemon's database holds plaintext")
	}
	rvs[1].signal(syscall.SIGTERM)
	rvs[1].wait()

	bob = start("bob")
	bob.await("message", map[string]any{"id": id, "from": "alice", "text": text})
	quit(bob)
	require.Equal(t, 1, bob.count(`"event":"message"`, id), "shown once")

	alice = start("alice")
	alice.await("delivered", map[string]any{"id": id, "to": "bob"})
	quit(alice)
	require.Equal(t, 1, alice.count(`"event":"delivered"`, id), "delivered once")
}
