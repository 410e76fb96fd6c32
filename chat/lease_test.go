package chat

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/stretchr/testify/require"
)

// offline waits until the daemon holds no registration of anyone any more
// (every node closed, the disconnect grace over) while the lease on nick
// still names its owner.
func offline(t *testing.T, d *mbDaemon, nick string, owner *tnode) {
	t.Helper()
	require.Eventually(t, func() bool { return d.srv.Registrations() == 0 }, 10*time.Second, 10*time.Millisecond)
	holder, _, ok := d.srv.NameHolder(userNS(nick))
	require.True(t, ok, "the lease on %q outlives the registration", nick)
	require.Equal(t, owner.ID(), holder)
}

// The harness's check: Alice sends to Bob while Bob is offline, then Alice
// quits; Bob starts and receives the message exactly once, as a message
// under Alice's nick, not a request from a stranger. Alice and Bob never
// talked: Alice finds Bob by the lease on his nick (or writes to his peer
// ID), and Bob verifies Alice's nick by the lease on hers, neither being
// registered.
func TestMailboxStrangersVerifiedByLease(t *testing.T) {
	t.Run("to nick", func(t *testing.T) { testStrangersVerifiedByLease(t, true) })
	t.Run("to peer ID", func(t *testing.T) { testStrangersVerifiedByLease(t, false) })
}

func testStrangersVerifiedByLease(t *testing.T, byNick bool) {
	d := newMailboxDaemon(t)
	bobDir := t.TempDir()
	bob := newNode(t, d.rdvServer, "bob", bobDir, withDaemons(d))
	require.NoError(t, bob.Close()) // bob holds his nick and is offline

	alice := newNode(t, d.rdvServer, "alice", "", withDaemons(d))
	to := bob.ID().String()
	if byNick {
		to = "bob"
	}
	m := send(t, alice, to, "we never met")
	require.Equal(t, bob.ID(), m.Peer, "bob found by his lease")
	alice.rec.wait(t, 10*time.Second, isStored(m.ID))
	require.NoError(t, alice.Close())
	offline(t, d, "alice", alice)

	bob = newNode(t, d.rdvServer, "bob", bobDir, withDaemons(d))
	got := bob.rec.wait(t, 15*time.Second, isMessage("we never met")).(EventMessage)
	require.Equal(t, m.ID, got.Message.ID)
	require.Equal(t, "alice", got.Message.From)
	require.Equal(t, alice.ID(), got.Message.Peer)
	require.Equal(t, []string{"alice"}, pinnedTo(t, bob, alice.ID()))
	// Close waits for the mailbox work under way: after it, nothing more
	// can be shown.
	require.NoError(t, bob.Close())
	require.Equal(t, 1, bob.rec.count(isMessage("we never met")), "exactly once")
	require.Zero(t, bob.rec.count(isRequest("we never met")), "not a stranger's request")

	// A restart finds it once in Alice's conversation, and no request.
	bob = newNode(t, d.rdvServer, "bob", bobDir, withDaemons(d))
	hist, err := bob.History("alice", 0)
	require.NoError(t, err)
	require.Len(t, hist, 1)
	require.Equal(t, m.ID, hist[0].ID)
	reqs, err := bob.Requests()
	require.NoError(t, err)
	require.Empty(t, reqs)
}

// Attack: alice is offline; mallory, a stranger, claims her nick in a
// Hello. The daemons' lease names alice's key, so the claim is refused:
// mallory stays a stranger shown by peer ID, with a warning naming the
// real holder, and nothing is pinned to her.
func TestLeaseHeldByAnotherStaysStranger(t *testing.T) {
	d := newMailboxDaemon(t)
	alice := newNode(t, d.rdvServer, "alice", "", withDaemons(d))
	require.NoError(t, alice.Close())
	bob := newNode(t, d.rdvServer, "bob", "", withDaemons(d))

	mallory := rawPeer(t)
	s := rawStream(t, mallory, bob.Node)
	defer s.Reset()
	_, err := s.Write(encode(t, helloF("alice"), msgF(id16, "it is me, alice")))
	require.NoError(t, err)
	w := bob.rec.wait(t, 10*time.Second, func(e Event) bool {
		w, ok := e.(EventWarning)
		return ok && w.Nick == "alice" && w.Peer == mallory.ID()
	}).(EventWarning)
	require.Contains(t, w.Text, alice.ID().String(), "the warning names the lease holder")
	req := bob.rec.wait(t, 10*time.Second, isRequest("it is me, alice")).(EventRequest)
	require.Equal(t, mallory.ID().String(), req.Nick, "shown by peer ID")
	require.Zero(t, bob.rec.count(isMessage("it is me, alice")))
	require.Empty(t, pinnedTo(t, bob, mallory.ID()))
	_, err = bob.History("alice", 0)
	require.ErrorIs(t, err, ErrUnknownNick, "alice's nick is pinned to nobody")
}

