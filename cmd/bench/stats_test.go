package main

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/p2p-messaging/p2p-messaging/rendezvous/pb"
)

func TestPercentile(t *testing.T) {
	ms := time.Millisecond
	seq := func(n int) []time.Duration {
		out := make([]time.Duration, n)
		for i := range out {
			out[i] = time.Duration(i+1) * ms
		}
		return out
	}
	cases := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"single p50", []time.Duration{7 * ms}, 50, 7 * ms},
		{"single p99", []time.Duration{7 * ms}, 99, 7 * ms},
		{"p50 of 1..100", seq(100), 50, 50 * ms},
		{"p99 of 1..100", seq(100), 99, 99 * ms},
		{"p100 of 1..100", seq(100), 100, 100 * ms},
		{"p0 is min", seq(100), 0, 1 * ms},
		{"p50 of 1..4 (nearest rank)", seq(4), 50, 2 * ms},
		{"p99 of 1..10 is max", seq(10), 99, 10 * ms},
		{"p99 of 1..1000", seq(1000), 99, 990 * ms},
		{"p50 of 1..3", seq(3), 50, 2 * ms},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, percentile(tc.sorted, tc.p))
		})
	}
}

func TestSummarize(t *testing.T) {
	var l Latencies
	require.Equal(t, Summary{}, l.Summarize())
	// Unsorted input, merged from two recorders.
	var a, b Latencies
	for _, d := range []int{5, 1, 3} {
		a.Add(time.Duration(d) * time.Millisecond)
	}
	for _, d := range []int{4, 2} {
		b.Add(time.Duration(d) * time.Millisecond)
	}
	a.Merge(&b)
	s := a.Summarize()
	require.Equal(t, Summary{Count: 5, P50: 3, P99: 5, Max: 5, Mean: 3}, s)
}

func TestMsRounding(t *testing.T) {
	require.Equal(t, 1.235, ms(1234567*time.Nanosecond))
	require.Equal(t, 0.001, ms(1*time.Microsecond))
	require.Equal(t, 0.0, ms(400*time.Nanosecond))
}

func TestScanResponse(t *testing.T) {
	reg := &pb.Message_Register{Ns: proto.String("a"), SignedPeerRecord: []byte{1, 2, 3}, Ttl: proto.Uint64(5)}
	cases := []struct {
		name string
		msg  *pb.Message
		want scanned
	}{
		{"register ok", &pb.Message{
			Type:             pb.Message_REGISTER_RESPONSE.Enum(),
			RegisterResponse: &pb.Message_RegisterResponse{Status: pb.Message_OK.Enum(), Ttl: proto.Uint64(5)},
		}, scanned{typ: pb.Message_REGISTER_RESPONSE, status: pb.Message_OK}},
		{"register refused", &pb.Message{
			Type: pb.Message_REGISTER_RESPONSE.Enum(),
			RegisterResponse: &pb.Message_RegisterResponse{
				Status: pb.Message_E_NOT_AUTHORIZED.Enum(), StatusText: proto.String("taken"),
			},
		}, scanned{typ: pb.Message_REGISTER_RESPONSE, status: pb.Message_E_NOT_AUTHORIZED, text: "taken"}},
		{"discover with two", &pb.Message{
			Type: pb.Message_DISCOVER_RESPONSE.Enum(),
			DiscoverResponse: &pb.Message_DiscoverResponse{
				Registrations: []*pb.Message_Register{reg, reg}, Cookie: []byte("12345678a"),
				Status: pb.Message_OK.Enum(),
			},
		}, scanned{typ: pb.Message_DISCOVER_RESPONSE, status: pb.Message_OK, registrations: 2}},
		{"discover empty, status omitted", &pb.Message{
			Type: pb.Message_DISCOVER_RESPONSE.Enum(), DiscoverResponse: &pb.Message_DiscoverResponse{},
		}, scanned{typ: pb.Message_DISCOVER_RESPONSE}},
		{"discover error", &pb.Message{
			Type: pb.Message_DISCOVER_RESPONSE.Enum(),
			DiscoverResponse: &pb.Message_DiscoverResponse{
				Status: pb.Message_E_INVALID_COOKIE.Enum(), StatusText: proto.String("bad cookie"),
			},
		}, scanned{typ: pb.Message_DISCOVER_RESPONSE, status: pb.Message_E_INVALID_COOKIE, text: "bad cookie"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, err := proto.Marshal(tc.msg)
			require.NoError(t, err)
			got, err := scanResponse(b)
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
	_, err := scanResponse(nil)
	require.Error(t, err, "no type")
	_, err = scanResponse([]byte{0x08})
	require.Error(t, err, "truncated varint")
	_, err = scanResponse([]byte{0x08, 0x04, 0x32, 0x05, 0x0a})
	require.Error(t, err, "truncated body")
}

// FuzzScanResponse: the scan never panics and agrees with a full decode
// on the type of every message that decodes.
func FuzzScanResponse(f *testing.F) {
	for _, m := range []*pb.Message{
		{Type: pb.Message_REGISTER_RESPONSE.Enum(), RegisterResponse: &pb.Message_RegisterResponse{Status: pb.Message_OK.Enum()}},
		{Type: pb.Message_DISCOVER_RESPONSE.Enum(), DiscoverResponse: &pb.Message_DiscoverResponse{
			Registrations: []*pb.Message_Register{{Ns: proto.String("x")}}, Status: pb.Message_OK.Enum()}},
	} {
		b, err := proto.Marshal(m)
		require.NoError(f, err)
		f.Add(b)
	}
	f.Add([]byte{0x08, 0x01, 0x1a, 0x02, 0x08, 0xc8, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := scanResponse(b)
		var m pb.Message
		if err != nil || proto.Unmarshal(b, &m) != nil || m.Type == nil {
			return
		}
		if got.typ != m.GetType() {
			t.Fatalf("type %v, full decode says %v", got.typ, m.GetType())
		}
		if m.GetType() == pb.Message_DISCOVER_RESPONSE && m.DiscoverResponse != nil &&
			got.registrations != len(m.DiscoverResponse.Registrations) {
			t.Fatalf("%d registrations, full decode says %d", got.registrations, len(m.DiscoverResponse.Registrations))
		}
	})
}

func TestRunLoadCounts(t *testing.T) {
	var calls atomic.Int64
	ops := make([]opFunc, 4)
	for i := range ops {
		ops[i] = func(*rand.Rand) error { calls.Add(1); return nil }
	}
	for _, rate := range []float64{0, 2000} {
		res := runLoad(context.Background(), loadSpec{Clients: ops, Warmup: time.Millisecond, Duration: 50 * time.Millisecond, Rate: rate})
		require.Positive(t, res.Ops)
		require.Zero(t, res.Errors)
		require.Equal(t, 4, res.Clients)
		require.Equal(t, res.Ops, res.Latency.Count)
		require.LessOrEqual(t, int64(res.Ops), calls.Load())
	}
}

// A stalled server must not hang the benchmark: cancelling breaks the
// clients' connections through Abort.
func TestRunLoadAbortsStalledClients(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	release := make(chan struct{})
	var aborted atomic.Bool
	ops := []opFunc{func(*rand.Rand) error {
		cancel()
		<-release
		return errors.New("connection broken")
	}}
	res := runLoad(ctx, loadSpec{Clients: ops, Duration: time.Hour, Abort: func() {
		aborted.Store(true)
		close(release)
	}})
	require.True(t, aborted.Load())
	require.Equal(t, 1, res.Errors)
	require.Equal(t, "connection broken", res.FirstErr)
}
