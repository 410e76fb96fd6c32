package chat

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/p2p/host/eventbus"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	circuitproto "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/proto"

	"github.com/p2p-messaging/p2p-messaging/internal/addrfile"
	"github.com/p2p-messaging/p2p-messaging/rendezvous"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"
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

// TestEmbeddedAddrFile: the first chat on a machine writes the addrs file
// with its embedded server's addresses, a second chat given that file (as
// cmd/chat reads it) uses that server and finds the first by nick, does not
// take the file over while its holder lives, and the file goes with the
// first chat.
func TestEmbeddedAddrFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "rendezvous", "addrs")
	open := func(nick string, sc ServeConfig, given ...peer.AddrInfo) *Peer {
		p, err := Open(HostConfig{ListenAddrs: []multiaddr.Multiaddr{multiaddr.StringCast("/ip4/127.0.0.1/tcp/0")}},
			Config{Nick: nick, DataDir: t.TempDir(), Rendezvous: given, Serve: sc})
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		require.NoError(t, p.Start(ctx))
		return p
	}
	alice := open("alice", ServeConfig{Mode: EmbedAuto, AddrFile: file})
	addrs, err := addrfile.Read(file)
	require.NoError(t, err)
	infos, err := peer.AddrInfosFromP2pAddrs(addrs...)
	require.NoError(t, err)
	require.Len(t, infos, 1)
	require.Equal(t, alice.Embedded.Host.ID(), infos[0].ID)

	bob := open("bob", ServeConfig{Mode: EmbedAuto, AddrFile: file, Sources: []string{"addrs file"}, AddrFileHolders: []peer.ID{infos[0].ID}}, infos...)
	defer bob.Close()
	var found bool
	for _, s := range bob.Servers() {
		if s.Peer == infos[0].ID {
			found = true
			require.Equal(t, ServerChat, s.Kind, "a chat's service, even from the addrs file")
			require.False(t, s.Authority)
			require.Equal(t, "addrs file", s.Source)
		}
	}
	require.True(t, found, "bob uses alice's service: %+v", bob.Servers())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	w, err := bob.Whois(ctx, "alice")
	require.NoError(t, err)
	require.Equal(t, alice.ID(), w.Peer)
	still, err := addrfile.Read(file)
	require.NoError(t, err)
	require.True(t, sameAddrList(addrs, still), "bob leaves the live holder's file alone")

	require.NoError(t, alice.Close())
	_, err = os.Stat(file)
	require.ErrorIs(t, err, os.ErrNotExist, "the file goes with its holder")
}

// TestServeRelay: -serve runs the relay (with the daemon's ACL) and the
// DHT server on the embedded host, even with a daemon reachable.
func TestServeRelay(t *testing.T) {
	p, err := Open(HostConfig{ListenAddrs: []multiaddr.Multiaddr{multiaddr.StringCast("/ip4/127.0.0.1/tcp/0")}, Reachability: ReachabilityPublic},
		Config{Nick: "server", DataDir: t.TempDir(), Serve: ServeConfig{Mode: EmbedServe}})
	require.NoError(t, err)
	defer p.Close()
	require.NotNil(t, p.Embedded)
	require.True(t, p.Embedded.Relay)
	require.Equal(t, dht.ModeServer, p.Embedded.DHT.Mode())
	require.Eventually(t, func() bool {
		return slices.Contains(p.Embedded.Host.Mux().Protocols(), circuitproto.ProtoIDv2Hop)
	}, 10*time.Second, 20*time.Millisecond, "the relay service runs on the embedded host")
	// A client reserves a slot through the relay.
	c := pexHost(t)
	require.NoError(t, c.Connect(context.Background(), p.Embedded.Info()))
	_, err = client.Reserve(context.Background(), c, p.Embedded.Info())
	require.NoError(t, err)
}

