package chat

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
	"github.com/stretchr/testify/require"
)

func TestPresenceOfflineAfterKill(t *testing.T) {
	r := newRendezvous(t)
	alice := newNode(t, r, "alice", "")
	bob := newNode(t, r, "bob", "")
	m := send(t, bob, "alice", "hi")
	bob.rec.wait(t, 10*time.Second, isDelivered(m.ID))
	alice.rec.wait(t, 5*time.Second, isPresence("bob", true))

	// Kill: the host goes away without unregistering.
	start := time.Now()
	require.NoError(t, bob.h.Close())
	alice.rec.wait(t, 5*time.Second, isPresence("bob", false))
	t.Logf("offline after %s", time.Since(start))
	require.Empty(t, alice.Peers())

	// A message to the dead peer stays pending.
	m2 := send(t, alice, "bob", "are you there?")
	require.Equal(t, StatusPending, m2.Status)
}

// A peer that stops answering (its network cut) goes offline after
// PingTimeout even though its connection stays up.
func TestPresenceOfflineWhenPeerGoesSilent(t *testing.T) {
	alice := newNode(t, nil, "alice", "", func(c *testConfig) {
		c.PingInterval, c.PingTimeout = 100*time.Millisecond, 500*time.Millisecond
	})
	raw := rawPeer(t)
	s := rawStream(t, raw, alice.Node)
	defer s.Reset()
	_, err := s.Write(encode(t, helloF("silent")))
	require.NoError(t, err)
	alice.rec.wait(t, 5*time.Second, isPresence(raw.ID().String(), true))
	start := time.Now()
	// The raw peer never answers the pings.
	alice.rec.wait(t, 3*alice.cfg.PingTimeout, isPresence(raw.ID().String(), false))
	took := time.Since(start)
	t.Logf("offline after %s (ping timeout %s)", took, alice.cfg.PingTimeout)
	require.GreaterOrEqual(t, took, alice.cfg.PingTimeout-alice.cfg.PingInterval)
	require.Equal(t, network.Connected, alice.h.Network().Connectedness(raw.ID()), "the connection itself stayed up")
}

// Room members show up online (with their nick) without any message, and
// a node can join several rooms and leave one.
func TestRoomPresenceAndJoin(t *testing.T) {
	r := newRendezvous(t)
	carol := newNode(t, r, "carol", "", func(c *testConfig) { c.Room = "dev" })
	alice := newNode(t, r, "alice", "")
	require.Equal(t, DefaultRoom, alice.Room())
	require.NoError(t, alice.Join(context.Background(), "dev"))
	require.Equal(t, "dev", alice.Room())
	alice.rec.wait(t, 10*time.Second, isPresence("carol", true))
	carol.rec.wait(t, 10*time.Second, isPresence("alice", true))
	require.Eventually(t, func() bool {
		peers := alice.Peers()
		return len(peers) == 1 && peers[0].Nick == "carol" && peers[0].RTT > 0
	}, 10*time.Second, 50*time.Millisecond, "carol listed with a round-trip time")
	require.Error(t, alice.Join(context.Background(), "bad room"))

	// Carol moves to another room: alice, who never talked to her, shows
	// her offline once and forgets her (her stream closed, no reconnect).
	require.NoError(t, carol.Join(context.Background(), "elsewhere"))
	require.NoError(t, carol.Leave(context.Background(), "dev"))
	alice.rec.wait(t, 10*time.Second, isPresence("carol", false))
	require.Eventually(t, func() bool { return len(alice.Peers()) == 0 }, 10*time.Second, 20*time.Millisecond, "still listed: %v", alice.Peers())
	require.Eventually(t, func() bool { return alice.peers.streamCount(carol.ID()) == 0 }, 10*time.Second, 20*time.Millisecond)
	// The daemon's watch tells alice that carol left the namespace. That
	// event and the end of carol's stream travel separately, so the
	// presence above can come first: wait for the watch's.
	stillMember := func() (regs bool) {
		alice.peers.call(func() {
			if ps, ok := alice.peers.peers[carol.ID()]; ok {
				regs = len(ps.regs) > 0
			}
		})
		return regs
	}
	require.Eventually(t, func() bool { return !stillMember() }, 10*time.Second, 20*time.Millisecond, "carol still tracked as a room member")
	// Nothing makes alice dial carol again: she is not tracked as a room
	// member any more (a retry scan leaves her alone).
	var dialing bool
	alice.peers.call(func() {
		alice.peers.scan(time.Now())
		if ps, ok := alice.peers.peers[carol.ID()]; ok {
			dialing = ps.dialing
		}
	})
	require.False(t, dialing, "alice dials carol again")
}

