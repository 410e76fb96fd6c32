package rendezvous

import (
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/p2p-messaging/p2p-messaging/rendezvous/pb"
)

// nameServerOpts are the options of the name tests: the user prefix
// exclusive, a short disconnect grace.
func nameServerOpts(extra ...ServerOption) []ServerOption {
	return append([]ServerOption{
		WithLimits(testNameLimits()),
		WithExclusivePrefix(ctUserPrefix),
		WithDisconnectGrace(10 * time.Millisecond),
	}, extra...)
}

// regRaw registers h under ns on a fresh raw stream.
func regRaw(t *testing.T, h, server host.Host, ns string) *pb.Message_RegisterResponse {
	t.Helper()
	return openRaw(t, h, server.ID(), ProtocolID).register(ns, signedRecord(t, h), 0)
}

// leave disconnects h from the server and waits until its registrations
// are gone (the disconnect grace is over).
func leave(t *testing.T, s *Server, h, server host.Host) {
	t.Helper()
	require.NoError(t, h.Network().ClosePeer(server.ID()))
	require.Eventually(t, func() bool { return !s.st.hasPeer(h.ID()) }, 5*time.Second, 5*time.Millisecond)
}

// Attack: alice is offline, a squatter registers her nick. Refused: the
// name stays bound to alice's key; alice takes it back when she returns.
func TestNameSquattingRefused(t *testing.T) {
	s, sh := startServer(t, nameServerOpts()...)
	alice, squatter := newTestHost(t), newTestHost(t)
	connect(t, alice, sh)
	connect(t, squatter, sh)
	ns := ctUserPrefix + "alice"

	require.Equal(t, pb.Message_OK, regRaw(t, alice, sh, ns).GetStatus())
	leave(t, s, alice, sh)
	resp := regRaw(t, squatter, sh, ns)
	require.Equal(t, pb.Message_E_NOT_AUTHORIZED, resp.GetStatus(), resp.GetStatusText())
	require.Contains(t, resp.GetStatusText(), "held by another key until ")
	owner, until, ok := s.NameHolder(ns)
	require.True(t, ok)
	require.Equal(t, alice.ID(), owner)
	require.Contains(t, resp.GetStatusText(), until.UTC().Format(time.RFC3339))
	require.WithinDuration(t, time.Now().Add(DefaultLeaseDuration), until, time.Minute)

	connect(t, alice, sh)
	require.Equal(t, pb.Message_OK, regRaw(t, alice, sh, ns).GetStatus(), "the owner takes its name back")
	require.Equal(t, pb.Message_E_NOT_AUTHORIZED, regRaw(t, squatter, sh, ns).GetStatus())
}

// Attack: a sniper watches user/paul and registers it the moment the
// daemon drops paul's registration (disconnect). Refused; paul comes back
// and gets it.
func TestNameSnipingRefused(t *testing.T) {
	s, sh := startServer(t, nameServerOpts()...)
	paul, sniper := newTestHost(t), newTestHost(t)
	connect(t, paul, sh)
	connect(t, sniper, sh)
	ns := ctUserPrefix + "paul"
	require.Equal(t, pb.Message_OK, regRaw(t, paul, sh, ns).GetStatus())

	w := openRaw(t, sniper, sh.ID(), WatchProtocolID)
	w.send(&pb.WatchRequest{Ns: proto.String(ns)})
	next := func() *pb.WatchEvent {
		var ev pb.WatchEvent
		require.NoError(t, w.r.ReadMsg(&ev))
		return &ev
	}
	require.Equal(t, pb.WatchEvent_REGISTERED, next().GetKind())
	require.Equal(t, pb.WatchEvent_SYNCED, next().GetKind())
	rs := openRaw(t, sniper, sh.ID(), ProtocolID) // ready before the drop
	require.NoError(t, paul.Network().ClosePeer(sh.ID()))
	require.Equal(t, pb.WatchEvent_UNREGISTERED, next().GetKind())
	resp := rs.register(ns, signedRecord(t, sniper), 0)
	require.Equal(t, pb.Message_E_NOT_AUTHORIZED, resp.GetStatus(), "sniped right after the drop: %s", resp.GetStatusText())
	require.False(t, s.st.hasPeer(paul.ID()))

	connect(t, paul, sh)
	require.Equal(t, pb.Message_OK, regRaw(t, paul, sh, ns).GetStatus(), "paul gets his name back")
}