// TestLearnServers: while running, a chat adds a daemon that appears in
// the local addrs file (an authority: the machine's configuration) and the
// servers another chat tells it about (never authorities); its kept
// registrations reach them.
func TestLearnServers(t *testing.T) {
	alice := openEmbedded(t, t.TempDir(), "alice")
	defer alice.Close()
	bob := openEmbedded(t, t.TempDir(), "bob")
	defer bob.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// A daemon starts on the machine and writes the addrs file.
	d := newRendezvous(t)
	file := filepath.Join(t.TempDir(), "addrs")
	addrs, err := peer.AddrInfoToP2pAddrs(&d.info)
	require.NoError(t, err)
	require.NoError(t, addrfile.Write(file, addrs))
	alice.checkAddrFile(ctx, file)
	byPeer := func(p *Peer, id peer.ID) (ServerInfo, bool) {
		for _, s := range p.Servers() {
			if s.Peer == id {
				return s, true
			}
		}
		return ServerInfo{}, false
	}
	s, ok := byPeer(alice, d.info.ID)
	require.True(t, ok, "alice uses the new daemon: %+v", alice.Servers())
	require.Equal(t, ServerDaemon, s.Kind)
	require.True(t, s.Authority, "the addrs file is the machine's configuration")
	require.Eventually(t, func() bool {
		return d.srv.Registrations() >= 2 // alice's nick and room
	}, 20*time.Second, 50*time.Millisecond, "alice's registrations reach the daemon")

	// bob meets alice: alice asks him which servers he knows.
	require.NoError(t, bob.Host.Connect(ctx, selfInfo(alice)))
	require.Eventually(t, func() bool {
		_, ok := byPeer(alice, bob.Embedded.Host.ID())
		return ok
	}, 20*time.Second, 50*time.Millisecond, "alice learnt bob's service by peer exchange")
	s, _ = byPeer(alice, bob.Embedded.Host.ID())
	require.Equal(t, ServerChat, s.Kind)
	require.False(t, s.Authority)
	require.Equal(t, "peer exchange via "+bob.ID().String(), s.Source)
	// And a nick only bob's service lists stays unverified.
	w, err := alice.Whois(ctx, "bob")
	require.NoError(t, err)
	require.Equal(t, bob.ID(), w.Peer)
	require.False(t, w.Verified)
	// Kept for the next start (written just after the server is added).
	require.Eventually(t, func() bool {
		for _, e := range loadKeptPeers(filepath.Join(alice.cfg.DataDir, PeersFileName), alice.ID()) {
			if e.Peer.ID == bob.Embedded.Host.ID() {
				return true
			}
		}
		return false
	}, 10*time.Second, 20*time.Millisecond, "bob's service is kept in peers.json")
}

// TestRestartFromKeptPeers: carol, given only bob, learnt his and alice's
// services; restarted with nothing given and alice gone, she starts from
// what she kept on disk: bob's service, where she finds bob by nick.
func TestRestartFromKeptPeers(t *testing.T) {
	alice := openEmbedded(t, t.TempDir(), "alice")
	bob := openEmbedded(t, t.TempDir(), "bob", selfInfo(alice))
	defer bob.Close()
	carolDir := t.TempDir()
	carol := openEmbedded(t, carolDir, "carol", selfInfo(bob))
	require.NoError(t, carol.Close())
	require.NoError(t, alice.Close())

	carol = openEmbedded(t, carolDir, "carol")
	defer carol.Close()
	var fromDisk []ServerInfo
	for _, s := range carol.Servers() {
		if s.Source == "kept on disk" {
			fromDisk = append(fromDisk, s)
		}
		require.NotEqual(t, alice.Embedded.Host.ID(), s.Peer, "alice's service is gone: not in use")
	}
	require.Len(t, fromDisk, 1, "bob's service, from disk: %+v", carol.Servers())
	require.Equal(t, bob.Embedded.Host.ID(), fromDisk[0].Peer)
	require.False(t, fromDisk[0].Authority)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	w, err := carol.Whois(ctx, "bob")
	require.NoError(t, err)
	require.Equal(t, bob.ID(), w.Peer)
}

