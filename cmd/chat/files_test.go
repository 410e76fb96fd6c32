package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

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
		"/transfers":               {kind: cmdXfers},
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

func TestModelFileProgressInPlace(t *testing.T) {
	m := testModel(t, nil)
	bob := mustPeer(t, bobID)
	id := "0123456789abcdef0123456789abcdef"
	m = update(t, m, eventMsg{chat.EventFileOffer{ID: id, From: "bob", Peer: bob, Name: "photo.jpg", Size: 4 << 20, Hash: "ab"}})
	require.Contains(t, m.View(), "bob offers photo.jpg")
	require.Contains(t, m.View(), "/accept 01234567")
	for _, n := range []int64{1 << 20, 2 << 20, 3 << 20} {
		m = update(t, m, eventMsg{chat.EventFileProgress{ID: id, Peer: bob, Incoming: true, Bytes: n, Size: 4 << 20}})
	}
	require.Equal(t, 1, strings.Count(m.View(), "⇣ photo.jpg"), "one progress bar, updated in place")
	require.Contains(t, m.View(), "75%")
	m = update(t, m, eventMsg{chat.EventFileDone{ID: id, Peer: bob, Incoming: true, Path: "/home/alice/Downloads/photo.jpg", Hash: "ab"}})
	require.Contains(t, m.View(), "received /home/alice/Downloads/photo.jpg")
}
