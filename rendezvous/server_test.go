package rendezvous

import (
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/stretchr/testify/require"

	"github.com/p2p-messaging/p2p-messaging/rendezvous/pb"
)

func TestRegisterDiscoverUnregister(t *testing.T) {
	s, sh := startServer(t)
	ch := newTestHost(t)
	connect(t, ch, sh)
	rs := openRaw(t, ch, sh.ID(), ProtocolID)

	resp := rs.register("room", signedRecord(t, ch), 0)
	require.Equal(t, pb.Message_OK, resp.GetStatus())
	require.Equal(t, uint64(DefaultTTL.Seconds()), resp.GetTtl())
	require.Equal(t, 1, s.Registrations())

	d := rs.discover("room", 0, nil)
	require.Equal(t, pb.Message_OK, d.GetStatus())
	require.Equal(t, []peer.ID{ch.ID()}, peersOf(t, d))
	require.Equal(t, "room", d.Registrations[0].GetNs())
	require.NotZero(t, d.Registrations[0].GetTtl())
	require.Len(t, d.Cookie, 8+len("room"))

	rs.unregister("room")
	d = rs.discover("room", 0, nil)
	require.Empty(t, d.Registrations)
	require.Equal(t, 0, s.Registrations())
}