// TestDeadDaemonThenBack: given a daemon that is down, the chat starts all
// the same on its own service, says so in one line without libp2p's dial
// errors, and registers on the daemon when it comes back.
func TestDeadDaemonThenBack(t *testing.T) {
	key, _, err := crypto.GenerateEd25519Key(nil)
	require.NoError(t, err)
	probe, err := libp2p.New(libp2p.Identity(key), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	require.NoError(t, err)
	daemon := peer.AddrInfo{ID: probe.ID(), Addrs: probe.Addrs()}
	require.NoError(t, probe.Close())

	dir := t.TempDir()
	p, err := Open(HostConfig{ListenAddrs: []multiaddr.Multiaddr{multiaddr.StringCast("/ip4/127.0.0.1/tcp/0")}},
		Config{Nick: "alice", DataDir: dir, Rendezvous: []peer.AddrInfo{daemon}, Serve: ServeConfig{Mode: EmbedAuto, Sources: []string{"flag"}}})
	require.NoError(t, err)
	defer p.Close()
	rec := newRecorder(p.Events())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, p.Start(ctx))
	rec.wait(t, 10*time.Second, func(e Event) bool { _, ok := e.(EventReady); return ok })
	var notes []string
	for _, e := range rec.all() {
		if w, ok := e.(EventWarning); ok {
			notes = append(notes, w.Text)
		}
	}
	require.Equal(t, []string{"no rendezvous daemon reachable: serving rendezvous from this chat"}, notes)
	var s ServerInfo
	for _, x := range p.Servers() {
		if x.Peer == daemon.ID {
			s = x
		}
	}
	require.True(t, s.Authority, "the configured daemon stays in use: %+v", p.Servers())
	require.False(t, s.Reachable)

	// The daemon returns at its address.
	h, err := libp2p.New(libp2p.Identity(key), libp2p.ListenAddrs(daemon.Addrs...), libp2p.ForceReachabilityPublic())
	require.NoError(t, err)
	defer h.Close()
	lim := rendezvous.DefaultLimits()
	lim.ClaimDifficulty, lim.ClaimBurst = 8, 1000
	srv, err := rendezvous.NewServer(h, rendezvous.WithLimits(lim), rendezvous.WithExclusivePrefix(UserNamespacePrefix))
	require.NoError(t, err)
	defer srv.Close()
	require.Eventually(t, func() bool { return srv.Registrations() >= 2 }, 40*time.Second, 100*time.Millisecond,
		"the chat registers its nick and room on the daemon once it is back")
	require.NoError(t, p.Close())
	<-rec.done
}

// TestLearnBounded: servers learnt from other chats are capped at
// maxLearnt, so a hostile chat cannot fill the list.
func TestLearnBounded(t *testing.T) {
	alice := openEmbedded(t, t.TempDir(), "alice")
	defer alice.Close()
	alice.srv.mu.Lock()
	for range maxLearnt {
		k, _, err := crypto.GenerateEd25519Key(nil)
		require.NoError(t, err)
		id, err := peer.IDFromPrivateKey(k)
		require.NoError(t, err)
		alice.srv.servers = append(alice.srv.servers, ServerInfo{Peer: id, Kind: ServerChat, Source: "test"})
	}
	alice.srv.mu.Unlock()
	bob := openEmbedded(t, t.TempDir(), "bob")
	defer bob.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, alice.Host.Connect(ctx, selfInfo(bob)))
	alice.learnFrom(ctx, bob.ID())
	for _, s := range alice.Servers() {
		require.NotEqual(t, bob.Embedded.Host.ID(), s.Peer, "no room for a fifth learnt server")
	}
	require.Len(t, alice.Servers(), 1+maxLearnt)
}

