package rendezvous

import (
	"fmt"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/stretchr/testify/require"
)

func TestClientRegisterDiscoverUnregister(t *testing.T) {
	srv := ctStartServer(t, nil, "")
	alice := ctHost(t, nil, "")
	bob := ctHost(t, nil, "")
	ca := ctClient(t, alice, []*ctServer{srv})
	cb := ctClient(t, bob, []*ctServer{srv})
	ctx := ctCtx(t)

	require.Equal(t, []peer.ID{srv.h.ID()}, ca.Servers())
	require.NoError(t, ca.Register(ctx, "room", 10*time.Minute))

	regs, err := cb.Discover(ctx, "room", 0)
	require.NoError(t, err)
	require.Len(t, regs, 1)
	r := regs[0]
	require.Equal(t, "room", r.Namespace)
	require.Equal(t, alice.ID(), r.Peer.ID)
	require.True(t, ctHasAddr(r.Peer.Addrs, alice.Addrs()[0]), "addrs %v", r.Peer.Addrs)
	require.Greater(t, r.TTL, 9*time.Minute)
	require.LessOrEqual(t, r.TTL, 10*time.Minute)

	// Single-server calls.
	granted, err := cb.RegisterOn(ctx, srv.h.ID(), "room", 0)
	require.NoError(t, err)
	require.Equal(t, DefaultTTL, granted)
	regs, err = ca.Discover(ctx, "room", 0)
	require.NoError(t, err)
	require.ElementsMatch(t, []peer.ID{alice.ID(), bob.ID()}, ctIDs(regs))
	require.NoError(t, cb.UnregisterOn(ctx, srv.h.ID(), "room"))

	require.NoError(t, ca.Unregister(ctx, "room"))
	regs, err = cb.Discover(ctx, "room", 0)
	require.NoError(t, err)
	require.Empty(t, regs)

	_, err = ca.RegisterOn(ctx, bob.ID(), "room", 0)
	require.ErrorIs(t, err, ErrUnknownServer)
}

func TestClientStatusErrors(t *testing.T) {
	srv := ctStartServer(t, nil, "", WithExclusivePrefix(ctUserPrefix))
	alice := ctHost(t, nil, "")
	mallory := ctHost(t, nil, "")
	ca := ctClient(t, alice, []*ctServer{srv})
	cm := ctClient(t, mallory, []*ctServer{srv})
	ctx := ctCtx(t)

	nick := ctUserPrefix + "alice"
	require.NoError(t, ca.Register(ctx, nick, 0))
	err := cm.Register(ctx, nick, 0)
	var se *StatusError
	require.ErrorAs(t, err, &se)
	require.Equal(t, StatusNotAuthorized, se.Status)
	// Nothing is kept after a refusal.
	cm.mu.Lock()
	require.Empty(t, cm.kept)
	cm.mu.Unlock()

	_, err = cm.RegisterOn(ctx, srv.h.ID(), "room", MaxTTL+time.Hour)
	require.ErrorAs(t, err, &se)
	require.Equal(t, StatusInvalidTTL, se.Status)

	_, _, err = cm.DiscoverOn(ctx, srv.h.ID(), "room", 10, []byte("not a cookie"))
	require.ErrorAs(t, err, &se)
	require.Equal(t, StatusInvalidCookie, se.Status)

	// Client-side validation needs no round trip.
	require.Error(t, cm.Register(ctx, "", 0))
	require.Error(t, cm.Register(ctx, string(make([]byte, MaxNamespaceLen+1)), 0))
	require.Error(t, cm.Register(ctx, "room", -time.Second))

	// Once the holder leaves, the name stays leased to it (lease.go);
	// once it releases the name, the name is free.
	require.NoError(t, ca.Unregister(ctx, nick))
	require.ErrorAs(t, cm.Register(ctx, nick, 0), &se)
	require.Equal(t, StatusNotAuthorized, se.Status)
	require.NoError(t, ca.Release(ctx, nick))
	require.NoError(t, cm.Register(ctx, nick, 0))
}

