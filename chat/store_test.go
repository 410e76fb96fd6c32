package chat

import (
	"crypto/rand"
	"path/filepath"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/stretchr/testify/require"
)

func randPeer(t *testing.T) peer.ID {
	_, pub, err := crypto.GenerateEd25519Key(rand.Reader)
	require.NoError(t, err)
	id, err := peer.IDFromPublicKey(pub)
	require.NoError(t, err)
	return id
}

func TestStoreSeenIsBoundedAndDeduplicates(t *testing.T) {
	s, err := openStore(filepath.Join(t.TempDir(), DBFileName), 3)
	require.NoError(t, err)
	defer s.close()
	p := randPeer(t)
	ids := make([]string, 5)
	for i := range ids {
		ids[i], err = newID()
		require.NoError(t, err)
		dup, err := s.addIncoming(Message{ID: ids[i], Peer: p, Text: "m", Time: time.Now()})
		require.NoError(t, err)
		require.Equal(t, inStored, dup)
	}
	// The newest three are remembered (checking them changes nothing)...
	for i := 4; i >= 2; i-- {
		dup, err := s.addIncoming(Message{ID: ids[i], Peer: p, Text: "m", Time: time.Now()})
		require.NoError(t, err)
		require.Equal(t, inDuplicate, dup, "id %d", i)
	}
	// ...the oldest is forgotten.
	dup, err := s.addIncoming(Message{ID: ids[0], Peer: p, Text: "m", Time: time.Now()})
	require.NoError(t, err)
	require.Equal(t, inStored, dup)
	// Other peers have their own sets.
	dup, err = s.addIncoming(Message{ID: ids[4], Peer: randPeer(t), Text: "m", Time: time.Now()})
	require.NoError(t, err)
	require.Equal(t, inStored, dup)
}

func TestStorePinAndOutbox(t *testing.T) {
	path := filepath.Join(t.TempDir(), DBFileName)
	s, err := openStore(path, 10)
	require.NoError(t, err)
	a, b := randPeer(t), randPeer(t)
	got, err := s.pin("bob", a, nil, time.Now())
	require.NoError(t, err)
	require.Equal(t, a, got)
	got, err = s.pin("bob", b, nil, time.Now())
	require.NoError(t, err)
	require.Equal(t, a, got, "a pin is never replaced")

	id, _ := newID()
	require.NoError(t, s.addOutgoing(Message{ID: id, Peer: a, To: "bob", Text: "x", Outgoing: true}))
	pp, err := s.pendingPeers()
	require.NoError(t, err)
	require.Equal(t, map[peer.ID]int{a: 1}, pp)
	raw, _ := parseID(id)
	_, ok, err := s.ack(b, raw)
	require.NoError(t, err)
	require.False(t, ok, "another peer cannot ack it")
	require.NoError(t, s.close())

	// Reopen: the pin and the pending message survive.
	s, err = openStore(path, 10)
	require.NoError(t, err)
	defer s.close()
	c, ok, err := s.contact("bob")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, a, c.Peer)
	m, ok, err := s.ack(a, raw)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, StatusDelivered, m.Status)
	_, ok, err = s.ack(a, raw)
	require.NoError(t, err)
	require.False(t, ok, "a second ack changes nothing")
	pending, err := s.pending(a)
	require.NoError(t, err)
	require.Empty(t, pending)
}

func TestOpenStoreInUse(t *testing.T) {
	path := filepath.Join(t.TempDir(), DBFileName)
	s, err := openStore(path, 10)
	require.NoError(t, err)
	defer s.close()
	_, err = openStore(path, 10)
	require.ErrorContains(t, err, "in use")
}
