package rendezvous

import (
	"bufio"
	"io"
	"testing"
	"time"

	"github.com/multiformats/go-varint"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/p2p-messaging/p2p-messaging/rendezvous/pb"
)

const benchPeers = 20

func benchLimits() Limits {
	lim := DefaultLimits()
	lim.RequestRate = 1e12
	lim.RequestBurst = 1 << 30
	return lim
}

// BenchmarkDiscoverWarm measures one DISCOVER round trip (20 registrations
// in the answer) on an open stream over loopback TCP: client write, server
// handling, server write, client read of the whole frame.
func BenchmarkDiscoverWarm(b *testing.B) {
	reg := prometheus.NewRegistry()
	s, sh := startServer(b, WithLimits(benchLimits()), WithRegisterer(reg))
	inject(b, s, "room", fakePeers(b, benchPeers)...)
	ch := newTestHost(b)
	connect(b, ch, sh)
	rs := openRaw(b, ch, sh.ID(), ProtocolID)
	_ = rs.s.SetDeadline(time.Time{})
	req := appendFrame(nil, &pb.Message{
		Type:     pb.Message_DISCOVER.Enum(),
		Discover: &pb.Message_Discover{Ns: proto.String("room")},
	})
	br := bufio.NewReaderSize(rs.s, 64<<10)
	buf := make([]byte, 64<<10)
	roundTrip := func() uint64 {
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
		return n
	}
	var m pb.Message
	if err := proto.Unmarshal(buf[:roundTrip()], &m); err != nil || len(m.GetDiscoverResponse().GetRegistrations()) != benchPeers {
		b.Fatalf("unexpected response %v: %v", &m, err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		roundTrip()
	}
	b.StopTimer()
	// The server's own time per request (read done to response written),
	// from its latency histogram.
	mfs, err := reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "rendezvous_request_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if h := m.GetHistogram(); h.GetSampleCount() > 0 && m.GetLabel()[0].GetValue() == "DISCOVER" {
				b.ReportMetric(h.GetSampleSum()/float64(h.GetSampleCount())*1e9, "server-ns/op")
			}
		}
	}
}

// BenchmarkStoreDiscover measures the server's read path alone: select 20
// registrations after a cookie and encode the framed response.
func BenchmarkStoreDiscover(b *testing.B) {
	st := newStore(0, nil)
	lim := DefaultLimits()
	now := time.Now().UnixNano()
	for _, p := range fakePeers(b, benchPeers) {
		st.register(p.id, "room", p.rec, int64(time.Hour), now, false, &lim)
	}
	// Other namespaces make the index realistic.
	for _, p := range fakePeers(b, 50) {
		st.register(p.id, "other", p.rec, int64(time.Hour), now, false, &lim)
	}
	var d discoverBuf
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if status, _ := st.discover("room", nil, MaxDiscoverLimit, now, &d); status != StatusOK {
			b.Fatal(status)
		}
	}
}
