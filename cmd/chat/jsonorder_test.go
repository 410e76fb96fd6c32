package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/charmbracelet/colorprofile"
	"github.com/stretchr/testify/require"

	"github.com/p2p-messaging/p2p-messaging/chat"
)

// nextAnswer returns the next event that is not about the network
// (presence, conn, holepunch, delivered, message: those come when they
// come), so what remains are the answers to commands, in order.
func (p *jsonProc) nextAnswer() map[string]any {
	p.t.Helper()
	timer := time.NewTimer(e2eWait)
	defer timer.Stop()
	for {
		select {
		case ev, ok := <-p.events:
			if !ok {
				p.t.Fatalf("%s: stdout ended; saw:\n%s", p.name, p.history())
			}
			switch ev["event"] {
			case "presence", "conn", "holepunch", "delivered", "message", "warning":
				continue
			}
			return ev
		case <-timer.C:
			p.t.Fatalf("%s: no answer within %s; saw:\n%s", p.name, e2eWait, p.history())
		}
	}
}

// TestJSONAnswersInCommandOrderWithTags: commands written in one go are
// answered in their order, each with its tag; /msg's "sent" comes before
// the next command's answer (it once came after /id's).
func TestJSONAnswersInCommandOrderWithTags(t *testing.T) {
	_, rv := daemon(t)
	alice := startJSON(t, "alice", "-rendezvous", rv, "-data-dir", t.TempDir())
	bob := startJSON(t, "bob", "-rendezvous", rv, "-data-dir", t.TempDir())
	alice.await("ready", nil)
	bob.await("ready", nil)

	var batch []string
	const rounds = 20
	for i := range rounds {
		batch = append(batch, fmt.Sprintf("@m%d /msg bob hi %d", i, i), fmt.Sprintf("@id%d /id", i))
	}
	batch = append(batch, "/id", "@e1 /frobnicate", "@bad!tag /id", "@h.1:x-y_z /help")
	alice.send(strings.Join(batch, "\n"))
	for i := range rounds {
		sent := alice.nextAnswer()
		require.Equal(t, "sent", sent["event"], "answer %d", i)
		require.Equal(t, fmt.Sprintf("m%d", i), sent["tag"])
		require.Equal(t, "bob", sent["to"])
		id := alice.nextAnswer()
		require.Equal(t, "id", id["event"])
		require.Equal(t, fmt.Sprintf("id%d", i), id["tag"])
	}
	untagged := alice.nextAnswer()
	require.Equal(t, "id", untagged["event"])
	require.NotContains(t, untagged, "tag", "no tag, no tag field")
	e1 := alice.nextAnswer()
	require.Equal(t, "error", e1["event"])
	require.Equal(t, "e1", e1["tag"])
	bad := alice.nextAnswer()
	require.Equal(t, "error", bad["event"])
	require.Contains(t, bad["error"], "invalid request tag")
	help := alice.nextAnswer()
	require.Equal(t, "help", help["event"])
	require.Equal(t, "h.1:x-y_z", help["tag"])

	// Every message still arrives, and "delivered" follows its "sent".
	for i := range rounds {
		bob.await("message", map[string]any{"text": fmt.Sprintf("hi %d", i)})
	}
}

// TestJSONContactsFromTheStart: after a restart, /peers and /contacts
// list the known contact at once, before it is seen online; /quit reports
// no presence change of others.
func TestJSONContactsFromTheStartAndQuietQuit(t *testing.T) {
	_, rv := daemon(t)
	aliceDir := t.TempDir()
	bob := startJSON(t, "bob", "-rendezvous", rv, "-data-dir", t.TempDir())
	bob.await("ready", nil)
	alice := startJSON(t, "alice", "-rendezvous", rv, "-data-dir", aliceDir)
	alice.await("ready", nil)
	alice.send("/msg bob hello")
	alice.await("delivered", nil)

	// /quit: bob is still online, so no "bob offline" may be written.
	alice.send("/quit")
	require.NoError(t, alice.exit())
	for _, line := range strings.Split(alice.history(), "\n") {
		require.NotContains(t, line, `"online":false`, "alice's own shutdown says nothing about bob")
	}

	// Restarted, the first commands already list bob.
	alice2 := startJSON(t, "alice", "-rendezvous", rv, "-data-dir", aliceDir)
	alice2.await("ready", nil)
	alice2.send("/peers\n/contacts")
	peers := alice2.await("peers", nil)["peers"].([]any)
	require.NotEmpty(t, peers)
	require.Equal(t, "bob", peers[0].(map[string]any)["nick"])
	contacts := alice2.await("contacts", nil)["contacts"].([]any)
	require.Len(t, contacts, 1)
	c := contacts[0].(map[string]any)
	require.Equal(t, "bob", c["nick"])
	require.NotEmpty(t, c["last_seen"], "last seen: at least the time of bob's last presence or message")
	require.Contains(t, c, "online")

	alice2.send("/trust bob")
	tr := alice2.await("trust", map[string]any{"nick": "bob"})
	require.Equal(t, tr["pinned"], c["peer"])
	require.Empty(t, tr["new"])
	require.Regexp(t, `^\d{5}( \d{5}){5}$`, tr["safety"])
}

