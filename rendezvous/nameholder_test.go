package rendezvous

import (
	"bufio"
	"bytes"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-varint"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/p2p-messaging/p2p-messaging/rendezvous/pb"
)

// A DISCOVER of a name reports its lease holder (name_holder, field 100 of
// DiscoverResponse) while the holder is registered and after it left; a
// free name, a released name, a namespace outside the exclusive prefix and
// a discover over all namespaces report none.
func TestDiscoverReportsNameHolder(t *testing.T) {
	s, sh := startServer(t, nameServerOpts()...)
	alice, bob := newTestHost(t), newTestHost(t)
	connect(t, alice, sh)
	connect(t, bob, sh)
	ns := ctUserPrefix + "alice"
	rb := openRaw(t, bob, sh.ID(), ProtocolID)

	require.Nil(t, rb.discover(ns, 0, nil).NameHolder, "a free name has no holder")

	require.Equal(t, pb.Message_OK, regRaw(t, alice, sh, ns).GetStatus())
	resp := rb.discover(ns, 0, nil)
	require.Equal(t, []peer.ID{alice.ID()}, peersOf(t, resp))
	require.Equal(t, []byte(alice.ID()), resp.NameHolder, "online: registered and holding")

	leave(t, s, alice, sh)
	resp = rb.discover(ns, 0, nil)
	require.Empty(t, resp.Registrations, "alice's registration is gone")
	require.Equal(t, []byte(alice.ID()), resp.NameHolder, "offline: the lease still names her")
	// Paging with the cookie keeps reporting it.
	require.Equal(t, []byte(alice.ID()), rb.discover(ns, 0, resp.Cookie).NameHolder)

	require.Nil(t, rb.discover("", 0, nil).NameHolder, "not in a discover over all namespaces")
	require.Equal(t, pb.Message_OK, regRaw(t, bob, sh, "room").GetStatus())
	require.Nil(t, rb.discover("room", 0, nil).NameHolder, "not outside the exclusive prefix")

	connect(t, alice, sh)
	ra := openRaw(t, alice, sh.ID(), ProtocolID)
	ra.send(releaseRequest(ns))
	ra.discover(ns, 0, nil) // requests on a stream are handled in order
	_, _, held := s.NameHolder(ns)
	require.False(t, held)
	require.Nil(t, rb.discover(ns, 0, nil).NameHolder, "a released name has no holder")
}

// A server without an exclusive prefix holds no leases and reports none,
// also for a namespace that looks like a user name.
func TestDiscoverNoNameHolderWithoutPrefix(t *testing.T) {
	_, sh := startServer(t, WithLimits(testNameLimits()))
	a := newTestHost(t)
	connect(t, a, sh)
	ns := ctUserPrefix + "plain"
	require.Equal(t, pb.Message_OK, regRaw(t, a, sh, ns).GetStatus())
	resp := openRaw(t, a, sh.ID(), ProtocolID).discover(ns, 0, nil)
	require.Len(t, resp.Registrations, 1)
	require.Nil(t, resp.NameHolder)
}

// The client reads the holder through DiscoverNameOn; Holder is empty for
// a free name and for a server without leases.
func TestClientDiscoverNameOn(t *testing.T) {
	names := ctStartServer(t, nil, "", WithLimits(testNameLimits()), WithExclusivePrefix(ctUserPrefix))
	plain := ctStartServer(t, nil, "")
	ctx := ctCtx(t)
	ns := ctUserPrefix + "carol"

	carolHost := ctHost(t, nil, "")
	carol := ctClient(t, carolHost, []*ctServer{names, plain}, WithClaimPrefix(ctUserPrefix))
	asker := ctClient(t, ctHost(t, nil, ""), []*ctServer{names, plain})

	info, err := asker.DiscoverNameOn(ctx, names.h.ID(), ns, 10)
	require.NoError(t, err)
	require.Equal(t, NameInfo{Registrations: []Registration{}}, info, "free name")

	require.NoError(t, carol.Register(ctx, ns, 0))
	info, err = asker.DiscoverNameOn(ctx, names.h.ID(), ns, 10)
	require.NoError(t, err)
	require.Equal(t, carolHost.ID(), info.Holder)
	require.Equal(t, []peer.ID{carolHost.ID()}, ctIDs(info.Registrations))

	require.NoError(t, carol.Unregister(ctx, ns))
	info, err = asker.DiscoverNameOn(ctx, names.h.ID(), ns, 10)
	require.NoError(t, err)
	require.Empty(t, info.Registrations)
	require.Equal(t, carolHost.ID(), info.Holder, "the lease outlives the registration")

	info, err = asker.DiscoverNameOn(ctx, plain.h.ID(), ns, 10)
	require.NoError(t, err)
	require.Empty(t, info.Holder, "a server without leases reports no holder")

	_, err = asker.DiscoverNameOn(ctx, names.h.ID(), "", 10)
	require.Error(t, err)
}

