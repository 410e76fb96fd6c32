package dhtstore

import (
	"context"
	"errors"
	"fmt"
	"testing"

	ds "github.com/ipfs/go-datastore"
	dsq "github.com/ipfs/go-datastore/query"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func provKey(key, peer string) ds.Key {
	return ds.NewKey(providersPrefix + key + "/" + peer)
}

func open(t *testing.T, dir string, l Limits) *Store {
	t.Helper()
	s, err := Open(dir, l)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func countKeys(t *testing.T, s *Store, prefix string) int {
	t.Helper()
	res, err := s.Query(context.Background(), dsq.Query{Prefix: prefix, KeysOnly: true})
	require.NoError(t, err)
	all, err := res.Rest()
	require.NoError(t, err)
	return len(all)
}

func TestLimitsValidate(t *testing.T) {
	require.NoError(t, DefaultLimits().Validate())
	for _, tc := range []struct {
		l    Limits
		want string
	}{
		{Limits{0, 1, 1}, "max provider records must be positive"},
		{Limits{1, 0, 1}, "per peer must be positive"},
		{Limits{1, 2, 1}, "exceeds the total"},
		{Limits{1, 1, -1}, "max value records must be positive"},
	} {
		require.ErrorContains(t, tc.l.Validate(), tc.want, "%+v", tc.l)
	}
	_, err := Open(t.TempDir(), Limits{})
	require.Error(t, err)
}

func TestPerPeerAndTotalCaps(t *testing.T) {
	ctx := context.Background()
	s := open(t, t.TempDir(), Limits{MaxProviders: 10, MaxProvidersPerPeer: 4, MaxValues: 2})

	// The spammer's batch: 20 keys, only 4 land; the honest records in
	// the same batch are not lost.
	b, err := s.Batch(ctx)
	require.NoError(t, err)
	for i := range 20 {
		require.NoError(t, b.Put(ctx, provKey(fmt.Sprintf("K%02d", i), "SPAM"), []byte{1}))
	}
	require.NoError(t, b.Put(ctx, provKey("K00", "HONEST"), []byte{1}))
	require.NoError(t, b.Commit(ctx))
	require.Equal(t, 4, s.ProvidersOf("SPAM"))
	require.Equal(t, 1, s.ProvidersOf("HONEST"))
	require.Equal(t, 5, countKeys(t, s, providersPrefix))
	require.Equal(t, uint64(16), s.Stats().Refused)

	// A refresh of a stored record is always accepted.
	require.NoError(t, s.Put(ctx, provKey("K00", "SPAM"), []byte{2}))
	v, err := s.Get(ctx, provKey("K00", "SPAM"))
	require.NoError(t, err)
	require.Equal(t, []byte{2}, v)
	require.Equal(t, 4, s.ProvidersOf("SPAM"))

	// Sybils fill the total: the 11th record is refused.
	for i := range 5 {
		require.NoError(t, s.Put(ctx, provKey("X", fmt.Sprintf("SYBIL%d", i)), []byte{1}))
	}
	st := s.Stats()
	require.Equal(t, 10, st.Providers)
	require.Equal(t, 10, countKeys(t, s, providersPrefix))
	require.Equal(t, 7, st.ProviderPeers)

	// Expiry (a delete) frees room.
	require.NoError(t, s.Delete(ctx, provKey("K01", "SPAM")))
	require.NoError(t, s.Delete(ctx, provKey("nope", "SPAM")), "deleting an absent key counts nothing")
	require.Equal(t, 9, s.Stats().Providers)
	require.NoError(t, s.Put(ctx, provKey("Y", "NEW"), []byte{1}))
	require.Equal(t, 1, s.ProvidersOf("NEW"))

	// Value records have their own total.
	for i := range 3 {
		require.NoError(t, s.Put(ctx, ds.NewKey(fmt.Sprintf("/pk/V%d", i)), []byte{1}))
	}
	require.Equal(t, 2, s.Stats().Values)
	_, err = s.Get(ctx, ds.NewKey("/pk/V2"))
	require.ErrorIs(t, err, ds.ErrNotFound)
}

func TestBatchPutThenDelete(t *testing.T) {
	ctx := context.Background()
	s := open(t, t.TempDir(), Limits{MaxProviders: 10, MaxProvidersPerPeer: 2, MaxValues: 2})
	b, err := s.Batch(ctx)
	require.NoError(t, err)
	require.NoError(t, b.Put(ctx, provKey("A", "P"), []byte{1}))
	require.NoError(t, b.Delete(ctx, provKey("A", "P")))
	require.NoError(t, b.Put(ctx, provKey("B", "P"), []byte{1}))
	require.NoError(t, b.Put(ctx, provKey("B", "P"), []byte{2}), "same key twice in one batch is one record")
	require.NoError(t, b.Put(ctx, provKey("C", "P"), []byte{1}))
	require.NoError(t, b.Commit(ctx))
	require.Equal(t, 2, s.ProvidersOf("P"))
	require.Equal(t, 2, countKeys(t, s, providersPrefix))
}

func TestReopenCounts(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	l := Limits{MaxProviders: 100, MaxProvidersPerPeer: 3, MaxValues: 5}
	s, err := Open(dir, l)
	require.NoError(t, err)
	for i := range 5 {
		require.NoError(t, s.Put(ctx, provKey(fmt.Sprintf("K%d", i), "P"), []byte{1}))
	}
	require.NoError(t, s.Put(ctx, ds.NewKey("/pk/V"), []byte{1}))
	require.NoError(t, s.Close())
	require.NoError(t, s.Close(), "idempotent")
	_, err = s.Get(ctx, ds.NewKey("/pk/V"))
	require.ErrorIs(t, err, ErrClosed)
	require.ErrorIs(t, s.Put(ctx, ds.NewKey("/pk/W"), nil), ErrClosed)

	s2 := open(t, dir, l)
	st := s2.Stats()
	require.Equal(t, 3, st.Providers, "the cap held across the restart")
	require.Equal(t, 1, st.Values)
	require.NoError(t, s2.Put(ctx, provKey("K9", "P"), []byte{1}))
	require.Equal(t, 3, s2.ProvidersOf("P"), "counts survive a restart")

	// A second store on the same directory is refused (pebble's lock).
	_, err = Open(dir, l)
	require.Error(t, err)
}

func TestProviderPeer(t *testing.T) {
	for key, want := range map[string]string{
		"/providers/KEY/PEER": "PEER",
		"/providers/KEY":      "",
		"/pk/abc":             "",
		"/providers/":         "",
	} {
		got, ok := providerPeer(key)
		require.Equal(t, want, got, key)
		require.Equal(t, want != "", ok, key)
	}
}

func TestClosedErrors(t *testing.T) {
	s, err := Open(t.TempDir(), DefaultLimits())
	require.NoError(t, err)
	require.NoError(t, s.Close())
	ctx := context.Background()
	_, err = s.Has(ctx, ds.NewKey("/a"))
	require.True(t, errors.Is(err, ErrClosed))
	_, err = s.Query(ctx, dsq.Query{})
	require.ErrorIs(t, err, ErrClosed)
	require.ErrorIs(t, s.Sync(ctx, ds.NewKey("/")), ErrClosed)
	b, _ := s.Batch(ctx)
	require.NoError(t, b.Put(ctx, ds.NewKey("/a"), nil))
	require.ErrorIs(t, b.Commit(ctx), ErrClosed)
}
