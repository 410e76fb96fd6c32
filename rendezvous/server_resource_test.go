package rendezvous

import (
	"io"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/p2p-messaging/p2p-messaging/rendezvous/pb"
)

// newLimitedHost starts a loopback host whose resource manager gives the
// rendezvous service only serviceMem bytes.
func newLimitedHost(t *testing.T, serviceMem int64) host.Host {
	t.Helper()
	partial := rcmgr.PartialLimitConfig{
		Service: map[string]rcmgr.ResourceLimits{ServiceName: {Memory: rcmgr.LimitVal64(serviceMem)}},
	}
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(partial.Build(rcmgr.DefaultLimits.AutoScale())))
	require.NoError(t, err)
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay(), libp2p.ResourceManager(rm))
	require.NoError(t, err)
	t.Cleanup(func() { h.Close() })
	return h
}

// The handlers reserve their memory in the stream's scope (as go-libp2p's
// circuit relay does) and refuse cleanly, with a reset, when the resource
// manager has none left; what they reserved is released when they end.
func TestStreamMemoryReservation(t *testing.T) {
	// Room for two idle rendezvous streams, not three, and for no watch.
	const limit = 2*streamMemory + streamMemory/2
	require.Greater(t, watchMemory(&Limits{WatchQueue: DefaultWatchQueue}), limit)
	sh := newLimitedHost(t, limit)
	reg := prometheus.NewRegistry()
	s, err := NewServer(sh, WithRegisterer(reg))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	ch := newTestHost(t)
	connect(t, ch, sh)

	resets := func(rs *rawStream) {
		t.Helper()
		rs.send(&pb.Message{Type: pb.Message_DISCOVER.Enum(), Discover: &pb.Message_Discover{Ns: proto.String("room")}})
		require.True(t, isReset(readEnd(t, rs)), "the handler must refuse with a reset")
	}
	rs1 := openRaw(t, ch, sh.ID(), ProtocolID)
	require.Equal(t, StatusOK, rs1.discover("room", 0, nil).GetStatus())
	rs2 := openRaw(t, ch, sh.ID(), ProtocolID)
	require.Equal(t, StatusOK, rs2.discover("room", 0, nil).GetStatus())
	resets(openRaw(t, ch, sh.ID(), ProtocolID))
	ws := openRaw(t, ch, sh.ID(), WatchProtocolID)
	require.NoError(t, ws.w.WriteMsg(watchRequest("room")))
	require.True(t, isReset(readEnd(t, ws)), "a watch without memory is refused with a reset")

	// Closing a stream gives its memory back.
	require.NoError(t, rs2.s.CloseWrite())
	require.ErrorIs(t, readEnd(t, rs2), io.EOF)
	require.Eventually(t, func() bool {
		rs := openRaw(t, ch, sh.ID(), ProtocolID)
		rs.send(&pb.Message{Type: pb.Message_DISCOVER.Enum(), Discover: &pb.Message_Discover{Ns: proto.String("room")}})
		var m pb.Message
		ok := rs.r.ReadMsg(&m) == nil && m.GetDiscoverResponse().GetStatus() == StatusOK
		rs.s.Reset()
		return ok
	}, 10*time.Second, 10*time.Millisecond)

	// A large request must reserve its buffer too: 64 KiB does not fit.
	refused := func() float64 {
		return counterValue(t, reg, "rendezvous_rejections_total", map[string]string{"reason": rejectResource})
	}
	before := refused()
	require.GreaterOrEqual(t, before, 2.0)
	_, err = rs1.s.Write(frame(make([]byte, 64<<10)))
	if err == nil {
		err = readEnd(t, rs1)
	}
	require.True(t, isReset(err), "%v", err)
	require.Eventually(t, func() bool { return refused() == before+1 }, 10*time.Second, 10*time.Millisecond, "refused for memory, not as malformed")
	// Every handler ended and released what it held.
	require.Eventually(t, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.streams) == 0
	}, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, sh.Network().ResourceManager().ViewService(ServiceName, func(sc network.ServiceScope) error {
		require.Zero(t, sc.Stat().Memory, "reservations leaked")
		return nil
	}))
}
