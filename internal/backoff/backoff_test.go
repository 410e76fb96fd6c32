package backoff

import (
	"testing"
	"time"
)

func TestDelaysDoubleWithinJitterUpToMax(t *testing.T) {
	b := New(100*time.Millisecond, time.Second)
	want := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for round := 0; round < 50; round++ {
		for i, w := range want {
			w *= time.Millisecond
			d := b.Next()
			lo := time.Duration(float64(w) * (1 - jitterFraction))
			if lo < 100*time.Millisecond {
				lo = 100 * time.Millisecond
			}
			if d < lo || d > w {
				t.Fatalf("round %d attempt %d: delay %v, want in [%v, %v]", round, i, d, lo, w)
			}
		}
		b.Reset()
	}
}

func TestBadBoundsAreRepaired(t *testing.T) {
	b := New(0, -1)
	if d := b.Next(); d != time.Millisecond {
		t.Fatalf("delay %v, want 1ms", d)
	}
	b = New(time.Second, time.Millisecond)
	for range 5 {
		if d := b.Next(); d != time.Second {
			t.Fatalf("delay %v, want 1s (max raised to min)", d)
		}
	}
}
