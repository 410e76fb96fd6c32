package rendezvous

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/stretchr/testify/require"
)

func ctNext(t *testing.T, ch <-chan WatchEvent) WatchEvent {
	t.Helper()
	select {
	case ev, ok := <-ch:
		require.True(t, ok, "watch channel closed")
		return ev
	case <-time.After(15 * time.Second):
		t.Fatal("no watch event")
		return WatchEvent{}
	}
}

// ctNextFor skips events about other peers (and Synced) until one about p.
func ctNextFor(t *testing.T, ch <-chan WatchEvent, p peer.ID) WatchEvent {
	t.Helper()
	for {
		ev := ctNext(t, ch)
		if ev.Kind != WatchSynced && ev.Registration.Peer.ID == p {
			return ev
		}
	}
}

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

// Pure merge logic: presence across servers, address changes, TTL expiry
// of a server that is down.
func TestClientWatchStateMerge(t *testing.T) {
	s1, s2, p := peer.ID("s1"), peer.ID("s2"), peer.ID("p")
	a1 := ctAddr(t, "/ip4/127.0.0.1/tcp/1")
	a2 := ctAddr(t, "/ip4/127.0.0.1/tcp/2")
	now := time.Unix(1000, 0)
	reg := func(addrs ...string) Registration {
		r := Registration{Namespace: "ns", Peer: peer.AddrInfo{ID: p}, TTL: time.Minute}
		for _, a := range addrs {
			r.Peer.Addrs = append(r.Peer.Addrs, ctAddr(t, a))
		}
		return r
	}
	st := newWatchState("ns", []peer.ID{s1, s2})
	kinds := func(evs []WatchEvent) []WatchKind {
		var k []WatchKind
		for _, e := range evs {
			k = append(k, e.Kind)
		}
		return k
	}
	require.Empty(t, st.apply(watchUpdate{server: s1, kind: updSubscribed}))
	require.Equal(t, []WatchKind{WatchRegistered}, kinds(st.apply(watchUpdate{server: s1, kind: updRegistered, reg: reg("/ip4/127.0.0.1/tcp/1"), at: now})))
	require.Empty(t, st.apply(watchUpdate{server: s1, kind: updSynced}), "s2 not settled yet")
	require.Equal(t, []WatchKind{WatchSynced}, kinds(st.apply(watchUpdate{server: s2, kind: updDown})))
	// s2 comes up listing p with another address: an address change.
	st.apply(watchUpdate{server: s2, kind: updSubscribed})
	evs := st.apply(watchUpdate{server: s2, kind: updRegistered, reg: reg("/ip4/127.0.0.1/tcp/2"), at: now})
	require.Equal(t, []WatchKind{WatchRegistered}, kinds(evs))
	require.True(t, ctHasAddr(evs[0].Registration.Peer.Addrs, a1) && ctHasAddr(evs[0].Registration.Peer.Addrs, a2))
	require.Empty(t, st.apply(watchUpdate{server: s2, kind: updSynced}))
	// Same addresses again (a refresh): nothing to report.
	require.Empty(t, st.apply(watchUpdate{server: s2, kind: updRegistered, reg: reg("/ip4/127.0.0.1/tcp/2"), at: now}))
	// s1 drops p: still on s2, but the merged addresses shrink.
	evs = st.apply(watchUpdate{server: s1, kind: updUnregistered, id: p})
	require.Equal(t, []WatchKind{WatchRegistered}, kinds(evs))
	require.False(t, ctHasAddr(evs[0].Registration.Peer.Addrs, a1))
	// s2 goes down: p stays until its TTL runs out.
	require.Empty(t, st.apply(watchUpdate{server: s2, kind: updDown}))
	evs, next := st.expire(now.Add(30 * time.Second))
	require.Empty(t, evs)
	require.Equal(t, now.Add(time.Minute), next)
	evs, next = st.expire(now.Add(time.Minute))
	require.Equal(t, []WatchKind{WatchUnregistered}, kinds(evs))
	require.True(t, next.IsZero())
	require.Empty(t, st.peers)
}

func ctAddr(t *testing.T, s string) ma.Multiaddr {
	t.Helper()
	a, err := ma.NewMultiaddr(s)
	require.NoError(t, err)
	return a
}

// A live server's departure news outranks what a down server last said;
// a peer listed only by a down server stays.
func TestClientWatchStateDownServer(t *testing.T) {
	s1, s2 := peer.ID("s1"), peer.ID("s2")
	p, q := peer.ID("p"), peer.ID("q")
	now := time.Unix(1000, 0)
	reg := func(id peer.ID) Registration {
		return Registration{Namespace: "ns", Peer: peer.AddrInfo{ID: id, Addrs: []ma.Multiaddr{ctAddr(t, "/ip4/127.0.0.1/tcp/1")}}, TTL: time.Hour}
	}
	st := newWatchState("ns", []peer.ID{s1, s2})
	for _, s := range []peer.ID{s1, s2} {
		st.apply(watchUpdate{server: s, kind: updSubscribed})
		st.apply(watchUpdate{server: s, kind: updRegistered, reg: reg(p), at: now})
		st.apply(watchUpdate{server: s, kind: updSynced})
	}
	st.apply(watchUpdate{server: s1, kind: updRegistered, reg: reg(q), at: now})
	require.Empty(t, st.apply(watchUpdate{server: s1, kind: updDown}), "no spurious departure")
	evs := st.apply(watchUpdate{server: s2, kind: updUnregistered, id: p})
	require.Len(t, evs, 1)
	require.Equal(t, WatchUnregistered, evs[0].Kind)
	require.Equal(t, p, evs[0].Registration.Peer.ID)
	require.Contains(t, st.peers, q, "q, listed only by the down server, stays")
	// s1 comes back without q: reconciled away.
	st.apply(watchUpdate{server: s1, kind: updSubscribed})
	evs = st.apply(watchUpdate{server: s1, kind: updSynced})
	require.Len(t, evs, 1)
	require.Equal(t, WatchUnregistered, evs[0].Kind)
	require.Equal(t, q, evs[0].Registration.Peer.ID)
}
