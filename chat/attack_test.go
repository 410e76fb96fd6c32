package chat

import (
	"context"
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-msgio/pbio"
	"github.com/multiformats/go-multiaddr"
	"github.com/stretchr/testify/require"

	"github.com/p2p-messaging/p2p-messaging/chat/pb"
	"github.com/p2p-messaging/p2p-messaging/rendezvous"
)

// The attacks of issue 13 on the chat, each reproduced against real nodes
// on loopback.

func randID(t testing.TB) []byte {
	t.Helper()
	b := make([]byte, IDLen)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return b
}

// pinnedTo lists the nicks n has pinned to p.
func pinnedTo(t *testing.T, n *tnode, p peer.ID) []string {
	t.Helper()
	cs, err := n.db.contacts()
	require.NoError(t, err)
	var out []string
	for _, c := range cs {
		if c.Peer == p {
			out = append(out, c.Nick)
		}
	}
	return out
}

// Attack 1: a peer opens many streams, each claiming another nick, so the
// victim's look-ups at its daemon are refused (E_UNAVAILABLE); the victim
// used to take that for "no daemon answers" and trust the Hellos on first
// use. Now a refused look-up leaves the claim unverified, and one peer
// makes the victim look up at most maxClaimsPerPeer nicks.
func TestClaimStormPinsNothing(t *testing.T) {
	lim := rendezvous.DefaultLimits()
	lim.RequestRate, lim.RequestBurst = 0.5, 12 // the victim's allowance runs out quickly
	r := newRendezvous(t, rendezvous.WithLimits(lim))
	victim := newNode(t, r, "victim", "")
	dave := newNode(t, r, "dave", "")
	raw := rawPeer(t)
	const claims = 40
	for i := range claims {
		nick := fmt.Sprintf("n%d", i)
		if i == claims-1 {
			nick = "dave"
		}
		s := rawStream(t, raw, victim.Node)
		_, err := s.Write(encode(t, helloF(nick), msgF(randID(t), "claim "+nick)))
		require.NoError(t, err)
		var f pb.Frame
		require.NoError(t, pbio.NewDelimitedReader(s, MaxFrameSize).ReadMsg(&f)) // the victim's Hello
		s.Reset()
	}
	// Every claim was decided (a warning each), none pinned.
	victim.rec.wait(t, 20*time.Second, func(e Event) bool {
		w, ok := e.(EventWarning)
		return ok && w.Nick == "dave" && w.Peer == raw.ID()
	})
	require.Empty(t, pinnedTo(t, victim, raw.ID()), "a claimed nick was pinned to the attacker")
	// The real dave is dave to the victim (once its allowance refilled).
	var m Message
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var err error
		m, err = victim.Send(ctx, "dave", "hi dave")
		return err == nil
	}, 40*time.Second, 100*time.Millisecond)
	require.Equal(t, dave.ID(), m.Peer)
	dave.rec.wait(t, 10*time.Second, isMessage("hi dave"))
}