// A holder that is not a peer ID fails the answer; an absent one is no
// holder; plain DISCOVER parsing ignores the field.
func TestParseNameHolder(t *testing.T) {
	_, id := ctKey(t)
	msg := func(holder []byte) *pb.Message {
		var m pb.Message
		require.NoError(t, proto.Unmarshal(ctDiscoverResponse(t), &m))
		m.DiscoverResponse.NameHolder = holder
		return &m
	}
	got, err := parseNameHolder(msg(nil))
	require.NoError(t, err)
	require.Empty(t, got)
	got, err = parseNameHolder(msg([]byte(id)))
	require.NoError(t, err)
	require.Equal(t, id, got)
	for _, bad := range [][]byte{{}, []byte("junk"), bytes.Repeat([]byte{0xff}, 40)} {
		_, err = parseNameHolder(msg(bad))
		require.Error(t, err, "%x", bad)
		_, _, err = parseDiscoverResponse(msg(bad), "room", slog.New(slog.DiscardHandler))
		require.NoError(t, err, "a client that asks only for registrations ignores the field")
	}
}

// BenchmarkDiscoverNameHolder compares, side by side on one server, a
// DISCOVER round trip of a name (one registration, plus the lease look-up
// and the name_holder field) with one of a plain namespace holding the same
// registration.
func BenchmarkDiscoverNameHolder(b *testing.B) {
	lim := benchLimits()
	lim.ClaimDifficulty = testClaimDifficulty
	_, sh := startServer(b, WithLimits(lim), WithExclusivePrefix(ctUserPrefix))
	owner := newTestHost(b)
	connect(b, owner, sh)
	name := ctUserPrefix + "bench"
	ro := openRaw(b, owner, sh.ID(), ProtocolID)
	for _, ns := range []string{name, "room"} {
		if st := ro.register(ns, signedRecord(b, owner), 0).GetStatus(); st != pb.Message_OK {
			b.Fatal(st)
		}
	}
	ch := newTestHost(b)
	connect(b, ch, sh)
	for _, tc := range []struct{ label, ns string }{{"plain", "room"}, {"name", name}} {
		b.Run(tc.label, func(b *testing.B) {
			rs := openRaw(b, ch, sh.ID(), ProtocolID)
			_ = rs.s.SetDeadline(time.Time{})
			req := appendFrame(nil, &pb.Message{Type: pb.Message_DISCOVER.Enum(), Discover: &pb.Message_Discover{Ns: proto.String(tc.ns)}})
			br := bufio.NewReaderSize(rs.s, 64<<10)
			buf := make([]byte, 64<<10)
			roundTrip := func() []byte {
				if _, err := rs.s.Write(req); err != nil {
					b.Fatal(err)
				}
				n, err := varint.ReadUvarint(br)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(br, buf[:n]); err != nil {
					b.Fatal(err)
				}
				return buf[:n]
			}
			var m pb.Message
			if err := proto.Unmarshal(roundTrip(), &m); err != nil || len(m.GetDiscoverResponse().GetRegistrations()) != 1 ||
				(tc.ns == name) != (m.GetDiscoverResponse().NameHolder != nil) {
				b.Fatalf("unexpected response %v: %v", &m, err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				roundTrip()
			}
		})
	}
}