// A lease lasts LeaseDuration after the last registration, and at least as
// long as the registration; then anyone may claim the name.
func TestNameLeaseExpires(t *testing.T) {
	clock := newFakeClock()
	lim := testNameLimits()
	lim.LeaseDuration = time.Hour
	s, sh := startServer(t, nameServerOpts(WithClock(clock.Now), WithLimits(lim))...)
	a, b := newTestHost(t), newTestHost(t)
	connect(t, a, sh)
	connect(t, b, sh)
	ns := ctUserPrefix + "ann"

	// A registration longer than the lease: the lease covers it.
	require.Equal(t, pb.Message_OK, openRaw(t, a, sh.ID(), ProtocolID).register(ns, signedRecord(t, a), 2*3600).GetStatus())
	_, until, ok := s.NameHolder(ns)
	require.True(t, ok)
	require.Equal(t, clock.Now().Add(2*time.Hour), until)
	leave(t, s, a, sh)

	clock.Advance(2*time.Hour - time.Second)
	require.Equal(t, pb.Message_E_NOT_AUTHORIZED, regRaw(t, b, sh, ns).GetStatus())
	// A refresh by the owner moves the lease on: an hour from now.
	connect(t, a, sh)
	require.Equal(t, pb.Message_OK, openRaw(t, a, sh.ID(), ProtocolID).register(ns, signedRecord(t, a), 120).GetStatus())
	_, until, _ = s.NameHolder(ns)
	require.Equal(t, clock.Now().Add(time.Hour), until)
	leave(t, s, a, sh)
	clock.Advance(time.Hour - time.Second)
	require.Equal(t, pb.Message_E_NOT_AUTHORIZED, regRaw(t, b, sh, ns).GetStatus())
	clock.Advance(time.Second)
	require.Equal(t, pb.Message_OK, regRaw(t, b, sh, ns).GetStatus(), "an expired lease frees the name")
	owner, _, _ := s.NameHolder(ns)
	require.Equal(t, b.ID(), owner)

	// The sweeper frees expired leases.
	clock.Advance(2 * time.Hour)
	require.Equal(t, 1, s.Names())
	require.Equal(t, 1, s.names.sweep(clock.Now().UnixNano()))
	require.Zero(t, s.Names())
}

// An ordinary UNREGISTER ends only the presence; UNREGISTER with
// release_name from the owner also gives the name up; from anyone else it
// changes nothing.
func TestNameRelease(t *testing.T) {
	s, sh := startServer(t, nameServerOpts()...)
	a, b := newTestHost(t), newTestHost(t)
	connect(t, a, sh)
	connect(t, b, sh)
	ns := ctUserPrefix + "rel"
	ra, rb := openRaw(t, a, sh.ID(), ProtocolID), openRaw(t, b, sh.ID(), ProtocolID)

	require.Equal(t, pb.Message_OK, ra.register(ns, signedRecord(t, a), 0).GetStatus())
	ra.unregister(ns)
	require.Empty(t, ra.discover(ns, 0, nil).Registrations, "UNREGISTER ends the presence")
	require.Equal(t, pb.Message_E_NOT_AUTHORIZED, rb.register(ns, signedRecord(t, b), 0).GetStatus(), "but not the lease")

	rb.send(releaseRequest(ns)) // not the owner
	rb.discover(ns, 0, nil)     // requests on a stream are handled in order
	owner, _, ok := s.NameHolder(ns)
	require.True(t, ok)
	require.Equal(t, a.ID(), owner)

	require.Equal(t, pb.Message_OK, ra.register(ns, signedRecord(t, a), 0).GetStatus())
	ra.send(releaseRequest(ns))
	require.Empty(t, ra.discover(ns, 0, nil).Registrations, "a release also ends the presence")
	_, _, ok = s.NameHolder(ns)
	require.False(t, ok)
	require.Equal(t, pb.Message_OK, rb.register(ns, signedRecord(t, b), 0).GetStatus(), "a released name is free")
}