// Attack 2: with several daemons, one daemon's word used to win: nina
// registers on daemon 1 only, the attacker registers user/nina on daemon
// 2, and a victim using both pinned nina to the attacker. Now the
// disagreement is a conflict naming both peers, and nothing is pinned.
func TestDaemonsDisagreeIsAConflict(t *testing.T) {
	d1, d2 := newRendezvous(t), newRendezvous(t)
	nina := newNode(t, d1, "nina", "")
	impostor := newNode(t, d2, "nina", "")
	victim := newNode(t, nil, "victim", "", func(c *testConfig) {
		c.Rendezvous = []peer.AddrInfo{d1.info, d2.info}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := victim.Send(ctx, "nina", "which nina?")
	require.ErrorContains(t, err, "disagree")
	require.Empty(t, pinnedTo(t, victim, impostor.ID()))
	require.Empty(t, pinnedTo(t, victim, nina.ID()))

	// The impostor's Hello is not verified either.
	_, err = impostor.Send(ctx, victim.ID().String(), "it is me, nina")
	require.NoError(t, err)
	w := victim.rec.wait(t, 10*time.Second, func(e Event) bool {
		w, ok := e.(EventWarning)
		return ok && w.Nick == "nina"
	}).(EventWarning)
	require.Contains(t, w.Text, nina.ID().String())
	require.Contains(t, w.Text, impostor.ID().String())
	req := victim.rec.wait(t, 10*time.Second, isRequest("it is me, nina")).(EventRequest)
	require.Equal(t, impostor.ID().String(), req.Nick, "shown by peer ID")
	require.Empty(t, pinnedTo(t, victim, impostor.ID()))
}

// barrier sends a Ping on s and reads until its Pong: every frame written
// before it has been handled by the node's reader.
func barrier(t *testing.T, s network.Stream, r pbio.ReadCloser, nonce uint64) (acks int) {
	t.Helper()
	_, err := s.Write(encode(t, &pb.Frame{Body: &pb.Frame_Ping{Ping: &pb.Ping{Nonce: nonce}}}))
	require.NoError(t, err)
	for {
		var f pb.Frame
		require.NoError(t, r.ReadMsg(&f))
		if f.GetAck() != nil {
			acks++
		}
		if f.GetPong().GetNonce() == nonce {
			return acks
		}
	}
}

// Attack 5: a stranger (no verified nick, never written to) floods
// messages. Only its first message is kept, as its request; nothing
// reaches the history or the message events.
func TestStrangerFloodStoresOneRequest(t *testing.T) {
	victim := newNode(t, nil, "victim", "", func(c *testConfig) { c.PingTimeout = time.Minute })
	raw := rawPeer(t)
	s := rawStream(t, raw, victim.Node)
	defer s.Reset()
	r := pbio.NewDelimitedReader(s, MaxFrameSize)
	var f pb.Frame
	_, err := s.Write(encode(t, helloF("flood")))
	require.NoError(t, err)
	require.NoError(t, r.ReadMsg(&f))
	const n = 150 // under the receive burst: the gate, not the rate, stops them
	var frames []*pb.Frame
	for i := range n {
		frames = append(frames, msgF(randID(t), fmt.Sprintf("buy now %d", i)))
	}
	_, err = s.Write(encode(t, frames...))
	require.NoError(t, err)
	barrier(t, s, r, 1)
	require.NoError(t, victim.db.flush())
	acks := barrier(t, s, r, 2)
	_ = acks
	reqs, err := victim.Requests()
	require.NoError(t, err)
	require.Len(t, reqs, 1)
	require.Equal(t, "buy now 0", reqs[0].Text)
	h, err := victim.History(raw.ID().String(), 0)
	require.NoError(t, err)
	require.Empty(t, h)
	require.Zero(t, victim.rec.count(func(e Event) bool { _, ok := e.(EventMessage); return ok }))
	require.Equal(t, 1, victim.rec.count(func(e Event) bool { _, ok := e.(EventRequest); return ok }))
}

// Many strangers: the requests are bounded, the oldest dropped.
func TestRequestsAreBounded(t *testing.T) {
	victim := newNode(t, nil, "victim", "", func(c *testConfig) { c.MaxRequests = 5 })
	for i := range 8 {
		raw := rawPeer(t)
		s := rawStream(t, raw, victim.Node)
		r := pbio.NewDelimitedReader(s, MaxFrameSize)
		_, err := s.Write(encode(t, helloF("s"), msgF(randID(t), fmt.Sprintf("hello %d", i))))
		require.NoError(t, err)
		var f pb.Frame
		require.NoError(t, r.ReadMsg(&f)) // Hello
		require.NoError(t, r.ReadMsg(&f)) // the request's ack
		require.NotNil(t, f.GetAck())
		s.Reset()
	}
	reqs, err := victim.Requests()
	require.NoError(t, err)
	require.Len(t, reqs, 5)
	require.Equal(t, "hello 3", reqs[0].Text)
	require.Equal(t, "hello 7", reqs[4].Text)
}

// Every peer, contacts included, has a receive rate: beyond its burst,
// messages are not taken (not acknowledged), and the stream stays up.
func TestReceiveRateThrottlesAContact(t *testing.T) {
	victim := newNode(t, nil, "victim", "", func(c *testConfig) {
		c.ReceiveRate, c.ReceiveBurst = 0.001, 5
		c.PingTimeout = time.Minute
	})
	raw := rawPeer(t)
	_, err := victim.Allow(raw.ID().String())
	require.NoError(t, err)
	s := rawStream(t, raw, victim.Node)
	defer s.Reset()
	r := pbio.NewDelimitedReader(s, MaxFrameSize)
	var f pb.Frame
	_, err = s.Write(encode(t, helloF("fast")))
	require.NoError(t, err)
	require.NoError(t, r.ReadMsg(&f))
	var frames []*pb.Frame
	for i := range 20 {
		frames = append(frames, msgF(randID(t), fmt.Sprintf("m%d", i)))
	}
	_, err = s.Write(encode(t, frames...))
	require.NoError(t, err)
	acks := barrier(t, s, r, 1)
	require.NoError(t, victim.db.flush())
	acks += barrier(t, s, r, 2)
	require.Equal(t, 5, acks)
	h, err := victim.History(raw.ID().String(), 0)
	require.NoError(t, err)
	require.Len(t, h, 5)
}

// A peer's stored bytes are bounded: past its quota its messages are not
// taken, with a warning, and the disk does not fill.
func TestPeerQuota(t *testing.T) {
	victim := newNode(t, nil, "victim", "", func(c *testConfig) {
		c.PeerQuota = 10
		c.PingTimeout = time.Minute
	})
	raw := rawPeer(t)
	_, err := victim.Allow(raw.ID().String())
	require.NoError(t, err)
	s := rawStream(t, raw, victim.Node)
	defer s.Reset()
	r := pbio.NewDelimitedReader(s, MaxFrameSize)
	var f pb.Frame
	_, err = s.Write(encode(t, helloF("big")))
	require.NoError(t, err)
	require.NoError(t, r.ReadMsg(&f))
	var frames []*pb.Frame
	for range 5 {
		frames = append(frames, msgF(randID(t), "aaaa"))
	}
	_, err = s.Write(encode(t, frames...))
	require.NoError(t, err)
	barrier(t, s, r, 1)
	require.NoError(t, victim.db.flush())
	acks := barrier(t, s, r, 2)
	h, err := victim.History(raw.ID().String(), 0)
	require.NoError(t, err)
	require.Len(t, h, 2, "10 bytes hold two 4-byte texts")
	require.LessOrEqual(t, acks, 2)
	victim.rec.wait(t, 5*time.Second, func(e Event) bool {
		w, ok := e.(EventWarning)
		return ok && w.Peer == raw.ID()
	})
}

// Attack 10: "delivered" was reported twice for one message after a
// SIGKILL of the sender, because the lazily written delivered mark was lost
// after the event had gone out. Now the event follows the mark's commit.
func TestDeliveredOnceAcrossACrash(t *testing.T) {
	r := newRendezvous(t)
	dir := t.TempDir()
	alice := newNode(t, r, "alice", dir)
	bob := newNode(t, r, "bob", "")
	warm := send(t, alice, "bob", "warm-up")
	alice.rec.wait(t, 10*time.Second, isDelivered(warm.ID))

	releaseBob := holdWriter(t, bob.db) // bob cannot ack yet
	m := send(t, alice, "bob", "once")  // alice's pending record is committed
	releaseAlice := holdWriter(t, alice.db)
	releaseBob()
	// Bob's ack is in: the message left alice's outbox, its mark is queued.
	require.Eventually(t, func() bool { return !alice.out.pending(bob.ID()) }, 10*time.Second, time.Millisecond)
	require.Zero(t, alice.rec.count(isDelivered(m.ID)), "delivered reported before its mark was committed")
	crash := t.TempDir()
	crashCopy(t, alice, crash) // the kill: the mark is lost
	releaseAlice()
	require.NoError(t, alice.Close())

	again := newNode(t, r, "alice", crash)
	again.rec.wait(t, 15*time.Second, isDelivered(m.ID))
	require.NoError(t, again.db.flush())
	require.Equal(t, 1, again.rec.count(isDelivered(m.ID)))
	require.Equal(t, 1, bob.rec.count(isMessage("once")))
}

// Issue 8: the store's writer stalls (a blocked commit) while peers keep
// sending and pinging: the readers go on, pings are answered, nobody is
// shown offline, and nothing is lost once the writer resumes.
func TestStalledWriterKeepsPeersAlive(t *testing.T) {
	fast := func(c *testConfig) { c.PingInterval, c.PingTimeout = 200*time.Millisecond, 800*time.Millisecond }
	r := newRendezvous(t)
	bob := newNode(t, r, "bob", "", fast)
	alice := newNode(t, r, "alice", "", fast)
	carol := newNode(t, r, "carol", "", fast)
	for _, n := range []*tnode{alice, carol} {
		m := send(t, n, "bob", "hello from "+n.Nick())
		n.rec.wait(t, 10*time.Second, isDelivered(m.ID))
	}
	release := holdWriter(t, bob.db)
	stalled := time.Now()
	var sent []Message
	for i := range 50 {
		sent = append(sent, send(t, alice, "bob", fmt.Sprintf("during the stall %d", i)))
	}
	// Pings to both peers are answered for longer than the ping timeout.
	for _, p := range []peer.ID{alice.ID(), carol.ID()} {
		require.Eventually(t, func() bool {
			_, _, cs := bob.peers.streams(p)
			return cs != nil && time.Unix(0, cs.pongAt.Load()).After(stalled.Add(2*time.Second))
		}, 10*time.Second, 20*time.Millisecond)
	}
	release()
	for _, m := range sent {
		alice.rec.wait(t, 10*time.Second, isDelivered(m.ID))
	}
	for i := range 50 {
		require.Equal(t, 1, bob.rec.count(isMessage(fmt.Sprintf("during the stall %d", i))))
	}
	for _, nick := range []string{"alice", "carol"} {
		require.Zero(t, bob.rec.count(isPresence(nick, false)), "%s shown offline during the stall", nick)
	}
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

// Attack 9: look-alike nicks. A mixed-script nick (bоb with a Cyrillic о)
// is refused outright; a single-script look-alike of a contact's nick
// (rnary for mary) is flagged and not pinned from a Hello.
func TestLookAlikeNicks(t *testing.T) {
	_, err := NormalizeNick("b\u043eb")
	require.ErrorContains(t, err, "mixes scripts")
	r := newRendezvous(t)
	victim := newNode(t, r, "victim", "")
	mary := newNode(t, r, "mary", "")
	m := send(t, victim, "mary", "hi mary")
	victim.rec.wait(t, 10*time.Second, isDelivered(m.ID))
	require.Equal(t, []string{"mary"}, pinnedTo(t, victim, mary.ID()))

	fake := newNode(t, r, "rnary", "")
	_, err = fake.Send(t.Context(), victim.ID().String(), "it's mary, new key")
	require.NoError(t, err)
	w := victim.rec.wait(t, 10*time.Second, func(e Event) bool {
		w, ok := e.(EventWarning)
		return ok && w.Peer == fake.ID()
	}).(EventWarning)
	require.Contains(t, w.Text, "looks like your contact \"mary\"")
	victim.rec.wait(t, 10*time.Second, isRequest("it's mary, new key"))
	require.Empty(t, pinnedTo(t, victim, fake.ID()))
}
