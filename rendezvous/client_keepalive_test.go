package rendezvous

import (
	"slices"
	"testing"
	"time"

	ma "github.com/multiformats/go-multiaddr"
	"github.com/stretchr/testify/require"
)

func TestClientKeepaliveAfterServerRestart(t *testing.T) {
	srv := ctStartServer(t, nil, "")
	alice := ctHost(t, nil, "")
	bob := ctHost(t, nil, "")
	ca := ctClient(t, alice, []*ctServer{srv})
	cb := ctClient(t, bob, []*ctServer{srv})
	ctx := ctCtx(t)

	require.NoError(t, ca.Register(ctx, "room", time.Hour))
	srv.stop()
	srv2 := srv.restart() // same identity and address, empty store
	require.Equal(t, srv.h.ID(), srv2.h.ID())

	require.Eventually(t, func() bool {
		regs, err := cb.Discover(ctx, "room", 0)
		return err == nil && slices.Contains(ctIDs(regs), alice.ID())
	}, 15*time.Second, 50*time.Millisecond)
}

func TestClientReregisterOnAddressChange(t *testing.T) {
	srv := ctStartServer(t, nil, "")
	alice := ctHost(t, nil, "")
	bob := ctHost(t, nil, "")
	ca := ctClient(t, alice, []*ctServer{srv})
	cb := ctClient(t, bob, []*ctServer{srv})
	ctx := ctCtx(t)

	require.NoError(t, ca.Register(ctx, "room", time.Hour))
	before := alice.Addrs()
	require.NoError(t, alice.Network().Listen(ma.StringCast("/ip4/127.0.0.1/tcp/0")))
	var added ma.Multiaddr
	require.Eventually(t, func() bool {
		for _, a := range alice.Addrs() {
			if !ctHasAddr(before, a) {
				added = a
				return true
			}
		}
		return false
	}, 15*time.Second, 20*time.Millisecond)

	require.Eventually(t, func() bool {
		regs, err := cb.Discover(ctx, "room", 0)
		return err == nil && len(regs) == 1 && ctHasAddr(regs[0].Peer.Addrs, added)
	}, 15*time.Second, 20*time.Millisecond)
}

// A kept registration is refreshed before its TTL runs out: it is still
// listed well after a lifetime has passed.
func TestClientKeepaliveRefresh(t *testing.T) {
	srv := ctStartServer(t, nil, "")
	alice := ctHost(t, nil, "")
	ca := ctClient(t, alice, []*ctServer{srv})
	ctx := ctCtx(t)

	const ttl = 2 * time.Second
	start := time.Now()
	require.NoError(t, ca.Register(ctx, "room", ttl))
	lapsed := false
	require.Eventually(t, func() bool {
		regs, _, err := ca.DiscoverOn(ctx, srv.h.ID(), "room", 0, nil)
		if err != nil || len(regs) != 1 {
			lapsed = true
			return true
		}
		return time.Since(start) > 5*ttl/2
	}, 20*time.Second, 50*time.Millisecond)
	require.False(t, lapsed, "registration lapsed")
}

func TestClientBackoffMath(t *testing.T) {
	for _, tc := range []struct {
		granted, asked time.Duration
		r              float64
		want           time.Duration
	}{
		{time.Hour, 0, 0.5, 30 * time.Minute},
		{time.Hour, 0, 0, 27 * time.Minute},
		{time.Hour, 0, 1, 33 * time.Minute},
		{0, 10 * time.Minute, 0.5, 5 * time.Minute},
		{0, 0, 0.5, DefaultTTL / 2},
		{time.Millisecond, 0, 0.5, 100 * time.Millisecond},
	} {
		require.Equal(t, tc.want, refreshDelay(tc.granted, tc.asked, tc.r), "%+v", tc)
	}
	lo, hi := time.Second, 30*time.Second
	for _, tc := range []struct {
		n    int
		want time.Duration
	}{{1, time.Second}, {2, 2 * time.Second}, {3, 4 * time.Second}, {5, 16 * time.Second}, {6, 30 * time.Second}, {100, 30 * time.Second}} {
		require.Equal(t, tc.want, retryDelay(tc.n, lo, hi, 1), "n=%d", tc.n)
		require.Equal(t, tc.want*8/10, retryDelay(tc.n, lo, hi, 0), "n=%d", tc.n)
	}
}
