package rendezvous

import (
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/p2p-messaging/p2p-messaging/rendezvous/pb"
)

// otherServer answers the rendezvous protocol the way the spec-current Go
// server (waku-org/go-libp2p-rendezvous) does on the wire: registrations in
// a namespaced DISCOVER_RESPONSE carry no ns, nothing is sent for
// UNREGISTER, and every stream ends with a reset (its handler defers
// s.Reset()). It stores what it is given, checked by the client's own
// record parser.
type otherServer struct {
	h    host.Host
	mu   sync.Mutex
	regs map[string]map[peer.ID][]byte // ns -> peer -> signed record
}

func startOtherServer(t *testing.T) *otherServer {
	t.Helper()
	o := &otherServer{h: ctHost(t, nil, ""), regs: make(map[string]map[peer.ID][]byte)}
	o.h.SetStreamHandler(ProtocolID, o.handle)
	return o
}

func (o *otherServer) info() peer.AddrInfo { return peer.AddrInfo{ID: o.h.ID(), Addrs: o.h.Addrs()} }

func (o *otherServer) put(ns string, id peer.ID, rec []byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.regs[ns] == nil {
		o.regs[ns] = make(map[peer.ID][]byte)
	}
	o.regs[ns][id] = rec
}

func (o *otherServer) has(ns string, id peer.ID) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	_, ok := o.regs[ns][id]
	return ok
}

func (o *otherServer) handle(s network.Stream) {
	defer s.Reset()
	remote := s.Conn().RemotePeer()
	r, w := newReader(s), newWriter(s)
	for {
		var req pb.Message
		if err := r.ReadMsg(&req); err != nil {
			return
		}
		switch req.GetType() {
		case pb.Message_REGISTER:
			resp := &pb.Message_RegisterResponse{Status: StatusOK.Enum(), Ttl: proto.Uint64(7200)}
			reg, err := parseRegistration(req.GetRegister())
			if err != nil || reg.Peer.ID != remote {
				resp = &pb.Message_RegisterResponse{Status: StatusInvalidSignedPeerRecord.Enum(), StatusText: proto.String("invalid peer record")}
			} else {
				o.put(req.GetRegister().GetNs(), remote, req.GetRegister().GetSignedPeerRecord())
			}
			if w.WriteMsg(&pb.Message{Type: pb.Message_REGISTER_RESPONSE.Enum(), RegisterResponse: resp}) != nil {
				return
			}
		case pb.Message_UNREGISTER:
			o.mu.Lock()
			delete(o.regs[req.GetUnregister().GetNs()], remote)
			o.mu.Unlock()
		case pb.Message_DISCOVER:
			ns := req.GetDiscover().GetNs()
			dr := &pb.Message_DiscoverResponse{Cookie: []byte("opaque"), Status: StatusOK.Enum()}
			o.mu.Lock()
			for _, rec := range o.regs[ns] {
				dr.Registrations = append(dr.Registrations, &pb.Message_Register{SignedPeerRecord: rec, Ttl: proto.Uint64(7200)})
			}
			o.mu.Unlock()
			if w.WriteMsg(&pb.Message{Type: pb.Message_DISCOVER_RESPONSE.Enum(), DiscoverResponse: dr}) != nil {
				return
			}
		default:
			return
		}
	}
}

// A client of our server and of another implementation's: one peer
// registered on both is discovered once, under the namespace asked for; a
// registration without addresses is accepted; Unregister succeeds although
// the other server resets its stream.
func TestClientWithOtherServer(t *testing.T) {
	ours := ctStartServer(t, nil, "")
	other := startOtherServer(t)
	servers := []peer.AddrInfo{ours.info(), other.info()}
	alice := ctHost(t, nil, "")
	bob := ctHost(t, nil, "")
	ca, err := NewClient(alice, servers)
	require.NoError(t, err)
	t.Cleanup(func() { ca.Close() })
	cb, err := NewClient(bob, servers)
	require.NoError(t, err)
	t.Cleanup(func() { cb.Close() })
	ctx := ctCtx(t)

	require.NoError(t, ca.Register(ctx, "room", time.Hour))
	require.True(t, other.has("room", alice.ID()))
	regs, _, err := cb.DiscoverOn(ctx, other.h.ID(), "room", 0, nil)
	require.NoError(t, err)
	require.Len(t, regs, 1)
	require.Equal(t, "room", regs[0].Namespace, "ns filled from the request")

	all, err := cb.Discover(ctx, "room", 0)
	require.NoError(t, err)
	require.Len(t, all, 1, "one peer on two servers is listed once: %+v", all)
	require.Equal(t, "room", all[0].Namespace)
	require.Equal(t, alice.ID(), all[0].Peer.ID)
	ch, err := cb.FindPeers(ctx, "room")
	require.NoError(t, err)
	var found []peer.ID
	for ai := range ch {
		found = append(found, ai.ID)
	}
	require.Equal(t, []peer.ID{alice.ID()}, found)

	// A valid record with no addresses (the other server takes it).
	k, id := ctKey(t)
	other.put("room", id, ctSignedRecord(t, k, id))
	all, err = cb.Discover(ctx, "room", 0)
	require.NoError(t, err)
	require.ElementsMatch(t, []peer.ID{alice.ID(), id}, ctIDs(all))
	for _, r := range all {
		if r.Peer.ID == id {
			require.Empty(t, r.Peer.Addrs)
		}
	}

	// UNREGISTER has no response; the other server's reset after it is not
	// a failure, and the removal happened.
	require.NoError(t, ca.UnregisterOn(ctx, other.h.ID(), "room"))
	require.False(t, other.has("room", alice.ID()))
	require.NoError(t, ca.Register(ctx, "room", time.Hour))
	require.NoError(t, ca.Unregister(ctx, "room"))
	require.False(t, other.has("room", alice.ID()))
	all, err = cb.Discover(ctx, "room", 0)
	require.NoError(t, err)
	require.Equal(t, []peer.ID{id}, ctIDs(all))
}
