package rendezvous

import "time"

// Clock is the time source of the client's schedules: refreshes of kept
// registrations, retry backoff, the expiry of what a down server last said
// in a watch. WithClientClock replaces the system clock (tests); stream
// deadlines always use the system clock.
type Clock interface {
	Now() time.Time
	// NewTimer returns a timer that fires once d has passed on this clock.
	NewTimer(d time.Duration) Timer
}

// Timer is a Clock's timer. C, Reset and Stop behave as those of a
// time.Timer (Go 1.23 semantics: no stale value after Reset or Stop).
type Timer interface {
	C() <-chan time.Time
	Reset(d time.Duration) bool
	Stop() bool
}

// systemClock is the default Clock.
type systemClock struct{}

func (systemClock) Now() time.Time                 { return time.Now() }
func (systemClock) NewTimer(d time.Duration) Timer { return systemTimer{time.NewTimer(d)} }

type systemTimer struct{ *time.Timer }

func (t systemTimer) C() <-chan time.Time { return t.Timer.C }
