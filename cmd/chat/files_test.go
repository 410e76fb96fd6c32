package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/charmbracelet/colorprofile"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/stretchr/testify/require"

	"github.com/p2p-messaging/p2p-messaging/chat"
	"github.com/p2p-messaging/p2p-messaging/chat/transfer"
)

func TestParseFileCommands(t *testing.T) {
	for line, want := range map[string]command{
		"/send bob /tmp/a b.txt":   {kind: cmdSend, nick: "bob", file: fileArgs{path: "/tmp/a b.txt"}},
		"/send Bob x":              {kind: cmdSend, nick: "bob", file: fileArgs{path: "x"}},
		"/accept 0123abcd":         {kind: cmdAccept, file: fileArgs{id: "0123abcd"}},
		"/accept 0123abcd /tmp/dl": {kind: cmdAccept, file: fileArgs{id: "0123abcd", path: "/tmp/dl"}},
		"/reject 0123":             {kind: cmdReject, file: fileArgs{id: "0123"}},
		"/transfers":               {kind: cmdTransfers},
	} {
		got, err := parseCommand(line)
		require.NoError(t, err, line)
		require.Equal(t, want, got, line)
	}
	for _, bad := range []string{"/send", "/send bob", "/accept", "/reject", "/reject a b", "/transfers x", "/send b@d x"} {
		_, err := parseCommand(bad)
		require.Error(t, err, bad)
	}
	got, err := parseCommand("/send bob ~/x")
	require.NoError(t, err)
	require.False(t, strings.HasPrefix(got.file.path, "~"))
}

func TestFileJSON(t *testing.T) {
	p, err := peer.Decode("12D3KooWGkkZuBpocJe2hKcttNwDV3rEg9Np5uxo6WseLrx7wGL8")
	require.NoError(t, err)
	for v, want := range map[any]string{
		fileOfferedResult{Transfer: chat.FileTransfer{ID: "ab", Nick: "bob", Peer: p, Name: "a.txt", Size: 5, Hash: "h"}}: `{"event":"file_offered","id":"ab","to":"bob","peer":"` + p.String() + `","name":"a.txt","size":5,"hash":"h"}`,
		fileAcceptedResult{Transfer: chat.FileTransfer{ID: "ab", Name: "a.txt", Size: 5}}:                                 `{"event":"file_accepted","id":"ab","name":"a.txt","size":5}`,
		fileRejectedResult{Transfer: chat.FileTransfer{ID: "ab"}}:                                                         `{"event":"file_rejected","id":"ab"}`,
		chat.EventFileOffer{ID: "ab", From: "alice", Peer: p, Name: "a.txt", Size: 5, Hash: "h"}:                          `{"event":"file_offer","id":"ab","from":"alice","peer":"` + p.String() + `","name":"a.txt","size":5,"hash":"h"}`,
		chat.EventFileProgress{ID: "ab", Peer: p, Incoming: true, Bytes: 3, Size: 5}:                                      `{"event":"file_progress","id":"ab","bytes":3,"size":5,"peer":"` + p.String() + `","direction":"in"}`,
		chat.EventFileDone{ID: "ab", Peer: p, Incoming: true, Path: "/d/a.txt", Hash: "h"}:                                `{"event":"file_done","id":"ab","path":"/d/a.txt","hash":"h","peer":"` + p.String() + `","direction":"in"}`,
		chat.EventFileDone{ID: "ab", Peer: p, Path: "/src/a.txt"}:                                                         `{"event":"file_done","id":"ab","peer":"` + p.String() + `","direction":"out"}`,
		chat.EventFileFailed{ID: "ab", Peer: p, Err: "rejected"}:                                                          `{"event":"file_failed","id":"ab","error":"rejected","peer":"` + p.String() + `","direction":"out"}`,
		chat.EventFileState{ID: "ab", Peer: p, Incoming: true, State: "waiting_direct"}:                                   `{"event":"file_state","id":"ab","state":"waiting_direct","reason":"","peer":"` + p.String() + `","direction":"in"}`,
	} {
		line, err := marshalLine(toJSON(v))
		require.NoError(t, err)
		require.JSONEq(t, want, string(line))
	}
	line, err := marshalLine(toJSON(transfersResult{Transfers: []chat.FileTransfer{{ID: "ab", Peer: p, Nick: "bob", Name: "a", Size: 9, Bytes: 4, State: transfer.StateActive}}}))
	require.NoError(t, err)
	var got struct {
		Event     string           `json:"event"`
		Transfers []map[string]any `json:"transfers"`
	}
	require.NoError(t, json.Unmarshal(line, &got))
	require.Equal(t, "transfers", got.Event)
	for _, k := range []string{"id", "peer", "name", "size", "bytes", "state"} {
		require.Contains(t, got.Transfers[0], k)
	}
	require.Equal(t, "active", got.Transfers[0]["state"])
}

