package rendezvous

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/p2p-messaging/p2p-messaging/rendezvous/pb"
)

func TestUnregisterOnDisconnect(t *testing.T) {
	s, sh := startServer(t, WithDisconnectGrace(20*time.Millisecond))
	ch := newTestHost(t)
	connect(t, ch, sh)
	rs := openRaw(t, ch, sh.ID(), ProtocolID)
	require.Equal(t, pb.Message_OK, rs.register("room", signedRecord(t, ch), 0).GetStatus())
	require.Equal(t, pb.Message_OK, rs.register("lobby", signedRecord(t, ch), 0).GetStatus())
	stay := newTestHost(t)
	connect(t, stay, sh)
	require.Equal(t, pb.Message_OK, openRaw(t, stay, sh.ID(), ProtocolID).register("room", signedRecord(t, stay), 0).GetStatus())
	require.Equal(t, 3, s.Registrations())

	require.NoError(t, ch.Network().ClosePeer(sh.ID()))
	require.Eventually(t, func() bool { return s.Registrations() == 1 }, 5*time.Second, 5*time.Millisecond)
	require.True(t, s.st.hasPeer(stay.ID()))
}

// TestDisconnectGraceReconnect: a peer that comes back within the grace
// period keeps its registrations.
func TestDisconnectGraceReconnect(t *testing.T) {
	s, sh := startServer(t, WithDisconnectGrace(time.Hour))
	ch := newTestHost(t)
	connect(t, ch, sh)
	require.Equal(t, pb.Message_OK, openRaw(t, ch, sh.ID(), ProtocolID).register("room", signedRecord(t, ch), 0).GetStatus())

	require.NoError(t, ch.Network().ClosePeer(sh.ID()))
	pending := func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.grace[ch.ID()] != nil
	}
	require.Eventually(t, pending, 5*time.Second, 5*time.Millisecond)
	connect(t, ch, sh)
	require.Eventually(t, func() bool { return !pending() }, 5*time.Second, 5*time.Millisecond)
	require.Equal(t, 1, s.Registrations())
}

func TestDisconnectGraceDisabled(t *testing.T) {
	s, sh := startServer(t, WithDisconnectGrace(-1))
	ch := newTestHost(t)
	connect(t, ch, sh)
	require.Equal(t, pb.Message_OK, openRaw(t, ch, sh.ID(), ProtocolID).register("room", signedRecord(t, ch), 0).GetStatus())
	require.NoError(t, ch.Network().ClosePeer(sh.ID()))
	require.Eventually(t, func() bool { return sh.Network().Connectedness(ch.ID()) != 1 }, 5*time.Second, 5*time.Millisecond)
	require.Equal(t, 1, s.Registrations())
	require.Nil(t, s.sub, "no connectedness subscription when disabled")
}

// TestExpiryFreesMemory: expired registrations vanish from reads at once
// and from the index after a sweep.
func TestExpiryFreesMemory(t *testing.T) {
	clock := newFakeClock()
	s, _ := startServer(t, WithClock(clock.Now))
	ps := fakePeers(t, 40)
	now := clock.Now().UnixNano()
	for i, p := range ps {
		ttl := time.Hour
		if i%4 == 0 {
			ttl = 3 * time.Hour
		}
		require.Equal(t, StatusOK, s.st.register(p.id, "room", p.rec, int64(ttl), now, false, &s.lim).status)
		require.Equal(t, StatusOK, s.st.register(p.id, "solo-"+itoa(i), p.rec, int64(ttl), now, false, &s.lim).status)
	}
	require.Equal(t, 80, s.Registrations())
	clock.Advance(2 * time.Hour)

	var d discoverBuf
	st, _ := s.st.discover("room", nil, 1000, clock.Now().UnixNano(), &d)
	require.Equal(t, StatusOK, st)
	var m pb.Message
	require.NoError(t, newReader(bytesReader(d.out)).ReadMsg(&m))
	require.Len(t, m.DiscoverResponse.Registrations, 10, "lazy expiry on read")

	// The read woke the background sweeper; sweeping again is harmless.
	s.st.sweep(clock.Now().UnixNano())
	require.Equal(t, 20, s.Registrations())
	require.Equal(t, indexSizes{all: 20, room: 10, namespaces: 11, peers: 10}, sizesOf(s))

	clock.Advance(2 * time.Hour)
	require.Equal(t, 20, s.st.sweep(clock.Now().UnixNano()))
	require.Equal(t, indexSizes{}, sizesOf(s))
	s.st.mu.RLock()
	released := s.st.all.entries == nil
	s.st.mu.RUnlock()
	require.True(t, released, "an emptied index releases its slice")
}

// sizesOf reads the index sizes under the store lock.
func sizesOf(s *Server) indexSizes {
	s.st.mu.RLock()
	defer s.st.mu.RUnlock()
	z := indexSizes{all: s.st.all.live(), namespaces: len(s.st.byNS), peers: len(s.st.byPeer)}
	bounded := func(ix *seqIndex) {
		// Dead entries are compacted away once they are half the slice.
		if len(ix.entries) > 2*ix.live()+16 {
			panic("index holds too many dead entries")
		}
	}
	bounded(&s.st.all)
	for _, ix := range s.st.byNS {
		bounded(ix)
	}
	if ix := s.st.byNS["room"]; ix != nil {
		z.room = ix.live()
	}
	return z
}

// TestSweeperRunsAfterLazyExpiry: a read that skips an expired entry
// wakes the background sweeper, which frees it without a test calling
// sweep.
func TestSweeperRunsAfterLazyExpiry(t *testing.T) {
	clock := newFakeClock()
	s, sh := startServer(t, WithClock(clock.Now))
	inject(t, s, "room", fakePeers(t, 3)...)
	clock.Advance(DefaultTTL + time.Second)
	ch := newTestHost(t)
	connect(t, ch, sh)
	require.Empty(t, openRaw(t, ch, sh.ID(), ProtocolID).discover("room", 0, nil).Registrations)
	require.Eventually(t, func() bool { return s.Registrations() == 0 }, 5*time.Second, 5*time.Millisecond)
}
