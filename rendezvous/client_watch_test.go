package rendezvous

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/stretchr/testify/require"
)

func TestClientMultiServer(t *testing.T) {
	s1 := ctStartServer(t, nil, "")
	s2 := ctStartServer(t, nil, "")
	alice := ctHost(t, nil, "")
	bob := ctHost(t, nil, "")
	ca := ctClient(t, alice, []*ctServer{s1, s2})
	cb := ctClient(t, bob, []*ctServer{s1, s2})
	ctx := ctCtx(t)

	require.NoError(t, ca.Register(ctx, "room", time.Hour))
	for _, s := range []*ctServer{s1, s2} {
		regs, _, err := cb.DiscoverOn(ctx, s.h.ID(), "room", 0, nil)
		require.NoError(t, err)
		require.Equal(t, []peer.ID{alice.ID()}, ctIDs(regs), "registered on every server")
	}
	regs, err := cb.Discover(ctx, "room", 0)
	require.NoError(t, err)
	require.Equal(t, []peer.ID{alice.ID()}, ctIDs(regs), "merged and deduplicated")

	s1.stop()
	regs, err = cb.Discover(ctx, "room", 0)
	require.NoError(t, err, "the loss of one server is invisible")
	require.Equal(t, []peer.ID{alice.ID()}, ctIDs(regs))

	// Registering still works with one server down.
	require.NoError(t, cb.Register(ctx, "room", time.Hour))
	regs, err = ca.Discover(ctx, "room", 0)
	require.NoError(t, err)
	require.ElementsMatch(t, []peer.ID{alice.ID(), bob.ID()}, ctIDs(regs))

	// With every server down, calls fail.
	s2.stop()
	_, err = cb.Discover(ctx, "room", 0)
	require.Error(t, err)
}

func TestClientWatch(t *testing.T) {
	s1 := ctStartServer(t, nil, "")
	s2 := ctStartServer(t, nil, "")
	alice := ctHost(t, nil, "")
	bob := ctHost(t, nil, "")
	carol := ctHost(t, nil, "")
	watcher := ctHost(t, nil, "")
	ca := ctClient(t, alice, []*ctServer{s1, s2})
	cb := ctClient(t, bob, []*ctServer{s1, s2})
	cc := ctClient(t, carol, []*ctServer{s1, s2})
	cw := ctClient(t, watcher, []*ctServer{s1, s2})
	ctx := ctCtx(t)

	// bob is there before the watch starts: he is in the snapshot.
	require.NoError(t, cb.Register(ctx, "room", time.Hour))
	events, err := cw.Watch(ctx, "room")
	require.NoError(t, err)
	ev := ctNext(t, events)
	require.Equal(t, WatchRegistered, ev.Kind)
	require.Equal(t, bob.ID(), ev.Registration.Peer.ID)
	require.Equal(t, "room", ev.Registration.Namespace)
	require.Equal(t, WatchSynced, ctNext(t, events).Kind, "one Synced after both snapshots, bob reported once")

	// alice arrives on both servers: one merged arrival.
	require.NoError(t, ca.Register(ctx, "room", time.Hour))
	ev = ctNext(t, events)
	require.Equal(t, WatchRegistered, ev.Kind)
	require.Equal(t, alice.ID(), ev.Registration.Peer.ID)
	require.NotEmpty(t, ev.Registration.Peer.Addrs)

	// s1 dies: alice and bob are still listed by s2, so nobody departs.
	s1.stop()
	// carol arrives through s2: the next event is hers, no departure first.
	require.NoError(t, cc.Register(ctx, "room", time.Hour))
	ev = ctNext(t, events)
	require.Equal(t, WatchRegistered, ev.Kind, "unexpected %v of %s", ev.Kind, ev.Registration.Peer.ID)
	require.Equal(t, carol.ID(), ev.Registration.Peer.ID)

	// alice leaves: s2 reports it, and no server lists her any more.
	require.NoError(t, ca.Unregister(ctx, "room"))
	ev = ctNext(t, events)
	require.Equal(t, WatchUnregistered, ev.Kind)
	require.Equal(t, alice.ID(), ev.Registration.Peer.ID)
	require.Equal(t, s2.h.ID(), ev.Server)

	// The watch ends with its context.
	wctx, cancel := context.WithCancel(ctx)
	ch2, err := cw.Watch(wctx, "room")
	require.NoError(t, err)
	cancel()
	for range ch2 {
	}
}

// A server that restarts with an empty store: the watch resubscribes and
// reconciles, so a peer it no longer lists departs; one registered on the
// new instance arrives.
func TestClientWatchReconcileAfterRestart(t *testing.T) {
	srv := ctStartServer(t, nil, "")
	alice := ctHost(t, nil, "")
	bob := ctHost(t, nil, "")
	watcher := ctHost(t, nil, "")
	ca := ctClient(t, alice, []*ctServer{srv})
	cb := ctClient(t, bob, []*ctServer{srv})
	cw := ctClient(t, watcher, []*ctServer{srv})
	ctx := ctCtx(t)

	// alice registers once (not kept), so the restarted server forgets her.
	_, err := ca.RegisterOn(ctx, srv.h.ID(), "room", time.Hour)
	require.NoError(t, err)
	events, err := cw.Watch(ctx, "room")
	require.NoError(t, err)
	require.Equal(t, alice.ID(), ctNext(t, events).Registration.Peer.ID)
	require.Equal(t, WatchSynced, ctNext(t, events).Kind)

	srv.stop()
	srv2 := srv.restart()
	_, err = cb.RegisterOn(ctx, srv2.h.ID(), "room", time.Hour)
	require.NoError(t, err)

	var got []WatchEvent
	for len(got) < 2 {
		ev := ctNext(t, events)
		require.NotEqual(t, WatchSynced, ev.Kind, "Synced is sent once")
		got = append(got, ev)
	}
	require.True(t, slices.ContainsFunc(got, func(e WatchEvent) bool {
		return e.Kind == WatchUnregistered && e.Registration.Peer.ID == alice.ID()
	}), "alice departs: %v", got)
	require.True(t, slices.ContainsFunc(got, func(e WatchEvent) bool {
		return e.Kind == WatchRegistered && e.Registration.Peer.ID == bob.ID()
	}), "bob arrives: %v", got)
}

func TestClientWatchClosedByClient(t *testing.T) {
	srv := ctStartServer(t, nil, "")
	watcher := ctHost(t, nil, "")
	c, err := NewClient(watcher, []peer.AddrInfo{srv.info()})
	require.NoError(t, err)
	events, err := c.Watch(ctCtx(t), "room")
	require.NoError(t, err)
	require.Equal(t, WatchSynced, ctNext(t, events).Kind)
	require.NoError(t, c.Close())
	for range events {
	}
	_, err = c.Watch(ctCtx(t), "room")
	require.ErrorIs(t, err, ErrClientClosed)
	require.ErrorIs(t, c.Register(ctCtx(t), "room", 0), ErrClientClosed)
	_, err = c.Discover(ctCtx(t), "room", 0)
	require.ErrorIs(t, err, ErrClientClosed)
}
