package transfer

import (
	"context"
	"crypto/rand"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/stretchr/testify/require"
)

// keyedHost is a host with a fixed key: a restarted one is the same peer.
func keyedHost(t testing.TB, key crypto.PrivKey) host.Host {
	t.Helper()
	h, err := libp2p.New(libp2p.Identity(key), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics(), libp2p.DisableRelay())
	require.NoError(t, err)
	t.Cleanup(func() { h.Close() })
	return h
}

func newKey(t testing.TB) crypto.PrivKey {
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	require.NoError(t, err)
	return k
}

// testClock is a clock the test moves.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *testClock) add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// A pending offer survives a restart of the recipient and of the sender
// (hosts and services closed and started again on the same state
// directories): it is listed, /accept works, the file arrives.
func TestPendingOfferSurvivesRestarts(t *testing.T) {
	aKey, bKey := newKey(t), newKey(t)
	aState, bState, bDown := t.TempDir(), t.TempDir(), t.TempDir()
	ha, hb := keyedHost(t, aKey), keyedHost(t, bKey)
	connect(t, ha, hb)
	a, b := newSvc(t, ha, aState, ""), newSvc(t, hb, bState, bDown)
	src, content := randomFile(t, t.TempDir(), 3*MinChunkSize+7)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := a.Offer(ctx, hb.ID(), src, "alice")
	require.NoError(t, err)
	offer := b.rec.wait(t, waitFor, isOffer).(OfferEvent)
	require.Empty(t, dirFiles(t, bDown), "nothing in the download dir before accepting")

	// Both sides restart: services and hosts.
	require.NoError(t, b.Close())
	require.NoError(t, hb.Close())
	require.NoError(t, a.Close())
	require.NoError(t, ha.Close())
	ha, hb = keyedHost(t, aKey), keyedHost(t, bKey)
	a, b = newSvc(t, ha, aState, ""), newSvc(t, hb, bState, bDown)
	list := b.List()
	require.Len(t, list, 1, "the offer is kept")
	require.Equal(t, offer.ID, list[0].ID)
	require.Equal(t, StateOffered, list[0].State)
	require.Equal(t, offer.Name, list[0].Name)
	require.Equal(t, "alice", list[0].Nick)
	require.Equal(t, offer.Hash, list[0].Hash)
	require.Equal(t, StateOffered, a.List()[0].State)

	connect(t, hb, ha)
	_, err = b.Accept(info.ID[:8], "")
	require.NoError(t, err)
	done := b.rec.wait(t, waitFor, isDone(info.ID, true)).(DoneEvent)
	requireFile(t, done.Path, content)
	a.rec.wait(t, waitFor, isDone(info.ID, false))
	require.Empty(t, dirFiles(t, filepath.Join(bState, "in")), "a finished transfer leaves no state")
}

// A pending offer rejected after a restart is gone on both sides.
func TestPendingOfferRejectedAfterRestart(t *testing.T) {
	bKey := newKey(t)
	bState, bDown := t.TempDir(), t.TempDir()
	ha, hb := newHost(t), keyedHost(t, bKey)
	connect(t, ha, hb)
	a, b := newSvc(t, ha, "", ""), newSvc(t, hb, bState, bDown)
	src, _ := randomFile(t, t.TempDir(), 1000)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := a.Offer(ctx, hb.ID(), src, "alice")
	require.NoError(t, err)
	b.rec.wait(t, waitFor, isOffer)
	require.NoError(t, b.Close())
	require.NoError(t, hb.Close())
	hb = keyedHost(t, bKey)
	b = newSvc(t, hb, bState, bDown)
	connect(t, hb, ha)
	_, err = b.Reject(info.ID)
	require.NoError(t, err)
	a.rec.wait(t, waitFor, isFailed(info.ID, false))
	require.Empty(t, dirFiles(t, filepath.Join(bState, "in")))
	require.Empty(t, dirFiles(t, filepath.Join(a.dir, "out")))
	require.Empty(t, dirFiles(t, bDown))
}

