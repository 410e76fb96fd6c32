package rendezvous

import (
	"bufio"
	"io"
	"testing"
	"time"

	"github.com/multiformats/go-varint"
	"google.golang.org/protobuf/proto"

	"github.com/p2p-messaging/p2p-messaging/rendezvous/pb"
)

// benchRegister measures one REGISTER round trip on an open stream over
// loopback TCP, cycling through the given signed records.
func benchRegister(b *testing.B, nrec int) {
	s, sh := startServer(b, WithLimits(benchLimits()))
	ch := newTestHost(b)
	connect(b, ch, sh)
	rs := openRaw(b, ch, sh.ID(), ProtocolID)
	_ = rs.s.SetDeadline(time.Time{})
	reqs := make([][]byte, nrec)
	for i := range reqs {
		reqs[i] = appendFrame(nil, &pb.Message{
			Type: pb.Message_REGISTER.Enum(),
			Register: &pb.Message_Register{
				Ns:               proto.String("room"),
				SignedPeerRecord: signedRecord(b, ch),
				Ttl:              proto.Uint64(7200),
			},
		})
	}
	br := bufio.NewReaderSize(rs.s, 4<<10)
	buf := make([]byte, 4<<10)
	i := 0
	roundTrip := func() []byte {
		if _, err := rs.s.Write(reqs[i%len(reqs)]); err != nil {
			b.Fatal(err)
		}
		i++
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
	if err := proto.Unmarshal(roundTrip(), &m); err != nil || m.GetRegisterResponse().GetStatus() != StatusOK {
		b.Fatalf("unexpected response %v: %v", &m, err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		roundTrip()
	}
	b.StopTimer()
	if s.Registrations() != 1 {
		b.Fatalf("%d registrations, want 1", s.Registrations())
	}
}

// BenchmarkRegisterWarm: every REGISTER carries a record the server has not
// stored (as after an address change), so every one is verified.
func BenchmarkRegisterWarm(b *testing.B) { benchRegister(b, 64) }

// BenchmarkRegisterRefresh: the periodic refresh, the same record bytes
// every time.
func BenchmarkRegisterRefresh(b *testing.B) { benchRegister(b, 1) }

// BenchmarkStoreRegister measures the store's part of a refresh alone.
func BenchmarkStoreRegister(b *testing.B) {
	st := newStore(0, nil)
	lim := DefaultLimits()
	now := time.Now().UnixNano()
	ps := fakePeers(b, benchPeers)
	for _, p := range ps {
		st.register(p.id, "room", p.rec, int64(time.Hour), now, false, &lim)
	}
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		p := ps[i%len(ps)]
		i++
		if res := st.register(p.id, "room", p.rec, int64(time.Hour), now, false, &lim); res.status != StatusOK {
			b.Fatal(res.text)
		}
	}
}
