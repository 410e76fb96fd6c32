package rendezvous

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// fakeClock is a clock that moves only when told: WithClock takes its Now,
// WithClientClock the whole of it. Its timers fire inside Advance.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	c     *fakeClock
	ch    chan time.Time
	when  time.Time
	armed bool
}

var _ Clock = (*fakeClock)(nil)

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock on by d and fires the timers that are due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	c.fireLocked()
}

// waiting is the number of timers armed for a time still to come: a
// schedule that is idle until the clock moves.
func (c *fakeClock) waiting() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, t := range c.timers {
		if t.armed && t.when.After(c.now) {
			n++
		}
	}
	return n
}

func (c *fakeClock) NewTimer(d time.Duration) Timer {
	t := &fakeTimer{c: c, ch: make(chan time.Time, 1)}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.timers = append(c.timers, t)
	t.armLocked(d)
	return t
}

func (c *fakeClock) fireLocked() {
	for _, t := range c.timers {
		if t.armed && !t.when.After(c.now) {
			t.armed = false
			select {
			case t.ch <- c.now:
			default:
			}
		}
	}
}

func (t *fakeTimer) armLocked(d time.Duration) {
	select { // no stale value after Reset (time.Timer since Go 1.23)
	case <-t.ch:
	default:
	}
	t.when, t.armed = t.c.now.Add(d), true
	t.c.fireLocked()
}

func (t *fakeTimer) C() <-chan time.Time { return t.ch }

func (t *fakeTimer) Reset(d time.Duration) bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := t.armed
	t.armLocked(d)
	return was
}

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := t.armed
	t.armed = false
	select {
	case <-t.ch:
	default:
	}
	return was
}

func TestFakeClock(t *testing.T) {
	c := newFakeClock()
	t0 := c.Now()
	tm := c.NewTimer(time.Second)
	require.Equal(t, 1, c.waiting())
	c.Advance(999 * time.Millisecond)
	select {
	case <-tm.C():
		t.Fatal("fired early")
	default:
	}
	c.Advance(time.Millisecond)
	require.Equal(t, t0.Add(time.Second), <-tm.C())
	require.Zero(t, c.waiting())
	require.False(t, tm.Reset(time.Minute))
	require.True(t, tm.Stop())
	c.Advance(time.Hour)
	select {
	case <-tm.C():
		t.Fatal("a stopped timer fired")
	default:
	}
	tm.Reset(0)
	<-tm.C()
	var sys Clock = systemClock{}
	st := sys.NewTimer(time.Hour)
	require.True(t, st.Stop())
	require.WithinDuration(t, time.Now(), sys.Now(), time.Minute)
}