func TestFileProgressLine(t *testing.T) {
	require.Equal(t, "⇣ a.bin [##########----------]  50% 5.0 MiB/10.0 MiB 1.0 MiB/s ETA 5s",
		fileProgressLine(true, "a.bin", 5<<20, 10<<20, 1<<20))
	require.Equal(t, "⇡ a.bin [####################] 100% 10.0 MiB/10.0 MiB",
		fileProgressLine(false, "a.bin", 10<<20, 10<<20, 0))
	require.Equal(t, "⇡ e [####################] 100% 0 B/0 B", fileProgressLine(false, "e", 0, 0, 0))
	require.Contains(t, fileProgressLine(true, "x\x1b[2Jy", 1, 2, 0), "x", "control characters are not printed raw")
	require.NotContains(t, fileProgressLine(true, "x\x1b[2Jy", 1, 2, 0), "\x1b")

	var m rateMeter
	now := time.Unix(0, 0)
	require.Zero(t, m.update(now, 0))
	require.InDelta(t, 1000, m.update(now.Add(time.Second), 1000), 1)
	require.Equal(t, "1h01m", humanDuration(time.Hour+time.Minute))
	require.Equal(t, "2m05s", humanDuration(125*time.Second))
}

func TestFileLines(t *testing.T) {
	lines := fileLines(chat.EventFileOffer{ID: "0123456789abcdef", From: "alice", Name: "a.txt", Size: 2048, Hash: "ffff"})
	require.Len(t, lines, 1)
	require.Contains(t, lines[0], "/accept 01234567")
	require.Contains(t, fileLines(chat.EventFileDone{ID: "x", Incoming: true, Path: "/d/a.txt"})[0], "/d/a.txt")
	require.Contains(t, fileLines(chat.EventFileState{ID: "x", State: "waiting_direct"})[0], "direct connection")
	require.Equal(t, []string{"no file transfers"}, fileLines(transfersResult{}))
}

// A transfer shows in the conversation with its peer: the offer, one
// progress line updated in place, and the completion line.
func TestTUIFileTransferInConversation(t *testing.T) {
	m := testModel(t, 100, 12, colorprofile.ASCII)
	m = typeIn(t, m, "/to bob\n")
	bob := mustPeer(t, bobID)
	m = update(t, m,
		eventMsg{chat.EventPresence{Nick: "bob", Peer: bob, Online: true}},
		eventMsg{chat.EventFileOffer{ID: "0123456789abcdef", From: "bob", Peer: bob, Name: "photo.jpg", Size: 10 << 20, Hash: "ab"}},
		eventMsg{chat.EventFileProgress{ID: "0123456789abcdef", Peer: bob, Incoming: true, Bytes: 1 << 20, Size: 10 << 20}},
		eventMsg{chat.EventFileProgress{ID: "0123456789abcdef", Peer: bob, Incoming: true, Bytes: 5 << 20, Size: 10 << 20}},
	)
	c := m.conv("bob")
	var progress []string
	for _, l := range c.lines {
		if strings.HasPrefix(l.text, "⇣ photo.jpg [") {
			progress = append(progress, l.text)
		}
	}
	require.Len(t, progress, 1, "one progress line per transfer, updated in place")
	require.Contains(t, progress[0], " 50% 5.0 MiB/10.0 MiB")
	require.Contains(t, screenText(m), "bob offers photo.jpg")
	m = update(t, m, eventMsg{chat.EventFileDone{ID: "0123456789abcdef", Peer: bob, Incoming: true, Path: "/tmp/dl/photo.jpg", Hash: "ab"}})
	require.Contains(t, screenText(m), "received /tmp/dl/photo.jpg")
	require.Empty(t, m.files.lines, "a finished transfer's view is forgotten")
}

