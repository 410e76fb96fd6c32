package chat

import (
	"encoding/json"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
	"github.com/stretchr/testify/require"
)

// TestReusableListenAddrs: a port-0 address gets the port kept last time
// when it is free, port 0 when it is taken; other addresses stay as asked.
func TestReusableListenAddrs(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	dir := t.TempDir()
	file := filepath.Join(dir, listenFileName)
	want := []multiaddr.Multiaddr{multiaddr.StringCast("/ip4/127.0.0.1/tcp/0"), multiaddr.StringCast("/ip4/127.0.0.1/udp/0/quic-v1")}
	require.Equal(t, want, reusableListenAddrs(file, want, log), "no file: as asked")

	h, err := newHostReusingPorts([]libp2p.Option{libp2p.DisableRelay()}, want, file, log)
	require.NoError(t, err)
	first := h.Network().ListenAddresses()
	require.NoError(t, h.Close())
	got := reusableListenAddrs(file, want, log)
	require.Len(t, got, 2)
	for i := range got {
		require.True(t, got[i].Equal(first[i]) || got[i].Equal(first[1-i]), "the kept port again: %s vs %v", got[i], first)
	}

	// The TCP port taken by someone else: back to port 0 for it.
	port, err := first[0].ValueForProtocol(multiaddr.P_TCP)
	if err != nil {
		port, err = first[1].ValueForProtocol(multiaddr.P_TCP)
	}
	require.NoError(t, err)
	l, err := net.Listen("tcp", "127.0.0.1:"+port)
	require.NoError(t, err)
	defer l.Close()
	got = reusableListenAddrs(file, want, log)
	require.Contains(t, got, multiaddr.StringCast("/ip4/127.0.0.1/tcp/0"))

	// Junk in the file is ignored.
	require.NoError(t, os.WriteFile(file, []byte("not a multiaddr\n/dns4/x/tcp/1\n"), 0o600))
	require.Equal(t, want, reusableListenAddrs(file, want, log))
}

// TestKeptPeersBounded: peers.json keeps at most maxKeptPeers entries and
// only records whose signatures verify come back.
func TestKeptPeersBounded(t *testing.T) {
	file := filepath.Join(t.TempDir(), PeersFileName)
	h := pexHost(t)
	rec := ownRecord(h)
	var kept []keptPeer
	for range maxKeptPeers + 10 {
		kept = append(kept, keptPeer{Kind: PexRendezvous, Source: "test", Record: rec})
	}
	require.NoError(t, saveKeptPeers(file, kept))
	var onDisk []keptPeer
	b, err := os.ReadFile(file)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &onDisk))
	require.Len(t, onDisk, maxKeptPeers)

	bad := append([]byte(nil), rec...)
	bad[len(bad)-1] ^= 1
	other := pexHost(t)
	require.NoError(t, saveKeptPeers(file, []keptPeer{
		{Kind: PexRendezvous, Record: bad},
		{Kind: 0, Record: ownRecord(other)}, // a plain peer
		{Kind: PexRendezvous, Record: rec},
	}))
	got := loadKeptPeers(file, "")
	require.Len(t, got, 2, "the forged record is dropped")
	require.Equal(t, PexDHT, got[0].Kind)
	require.Equal(t, other.ID(), got[0].Peer.ID)
	require.Len(t, loadKeptPeers(file, other.ID()), 1, "self is left out")

	require.NoError(t, os.WriteFile(file, []byte("{broken"), 0o600))
	require.Empty(t, loadKeptPeers(file, ""))
}

// TestKeptRetryBackoff: a kept peer that stays down is tried at once, then
// not again before its wait, which doubles.
func TestKeptRetryBackoff(t *testing.T) {
	l := &learner{next: map[peer.ID]time.Time{}, wait: map[peer.ID]time.Duration{}}
	p := peer.ID("x")
	require.True(t, l.due(p))
	require.False(t, l.due(p), "not again before keptRetryEvery")
	require.Equal(t, keptRetryEvery, l.wait[p])
	l.next[p] = time.Now().Add(-time.Second)
	require.True(t, l.due(p))
	require.Equal(t, 2*keptRetryEvery, l.wait[p])
	for range 20 {
		l.next[p] = time.Time{}
		l.due(p)
	}
	require.Equal(t, maxKeptBackoff, l.wait[p])
}
