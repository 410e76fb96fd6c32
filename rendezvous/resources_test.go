package rendezvous

import (
	"testing"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/stretchr/testify/require"

	"github.com/p2p-messaging/p2p-messaging/rendezvous/pb"
)

// watchUpTo opens n watches from c and then one more: each of the n is
// served (SYNCED), the last refused with E_UNAVAILABLE (not reset).
func watchUpTo(t *testing.T, s *Server, c, sh host.Host, n int) {
	t.Helper()
	for i := range n {
		w := openWatch(t, c, sh, "room")
		ev := w.next()
		require.Equal(t, pb.WatchEvent_SYNCED.String(), ev.GetKind().String(), "watch %d of %d", i+1, n)
	}
	require.Equal(t, n, s.st.watchCount())
	w := openWatch(t, c, sh, "room")
	var ev pb.WatchEvent
	require.NoError(t, w.r.ReadMsg(&ev), "one watch over the cap gets a status, not a reset")
	require.Equal(t, pb.WatchEvent_ERROR, ev.GetKind())
	require.Equal(t, StatusUnavailable, ev.GetStatus())
	require.Contains(t, ev.GetStatusText(), "from this peer")
}

// The documented per-peer watch cap is the one enforced on a host with
// go-libp2p's default resource manager: every one of them works, and one
// more is refused with a status.
func TestWatchCapFitsDefaultResourceManager(t *testing.T) {
	sh, c := ctHost(t, nil, ""), ctHost(t, nil, "") // default resource managers
	s, err := NewServer(sh)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	connect(t, c, sh)
	require.Equal(t, DefaultMaxWatchesPerPeer, s.lim.MaxWatchesPerPeer)
	watchUpTo(t, s, c, sh, DefaultMaxWatchesPerPeer)
}

// A higher cap fits once the hosts' resource managers are built with
// SetResourceLimits.
func TestSetResourceLimitsFitsHigherWatchCap(t *testing.T) {
	lim := DefaultLimits()
	lim.MaxWatchesPerPeer = 256
	newHost := func() host.Host {
		cfg := rcmgr.DefaultLimits
		libp2p.SetDefaultServiceLimits(&cfg)
		SetResourceLimits(&cfg, lim)
		rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(cfg.AutoScale()))
		require.NoError(t, err)
		h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay(), libp2p.ResourceManager(rm))
		require.NoError(t, err)
		t.Cleanup(func() { h.Close() })
		return h
	}
	sh, c := newHost(), newHost()
	s, err := NewServer(sh, WithLimits(lim))
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	connect(t, c, sh)
	watchUpTo(t, s, c, sh, lim.MaxWatchesPerPeer)

	// Limits that were already higher stay.
	cfg := rcmgr.DefaultLimits
	cfg.PeerBaseLimit.StreamsInbound = 1 << 20
	SetResourceLimits(&cfg, lim)
	require.Equal(t, 1<<20, cfg.PeerBaseLimit.StreamsInbound)
}
