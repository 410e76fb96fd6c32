package rendezvous

import (
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/stretchr/testify/require"
)

// TestClientAddServer: a server added to a running client gets the kept
// registrations, joins running watches and multi-server calls; adding it
// again or adding the host itself changes nothing.
func TestClientAddServer(t *testing.T) {
	s1 := ctStartServer(t, nil, "")
	s2 := ctStartServer(t, nil, "")
	alice := ctHost(t, nil, "")
	bob := ctHost(t, nil, "")
	ca := ctClient(t, alice, []*ctServer{s1})
	cb := ctClient(t, bob, []*ctServer{s2})
	ctx := ctCtx(t)

	require.NoError(t, ca.Register(ctx, "room", time.Hour))
	w, err := ca.Watch(ctx, "room")
	require.NoError(t, err)
	for ev := ctNext(t, w); ev.Kind != WatchSynced; ev = ctNext(t, w) {
	}
	require.NoError(t, cb.Register(ctx, "room", time.Hour))

	added, err := ca.AddServer(s2.info())
	require.NoError(t, err)
	require.True(t, added)
	require.Equal(t, []peer.ID{s1.h.ID(), s2.h.ID()}, ca.Servers())
	again, err := ca.AddServer(s2.info())
	require.NoError(t, err)
	require.False(t, again)
	_, err = ca.AddServer(peer.AddrInfo{ID: alice.ID()})
	require.Error(t, err)

	// The kept registration reaches the new server.
	require.Eventually(t, func() bool {
		regs, _, err := cb.DiscoverOn(ctx, s2.h.ID(), "room", 0, nil)
		return err == nil && len(regs) == 2
	}, 10*time.Second, 20*time.Millisecond, "alice's registration is kept on the added server")
	// The watch sees bob, who is only on the added server.
	for {
		ev := ctNext(t, w)
		if ev.Kind == WatchRegistered && ev.Registration.Peer.ID == bob.ID() {
			require.Equal(t, s2.h.ID(), ev.Server)
			break
		}
	}
	regs, err := ca.Discover(ctx, "room", 0)
	require.NoError(t, err)
	require.ElementsMatch(t, []peer.ID{alice.ID(), bob.ID()}, ctIDs(regs))

	require.NoError(t, ca.Close())
	_, err = ca.AddServer(s1.info())
	require.ErrorIs(t, err, ErrClientClosed)
}
