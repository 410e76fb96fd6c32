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

// A kept registration is refreshed before its TTL runs out: driven by one
// fake clock shared by the server (lifetimes) and the client (schedule), it
// is still listed after two and a half lifetimes, without waiting for them.
func TestClientKeepaliveRefresh(t *testing.T) {
	clock := newFakeClock()
	srv := ctStartServer(t, nil, "", WithClock(clock.Now))
	alice := ctHost(t, nil, "")
	ca := ctClient(t, alice, []*ctServer{srv}, WithClientClock(clock))
	ctx := ctCtx(t)
	// idle: the keeper has scheduled its next refresh in the future (it is
	// done with anything that was due).
	idle := func() {
		t.Helper()
		require.Eventually(t, func() bool { return clock.waiting() == 1 }, 10*time.Second, time.Millisecond)
	}

	const ttl = 2 * time.Second
	require.NoError(t, ca.Register(ctx, "room", ttl))
	refreshes := 0
	for step := range 10 { // 10 * ttl/4 = 2.5 lifetimes
		idle()
		clock.Advance(ttl / 4)
		idle()
		regs, _, err := ca.DiscoverOn(ctx, srv.h.ID(), "room", 0, nil)
		require.NoError(t, err)
		require.Len(t, regs, 1, "registration lapsed at step %d", step)
		if regs[0].TTL > ttl-ttl/4 {
			refreshes++
		}
	}
	require.GreaterOrEqual(t, refreshes, 4, "refreshed about every half lifetime")
}

func TestClientRefreshDelay(t *testing.T) {
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
}

// Register with no server reachable keeps the registration, says so with
// ErrNotYetRegistered, and the keeper registers it once a server is back.
func TestClientRegisterKeptWhileUnreachable(t *testing.T) {
	srv := ctStartServer(t, nil, "")
	alice := ctHost(t, nil, "")
	bob := ctHost(t, nil, "")
	ca := ctClient(t, alice, []*ctServer{srv})
	ctx := ctCtx(t)
	srv.stop()

	err := ca.Register(ctx, "room", time.Hour)
	require.ErrorIs(t, err, ErrNotYetRegistered)
	require.False(t, isStatus(err))
	ca.mu.Lock()
	require.Contains(t, ca.kept, "room")
	ca.mu.Unlock()

	srv2 := srv.restart()
	cb := ctClient(t, bob, []*ctServer{srv2})
	require.Eventually(t, func() bool {
		regs, err := cb.Discover(ctx, "room", 0)
		return err == nil && slices.Contains(ctIDs(regs), alice.ID())
	}, 15*time.Second, 20*time.Millisecond)
}

// E_UNAVAILABLE is transient: kept and retried. A refusal is returned as a
// *StatusError and nothing is kept.
func TestClientRegisterTransientAndRefused(t *testing.T) {
	clock := newFakeClock()
	lim := ctLimits()
	lim.RequestRate, lim.RequestBurst = 1, 1
	srv := ctStartServer(t, nil, "", WithLimits(lim), WithClock(clock.Now))
	alice := ctHost(t, nil, "")
	bob := ctHost(t, nil, "")
	ca := ctClient(t, alice, []*ctServer{srv})
	cb := ctClient(t, bob, []*ctServer{srv})
	ctx := ctCtx(t)

	_, err := ca.RegisterOn(ctx, srv.h.ID(), "other", time.Hour) // the one token
	require.NoError(t, err)
	err = ca.Register(ctx, "room", time.Hour)
	require.ErrorIs(t, err, ErrNotYetRegistered)
	var se *StatusError
	require.ErrorAs(t, err, &se)
	require.Equal(t, StatusUnavailable, se.Status)
	ca.mu.Lock()
	require.Contains(t, ca.kept, "room")
	ca.mu.Unlock()
	// Tokens come back with (server) time; the keeper's retry gets in.
	clock.Advance(time.Minute)
	require.Eventually(t, func() bool {
		regs, _, err := cb.DiscoverOn(ctx, srv.h.ID(), "room", 0, nil)
		if err != nil {
			clock.Advance(time.Minute) // bob's own bucket ran dry
			return false
		}
		return slices.Contains(ctIDs(regs), alice.ID())
	}, 15*time.Second, 20*time.Millisecond)

	// A refusal: not kept, returned as the server's status.
	clock.Advance(time.Minute)
	err = ca.Register(ctx, "hall", MaxTTL+time.Hour)
	require.ErrorAs(t, err, &se)
	require.Equal(t, StatusInvalidTTL, se.Status)
	require.NotErrorIs(t, err, ErrNotYetRegistered)
	ca.mu.Lock()
	require.NotContains(t, ca.kept, "hall")
	ca.mu.Unlock()

	// Unregister stops the retries of a kept one.
	require.NoError(t, ca.Unregister(ctx, "room"))
	ca.mu.Lock()
	require.NotContains(t, ca.kept, "room")
	ca.mu.Unlock()
}
