package rendezvous

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Client defaults.
const (
	// DefaultRequestTimeout bounds one request/response exchange on a stream
	// when the caller's context has no earlier deadline.
	DefaultRequestTimeout = 20 * time.Second
	// DefaultDialTimeout bounds connecting to a server.
	DefaultDialTimeout = 10 * time.Second
	// DefaultRetryMin and DefaultRetryMax bound the backoff between attempts
	// to reach a server that failed (kept registrations, watches).
	DefaultRetryMin = time.Second
	DefaultRetryMax = 30 * time.Second
	// DefaultWatchBuffer is the capacity of the channel Watch returns.
	DefaultWatchBuffer = 256
	// DefaultCloseTimeout bounds the best-effort UNREGISTER of kept
	// registrations in Close.
	DefaultCloseTimeout = 2 * time.Second
)

// ClientOption configures a Client.
type ClientOption func(*clientConfig) error

type clientConfig struct {
	logger         *slog.Logger
	requestTimeout time.Duration
	dialTimeout    time.Duration
	retryMin       time.Duration
	retryMax       time.Duration
	watchBuffer    int
	closeTimeout   time.Duration
	clock          Clock
	claims         claimOptions // client_claim.go
}

// WithClientLogger sets the client's logger (default: discard).
func WithClientLogger(l *slog.Logger) ClientOption {
	return func(c *clientConfig) error {
		if l == nil {
			return errors.New("nil logger")
		}
		c.logger = l
		return nil
	}
}

// WithRequestTimeout bounds one request/response exchange and one dial.
func WithRequestTimeout(request, dial time.Duration) ClientOption {
	return func(c *clientConfig) error {
		if request <= 0 || dial <= 0 {
			return fmt.Errorf("request timeout %v and dial timeout %v must be positive", request, dial)
		}
		c.requestTimeout, c.dialTimeout = request, dial
		return nil
	}
}

// WithRetryBackoff sets the exponential backoff used to reach a server
// again after a failure (kept registrations and watches).
func WithRetryBackoff(lo, hi time.Duration) ClientOption {
	return func(c *clientConfig) error {
		if lo <= 0 || hi < lo {
			return fmt.Errorf("invalid retry backoff [%v, %v]", lo, hi)
		}
		c.retryMin, c.retryMax = lo, hi
		return nil
	}
}

// WithWatchBuffer sets the capacity of the channels Watch returns.
func WithWatchBuffer(n int) ClientOption {
	return func(c *clientConfig) error {
		if n < 1 {
			return fmt.Errorf("watch buffer %d must be positive", n)
		}
		c.watchBuffer = n
		return nil
	}
}

// WithClientClock sets the clock of the client's schedules (refreshes,
// retries, watch expiry); the default is the system clock. Tests pass a
// clock they advance, so schedules run without waiting.
func WithClientClock(c Clock) ClientOption {
	return func(cfg *clientConfig) error {
		if c == nil {
			return errors.New("nil clock")
		}
		cfg.clock = c
		return nil
	}
}

// WithCloseTimeout bounds the best-effort UNREGISTER of kept registrations
// when the client closes; 0 skips it.
func WithCloseTimeout(d time.Duration) ClientOption {
	return func(c *clientConfig) error {
		if d < 0 {
			return fmt.Errorf("close timeout %v is negative", d)
		}
		c.closeTimeout = d
		return nil
	}
}
