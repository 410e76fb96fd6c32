package rendezvous

import (
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/stretchr/testify/require"

	"github.com/p2p-messaging/p2p-messaging/rendezvous/pb"
)

// fakePeer is a key pair and its signed peer record, without a host.
type fakePeer struct {
	id  peer.ID
	rec []byte
}

func newFakePeer(t testing.TB) fakePeer {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(nil)
	require.NoError(t, err)
	id, err := peer.IDFromPrivateKey(k)
	require.NoError(t, err)
	addr := ma.StringCast("/ip4/127.0.0.1/tcp/4001")
	env, err := record.Seal(peer.PeerRecordFromAddrInfo(peer.AddrInfo{ID: id, Addrs: []ma.Multiaddr{addr}}), k)
	require.NoError(t, err)
	b, err := env.Marshal()
	require.NoError(t, err)
	return fakePeer{id: id, rec: b}
}

// inject registers fake peers directly in the store, as if they had
// registered over the wire.
func inject(t testing.TB, s *Server, ns string, peers ...fakePeer) {
	t.Helper()
	now := s.cfg.now().UnixNano()
	for _, p := range peers {
		res := s.st.register(p.id, ns, p.rec, int64(DefaultTTL), now, false, &s.lim)
		require.Equal(t, StatusOK, res.status, res.text)
	}
}

func fakePeers(t testing.TB, n int) []fakePeer {
	ps := make([]fakePeer, n)
	for i := range ps {
		ps[i] = newFakePeer(t)
	}
	return ps
}

// TestPaginationExactlyOnce pages through a namespace with a small limit
// and sees every registration once, in the order they registered.
func TestPaginationExactlyOnce(t *testing.T) {
	s, sh := startServer(t)
	ps := fakePeers(t, 53)
	inject(t, s, "room", ps...)
	inject(t, s, "other", ps[:5]...)
	ch := newTestHost(t)
	connect(t, ch, sh)
	rs := openRaw(t, ch, sh.ID(), ProtocolID)

	var (
		seen   []peer.ID
		cookie []byte
		pages  int
	)
	for {
		resp := rs.discover("room", 7, cookie)
		require.Equal(t, pb.Message_OK, resp.GetStatus())
		require.LessOrEqual(t, len(resp.Registrations), 7)
		for _, r := range resp.Registrations {
			require.Equal(t, "room", r.GetNs())
			require.NotNil(t, r.Ttl)
		}
		seen = append(seen, peersOf(t, resp)...)
		cookie = resp.Cookie
		pages++
		if len(resp.Registrations) == 0 {
			break
		}
	}
	require.Equal(t, 9, pages) // 8 pages of data, one empty
	want := make([]peer.ID, len(ps))
	for i, p := range ps {
		want[i] = p.id
	}
	require.Equal(t, want, seen)

	// Nothing new: the last cookie yields nothing, repeatedly.
	require.Empty(t, rs.discover("room", 0, cookie).Registrations)

	// Incremental polling: only the newcomer and the refreshed peer.
	late := newFakePeer(t)
	inject(t, s, "room", late)
	inject(t, s, "room", ps[3])
	inject(t, s, "other", ps[4]) // elsewhere; not in this namespace's feed
	resp := rs.discover("room", 0, cookie)
	require.Equal(t, []peer.ID{late.id, ps[3].id}, peersOf(t, resp))
	require.Empty(t, rs.discover("room", 0, resp.Cookie).Registrations)
}

