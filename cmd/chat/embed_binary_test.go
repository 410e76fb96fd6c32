package main

import (
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestBinaryEmbedded is issue 14's acceptance scenario with the built chat
// binary and no rendezvous daemon at all: alice starts with only her nick
// and data dir and is ready; bob, given only alice's multiaddr, registers
// on alice's embedded service and they chat both ways; carol, given only
// bob's multiaddr, learns alice's service from bob (peer exchange) and
// finds alice by nick; alice quits; bob and carol, restarted, still reach
// each other through what they kept on disk.
//
// Then two chats started with the README's one command each talk (one
// build of the binary serves both).
func TestBinaryEmbedded(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binaries")
	}
	chatBin := filepath.Join(t.TempDir(), "chat")
	out, err := exec.Command("go", "build", "-o", chatBin, ".").CombinedOutput()
	require.NoError(t, err, "go build: %s", out)
	t.Run("chain", func(t *testing.T) { embeddedChain(t, chatBin) })
	t.Run("one-machine", func(t *testing.T) { twoChatsOneMachine(t, chatBin) })
}

func embeddedChain(t *testing.T, chatBin string) {
	// The addrs file of a chat's embedded server goes under the user
	// config dir: a fresh one, so no daemon of the machine is found.
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	t.Setenv("HOME", t.TempDir())
	dirs := map[string]string{"alice": t.TempDir(), "bob": t.TempDir(), "carol": t.TempDir()}
	start := func(nick string, extra ...string) *binProc {
		args := append([]string{"-json", "-nick", nick, "-data-dir", dirs[nick], "-listen", "/ip4/127.0.0.1/tcp/0", "-log-level", "warn"}, extra...)
		return startBin(t, nick, false, chatBin, args...)
	}
	ready := func(p *binProc, nick string) (id, addr string) {
		ev := p.await("ready", map[string]any{"nick": nick})
		return ev["peer"].(string), ev["addrs"].([]any)[0].(string)
	}

	alice := start("alice")
	alice.await("warning", nil) // one line: no daemon, serving rendezvous itself
	aliceID, aliceAddr := ready(alice, "alice")

	bob := start("bob", "-rendezvous", aliceAddr)
	bobID, bobAddr := ready(bob, "bob")
	bob.send("/servers")
	srv := bob.await("servers", nil)["servers"].([]any)
	require.True(t, hasServer(srv, "chat", "peer exchange via "+aliceID), "bob uses alice's embedded service: %v", srv)

	// bob writes first: alice has never written to him and his nick is only
	// vouched for by a chat's server, so his first message is a request.
	bob.send("/msg alice hello alice")
	id := bob.await("sent", map[string]any{"to": "alice"})["id"].(string)
	alice.await("request", map[string]any{"id": id, "peer": bobID, "text": "hello alice"})
	bob.await("delivered", map[string]any{"id": id})
	// alice finds bob by nick on her own service and answers.
	alice.send("/msg bob hello bob")
	id = alice.await("sent", map[string]any{"to": "bob"})["id"].(string)
	bob.await("message", map[string]any{"id": id, "peer": aliceID, "text": "hello bob"})
	alice.await("delivered", map[string]any{"id": id})
	bob.send("/msg alice now you know me")
	id = bob.await("sent", map[string]any{"to": "alice"})["id"].(string)
	alice.await("message", map[string]any{"id": id, "peer": bobID, "text": "now you know me"})

	carol := start("carol", "-rendezvous", bobAddr)
	carolID, _ := ready(carol, "carol")
	carol.send("/servers")
	srv = carol.await("servers", nil)["servers"].([]any)
	require.True(t, hasServer(srv, "chat", "peer exchange via "+bobID), "carol learnt servers from bob: %v", srv)
	carol.send("/whois alice")
	w := carol.await("whois", nil)
	require.Equal(t, aliceID, w["peer"], "carol finds alice by nick through alice's service")
	require.Equal(t, false, w["pinned"], "a chat's service does not verify a nick")
	// carol and bob talk, so each is the other's contact.
	carol.send("/msg bob hi bob, carol here")
	id = carol.await("sent", map[string]any{"to": "bob"})["id"].(string)
	bob.await("request", map[string]any{"id": id, "peer": carolID})
	bob.send("/msg carol hi carol")
	id = bob.await("sent", map[string]any{"to": "carol"})["id"].(string)
	carol.await("message", map[string]any{"id": id, "peer": bobID, "text": "hi carol"})

	// alice quits; bob and carol stop and start again with the same
	// flags: alice's service is gone, they meet through what they kept.
	require.NoError(t, alice.stdin.Close())
	require.Zero(t, alice.wait())
	for _, p := range []*binProc{bob, carol} {
		p.signal(syscall.SIGTERM)
		require.Zero(t, p.wait())
	}
	bob = start("bob", "-rendezvous", aliceAddr)
	_, bobAddr2 := ready(bob, "bob")
	require.Equal(t, bobAddr, bobAddr2, "bob listens on the port he had")
	carol = start("carol", "-rendezvous", bobAddr)
	ready(carol, "carol")
	carol.send("/msg bob still here after alice left")
	id = carol.await("sent", map[string]any{"to": "bob"})["id"].(string)
	bob.await("message", map[string]any{"id": id, "peer": carolID, "text": "still here after alice left"})
	carol.await("delivered", map[string]any{"id": id})
	bob.send("/msg carol me too")
	id = bob.await("sent", map[string]any{"to": "carol"})["id"].(string)
	carol.await("message", map[string]any{"id": id, "peer": bobID, "text": "me too"})
	for _, p := range []*binProc{bob, carol} {
		require.NoError(t, p.stdin.Close())
		require.Zero(t, p.wait())
	}
}

func hasServer(servers []any, kind, source string) bool {
	for _, s := range servers {
		m := s.(map[string]any)
		if m["kind"] == kind && m["source"] == source {
			return true
		}
	}
	return false
}

// twoChatsOneMachine: two chats started with the README's one command
// each (no -rendezvous; here on loopback) talk to each other: the second
// finds the first's embedded service in the local addrs file.
func twoChatsOneMachine(t *testing.T, chatBin string) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	t.Setenv("HOME", t.TempDir())
	start := func(nick string) *binProc {
		return startBin(t, nick, false, chatBin, "-json", "-nick", nick, "-data-dir", t.TempDir(), "-listen", "/ip4/127.0.0.1/tcp/0", "-log-level", "warn")
	}
	alice := start("alice")
	aliceID := alice.await("ready", nil)["peer"].(string)
	bob := start("bob")
	bobID := bob.await("ready", nil)["peer"].(string)
	bob.send("/servers")
	srv := bob.await("servers", nil)["servers"].([]any)
	found := false
	for _, s := range srv {
		m := s.(map[string]any)
		found = found || (m["source"] == "addrs file" && m["kind"] == "chat" && m["reachable"] == true)
	}
	require.True(t, found, "bob found alice's service in the addrs file: %v", srv)
	bob.send("/msg alice hi from the same machine")
	id := bob.await("sent", map[string]any{"to": "alice"})["id"].(string)
	alice.await("request", map[string]any{"id": id, "peer": bobID})
	alice.send("/msg bob hi bob")
	id = alice.await("sent", map[string]any{"to": "bob"})["id"].(string)
	bob.await("message", map[string]any{"id": id, "peer": aliceID, "text": "hi bob"})
	for _, p := range []*binProc{bob, alice} {
		require.NoError(t, p.stdin.Close())
		require.Zero(t, p.wait())
	}
}