// Attack: the TestDaemonsDisagreeIsAConflict case with both nicks
// offline. Daemon 1's lease on nina names nina, daemon 2's names the
// impostor: a conflict, nothing pinned; and a daemon whose lease names
// one key while another daemon lists a registration of another is one as
// well.
func TestLeasesDisagreeIsAConflict(t *testing.T) {
	d1, d2 := newRendezvous(t), newRendezvous(t)
	nina := newNode(t, d1, "nina", "")
	impostor := newNode(t, d2, "nina", "")
	require.NoError(t, nina.Close())
	victim := newNode(t, nil, "victim", "", func(c *testConfig) {
		c.Rendezvous = []peer.AddrInfo{d1.info, d2.info}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := victim.Send(ctx, "nina", "which nina?")
	require.ErrorContains(t, err, "disagree", "a lease against a registration")
	require.ErrorContains(t, err, nina.ID().String())
	require.ErrorContains(t, err, impostor.ID().String())

	require.NoError(t, impostor.Close())
	require.Eventually(t, func() bool {
		info, err := victim.rdv.DiscoverNameOn(ctx, d2.info.ID, userNS("nina"), 10)
		return err == nil && len(info.Registrations) == 0 && info.Holder == impostor.ID()
	}, 10*time.Second, 10*time.Millisecond, "the impostor's registration gone, its lease kept")
	victim.names.mu.Lock()
	delete(victim.names.cache, "nina") // the cached answer is a conflict too; ask again
	victim.names.mu.Unlock()
	_, err = victim.Send(ctx, "nina", "which nina?")
	require.ErrorContains(t, err, "disagree", "two leases")
	require.Empty(t, pinnedTo(t, victim, impostor.ID()))
	require.Empty(t, pinnedTo(t, victim, nina.ID()))
}

// "/allow alice" names the one stranger waiting with a request whose
// claim of alice no daemon could verify, but never a stranger claiming a
// nick the daemons give to someone else.
func TestAllowByClaimedNick(t *testing.T) {
	// No daemon that verifies nicks: bob's only server is none at all.
	bob := newNode(t, nil, "bob", "")
	alice := rawPeer(t)
	s := rawStream(t, alice, bob.Node)
	defer s.Reset()
	_, err := s.Write(encode(t, helloF("alice"), msgF(id16, "hi bob, alice here")))
	require.NoError(t, err)
	bob.rec.wait(t, 10*time.Second, isRequest("hi bob, alice here"))
	p, err := bob.Allow("alice")
	require.NoError(t, err)
	require.Equal(t, alice.ID(), p)
	bob.rec.wait(t, 10*time.Second, isMessage("hi bob, alice here"))

	// Two strangers claiming carol: the user must say which.
	for i, text := range []string{"carol one", "carol two"} {
		c := rawPeer(t)
		cs := rawStream(t, c, bob.Node)
		defer cs.Reset()
		id := bytes.Clone(id16)
		id[0] = byte(i + 1)
		_, err := cs.Write(encode(t, helloF("carol"), msgF(id, text)))
		require.NoError(t, err)
		bob.rec.wait(t, 10*time.Second, isRequest(text))
	}
	_, err = bob.Allow("carol")
	require.ErrorContains(t, err, "2 strangers")

	// With a daemon answering, a claim it refutes is not taken.
	d := newMailboxDaemon(t)
	real := newNode(t, d.rdvServer, "dave", "", withDaemons(d))
	require.NoError(t, real.Close())
	erin := newNode(t, d.rdvServer, "erin", "", withDaemons(d))
	mallory := rawPeer(t)
	ms := rawStream(t, mallory, erin.Node)
	defer ms.Reset()
	_, err = ms.Write(encode(t, helloF("dave"), msgF(id16, "it is me, dave")))
	require.NoError(t, err)
	erin.rec.wait(t, 10*time.Second, isRequest("it is me, dave"))
	_, err = erin.Allow("dave")
	require.ErrorIs(t, err, ErrUnknownNick)
	require.Zero(t, erin.rec.count(func(e Event) bool { a, ok := e.(EventAllowed); return ok && a.Peer == mallory.ID() }))
}