// TestDiscoverAllNamespaces: an absent ns lists every namespace, each
// registration with its own ns, paginated with an empty-namespace cookie.
func TestDiscoverAllNamespaces(t *testing.T) {
	s, sh := startServer(t)
	ps := fakePeers(t, 4)
	inject(t, s, "a", ps...)
	inject(t, s, "b", ps[:2]...)
	inject(t, s, "c", ps[3])
	ch := newTestHost(t)
	connect(t, ch, sh)
	rs := openRaw(t, ch, sh.ID(), ProtocolID)

	type key struct {
		id peer.ID
		ns string
	}
	seen := map[key]int{}
	var cookie []byte
	for {
		resp := rs.discover("", 3, cookie)
		require.Equal(t, pb.Message_OK, resp.GetStatus())
		require.Len(t, resp.Cookie, 8, "all-namespace cookie carries the empty namespace")
		ids := peersOf(t, resp)
		for i, r := range resp.Registrations {
			seen[key{ids[i], r.GetNs()}]++
		}
		cookie = resp.Cookie
		if len(resp.Registrations) == 0 {
			break
		}
	}
	require.Len(t, seen, 7)
	for k, n := range seen {
		require.Equal(t, 1, n, "%v seen %d times", k, n)
	}
	require.Contains(t, seen, key{ps[3].id, "c"})
}

// TestDiscoverPageFitsMessage: a page never exceeds MaxMessageSize, even
// when large records would make 1000 of them too big.
func TestDiscoverPageFitsMessage(t *testing.T) {
	clock := newFakeClock()
	s, _ := startServer(t, WithClock(clock.Now))
	big := make([]byte, DefaultMaxRecordSize)
	now := clock.Now().UnixNano()
	for range 200 {
		p := newFakePeer(t)
		res := s.st.register(p.id, "big", big, int64(time.Hour), now, false, &s.lim)
		require.Equal(t, StatusOK, res.status)
	}
	var d discoverBuf
	total := 0
	var cookie []byte
	for {
		st, _ := s.st.discover("big", cookie, MaxDiscoverLimit, now, &d)
		require.Equal(t, StatusOK, st)
		require.LessOrEqual(t, len(d.out), MaxMessageSize+10)
		var m pb.Message
		require.NoError(t, newReader(bytesReader(d.out)).ReadMsg(&m))
		n := len(m.DiscoverResponse.Registrations)
		if n == 0 {
			break
		}
		total += n
		cookie = m.DiscoverResponse.Cookie
	}
	require.Equal(t, 200, total)
}

// TestRemainingTTL: DISCOVER reports the time left, not the TTL asked for.
func TestRemainingTTL(t *testing.T) {
	clock := newFakeClock()
	_, sh := startServer(t, WithClock(clock.Now))
	ch := newTestHost(t)
	connect(t, ch, sh)
	rs := openRaw(t, ch, sh.ID(), ProtocolID)
	require.Equal(t, pb.Message_OK, rs.register("room", signedRecord(t, ch), 600).GetStatus())
	clock.Advance(100 * time.Second)
	require.Equal(t, uint64(500), rs.discover("room", 0, nil).Registrations[0].GetTtl())
	clock.Advance(499*time.Second + 500*time.Millisecond)
	require.Equal(t, uint64(1), rs.discover("room", 0, nil).Registrations[0].GetTtl(), "rounded up, never 0 while live")
	clock.Advance(time.Second)
	require.Empty(t, rs.discover("room", 0, nil).Registrations)
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

type indexSizes struct{ all, room, namespaces, peers int }

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

// TestOneRequestPerStream: the classic one-shot client opens a stream per
// request and closes it; the server closes its side cleanly.
func TestOneRequestPerStream(t *testing.T) {
	_, sh := startServer(t)
	ch := newTestHost(t)
	connect(t, ch, sh)
	for i := range 3 {
		rs := openRaw(t, ch, sh.ID(), ProtocolID)
		require.Equal(t, pb.Message_OK, rs.register("room", signedRecord(t, ch), 0).GetStatus())
		require.NoError(t, rs.s.CloseWrite())
		var b [1]byte
		_, err := rs.s.Read(b[:])
		require.ErrorIs(t, err, ioEOF, "request %d: server closes after the client's EOF", i)
	}
	// Many requests on one stream, mixing types.
	rs := openRaw(t, ch, sh.ID(), ProtocolID)
	for range 20 {
		require.Equal(t, pb.Message_OK, rs.register("room", signedRecord(t, ch), 0).GetStatus())
		require.Len(t, rs.discover("room", 0, nil).Registrations, 1)
		rs.unregister("room")
		require.Empty(t, rs.discover("room", 0, nil).Registrations)
	}
}