// Attack 6: a record can aim a node's dials at someone else's ports. The
// node keeps at most maxDialAddrs addresses of a record, and a
// re-registration does not reset its dial backoff.
func TestRegistrationsCannotAimDials(t *testing.T) {
	alice := newNode(t, nil, "alice", "")
	raw := rawPeer(t)
	var addrs []multiaddr.Multiaddr
	for i := range 1000 {
		addrs = append(addrs, multiaddr.StringCast(fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", 20000+i)))
	}
	ai := peer.AddrInfo{ID: raw.ID(), Addrs: addrs}
	alice.peers.registered(roomNS("lobby"), ai)
	require.Eventually(t, func() bool {
		var next time.Time
		alice.peers.call(func() { next = alice.peers.peer(raw.ID()).nextTry })
		return !next.IsZero()
	}, 10*time.Second, 10*time.Millisecond, "the dial never failed")
	require.LessOrEqual(t, len(alice.h.Peerstore().Addrs(raw.ID())), maxDialAddrs)
	var before, after time.Time
	alice.peers.call(func() { before = alice.peers.peer(raw.ID()).nextTry })
	alice.peers.registered(roomNS("lobby"), ai)
	alice.peers.call(func() { after = alice.peers.peer(raw.ID()).nextTry })
	require.Equal(t, before, after, "a re-registration reset the dial backoff")
}

// A peer with a live chat stream is tagged in the connection manager, so
// that trimming closes other connections first (a GossipSub mesh link is
// worth 20), and untagged once its last stream ended.
func TestChatPeersTaggedInConnManager(t *testing.T) {
	r := newRendezvous(t)
	alice := newNode(t, r, "alice", "")
	bob := newNode(t, r, "bob", "")
	m := send(t, bob, "alice", "hi")
	bob.rec.wait(t, 10*time.Second, isDelivered(m.ID))
	tag := func(n *tnode, p peer.ID) int {
		info := n.h.ConnManager().GetTagInfo(p)
		if info == nil {
			return 0
		}
		return info.Tags[chatConnTag]
	}
	require.Eventually(t, func() bool { return tag(alice, bob.ID()) == chatConnValue && tag(bob, alice.ID()) == chatConnValue },
		10*time.Second, 10*time.Millisecond, "tags: alice %d, bob %d", tag(alice, bob.ID()), tag(bob, alice.ID()))
	require.Zero(t, tag(alice, r.info.ID), "the daemon holds no chat stream")

	require.NoError(t, bob.h.Close())
	alice.rec.wait(t, 10*time.Second, isPresence("bob", false))
	require.Eventually(t, func() bool { return tag(alice, bob.ID()) == 0 }, 10*time.Second, 10*time.Millisecond)
}

// A burst of sends to many unreachable peers starts at most maxChatDials
// dials at once: the rest wait for a free slot instead of all starting
// handshakes that would then time out together. Here every peer's address
// is a tarpit that accepts TCP and never speaks, so a dial holds its slot
// until the swarm gives up on the address (5 s for a local one): the
// connection after the first maxChatDials comes only then.
func TestChatDialsBounded(t *testing.T) {
	alice := newNode(t, nil, "alice", "")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	var mu sync.Mutex
	var held []net.Conn
	var at []time.Time
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held, at = append(held, c), append(at, time.Now())
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	}()
	tarpit := multiaddr.StringCast(fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", ln.Addr().(*net.TCPAddr).Port))
	const peers = maxChatDials + 8
	ids := make([]peer.ID, peers)
	for i := range ids {
		_, pub, err := crypto.GenerateEd25519Key(nil)
		require.NoError(t, err)
		ids[i], err = peer.IDFromPublicKey(pub)
		require.NoError(t, err)
		alice.h.Peerstore().AddAddr(ids[i], tarpit, time.Hour)
	}
	for _, p := range ids {
		send(t, alice, p.String(), "anyone there?")
	}
	// The next connection comes only once a slot is free again: after a
	// dial gave up.
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(held) > maxChatDials
	}, 30*time.Second, 10*time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	require.GreaterOrEqual(t, at[maxChatDials].Sub(at[0]), 4*time.Second, "dial %d started before a slot was free", maxChatDials+1)
}