// TestRecordBookBounded: the signed records kept from identify are capped.
func TestRecordBookBounded(t *testing.T) {
	// A bus of its own: the host's services also read identify events and
	// expect a real connection in them.
	bus := eventbus.NewBus()
	b, err := newRecordBook(bus)
	require.NoError(t, err)
	defer b.close()
	addrs := []multiaddr.Multiaddr{multiaddr.StringCast("/ip4/127.0.0.1/tcp/1")}
	em, err := bus.Emitter(new(event.EvtPeerIdentificationCompleted))
	require.NoError(t, err)
	defer em.Close()
	var last peer.ID
	for range maxRecords + 20 {
		k, _, err := crypto.GenerateEd25519Key(nil)
		require.NoError(t, err)
		id, err := peer.IDFromPrivateKey(k)
		require.NoError(t, err)
		env, err := record.Seal(peer.PeerRecordFromAddrInfo(peer.AddrInfo{ID: id, Addrs: addrs}), k)
		require.NoError(t, err)
		require.NoError(t, em.Emit(event.EvtPeerIdentificationCompleted{Peer: id, SignedPeerRecord: env}))
		last = id
	}
	wctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NotNil(t, b.wait(wctx, last))
	b.mu.Lock()
	n := len(b.recs)
	b.mu.Unlock()
	require.LessOrEqual(t, n, maxRecords)
}

// TestStaleAddrFileNoAuthority: an addrs file left by a chat's service
// that is down when a chat starts is taken for a daemon only until that
// service is back and identify shows what it is: it never verifies a nick.
func TestStaleAddrFileNoAuthority(t *testing.T) {
	aliceDir := t.TempDir()
	alice := openEmbedded(t, aliceDir, "alice")
	stale := alice.Embedded.Info()
	stale.Addrs = loopbackFirst(stale.Addrs)
	require.NoError(t, alice.Close())

	bob, err := Open(HostConfig{ListenAddrs: []multiaddr.Multiaddr{multiaddr.StringCast("/ip4/127.0.0.1/tcp/0")}},
		Config{Nick: "bob", DataDir: t.TempDir(), Rendezvous: []peer.AddrInfo{stale},
			Serve: ServeConfig{Mode: EmbedAuto, Sources: []string{"addrs file"}}})
	require.NoError(t, err)
	defer bob.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, bob.Start(ctx))

	alice = openEmbedded(t, aliceDir, "alice") // same key, same ports
	defer alice.Close()
	require.Equal(t, stale.ID, alice.Embedded.Host.ID())
	require.Eventually(t, func() bool {
		for _, s := range bob.Servers() {
			if s.Peer == stale.ID {
				return s.Reachable && s.Kind == ServerChat && !s.Authority
			}
		}
		return false
	}, 40*time.Second, 50*time.Millisecond, "alice's service is back, and known for a chat's: %+v", bob.Servers())
	require.False(t, bob.srv.authority(bob.Host.Peerstore(), stale.ID))
	require.Eventually(t, func() bool {
		w, err := bob.Whois(ctx, "alice")
		return err == nil && w.Peer == alice.ID() && !w.Verified
	}, 20*time.Second, 100*time.Millisecond, "found, unverified")
}

// TestKeptPeerReturns: carol restarts while bob is down; what she kept
// stays on disk, and once bob is back her retry reaches him and his
// service, where she finds him by nick.
func TestKeptPeerReturns(t *testing.T) {
	bobDir, carolDir := t.TempDir(), t.TempDir()
	bob := openEmbedded(t, bobDir, "bob")
	bobService := bob.Embedded.Host.ID()
	carol := openEmbedded(t, carolDir, "carol", selfInfo(bob))
	require.NoError(t, carol.Close())
	require.NoError(t, bob.Close())

	carol = openEmbedded(t, carolDir, "carol")
	defer carol.Close()
	kept := loadKeptPeers(filepath.Join(carolDir, PeersFileName), carol.ID())
	var ids []peer.ID
	for _, e := range kept {
		ids = append(ids, e.Peer.ID)
	}
	require.Contains(t, ids, bobService, "a kept server that is down stays kept")

	bob = openEmbedded(t, bobDir, "bob") // same keys, same ports
	defer bob.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	carol.retryKept(ctx)
	require.Eventually(t, func() bool { return carol.usesServer(bobService) }, 20*time.Second, 50*time.Millisecond,
		"carol uses bob's service again: %+v", carol.Servers())
	require.Eventually(t, func() bool {
		w, err := carol.Whois(ctx, "bob")
		return err == nil && w.Peer == bob.ID()
	}, 20*time.Second, 100*time.Millisecond)
}