// Leases survive a restart (names.db in the data dir).
func TestNameLeasePersists(t *testing.T) {
	dir := t.TempDir()
	sh := newTestHost(t)
	s, err := NewServer(sh, nameServerOpts(WithDataDir(dir))...)
	require.NoError(t, err)
	a, b := newTestHost(t), newTestHost(t)
	connect(t, a, sh)
	connect(t, b, sh)
	ns := ctUserPrefix + "kept"
	ra := openRaw(t, a, sh.ID(), ProtocolID)
	require.Equal(t, pb.Message_OK, ra.register(ns, signedRecord(t, a), 0).GetStatus())
	require.Equal(t, pb.Message_OK, ra.register(ctUserPrefix+"gone", signedRecord(t, a), 0).GetStatus())
	ra.send(releaseRequest(ctUserPrefix + "gone"))
	ra.unregister(ns)
	ra.discover(ns, 0, nil)
	_, until, ok := s.NameHolder(ns)
	require.True(t, ok)
	require.NoError(t, s.Close())
	require.FileExists(t, dir+"/"+NamesDBFileName)

	s2, err := NewServer(sh, nameServerOpts(WithDataDir(dir))...)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s2.Close()) })
	require.Zero(t, s2.Registrations())
	owner, until2, ok := s2.NameHolder(ns)
	require.True(t, ok, "the lease outlives the restart")
	require.Equal(t, a.ID(), owner)
	require.Equal(t, until.UnixNano(), until2.UnixNano())
	_, _, ok = s2.NameHolder(ctUserPrefix + "gone")
	require.False(t, ok, "the release was persisted")
	require.Equal(t, pb.Message_E_NOT_AUTHORIZED, regRaw(t, b, sh, ns).GetStatus())
	require.Equal(t, pb.Message_OK, regRaw(t, b, sh, ctUserPrefix+"gone").GetStatus())
}

// Registrations stored before leases existed give their holders a lease.
func TestNameLeaseAdoptsStoredRegistrations(t *testing.T) {
	dir := t.TempDir()
	sh := newTestHost(t)
	s, err := NewServer(sh, WithDataDir(dir), WithExclusivePrefix(""), WithDisconnectGrace(-1))
	require.NoError(t, err)
	a, b := newTestHost(t), newTestHost(t)
	connect(t, a, sh)
	connect(t, b, sh)
	ns := ctUserPrefix + "old"
	require.Equal(t, pb.Message_OK, regRaw(t, a, sh, ns).GetStatus())
	require.Zero(t, s.Names(), "no leases without an exclusive prefix")
	require.NoError(t, s.Close())

	s2, err := NewServer(sh, nameServerOpts(WithDataDir(dir))...)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s2.Close()) })
	owner, _, ok := s2.NameHolder(ns)
	require.True(t, ok)
	require.Equal(t, a.ID(), owner)
	require.Equal(t, pb.Message_E_NOT_AUTHORIZED, regRaw(t, b, sh, ns).GetStatus())
}

// A claim the store refuses (here: the per-peer registration cap) leaves
// no lease behind.
func TestNameClaimRefusedByStoreLeavesNoLease(t *testing.T) {
	lim := testNameLimits()
	lim.MaxRegistrationsPerPeer = 1
	s, sh := startServer(t, nameServerOpts(WithLimits(lim))...)
	a, b := newTestHost(t), newTestHost(t)
	connect(t, a, sh)
	connect(t, b, sh)
	require.Equal(t, pb.Message_OK, regRaw(t, a, sh, "room").GetStatus())
	ns := ctUserPrefix + "capped"
	require.Equal(t, pb.Message_E_NOT_AUTHORIZED, regRaw(t, a, sh, ns).GetStatus())
	_, _, ok := s.NameHolder(ns)
	require.False(t, ok)
	require.Equal(t, pb.Message_OK, regRaw(t, b, sh, ns).GetStatus())
}

