package rendezvous

import (
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/stretchr/testify/require"

	"github.com/p2p-messaging/p2p-messaging/rendezvous/pb"
)

// TestRestartPersistence: a new server on the same data dir lists the live
// registrations, drops the expired ones and honours cookies issued before.
func TestRestartPersistence(t *testing.T) {
	dir := t.TempDir()
	clock := newFakeClock()
	h := newTestHost(t)
	s1, err := NewServer(h, WithDataDir(dir), WithClock(clock.Now), WithDisconnectGrace(-1))
	require.NoError(t, err)

	ch := newTestHost(t)
	connect(t, ch, h)
	rs := openRaw(t, ch, h.ID(), ProtocolID)
	require.Equal(t, pb.Message_OK, rs.register("room", signedRecord(t, ch), 0).GetStatus())
	require.Equal(t, pb.Message_OK, rs.register("short", signedRecord(t, ch), 120).GetStatus())
	require.Equal(t, pb.Message_OK, rs.register("gone", signedRecord(t, ch), 0).GetStatus())
	rs.unregister("gone")
	ps := fakePeers(t, 5)
	inject(t, s1, "room", ps...)
	first := rs.discover("room", 3, nil)
	require.Len(t, first.Registrations, 3)
	all := rs.discover("", 0, nil)
	require.Len(t, all.Registrations, 7)
	require.NoError(t, s1.Close())

	clock.Advance(5 * time.Minute) // "short" expires while the server is down
	s2, err := NewServer(h, WithDataDir(dir), WithClock(clock.Now), WithDisconnectGrace(-1))
	require.NoError(t, err)
	defer func() { require.NoError(t, s2.Close()) }()
	require.Equal(t, 6, s2.Registrations())

	rs = openRaw(t, ch, h.ID(), ProtocolID)
	rest := rs.discover("room", 0, first.Cookie)
	require.Equal(t, pb.Message_OK, rest.GetStatus(), "a cookie from before the restart stays valid")
	require.Len(t, rest.Registrations, 3, "and continues where it left off")
	require.Equal(t, append(peersOf(t, first), peersOf(t, rest)...), append([]peer.ID{ch.ID()}, ids(ps)...))
	require.Empty(t, rs.discover("", 0, all.Cookie).Registrations)
	require.Empty(t, rs.discover("gone", 0, nil).Registrations)
	require.Empty(t, rs.discover("short", 0, nil).Registrations)
	d := rs.discover("room", 0, nil)
	require.Equal(t, uint64(7200-300), d.Registrations[0].GetTtl())

	// New registrations get sequence numbers after every issued cookie.
	p := newFakePeer(t)
	inject(t, s2, "room", p)
	require.Equal(t, []peer.ID{p.id}, peersOf(t, rs.discover("room", 0, rest.Cookie)))
}

// TestRestartMemoryOnly: without a data dir, sequence numbers still grow
// across restarts (they start from the clock), so an old cookie never
// hides new registrations.
func TestRestartMemoryOnly(t *testing.T) {
	h := newTestHost(t)
	s1, err := NewServer(h)
	require.NoError(t, err)
	inject(t, s1, "room", newFakePeer(t))
	ch := newTestHost(t)
	connect(t, ch, h)
	old := openRaw(t, ch, h.ID(), ProtocolID).discover("room", 0, nil).Cookie
	require.NoError(t, s1.Close())

	s2, err := NewServer(h)
	require.NoError(t, err)
	defer s2.Close()
	p := newFakePeer(t)
	inject(t, s2, "room", p)
	require.Equal(t, []peer.ID{p.id}, peersOf(t, openRaw(t, ch, h.ID(), ProtocolID).discover("room", 0, old)))
}

// TestCloseFlushes: registrations accepted just before Close are on disk.
func TestCloseFlushes(t *testing.T) {
	dir := t.TempDir()
	h := newTestHost(t)
	s1, err := NewServer(h, WithDataDir(dir))
	require.NoError(t, err)
	ps := fakePeers(t, 300)
	inject(t, s1, "room", ps...)
	s1.st.unregister(ps[0].id, "room")
	require.NoError(t, s1.Close())
	require.NoError(t, s1.Close(), "Close is idempotent")

	s2, err := NewServer(h, WithDataDir(dir))
	require.NoError(t, err)
	defer s2.Close()
	require.Equal(t, 299, s2.Registrations())

	// A second server cannot open the same store while it is in use.
	_, err = NewServer(newTestHost(t), WithDataDir(dir))
	require.Error(t, err)
}
