package rendezvous

import (
	"context"
	"testing"
	"time"

	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/discovery"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/discovery/backoff"
	drouting "github.com/libp2p/go-libp2p/p2p/discovery/routing"
	dutil "github.com/libp2p/go-libp2p/p2p/discovery/util"
	"github.com/stretchr/testify/require"
)

func TestClientDiscoveryInterface(t *testing.T) {
	s1 := ctStartServer(t, nil, "")
	s2 := ctStartServer(t, nil, "")
	alice := ctHost(t, nil, "")
	bob := ctHost(t, nil, "")
	carol := ctHost(t, nil, "")
	ca := ctClient(t, alice, []*ctServer{s1, s2})
	cb := ctClient(t, bob, []*ctServer{s1, s2})
	cc := ctClient(t, carol, []*ctServer{s1, s2})
	ctx := ctCtx(t)

	// Advertise honours the TTL option and reports what was granted.
	ttl, err := ca.Advertise(ctx, "svc", discovery.TTL(10*time.Minute))
	require.NoError(t, err)
	require.Equal(t, 10*time.Minute, ttl)
	ttl, err = cb.Advertise(ctx, "svc")
	require.NoError(t, err)
	require.Equal(t, DefaultTTL, ttl)
	_, err = cc.Advertise(ctx, "svc")
	require.NoError(t, err)

	// go-libp2p's discovery helper: merged over both servers, self left out.
	found, err := dutil.FindPeers(ctx, ca, "svc")
	require.NoError(t, err)
	require.ElementsMatch(t, []peer.ID{bob.ID(), carol.ID()}, ctInfoIDs(found))
	for _, ai := range found {
		require.NotEmpty(t, ai.Addrs)
	}
	found, err = dutil.FindPeers(ctx, ca, "svc", discovery.Limit(1))
	require.NoError(t, err)
	require.Len(t, found, 1)
	require.NotEqual(t, alice.ID(), found[0].ID)

	// Behind go-libp2p's backoff cache (which forwards nothing from a live
	// query without a Limit option: a quirk of backoffcache.go).
	bd, err := backoff.NewBackoffDiscovery(ca, backoff.NewFixedBackoff(time.Minute))
	require.NoError(t, err)
	found, err = dutil.FindPeers(ctx, bd, "svc", discovery.Limit(100))
	require.NoError(t, err)
	require.ElementsMatch(t, []peer.ID{bob.ID(), carol.ID()}, ctInfoIDs(found))

	// The discovered addresses are good enough to connect.
	require.NoError(t, alice.Connect(ctx, found[0]))
}

// The rendezvous client stands beside routing discovery over a Kademlia
// DHT: the same code drives both, and a peer is found through either.
func TestClientBesideRoutingDiscovery(t *testing.T) {
	srv := ctStartServer(t, nil, "")
	alice := ctHost(t, nil, "")
	bob := ctHost(t, nil, "")
	ctx := ctCtx(t)

	newDHT := func(h host.Host, boot ...peer.AddrInfo) *dht.IpfsDHT {
		d, err := dht.New(h, dht.Mode(dht.ModeServer), dht.ProtocolPrefix("/p2p-messaging"),
			dht.BootstrapPeers(boot...), dht.DisableAutoRefresh())
		require.NoError(t, err)
		t.Cleanup(func() { d.Close() })
		return d
	}
	dsrv := newDHT(srv.h)
	srvInfo := srv.info()
	da := newDHT(alice, srvInfo)
	db := newDHT(bob, srvInfo)
	for _, h := range []host.Host{alice, bob} {
		require.NoError(t, h.Connect(ctx, srvInfo))
	}
	require.Eventually(t, func() bool {
		return dsrv.RoutingTable().Size() >= 2 && da.RoutingTable().Size() >= 1 && db.RoutingTable().Size() >= 1
	}, 15*time.Second, 20*time.Millisecond)

	discoverers := func(h host.Host, d *dht.IpfsDHT) []discovery.Discovery {
		return []discovery.Discovery{ctClient(t, h, []*ctServer{srv}), drouting.NewRoutingDiscovery(d)}
	}
	aliceDisc := discoverers(alice, da)
	bobDisc := discoverers(bob, db)
	for _, d := range aliceDisc {
		_, err := d.Advertise(ctx, "svc", discovery.TTL(10*time.Minute))
		require.NoError(t, err)
	}
	for i, d := range bobDisc {
		fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		found, err := dutil.FindPeers(fctx, d, "svc")
		cancel()
		require.NoError(t, err)
		require.Contains(t, ctInfoIDs(found), alice.ID(), "discoverer %d", i)
	}
}

func ctInfoIDs(ais []peer.AddrInfo) []peer.ID {
	ids := make([]peer.ID, len(ais))
	for i, ai := range ais {
		ids[i] = ai.ID
	}
	return ids
}