// The total lease cap: a claim beyond MaxNames is E_UNAVAILABLE; the
// holders keep refreshing theirs.
func TestNameTableFull(t *testing.T) {
	lim := testNameLimits()
	lim.MaxNames, lim.MaxNamesPerPeer = 2, 2
	_, sh := startServer(t, nameServerOpts(WithLimits(lim))...)
	a, b := newTestHost(t), newTestHost(t)
	connect(t, a, sh)
	connect(t, b, sh)
	require.Equal(t, pb.Message_OK, regRaw(t, a, sh, ctUserPrefix+"n1").GetStatus())
	require.Equal(t, pb.Message_OK, regRaw(t, a, sh, ctUserPrefix+"n2").GetStatus())
	resp := regRaw(t, b, sh, ctUserPrefix+"n3")
	require.Equal(t, pb.Message_E_UNAVAILABLE, resp.GetStatus())
	require.Contains(t, resp.GetStatusText(), "too many names")
	require.Equal(t, pb.Message_OK, regRaw(t, a, sh, ctUserPrefix+"n1").GetStatus())
}

func TestNameLimitsValidate(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*Limits)
	}{
		{"lease below 1s", func(l *Limits) { l.LeaseDuration = time.Millisecond }},
		{"max names 0", func(l *Limits) { l.MaxNames = 0 }},
		{"max names per peer 0", func(l *Limits) { l.MaxNamesPerPeer = 0 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := DefaultLimits()
			tt.mod(&l)
			require.Error(t, l.validate())
			_, err := NewServer(nil, WithLimits(l))
			require.ErrorContains(t, err, "invalid limits")
		})
	}
}

// The stored lease format round-trips; garbage is refused.
func TestLeaseEncoding(t *testing.T) {
	h := newTestHost(t)
	l := &lease{ns: ctUserPrefix + "x", owner: h.ID(), expires: 1234567890}
	got, err := decodeLease([]byte(l.ns), encodeLease(l))
	require.NoError(t, err)
	require.Equal(t, *l, *got)
	_, err = decodeLease([]byte(l.ns), []byte{1, 2, 3})
	require.Error(t, err)
	_, err = decodeLease([]byte(l.ns), append(encodeLease(l)[:8], 0xff, 0xff))
	require.Error(t, err)
	_, err = decodeLease(nil, encodeLease(l))
	require.Error(t, err)
}

// Attack: one peer registers many nicks. A key holds at most
// MaxNamesPerPeer (3) names; a 4th claim is refused with a reason, a
// refresh of a held one is not, and a release frees a slot. Expired
// leases do not count.
func TestNamesPerPeerCap(t *testing.T) {
	clock := newFakeClock()
	lim := testNameLimits()
	lim.LeaseDuration = time.Hour
	s, sh := startServer(t, nameServerOpts(WithClock(clock.Now), WithLimits(lim))...)
	a := newTestHost(t)
	connect(t, a, sh)
	ra := openRaw(t, a, sh.ID(), ProtocolID)
	for _, n := range []string{"n1", "n2", "n3"} {
		require.Equal(t, pb.Message_OK, ra.register(ctUserPrefix+n, signedRecord(t, a), 120).GetStatus())
	}
	resp := ra.register(ctUserPrefix+"n4", signedRecord(t, a), 120)
	require.Equal(t, pb.Message_E_NOT_AUTHORIZED, resp.GetStatus())
	require.Contains(t, resp.GetStatusText(), "already holds 3 names ("+ctUserPrefix+"n1, ")
	require.Contains(t, resp.GetStatusText(), "release one first")
	_, _, ok := s.NameHolder(ctUserPrefix + "n4")
	require.False(t, ok)
	require.Equal(t, pb.Message_OK, ra.register(ctUserPrefix+"n2", signedRecord(t, a), 120).GetStatus(), "a refresh is no new claim")
	require.Equal(t, pb.Message_OK, ra.register("p2p-messaging/room/lobby", signedRecord(t, a), 120).GetStatus(), "other namespaces are not names")

	ra.send(releaseRequest(ctUserPrefix + "n1"))
	require.Equal(t, pb.Message_OK, ra.register(ctUserPrefix+"n4", signedRecord(t, a), 120).GetStatus(), "a release frees a slot")
	require.Equal(t, pb.Message_E_NOT_AUTHORIZED, ra.register(ctUserPrefix+"n5", signedRecord(t, a), 120).GetStatus())

	// Once the leases expire, the key may claim again.
	clock.Advance(time.Hour + time.Second)
	require.Equal(t, pb.Message_OK, ra.register(ctUserPrefix+"n5", signedRecord(t, a), 120).GetStatus())
}
