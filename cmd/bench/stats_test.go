package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
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
