package rendezvous

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/p2p-messaging/p2p-messaging/rendezvous/pb"
)

// Attack: throwaway identities fill the total registration cap, after
// which an established user's name and room (and a new user's) would be
// refused. Names registered by their owners are counted apart, and a
// share of the cap is kept for name holders, HolderQuota each.
func TestCapFullEstablishedUsersStillRegister(t *testing.T) {
	lim := testNameLimits()
	lim.MaxRegistrations, lim.HolderShare, lim.HolderQuota = 50, 0.2, 3
	lim.MaxRegistrationsPerPeer = 20
	s, sh := startServer(t, nameServerOpts(WithLimits(lim))...)
	require.Equal(t, 40, strangerCap(&s.lim))

	alice := newTestHost(t)
	connect(t, alice, sh)
	ra := openRaw(t, alice, sh.ID(), ProtocolID)
	require.Equal(t, pb.Message_OK, ra.register(ctUserPrefix+"alice", signedRecord(t, alice), 0).GetStatus())
	require.Equal(t, pb.Message_OK, ra.register("p2p-messaging/room/lobby", signedRecord(t, alice), 0).GetStatus())
	leave(t, s, alice, sh) // offline: her registrations go, her lease stays

	// Throwaway identities fill the cap.
	refused := 0
	for i := range 4 { // 60 tries: without the shares they would fill all 50
		h := newTestHost(t)
		connect(t, h, sh)
		rs := openRaw(t, h, sh.ID(), ProtocolID)
		for j := range 15 {
			resp := rs.register(fmt.Sprintf("junk/%d/%d", i, j), signedRecord(t, h), 0)
			if resp.GetStatus() == pb.Message_E_UNAVAILABLE {
				refused++
				require.Contains(t, resp.GetStatusText(), "server is full")
				continue
			}
			require.Equal(t, pb.Message_OK, resp.GetStatus())
		}
	}
	require.Positive(t, refused, "the cap is full")

	// The established user comes back: her name and room are registered.
	connect(t, alice, sh)
	ra = openRaw(t, alice, sh.ID(), ProtocolID)
	require.Equal(t, pb.Message_OK, ra.register(ctUserPrefix+"alice", signedRecord(t, alice), 0).GetStatus())
	require.Equal(t, pb.Message_OK, ra.register("p2p-messaging/room/lobby", signedRecord(t, alice), 0).GetStatus())
	// A new user claims a name and gets a room too.
	bob := newTestHost(t)
	connect(t, bob, sh)
	rb := openRaw(t, bob, sh.ID(), ProtocolID)
	require.Equal(t, pb.Message_OK, rb.register(ctUserPrefix+"bob", signedRecord(t, bob), 0).GetStatus())
	require.Equal(t, pb.Message_OK, rb.register("p2p-messaging/room/lobby", signedRecord(t, bob), 0).GetStatus())

	require.Equal(t, 20, refused, "strangers fill only their part of the cap")

	// A holder has HolderQuota registrations (names not counted) in the
	// share; renewals always fit.
	require.Equal(t, pb.Message_OK, ra.register("room/2", signedRecord(t, alice), 0).GetStatus())
	require.Equal(t, pb.Message_OK, ra.register("room/3", signedRecord(t, alice), 0).GetStatus())
	resp := ra.register("room/4", signedRecord(t, alice), 0)
	require.Equal(t, pb.Message_E_UNAVAILABLE, resp.GetStatus())
	require.Equal(t, pb.Message_OK, ra.register("room/3", signedRecord(t, alice), 0).GetStatus())
	require.Equal(t, 40+6, s.Registrations())
	require.Equal(t, 2, s.st.own)
}

// The holders' share is bounded too: together with the strangers they
// never exceed MaxRegistrations (own names aside).
func TestHolderShareBounded(t *testing.T) {
	lim := testNameLimits()
	lim.MaxRegistrations, lim.HolderShare, lim.HolderQuota = 4, 0.5, 10
	s, sh := startServer(t, nameServerOpts(WithLimits(lim))...)
	a := newTestHost(t)
	connect(t, a, sh)
	ra := openRaw(t, a, sh.ID(), ProtocolID)
	require.Equal(t, pb.Message_OK, ra.register(ctUserPrefix+"a", signedRecord(t, a), 0).GetStatus())
	for i := range 4 {
		require.Equal(t, pb.Message_OK, ra.register(fmt.Sprintf("r/%d", i), signedRecord(t, a), 0).GetStatus())
	}
	require.Equal(t, pb.Message_E_UNAVAILABLE, ra.register("r/5", signedRecord(t, a), 0).GetStatus())
	b := newTestHost(t)
	connect(t, b, sh)
	require.Equal(t, pb.Message_E_UNAVAILABLE, regRaw(t, b, sh, "r/0").GetStatus(), "a stranger finds the server full")
	require.Equal(t, 5, s.Registrations())
}

// Owners' registrations loaded from disk are counted as names again.
func TestOwnNamesCountedAfterRestart(t *testing.T) {
	dir := t.TempDir()
	sh := newTestHost(t)
	s, err := NewServer(sh, nameServerOpts(WithDataDir(dir), WithDisconnectGrace(-1))...)
	require.NoError(t, err)
	a := newTestHost(t)
	connect(t, a, sh)
	require.Equal(t, pb.Message_OK, regRaw(t, a, sh, ctUserPrefix+"a").GetStatus())
	require.Equal(t, pb.Message_OK, regRaw(t, a, sh, "room").GetStatus())
	require.NoError(t, s.Close())
	s2, err := NewServer(sh, nameServerOpts(WithDataDir(dir), WithDisconnectGrace(-1))...)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s2.Close()) })
	require.Equal(t, 2, s2.Registrations())
	s2.st.mu.RLock()
	require.Equal(t, 1, s2.st.own)
	s2.st.mu.RUnlock()
}

func TestReserveLimitsValidate(t *testing.T) {
	for name, mod := range map[string]func(*Limits){
		"negative share": func(l *Limits) { l.HolderShare = -0.1 },
		"share 1":        func(l *Limits) { l.HolderShare = 1 },
		"negative quota": func(l *Limits) { l.HolderQuota = -1 },
	} {
		l := DefaultLimits()
		mod(&l)
		require.Error(t, l.validate(), name)
	}
	l := DefaultLimits()
	l.MaxRegistrations, l.HolderShare = 2, 0.2
	require.Equal(t, 2, strangerCap(&l), "a small cap keeps no share")
}
