package main

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
	"github.com/stretchr/testify/require"

	"github.com/p2p-messaging/p2p-messaging/chat"
)

const (
	aliceID = "12D3KooWGkkZuBpocJe2hKcttNwDV3rEg9Np5uxo6WseLrx7wGL8"
	bobID   = "12D3KooWNv3WrDA2R92pK1MxVfpWHcn5fJHGnuNFjSjCJNKLSpAg"
)

func mustPeer(t testing.TB, s string) peer.ID {
	t.Helper()
	id, err := peer.Decode(s)
	require.NoError(t, err)
	return id
}

func mustAddr(t testing.TB, s string) multiaddr.Multiaddr {
	t.Helper()
	a, err := multiaddr.NewMultiaddr(s)
	require.NoError(t, err)
	return a
}

// TestJSONGolden pins the exact line written for every event and command
// result: these field names are the -json contract (JSON.md).
func TestJSONGolden(t *testing.T) {
	alice, bob := mustPeer(t, aliceID), mustPeer(t, bobID)
	tcp4 := mustAddr(t, "/ip4/127.0.0.1/tcp/4001")
	quic6 := mustAddr(t, "/ip6/::1/udp/4001/quic-v1")
	ts := time.Date(2026, 11, 24, 21, 30, 5, 123456789, time.FixedZone("CET", 3600))
	direct := chat.ConnInfo{Kind: chat.ConnDirect, Transport: "quic", IPVersion: 6, Remote: quic6}

	tests := []struct {
		name string
		v    any
		want string
	}{
		{"ready", chat.EventReady{Nick: "alice", Peer: alice, Addrs: []multiaddr.Multiaddr{tcp4}},
			`{"event":"ready","nick":"alice","peer":"` + aliceID + `","addrs":["/ip4/127.0.0.1/tcp/4001"]}`},
		{"ready no addrs", chat.EventReady{Nick: "alice", Peer: alice},
			`{"event":"ready","nick":"alice","peer":"` + aliceID + `","addrs":[]}`},
		{"sent", chat.EventSent{ID: "00ff", To: "bob"},
			`{"event":"sent","id":"00ff","to":"bob"}`},
		{"delivered", chat.EventDelivered{ID: "00ff", To: "bob"},
			`{"event":"delivered","id":"00ff","to":"bob"}`},
		{"message", chat.EventMessage{Message: chat.Message{ID: "abcd", From: "bob", To: "alice", Peer: bob, Text: "hi <b>&\"\n", Time: ts, Status: chat.StatusDelivered}},
			`{"event":"message","id":"abcd","from":"bob","peer":"` + bobID + `","text":"hi <b>&\"\n","time":"2026-11-24T20:30:05.123Z","to":"alice"}`},
		{"request", chat.EventRequest{Peer: bob, Nick: bobID, Text: "hi?", ID: "abcd", Time: ts},
			`{"event":"request","peer":"` + bobID + `","nick":"` + bobID + `","text":"hi?","id":"abcd","time":"2026-11-24T20:30:05.123Z"}`},
		{"allowed", chat.EventAllowed{Peer: bob}, `{"event":"allowed","peer":"` + bobID + `"}`},
		{"blocked", chat.EventBlocked{Peer: bob}, `{"event":"blocked","peer":"` + bobID + `"}`},
		{"requests", requestsResult{Requests: []chat.Message{{ID: "abcd", From: "bob", Peer: bob, Text: "hi?", Time: ts}}},
			`{"event":"requests","requests":[{"event":"request","peer":"` + bobID + `","nick":"bob","text":"hi?","id":"abcd","time":"2026-11-24T20:30:05.123Z"}]}`},
		{"presence", chat.EventPresence{Nick: "bob", Peer: bob, Online: true},
			`{"event":"presence","nick":"bob","peer":"` + bobID + `","online":true}`},
		{"presence offline", chat.EventPresence{Nick: "bob", Peer: bob},
			`{"event":"presence","nick":"bob","peer":"` + bobID + `","online":false}`},
		{"conn", chat.EventConn{Nick: "bob", Peer: bob, Conn: direct},
			`{"event":"conn","nick":"bob","peer":"` + bobID + `","conn":"direct","transport":"quic","ip":6,"addr":"/ip6/::1/udp/4001/quic-v1","limited":false}`},
		{"conn none", chat.EventConn{Nick: "bob", Peer: bob},
			`{"event":"conn","nick":"bob","peer":"` + bobID + `","conn":"none","transport":"","ip":0,"addr":"","limited":false}`},
		{"holepunch ok", chat.EventHolePunch{Peer: bob, Success: true, Attempts: 1, Elapsed: 95 * time.Millisecond},
			`{"event":"holepunch","peer":"` + bobID + `","success":true,"attempts":1,"elapsed_ms":95,"error":""}`},
		{"holepunch failed", chat.EventHolePunch{Peer: bob, Attempts: 3, Elapsed: 1500*time.Millisecond + 250*time.Microsecond, Err: "all retries failed"},
			`{"event":"holepunch","peer":"` + bobID + `","success":false,"attempts":3,"elapsed_ms":1500.25,"error":"all retries failed"}`},
		{"warning", chat.EventWarning{Text: "bob claimed by another peer", Nick: "bob", Peer: alice},
			`{"event":"warning","text":"bob claimed by another peer","nick":"bob","peer":"` + aliceID + `"}`},
		{"peers", peersResult{Peers: []chat.PeerStatus{
			{Nick: "bob", Peer: bob, Online: true, Conn: chat.ConnInfo{Kind: chat.ConnRelayed, Transport: "tcp", IPVersion: 4, Remote: tcp4, Limited: true}, RTT: 400 * time.Microsecond},
			{Nick: "carol", Peer: alice, Conn: chat.ConnInfo{Kind: chat.ConnNone}},
		}},
			`{"event":"peers","peers":[{"nick":"bob","peer":"` + bobID + `","conn":"relayed","transport":"tcp","ip":4,"addr":"/ip4/127.0.0.1/tcp/4001","limited":true,"rtt_ms":0.4,"online":true},` +
				`{"nick":"carol","peer":"` + aliceID + `","conn":"none","transport":"","ip":0,"addr":"","limited":false,"rtt_ms":0,"online":false}]}`},
		{"peers empty", peersResult{},
			`{"event":"peers","peers":[]}`},
		{"whois", whoisResult{Whois: chat.Whois{Nick: "bob", Peer: bob, Addrs: []multiaddr.Multiaddr{tcp4, quic6}, Pinned: true, Online: true, Conn: direct}},
			`{"event":"whois","nick":"bob","peer":"` + bobID + `","addrs":["/ip4/127.0.0.1/tcp/4001","/ip6/::1/udp/4001/quic-v1"],"pinned":true,"online":true,"conn":"direct","transport":"quic","ip":6,"addr":"/ip6/::1/udp/4001/quic-v1","limited":false}`},
		{"history", historyResult{With: "bob", Messages: []chat.Message{
			{ID: "01", From: "alice", To: "bob", Peer: bob, Text: "hi", Time: ts, Outgoing: true, Status: chat.StatusPending},
			{ID: "02", From: "bob", To: "alice", Peer: bob, Text: "yo", Time: ts.Add(time.Second), Status: chat.StatusDelivered},
		}},
			`{"event":"history","with":"bob","messages":[{"id":"01","from":"alice","to":"bob","peer":"` + bobID + `","text":"hi","time":"2026-11-24T20:30:05.123Z","outgoing":true,"status":"pending"},` +
				`{"id":"02","from":"bob","to":"alice","peer":"` + bobID + `","text":"yo","time":"2026-11-24T20:30:06.123Z","outgoing":false,"status":"delivered"}]}`},
		{"history empty", historyResult{With: "bob"},
			`{"event":"history","with":"bob","messages":[]}`},
		{"id", idResult{Nick: "alice", Peer: alice, Addrs: []multiaddr.Multiaddr{tcp4}, Room: "lobby"},
			`{"event":"id","nick":"alice","peer":"` + aliceID + `","addrs":["/ip4/127.0.0.1/tcp/4001"],"room":"lobby"}`},
		{"joined", joinedResult{Room: "dev"},
			`{"event":"joined","room":"dev"}`},
		{"to", toResult{Nick: "bob"},
			`{"event":"to","nick":"bob"}`},
		{"help", helpResult{Lines: []string{"/a", "/b"}},
			`{"event":"help","commands":["/a","/b"]}`},
		{"error", errorResult{Err: errors.New("send to carol: unknown nick")},
			`{"event":"error","error":"send to carol: unknown nick"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obj := toJSON(tt.v)
			require.NotNil(t, obj)
			line, err := marshalLine(obj)
			require.NoError(t, err)
			require.Equal(t, tt.want+"\n", string(line))
			// Every line is one valid JSON object with an "event" string.
			var m map[string]any
			require.NoError(t, json.Unmarshal(line, &m))
			require.IsType(t, "", m["event"])
		})
	}
}

func TestJSONSilentResults(t *testing.T) {
	// A send is reported by the node's own EventSent; /quit by the exit.
	require.Nil(t, toJSON(sentResult{}))
	require.Nil(t, toJSON(quitResult{}))
	// /allow and /block by the node's EventAllowed and EventBlocked.
	require.Nil(t, toJSON(allowedResult{}))
	require.Nil(t, toJSON(blockedResult{}))
	require.Nil(t, toJSON(nil))
}

func TestJSONTimeParsesAsRFC3339(t *testing.T) {
	ts := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	got, err := time.Parse(time.RFC3339, jsonTime(ts))
	require.NoError(t, err)
	require.True(t, got.Equal(ts))
	require.Empty(t, jsonTime(time.Time{}))
}