func TestClientDiscoverOnPagination(t *testing.T) {
	srv := ctStartServer(t, nil, "")
	alice := ctHost(t, nil, "")
	ca := ctClient(t, alice, []*ctServer{srv})
	ctx := ctCtx(t)

	const n = 25
	want := map[string]bool{}
	for i := range n {
		ns := fmt.Sprintf("page/%02d", i)
		want[ns] = true
		_, err := ca.RegisterOn(ctx, srv.h.ID(), ns, 0)
		require.NoError(t, err)
	}

	seen := map[string]int{}
	var cookie []byte
	var sizes []int
	for range 10 {
		page, next, err := ca.DiscoverOn(ctx, srv.h.ID(), "", 10, cookie)
		require.NoError(t, err)
		require.NotEmpty(t, next, "an OK response always carries a cookie")
		cookie = next
		sizes = append(sizes, len(page))
		for _, r := range page {
			seen[r.Namespace]++
		}
		if len(page) == 0 {
			break
		}
	}
	require.Equal(t, []int{10, 10, 5, 0}, sizes)
	require.Len(t, seen, n)
	for ns, k := range seen {
		require.True(t, want[ns], ns)
		require.Equal(t, 1, k, "namespace %s seen %d times", ns, k)
	}

	// Incremental polling: the last cookie yields only what is new.
	_, err := ca.RegisterOn(ctx, srv.h.ID(), "page/new", 0)
	require.NoError(t, err)
	page, _, err := ca.DiscoverOn(ctx, srv.h.ID(), "", 10, cookie)
	require.NoError(t, err)
	require.Len(t, page, 1)
	require.Equal(t, "page/new", page[0].Namespace)

	// The merged call follows cookies and honours its limit.
	all, err := ca.Discover(ctx, "", 0)
	require.NoError(t, err)
	require.Len(t, all, n+1)
	some, err := ca.Discover(ctx, "", 7)
	require.NoError(t, err)
	require.Len(t, some, 7)
}

// Close unregisters kept registrations before it returns.
func TestClientCloseUnregisters(t *testing.T) {
	srv := ctStartServer(t, nil, "", WithDisconnectGrace(-1), WithExclusivePrefix(ctUserPrefix))
	alice := ctHost(t, nil, "")
	bob := ctHost(t, nil, "")
	ca := ctClient(t, alice, []*ctServer{srv})
	cb := ctClient(t, bob, []*ctServer{srv})
	ctx := ctCtx(t)

	require.NoError(t, ca.Register(ctx, "room", time.Hour))
	require.NoError(t, ca.Register(ctx, ctUserPrefix+"alice", time.Hour))
	require.NoError(t, ca.Close())
	require.NoError(t, ca.Close(), "Close is idempotent")
	for _, ns := range []string{"room", ctUserPrefix + "alice"} {
		regs, err := cb.Discover(ctx, ns, 0)
		require.NoError(t, err)
		require.Empty(t, regs, ns)
	}
	// The exclusive name stays leased to alice's key (lease.go).
	var se *StatusError
	require.ErrorAs(t, cb.Register(ctx, ctUserPrefix+"alice", time.Hour), &se)
	require.Equal(t, StatusNotAuthorized, se.Status)
}

// A server that caps pages below what the client asks: Discover keeps
// following the cookie.
func TestClientDiscoverFollowsServerCap(t *testing.T) {
	lim := ctLimits()
	lim.MaxDiscoverLimit = serverCapFloor
	srv := ctStartServer(t, nil, "", WithLimits(lim))
	alice := ctHost(t, nil, "")
	ca := ctClient(t, alice, []*ctServer{srv})
	ctx := ctCtx(t)

	const n = serverCapFloor + serverCapFloor/2
	for i := range n {
		_, err := ca.RegisterOn(ctx, srv.h.ID(), fmt.Sprintf("ns/%03d", i), time.Hour)
		require.NoError(t, err)
	}
	all, err := ca.Discover(ctx, "", 0)
	require.NoError(t, err)
	require.Len(t, all, n)
	seen := map[string]bool{}
	for _, r := range all {
		require.False(t, seen[r.Namespace], "duplicate %s", r.Namespace)
		seen[r.Namespace] = true
	}
}
