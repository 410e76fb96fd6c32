package main

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/p2p-messaging/p2p-messaging/chat"
)

// A failed punch shows in the /peers line and as the JSON "punch" field;
// without one the field is absent.
func TestPunchNote(t *testing.T) {
	relayed := chat.PeerStatus{Nick: "bob", Conn: chat.ConnInfo{Kind: chat.ConnRelayed}, Punch: "symmetric NAT detected"}
	require.Equal(t, ", no direct path: symmetric NAT detected", punchNote(relayed))
	require.Empty(t, punchNote(chat.PeerStatus{Nick: "bob", Conn: chat.ConnInfo{Kind: chat.ConnDirect}}))

	b, err := json.Marshal(toJSON(peersResult{Peers: []chat.PeerStatus{relayed, {Nick: "carol"}}}))
	require.NoError(t, err)
	var out struct {
		Peers []map[string]any `json:"peers"`
	}
	require.NoError(t, json.Unmarshal(b, &out))
	require.Len(t, out.Peers, 2)
	require.Equal(t, "symmetric NAT detected", out.Peers[0]["punch"])
	require.NotContains(t, out.Peers[1], "punch")
}
