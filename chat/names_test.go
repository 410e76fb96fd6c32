package chat

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-msgio/pbio"
	"github.com/stretchr/testify/require"

	"github.com/p2p-messaging/p2p-messaging/chat/pb"
	"github.com/p2p-messaging/p2p-messaging/rendezvous"
)

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

func TestLookupUnknownNick(t *testing.T) {
	r := newRendezvous(t)
	alice := newNode(t, r, "alice", "")
	_, err := alice.Send(context.Background(), "nobody", "hello?")
	require.ErrorIs(t, err, ErrUnknownNick)
	_, err = alice.Whois(context.Background(), "nobody")
	require.ErrorIs(t, err, ErrUnknownNick)
}

func TestNickTaken(t *testing.T) {
	r := newRendezvous(t)
	newNode(t, r, "alice", "")
	_, err := tryNode(t, r, "alice", "")
	require.ErrorIs(t, err, ErrNickTaken)
}

func TestImpersonationWarning(t *testing.T) {
	r := newRendezvous(t)
	aliceDir := t.TempDir()
	alice := newNode(t, r, "alice", aliceDir)
	bob := newNode(t, r, "bob", "")
	m := send(t, alice, "bob", "hi, I am alice")
	alice.rec.wait(t, 10*time.Second, isDelivered(m.ID))
	aliceID := alice.ID()
	require.NoError(t, alice.Close())

	// Attack 3 (squatting): the daemon keeps alice's nick leased to her
	// key while she is away; another key cannot take it.
	_, err := tryNode(t, r, "alice", "")
	require.ErrorIs(t, err, ErrNickTaken)

	// A peer claiming alice's nick in its Hello anyway.
	raw := rawPeer(t)
	s := rawStream(t, raw, bob.Node)
	defer s.Reset()
	_, err = s.Write(encode(t, helloF("alice"), msgF(randID(t), "send me your password")))
	require.NoError(t, err)
	w := bob.rec.wait(t, 10*time.Second, func(e Event) bool { _, ok := e.(EventWarning); return ok }).(EventWarning)
	require.Equal(t, "alice", w.Nick)
	require.Equal(t, raw.ID(), w.Peer)
	require.Contains(t, w.Text, aliceID.String())
	// An unverified claim is shown under the peer ID, and a stranger's
	// message is a request.
	got := bob.rec.wait(t, 10*time.Second, isRequest("send me your password")).(EventRequest)
	require.Equal(t, raw.ID().String(), got.Nick, "an unverified claim is shown under the peer ID")

	// Messages to the nick still go to the pinned peer only, and alice
	// gets her nick back when she returns.
	out := send(t, bob, "alice", "who is this?")
	require.Equal(t, aliceID, out.Peer)
	back := newNode(t, r, "alice", aliceDir)
	back.rec.wait(t, 15*time.Second, isMessage("who is this?"))
}

// A Hello nick that the rendezvous daemons do not list for the peer is
// neither pinned nor shown.
func TestUnregisteredNickClaim(t *testing.T) {
	r := newRendezvous(t)
	bob := newNode(t, r, "bob", "")
	raw := rawPeer(t)
	s := rawStream(t, raw, bob.Node)
	defer s.Reset()
	_, err := s.Write(encode(t, helloF("ghost"), msgF(id16, "boo")))
	require.NoError(t, err)
	w := bob.rec.wait(t, 10*time.Second, func(e Event) bool { _, ok := e.(EventWarning); return ok }).(EventWarning)
	require.Equal(t, "ghost", w.Nick)
	require.Equal(t, raw.ID(), w.Peer)
	got := bob.rec.wait(t, 10*time.Second, isRequest("boo")).(EventRequest)
	require.Equal(t, raw.ID().String(), got.Nick)
	_, err = bob.History("ghost", 0)
	require.ErrorIs(t, err, ErrUnknownNick, "not pinned")
	h, err := bob.History(raw.ID().String(), 0)
	require.NoError(t, err)
	require.Empty(t, h, "a stranger's message waits in the requests")
	reqs, err := bob.Requests()
	require.NoError(t, err)
	require.Len(t, reqs, 1)
	require.Equal(t, "boo", reqs[0].Text)

	// Allowed, the request becomes the conversation's first message.
	_, err = bob.Allow(raw.ID().String())
	require.NoError(t, err)
	bob.rec.wait(t, 5*time.Second, isMessage("boo"))
	h, err = bob.History(raw.ID().String(), 0)
	require.NoError(t, err)
	require.Len(t, h, 1)
	reqs, err = bob.Requests()
	require.NoError(t, err)
	require.Empty(t, reqs)
}

// Attack 1: a peer opens many streams, each claiming another nick, so the
// victim's look-ups at its daemon are refused (E_UNAVAILABLE); the victim
// used to take that for "no daemon answers" and trust the Hellos on first
// use. Now a refused look-up leaves the claim unverified, and one peer
// makes the victim look up at most maxClaimsPerPeer nicks.
func TestClaimStormPinsNothing(t *testing.T) {
	lim := rendezvous.DefaultLimits()
	lim.RequestRate, lim.RequestBurst = 0.5, 12 // the victim's allowance runs out quickly
	lim.ClaimDifficulty = 8
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

// With no rendezvous daemon, the DHT finds the addresses of a peer known by
// its ID; it never makes a nick trusted.
func TestDHTFindsKnownPeersButNamesNobody(t *testing.T) {
	boot, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.ForceReachabilityPublic(), libp2p.DisableMetrics())
	require.NoError(t, err)
	d, err := dht.New(boot, dht.Mode(dht.ModeServer), dht.ProtocolPrefix(DHTPrefix), dht.BootstrapPeers())
	require.NoError(t, err)
	t.Cleanup(func() { d.Close(); boot.Close() })
	bootInfo := peer.AddrInfo{ID: boot.ID(), Addrs: boot.Addrs()}
	withDHT := func(c *testConfig) {
		c.DisableDHT = false
		c.Rendezvous = []peer.AddrInfo{bootInfo} // a daemon with no rendezvous server: DHT only
	}
	alice := newNode(t, nil, "alice", "", withDHT)
	bob := newNode(t, nil, "bob", "", withDHT)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = alice.Send(ctx, "bob", "who are you?")
	require.Error(t, err, "a nick nobody verified resolved")

	// Alice knows bob's peer ID (an invite, /whois elsewhere), not his
	// addresses: the DHT finds them.
	alice.h.Peerstore().ClearAddrs(bob.ID())
	var m Message
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		m, err = alice.Send(ctx, bob.ID().String(), "found you in the DHT")
		return err == nil
	}, 30*time.Second, 200*time.Millisecond, "last error: %v", err)
	// Bob never wrote to alice: her message is a request.
	bob.rec.wait(t, 20*time.Second, func(e Event) bool {
		r, ok := e.(EventRequest)
		return ok && r.Peer == alice.ID() && r.Text == "found you in the DHT"
	})
	alice.rec.wait(t, 10*time.Second, isDelivered(m.ID))
}
