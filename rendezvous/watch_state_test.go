package rendezvous

import (
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/stretchr/testify/require"
)

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

// Table of update sequences and the events each step must produce.
func TestWatchStateTable(t *testing.T) {
	s1, s2 := peer.ID("s1"), peer.ID("s2")
	p := peer.ID("p")
	now := time.Unix(1000, 0)
	at := func(addr string) watchUpdate {
		return watchUpdate{kind: updRegistered, at: now, reg: Registration{Namespace: "ns", TTL: time.Hour,
			Peer: peer.AddrInfo{ID: p, Addrs: []ma.Multiaddr{ctAddr(t, addr)}}}}
	}
	on := func(s peer.ID, u watchUpdate) watchUpdate { u.server = s; return u }
	sub, synced, down := watchUpdate{kind: updSubscribed}, watchUpdate{kind: updSynced}, watchUpdate{kind: updDown}
	gone := watchUpdate{kind: updUnregistered, id: p}
	type step struct {
		u    watchUpdate
		want []WatchKind
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"one peer on two servers is shown once", []step{
			{on(s1, sub), nil}, {on(s2, sub), nil},
			{on(s1, at("/ip4/127.0.0.1/tcp/1")), []WatchKind{WatchRegistered}},
			{on(s2, at("/ip4/127.0.0.1/tcp/1")), nil},
			{on(s1, synced), nil}, {on(s2, synced), []WatchKind{WatchSynced}},
			{on(s1, gone), nil},
			{on(s2, gone), []WatchKind{WatchUnregistered}},
		}},
		{"synced once every server settled, failures included", []step{
			{on(s1, down), nil}, {on(s2, sub), nil}, {on(s2, synced), []WatchKind{WatchSynced}},
			{on(s1, down), nil},
		}},
		{"a new snapshot without the peer reconciles it away", []step{
			{on(s1, sub), nil}, {on(s1, at("/ip4/127.0.0.1/tcp/1")), []WatchKind{WatchRegistered}},
			{on(s1, synced), nil}, {on(s2, down), []WatchKind{WatchSynced}},
			{on(s1, down), nil}, {on(s1, sub), nil}, {on(s1, synced), []WatchKind{WatchUnregistered}},
		}},
		{"a refresh with the same addresses is silent, a new address is news", []step{
			{on(s1, sub), nil}, {on(s1, at("/ip4/127.0.0.1/tcp/1")), []WatchKind{WatchRegistered}},
			{on(s1, at("/ip4/127.0.0.1/tcp/1")), nil},
			{on(s1, at("/ip4/127.0.0.1/tcp/2")), []WatchKind{WatchRegistered}},
		}},
		{"news from an unknown server is ignored", []step{
			{on("s3", at("/ip4/127.0.0.1/tcp/1")), nil},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := newWatchState("ns", []peer.ID{s1, s2})
			for i, s := range tc.steps {
				var got []WatchKind
				for _, e := range st.apply(s.u) {
					got = append(got, e.Kind)
				}
				require.Equal(t, s.want, got, "step %d", i)
			}
		})
	}
}
