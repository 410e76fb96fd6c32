package main

import (
	"encoding/json"
	"testing"

	"github.com/charmbracelet/colorprofile"
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

// The status line says why a relayed peer is not direct once a punch
// failed, and stops saying it when the connection goes direct.
func TestTUIStatusShowsPunchFailure(t *testing.T) {
	m := testModel(t, 120, 10, colorprofile.ASCII)
	m = typeIn(t, m, "/to bob\n")
	bob := mustPeer(t, bobID)
	relayed := chat.ConnInfo{Kind: chat.ConnRelayed, Transport: "tcp", IPVersion: 4}
	m = update(t, m,
		eventMsg{chat.EventPresence{Nick: "bob", Peer: bob, Online: true}},
		eventMsg{chat.EventConn{Nick: "bob", Peer: bob, Conn: relayed}},
		eventMsg{chat.EventHolePunch{Peer: bob, Attempts: 3, Err: "i/o timeout", Reason: "timeout: no answer through the NATs"}},
	)
	require.Contains(t, screen(m)[m.height-2], "(punch failed: timeout: no answer through the NATs)")
	direct := chat.ConnInfo{Kind: chat.ConnDirect, Transport: "tcp", IPVersion: 4}
	m = update(t, m, eventMsg{chat.EventConn{Nick: "bob", Peer: bob, Conn: direct}})
	require.NotContains(t, screen(m)[m.height-2], "punch failed")
}
