package rendezvous

import (
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/stretchr/testify/require"

	"github.com/p2p-messaging/p2p-messaging/rendezvous/pb"
)

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

type indexSizes struct{ all, room, namespaces, peers int }