// The limits on pending offers hold across a restart: the kept offers
// count, and a restart with lower limits keeps the oldest.
func TestPendingOfferLimitsAcrossRestart(t *testing.T) {
	bKey := newKey(t)
	bState := t.TempDir()
	ha, hb := newHost(t), keyedHost(t, bKey)
	connect(t, ha, hb)
	a := newSvc(t, ha, "", "")
	two := func(c *Config) { c.Limits.MaxPendingPerPeer = 2 }
	b := newSvc(t, hb, bState, "", two)
	src, _ := randomFile(t, t.TempDir(), 1000)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var ids []string
	for i := 0; i < 2; i++ {
		info, err := a.Offer(ctx, hb.ID(), src, "alice")
		require.NoError(t, err)
		ids = append(ids, info.ID)
		b.rec.wait(t, waitFor, func(e Event) bool { o, ok := e.(OfferEvent); return ok && o.ID == info.ID })
	}
	require.NoError(t, b.Close())
	require.NoError(t, hb.Close())
	hb = keyedHost(t, bKey)
	b = newSvc(t, hb, bState, "", two)
	require.Len(t, b.List(), 2)
	connect(t, ha, hb)
	_, err := a.Offer(ctx, hb.ID(), src, "alice")
	var se *StatusError
	require.ErrorAs(t, err, &se)
	require.Equal(t, StatusBusy, se.Code, "the kept offers count toward the limit")

	require.NoError(t, b.Close())
	b = newSvc(t, hb, bState, "", func(c *Config) { c.Limits.MaxPendingPerPeer = 1 })
	list := b.List()
	require.Len(t, list, 1, "a lower limit keeps only the oldest")
	require.Equal(t, ids[0], list[0].ID)
	require.Len(t, dirFiles(t, filepath.Join(bState, "in")), 1)
}

// An offer that waits longer than OfferTTL expires, in a run and across a
// restart: it is dropped, the user sees it fail, the sender is told.
func TestPendingOfferExpires(t *testing.T) {
	bKey := newKey(t)
	bState := t.TempDir()
	clock := &testClock{now: time.Unix(1_800_000_000, 0)}
	ttl := func(c *Config) { c.Limits.OfferTTL = time.Hour; c.Now = clock.Now }
	ha, hb := newHost(t), keyedHost(t, bKey)
	connect(t, ha, hb)
	a := newSvc(t, ha, "", "")
	b := newSvc(t, hb, bState, "", ttl)
	src, _ := randomFile(t, t.TempDir(), 1000)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	first, err := a.Offer(ctx, hb.ID(), src, "alice")
	require.NoError(t, err)
	b.rec.wait(t, waitFor, isOffer)

	// In a run: past the TTL, the next look at the list drops it.
	clock.add(time.Hour)
	require.Empty(t, b.List())
	f := b.rec.wait(t, waitFor, isFailed(first.ID, true)).(FailedEvent)
	require.Contains(t, f.Err, "expired")
	a.rec.wait(t, waitFor, isFailed(first.ID, false))
	_, err = b.Accept(first.ID, "")
	require.ErrorIs(t, err, ErrUnknownID)

	// Across a restart: an offer kept on disk expires at the start.
	second, err := a.Offer(ctx, hb.ID(), src, "alice")
	require.NoError(t, err)
	b.rec.wait(t, waitFor, func(e Event) bool { o, ok := e.(OfferEvent); return ok && o.ID == second.ID })
	require.NoError(t, b.Close())
	require.NoError(t, hb.Close())
	clock.add(59 * time.Minute)
	hb = keyedHost(t, bKey)
	b = newSvc(t, hb, bState, "", ttl)
	require.Len(t, b.List(), 1, "not expired yet")
	clock.add(time.Minute)
	require.NoError(t, b.Close())
	hb.Peerstore().AddAddrs(ha.ID(), ha.Addrs(), time.Hour) // for the cancel sent at the start
	b = newSvc(t, hb, bState, "", ttl)
	b.rec.wait(t, waitFor, isFailed(second.ID, true))
	require.Empty(t, b.List())
	require.Empty(t, dirFiles(t, filepath.Join(bState, "in")))
	a.rec.wait(t, waitFor, isFailed(second.ID, false))
}
