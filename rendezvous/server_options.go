package rendezvous

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ServiceName is the resource-manager service of the server's streams.
const ServiceName = "p2p-messaging.rendezvous"

// DefaultDisconnectGrace is how long a peer's registrations outlive its
// last connection to the server.
const DefaultDisconnectGrace = 2 * time.Second

// ServerOption configures a Server.
type ServerOption func(*serverConfig) error

type serverConfig struct {
	dataDir         string
	log             *slog.Logger
	reg             prometheus.Registerer
	limits          Limits
	exclusivePrefix string
	grace           time.Duration
	now             func() time.Time
	names           nameOptions // claim.go
}

// WithDataDir persists registrations and the cookie sequence in
// dir/rendezvous.db. "" (the default) keeps everything in memory.
func WithDataDir(dir string) ServerOption {
	return func(c *serverConfig) error { c.dataDir = dir; return nil }
}

// WithLogger sets the logger; by default the server logs nothing.
func WithLogger(l *slog.Logger) ServerOption {
	return func(c *serverConfig) error {
		if l == nil {
			return errors.New("nil logger")
		}
		c.log = l
		return nil
	}
}

// WithRegisterer registers the server's Prometheus metrics with r.
func WithRegisterer(r prometheus.Registerer) ServerOption {
	return func(c *serverConfig) error { c.reg = r; return nil }
}

// WithLimits replaces the default limits.
func WithLimits(l Limits) ServerOption {
	return func(c *serverConfig) error {
		if err := l.validate(); err != nil {
			return fmt.Errorf("invalid limits: %w", err)
		}
		c.limits = l
		return nil
	}
}

// WithExclusivePrefix makes namespaces starting with prefix exclusive: one
// peer holds each at a time. By default (and with "") no namespace is
// exclusive.
func WithExclusivePrefix(prefix string) ServerOption {
	return func(c *serverConfig) error { c.exclusivePrefix = prefix; return nil }
}

// WithDisconnectGrace sets how long after its last connection closes a
// peer's registrations are removed (default 2s). d < 0 keeps them until
// they expire or are unregistered.
func WithDisconnectGrace(d time.Duration) ServerOption {
	return func(c *serverConfig) error { c.grace = d; return nil }
}

// WithClock sets the clock used for registration lifetimes (tests).
func WithClock(now func() time.Time) ServerOption {
	return func(c *serverConfig) error {
		if now == nil {
			return errors.New("nil clock")
		}
		c.now = now
		return nil
	}
}
