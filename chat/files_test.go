package chat

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/p2p-messaging/p2p-messaging/chat/transfer"
)

func writeRandom(t *testing.T, size int) (string, string) {
	t.Helper()
	b := make([]byte, size)
	_, _ = rand.Read(b)
	p := filepath.Join(t.TempDir(), "photo.jpg")
	require.NoError(t, os.WriteFile(p, b, 0o644))
	s := sha256.Sum256(b)
	return p, hex.EncodeToString(s[:])
}

func TestSendFileBetweenNodes(t *testing.T) {
	r := newRendezvous(t)
	alice := newNode(t, r, "alice", "")
	bob := newNode(t, r, "bob", "")
	src, hash := writeRandom(t, 3<<20+17)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	info, err := alice.SendFile(ctx, "bob", src)
	require.NoError(t, err)
	require.Equal(t, "bob", info.Nick)
	offer := bob.rec.wait(t, 10*time.Second, func(e Event) bool { _, ok := e.(EventFileOffer); return ok }).(EventFileOffer)
	require.Equal(t, info.ID, offer.ID)
	require.Equal(t, "alice", offer.From, "the offer's nick claim was verified at the daemon")
	require.Equal(t, alice.ID(), offer.Peer)
	require.Equal(t, hash, offer.Hash)
	require.Equal(t, "photo.jpg", offer.Name)

	dir := t.TempDir()
	_, err = bob.AcceptFile(offer.ID, dir)
	require.NoError(t, err)
	done := bob.rec.wait(t, 20*time.Second, func(e Event) bool { d, ok := e.(EventFileDone); return ok && d.Incoming }).(EventFileDone)
	require.Equal(t, filepath.Join(dir, "photo.jpg"), done.Path)
	require.Equal(t, hash, done.Hash)
	alice.rec.wait(t, 10*time.Second, func(e Event) bool { d, ok := e.(EventFileDone); return ok && !d.Incoming && d.ID == info.ID })

	list := bob.Transfers()
	require.Len(t, list, 1)
	require.Equal(t, transfer.StateDone, list[0].State)
	require.Equal(t, "alice", list[0].Nick)
	require.Equal(t, "bob", alice.Transfers()[0].Nick)

	// Chat goes on beside it.
	m := send(t, alice, "bob", "did you get it?")
	alice.rec.wait(t, 10*time.Second, isDelivered(m.ID))
}

func TestFileOffersFromStrangersAndBlockedPeers(t *testing.T) {
	r := newRendezvous(t)
	bob := newNode(t, r, "bob", "")
	open := newNode(t, r, "dora", "", func(c *testConfig) { c.AcceptStrangerFiles = true })
	// carol uses no daemon: her nick claim cannot verify anywhere.
	carol := newNode(t, nil, "carol", "")
	src, _ := writeRandom(t, 1000)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	for _, target := range []*tnode{bob, open} {
		carol.Host().Peerstore().AddAddrs(target.ID(), target.Host().Addrs(), time.Hour)
	}
	_, err := carol.SendFile(ctx, bob.ID().String(), src)
	require.ErrorContains(t, err, "unknown peers are refused")
	require.Empty(t, bob.Transfers())

	_, err = carol.SendFile(ctx, open.ID().String(), src)
	require.NoError(t, err, "a node that accepts strangers' offers shows it")
	offer := open.rec.wait(t, 10*time.Second, func(e Event) bool { _, ok := e.(EventFileOffer); return ok }).(EventFileOffer)
	require.Equal(t, carol.ID().String(), offer.From)

	// A blocked peer is refused even with a verified nick.
	alice := newNode(t, r, "alice", "")
	_, err = bob.Block("alice")
	if err != nil {
		// bob has not met alice yet: block her by peer ID.
		_, err = bob.Block(alice.ID().String())
	}
	require.NoError(t, err)
	_, err = alice.SendFile(ctx, "bob", src)
	require.ErrorContains(t, err, "blocked")
	require.Empty(t, bob.Transfers())
}

// An offer that bob has not decided on survives a restart of bob's node
// and of alice's (closed and opened again on the same data dirs): bob
// lists it and accepts it, and the file arrives.
func TestPendingFileOfferSurvivesNodeRestarts(t *testing.T) {
	r := newRendezvous(t)
	alice := newNode(t, r, "alice", "")
	bob := newNode(t, r, "bob", "")
	src, hash := writeRandom(t, 2<<20+5)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	info, err := alice.SendFile(ctx, "bob", src)
	require.NoError(t, err)
	bob.rec.wait(t, 10*time.Second, func(e Event) bool { o, ok := e.(EventFileOffer); return ok && o.ID == info.ID })

	require.NoError(t, bob.Close())
	require.NoError(t, alice.Close())
	alice = newNode(t, r, "alice", alice.dir)
	bob = newNode(t, r, "bob", bob.dir)
	list := bob.Transfers()
	require.Len(t, list, 1, "the offer is kept")
	require.Equal(t, info.ID, list[0].ID)
	require.Equal(t, transfer.StateOffered, list[0].State)
	require.Equal(t, "alice", list[0].Nick)
	require.Equal(t, transfer.StateOffered, alice.Transfers()[0].State, "and alice still serves it")

	dir := t.TempDir()
	_, err = bob.AcceptFile(info.ID, dir)
	require.NoError(t, err)
	done := bob.rec.wait(t, 20*time.Second, func(e Event) bool { d, ok := e.(EventFileDone); return ok && d.Incoming }).(EventFileDone)
	require.Equal(t, hash, done.Hash)
	require.Equal(t, filepath.Join(dir, "photo.jpg"), done.Path)
	alice.rec.wait(t, 10*time.Second, func(e Event) bool { d, ok := e.(EventFileDone); return ok && !d.Incoming && d.ID == info.ID })
}
