package chat

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/stretchr/testify/require"
)

func newPeerID(t *testing.T) peer.ID {
	t.Helper()
	_, pub, err := crypto.GenerateEd25519Key(nil)
	require.NoError(t, err)
	p, err := peer.IDFromPublicKey(pub)
	require.NoError(t, err)
	return p
}

func TestSafetyNumber(t *testing.T) {
	a, b, c := newPeerID(t), newPeerID(t), newPeerID(t)
	ab, err := SafetyNumber(a, b)
	require.NoError(t, err)
	ba, err := SafetyNumber(b, a)
	require.NoError(t, err)
	require.Equal(t, ab, ba, "both sides compute the same number")
	require.Regexp(t, `^\d{5}( \d{5}){5}$`, ab)
	ac, err := SafetyNumber(a, c)
	require.NoError(t, err)
	require.NotEqual(t, ab, ac, "another key, another number")
	_, err = SafetyNumber(a, peer.ID("not a key"))
	require.Error(t, err)
}

// TestKeyChangeAccepted: bob's nick is pinned; a new key claims it (a
// reinstall). /trust shows both keys and the safety number; a wrong number
// changes nothing; the right one pins the new key, whose messages then
// arrive as bob's.
func TestKeyChangeAccepted(t *testing.T) {
	r := newRendezvous(t)
	alice := newNode(t, r, "alice", "")
	bob := newNode(t, r, "bob", "")
	m := send(t, alice, "bob", "hi bob")
	alice.rec.wait(t, 10*time.Second, isDelivered(m.ID))
	oldBob := bob.ID()
	require.NoError(t, bob.Close())

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	kc, err := alice.CheckKey(ctx, "bob", "")
	require.NoError(t, err)
	require.Equal(t, oldBob, kc.Pinned)
	require.Empty(t, kc.New, "no other key yet")
	want, err := SafetyNumber(alice.ID(), oldBob)
	require.NoError(t, err)
	require.Equal(t, want, kc.Safety)

	// The reinstalled bob: a new key that says it is bob.
	raw := rawPeer(t)
	s := rawStream(t, raw, alice.Node)
	defer s.Reset()
	_, err = s.Write(encode(t, helloF("bob"), msgF(randID(t), "it's me, new phone")))
	require.NoError(t, err)
	alice.rec.wait(t, 10*time.Second, func(e Event) bool { w, ok := e.(EventWarning); return ok && w.Nick == "bob" })

	kc, err = alice.CheckKey(ctx, "bob", "")
	require.NoError(t, err)
	require.Equal(t, oldBob, kc.Pinned)
	require.Equal(t, raw.ID(), kc.New)
	want, err = SafetyNumber(alice.ID(), raw.ID())
	require.NoError(t, err)
	require.Equal(t, want, kc.Safety)
	require.False(t, kc.Accepted)

	_, err = alice.CheckKey(ctx, "bob", "12345 12345 12345 12345 12345 12345")
	require.ErrorIs(t, err, ErrSafetyMismatch)
	c, _, err := alice.db.contact("bob")
	require.NoError(t, err)
	require.Equal(t, oldBob, c.Peer, "a wrong number changes nothing")

	kc, err = alice.CheckKey(ctx, "bob", strings.ReplaceAll(want, " ", ""))
	require.NoError(t, err)
	require.True(t, kc.Accepted)
	c, _, err = alice.db.contact("bob")
	require.NoError(t, err)
	require.Equal(t, raw.ID(), c.Peer, "the new key is pinned")
	require.Equal(t, "bob", alice.names.nickOf(raw.ID()))
	require.Empty(t, alice.names.nickOf(oldBob), "the old key lost the nick")

	// From now on the new key's messages are bob's (its old stream was
	// reset; the next one is identified under the new pin).
	s2 := rawStream(t, raw, alice.Node)
	defer s2.Reset()
	_, err = s2.Write(encode(t, helloF("bob"), msgF(randID(t), "thanks for trusting me")))
	require.NoError(t, err)
	got := alice.rec.wait(t, 10*time.Second, isMessage("thanks for trusting me")).(EventMessage)
	require.Equal(t, "bob", got.Message.From)
}

// TestContactsListsEveryContact: /contacts has offline contacts too, with
// when they were last seen, also after a restart.
func TestContactsListsEveryContact(t *testing.T) {
	r := newRendezvous(t)
	aliceDir := t.TempDir()
	alice := newNode(t, r, "alice", aliceDir)
	bob := newNode(t, r, "bob", "")
	m := send(t, alice, "bob", "hi bob")
	alice.rec.wait(t, 10*time.Second, isDelivered(m.ID))
	alice.rec.wait(t, 10*time.Second, isPresence("bob", true))

	cs, err := alice.Contacts()
	require.NoError(t, err)
	require.Len(t, cs, 1)
	require.Equal(t, "bob", cs[0].Nick)
	require.True(t, cs[0].Online)
	require.NotEqual(t, ConnNone, cs[0].Conn.Kind)

	require.NoError(t, bob.Close())
	alice.rec.wait(t, 15*time.Second, isPresence("bob", false))
	cs, err = alice.Contacts()
	require.NoError(t, err)
	require.False(t, cs[0].Online)
	seen := cs[0].LastSeen
	require.WithinDuration(t, time.Now(), seen, 20*time.Second)

	require.NoError(t, alice.Close())
	back := newNode(t, r, "alice", aliceDir)
	cs, err = back.Contacts()
	require.NoError(t, err)
	require.Len(t, cs, 1, "known from the first call on")
	require.False(t, cs[0].Online)
	require.False(t, cs[0].LastSeen.IsZero(), "last seen survives a restart")
}

// TestOwnCloseReportsNoPresence: closing the node ends every stream, which
// says nothing about the peers: no "offline" for them.
func TestOwnCloseReportsNoPresence(t *testing.T) {
	r := newRendezvous(t)
	alice := newNode(t, r, "alice", "")
	bob := newNode(t, r, "bob", "")
	m := send(t, alice, "bob", "hi bob")
	alice.rec.wait(t, 10*time.Second, isDelivered(m.ID))
	alice.rec.wait(t, 10*time.Second, isPresence("bob", true))
	require.NoError(t, alice.Close()) // waits for the recorder to drain
	require.Zero(t, alice.rec.count(isPresence("bob", false)))
	_ = bob
}