func TestCutTag(t *testing.T) {
	for _, tc := range []struct {
		line, tag, rest string
		ok              bool
	}{
		{"/id", "", "/id", true},
		{"@7 /id", "7", "/id", true},
		{"@a.b:c-d_e   /msg bob hi there", "a.b:c-d_e", "/msg bob hi there", true},
		{"@ /id", "", "", false},
		{"@" + strings.Repeat("x", maxTagLen+1) + " /id", "", "", false},
		{"@tag\"quote /id", "", "", false},
		{"@only", "only", "", true},
	} {
		tag, rest, err := cutTag(tc.line)
		if !tc.ok {
			require.Error(t, err, tc.line)
			continue
		}
		require.NoError(t, err, tc.line)
		require.Equal(t, tc.tag, tag)
		require.Equal(t, tc.rest, rest)
	}
	require.Equal(t, `{"event":"id","tag":"x\"y"}`+"\n", string(withTag([]byte(`{"event":"id"}`+"\n"), `x"y`)))
	require.Equal(t, `{"event":"id"}`, string(withTag([]byte(`{"event":"id"}`), "")))
}

func TestContactAndTrustParsing(t *testing.T) {
	c, err := parseCommand("/r  hello there ")
	require.NoError(t, err)
	require.Equal(t, command{kind: cmdReply, text: "hello there"}, c)
	_, err = parseCommand("/r")
	require.Error(t, err)
	c, err = parseCommand("/trust Bob 12345 67890")
	require.NoError(t, err)
	require.Equal(t, command{kind: cmdTrust, nick: "bob", text: "1234567890"}, c)
	_, err = parseCommand("/trust bob yes")
	require.Error(t, err)
	_, err = parseCommand("/contacts x")
	require.Error(t, err)

	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.Local)
	lines := contactLines(contactsResult{Now: now, Contacts: []chat.Contact{
		{Nick: "bob", Peer: mustPeer(t, bobID), Online: true, Conn: chat.ConnInfo{Kind: chat.ConnDirect, Transport: "tcp", IPVersion: 4}},
		{Nick: "carol", Peer: mustPeer(t, carolID), LastSeen: now.Add(-48 * time.Hour)},
		{Nick: "dave", Peer: mustPeer(t, aliceID)},
	}})
	require.Equal(t, []string{
		"3 contact(s):",
		"  bob              " + shortID(mustPeer(t, bobID)) + " online, direct tcp IPv4",
		"  carol            " + shortID(mustPeer(t, carolID)) + " offline, last seen 2026-11-29 12:00",
		"  dave             " + shortID(mustPeer(t, aliceID)) + " offline, never seen",
	}, lines)
}

func TestTrustLines(t *testing.T) {
	old, nw := mustPeer(t, bobID), mustPeer(t, carolID)
	const sn = "01234 56789 01234 56789 01234 56789"
	changed := trustLines(trustResult{Check: chat.KeyCheck{Nick: "bob", Pinned: old, New: nw, Safety: sn}})
	require.Equal(t, []string{
		"bob's key changed: pinned " + shortID(old) + ", now " + shortID(nw),
		"safety number with the new key: " + sn,
		"compare it with bob (they see the same digits), then: /trust bob 012345678901234567890123456789",
	}, changed, "three short lines, no raw peer IDs")
	require.Equal(t, []string{"bob's new key " + shortID(nw) + " is accepted and pinned (safety number " + sn + ")"},
		trustLines(trustResult{Check: chat.KeyCheck{Nick: "bob", Pinned: old, New: nw, Safety: sn, Accepted: true}}))
	require.Equal(t, []string{"bob: key " + shortID(old) + ", unchanged; safety number " + sn},
		trustLines(trustResult{Check: chat.KeyCheck{Nick: "bob", Pinned: old, Safety: sn}}))

	// In the UI the answer lands in the conversation it was typed in.
	m := testModel(t, 100, 12, colorprofile.ASCII)
	m = typeIn(t, m, "/to bob\n")
	m = update(t, m, resultMsg{conv: "bob", v: trustResult{Check: chat.KeyCheck{Nick: "bob", Pinned: old, New: nw, Safety: sn}}})
	require.Contains(t, screenText(m), "safety number with the new key: "+sn)
}