// While /send hashes a large file, the next commands are answered; the
// /send's own answer comes later with its tag. The file is sparse and
// large enough (512 GiB) that hashing it takes minutes, so the answer to
// /transfers, which shows it still hashing, proves the loop moved on.
func TestJSONSendHashesInTheBackground(t *testing.T) {
	_, rv := daemon(t)
	alice := startJSON(t, "alice", "-rendezvous", rv, "-data-dir", t.TempDir())
	bob := startJSON(t, "bob", "-rendezvous", rv, "-data-dir", t.TempDir())
	alice.await("ready", nil)
	bob.await("ready", nil)

	big := filepath.Join(t.TempDir(), "huge.bin")
	f, err := os.Create(big)
	require.NoError(t, err)
	require.NoError(t, f.Truncate(512<<30))
	require.NoError(t, f.Close())

	alice.send("@big /send bob " + big)
	alice.send("@list /transfers")
	list := alice.await("transfers", map[string]any{"tag": "list"})
	ts := list["transfers"].([]any)
	require.Len(t, ts, 1)
	tr := ts[0].(map[string]any)
	require.Equal(t, "hashing", tr["state"], "answered while the file is being hashed")
	require.Equal(t, "huge.bin", tr["name"])
	require.EqualValues(t, 512<<30, tr["size"])
	alice.send("@me /id")
	alice.await("id", map[string]any{"tag": "me"})
	require.NotContains(t, alice.history(), "file_offered")

	// Shutting down ends the hashing; the /send is answered, tagged.
	alice.send("/quit")
	failed := alice.await("file_failed", map[string]any{"tag": "big", "id": tr["id"], "direction": "out"})
	require.Contains(t, failed["error"], "closed")
	require.NoError(t, alice.exit())
}

// A /send is answered by file_offered with its tag once the file is hashed
// and bob has the offer; a file that cannot be read is an error at once,
// in order.
func TestJSONSendAnsweredLateWithItsTag(t *testing.T) {
	_, rv := daemon(t)
	alice := startJSON(t, "alice", "-rendezvous", rv, "-data-dir", t.TempDir())
	bob := startJSON(t, "bob", "-rendezvous", rv, "-data-dir", t.TempDir())
	alice.await("ready", nil)
	bob.await("ready", nil)
	src := filepath.Join(t.TempDir(), "a.txt")
	require.NoError(t, os.WriteFile(src, []byte("hello"), 0o644))

	alice.send("@s /send bob " + src)
	off := alice.await("file_offered", map[string]any{"tag": "s", "to": "bob", "name": "a.txt", "size": 5})
	bob.await("file_offer", map[string]any{"id": off["id"]})
	alice.send("@n /send bob " + src + ".missing")
	e := alice.await("error", map[string]any{"tag": "n"})
	require.Contains(t, e["error"], "no such file")
}

// In the TUI a /send shows that the file is being hashed, and its answer
// arrives through the command the result returns.
func TestTUISendShowsHashingThenOffered(t *testing.T) {
	m := testModel(t, 120, 12, colorprofile.ASCII)
	bob := mustPeer(t, bobID)
	tr := chat.FileTransfer{ID: "0123456789abcdef", Peer: bob, Nick: "bob", Name: "big.iso", Size: 3 << 30, State: transfer.StateHashing}
	release := make(chan struct{})
	next, cmd := m.Update(resultMsg{conv: "", v: fileSendingResult{Transfer: tr, wait: func() any {
		<-release
		offered := tr
		offered.State = transfer.StateOffered
		return fileOfferedResult{Transfer: offered}
	}}})
	m = next.(model)
	require.Contains(t, strings.Join(lineTexts(m.conv("bob")), "\n"), "hashing big.iso (3.0 GiB) before offering it to bob")
	require.NotNil(t, cmd)
	close(release)
	msg := cmd()
	r, ok := msg.(resultMsg)
	require.True(t, ok)
	m = update(t, m, r)
	require.Contains(t, strings.Join(lineTexts(m.conv("bob")), "\n"), "offered big.iso (3.0 GiB) to bob")

	next, cmd = m.Update(resultMsg{v: fileFailedResult{Transfer: tr, Err: errors.New("hash big.iso: read: input/output error")}})
	require.Nil(t, cmd)
	m = next.(model)
	require.Contains(t, strings.Join(lineTexts(m.conv("bob")), "\n"), "sending big.iso to bob failed: hash big.iso")
}

func lineTexts(c *conv) []string {
	var out []string
	for _, l := range c.lines {
		out = append(out, l.text)
	}
	return out
}
