package main

import (
	"math"
	"slices"
	"time"
)

// Latencies collects request latencies. One recorder per goroutine; merge
// them afterwards. Samples are kept exactly (8 bytes each), so percentiles are
// exact rather than bucketed.
type Latencies struct {
	samples []time.Duration
}

// Add records one sample.
func (l *Latencies) Add(d time.Duration) { l.samples = append(l.samples, d) }

// Merge appends every sample of o.
func (l *Latencies) Merge(o *Latencies) { l.samples = append(l.samples, o.samples...) }

// Len is the number of samples.
func (l *Latencies) Len() int { return len(l.samples) }

// Summary is what a result table shows about a latency distribution.
type Summary struct {
	Count int     `json:"count"`
	P50   float64 `json:"p50_ms"`
	P99   float64 `json:"p99_ms"`
	Max   float64 `json:"max_ms"`
	Mean  float64 `json:"mean_ms"`
}

// Summarize sorts the samples and returns count, p50, p99, max and mean in
// milliseconds. An empty set gives a zero Summary.
func (l *Latencies) Summarize() Summary {
	n := len(l.samples)
	if n == 0 {
		return Summary{}
	}
	slices.Sort(l.samples)
	var sum time.Duration
	for _, d := range l.samples {
		sum += d
	}
	return Summary{
		Count: n,
		P50:   ms(percentile(l.samples, 50)),
		P99:   ms(percentile(l.samples, 99)),
		Max:   ms(l.samples[n-1]),
		Mean:  ms(sum / time.Duration(n)),
	}
}

// percentile returns the nearest-rank percentile p (0 < p <= 100) of sorted:
// the smallest sample such that at least p% of the samples are <= it.
func percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	if p <= 0 {
		return sorted[0]
	}
	if p >= 100 {
		return sorted[n-1]
	}
	rank := int(math.Ceil(p / 100 * float64(n)))
	if rank < 1 {
		rank = 1
	}
	return sorted[rank-1]
}

func ms(d time.Duration) float64 {
	return math.Round(float64(d)/float64(time.Microsecond)) / 1000
}
