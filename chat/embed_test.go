package chat

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
	"github.com/stretchr/testify/require"
)

// openEmbedded opens a chat as cmd/chat does (the start-up, an embedded
// server when no daemon is reachable) on loopback, given peers.
func openEmbedded(t *testing.T, dir, nick string, given ...peer.AddrInfo) *Peer {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	if os.Getenv("EMBED_DEBUG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	p, err := Open(HostConfig{
		ListenAddrs: []multiaddr.Multiaddr{multiaddr.StringCast("/ip4/127.0.0.1/tcp/0")},
		Logger:      log,
	}, Config{
		Nick: nick, DataDir: dir, Rendezvous: given, Logger: log,
		Serve: ServeConfig{Mode: EmbedAuto},
	})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, p.Start(ctx))
	return p
}

func selfInfo(p *Peer) peer.AddrInfo { return peer.AddrInfo{ID: p.ID(), Addrs: p.Host.Addrs()} }

// TestEmbeddedChain: alice serves rendezvous herself; bob given alice
// learns her service by peer exchange; carol given bob learns it from bob
// and finds alice by nick, unverified.
func TestEmbeddedChain(t *testing.T) {
	alice := openEmbedded(t, t.TempDir(), "alice")
	defer alice.Close()
	require.NotNil(t, alice.Embedded)
	bob := openEmbedded(t, t.TempDir(), "bob", selfInfo(alice))
	defer bob.Close()
	kinds := func(p *Peer) map[peer.ID]ServerKind {
		m := map[peer.ID]ServerKind{}
		for _, s := range p.Servers() {
			m[s.Peer] = s.Kind
		}
		return m
	}
	require.Equal(t, ServerChat, kinds(bob)[alice.Embedded.Host.ID()], "bob uses alice's service: %v", bob.Servers())
	entries := bob.pexKnown()
	var ids []peer.ID
	for _, e := range entries {
		ids = append(ids, e.Peer.ID)
	}
	require.Contains(t, ids, alice.Embedded.Host.ID(), "bob tells about alice's service")
	require.Contains(t, ids, bob.Embedded.Host.ID(), "and his own")

	carol := openEmbedded(t, t.TempDir(), "carol", selfInfo(bob))
	defer carol.Close()
	require.Equal(t, ServerChat, kinds(carol)[alice.Embedded.Host.ID()], "carol learnt alice's service from bob: %v", carol.Servers())
	for _, s := range carol.Servers() {
		require.False(t, s.Authority, "no chat's service is an authority: %+v", s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	w, err := carol.Whois(ctx, "alice")
	require.NoError(t, err)
	require.Equal(t, alice.ID(), w.Peer)
	require.False(t, w.Verified, "a chat's service does not verify a nick")
	require.False(t, w.Pinned)
}
