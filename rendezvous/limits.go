package rendezvous

import (
	"errors"
	"fmt"
	"time"
)

// Server defaults beyond the spec's recommended bounds in wire.go.
const (
	// DefaultMinTTL is the shortest registration lifetime the server accepts
	// by default. Clients refresh before the TTL ends; much shorter lifetimes
	// only turn into refresh traffic.
	DefaultMinTTL = 2 * time.Minute
	// DefaultMaxRegistrations caps the registrations one server holds.
	DefaultMaxRegistrations = 500_000
	// DefaultRequestRate and DefaultRequestBurst shape the per-peer token
	// bucket. The burst lets one peer fill its whole per-peer quota (1000
	// registrations) at once; a sustained flood is held to the rate.
	DefaultRequestRate  = 100
	DefaultRequestBurst = 1500
	// DefaultStreamTimeout bounds the wait for the next request on a stream
	// and the write of its response.
	DefaultStreamTimeout = time.Minute
	// DefaultMaxRecordSize bounds one signed peer record, in bytes.
	DefaultMaxRecordSize = 16 << 10
	// DefaultMaxWatchesPerPeer and DefaultMaxWatches cap watch subscriptions.
	// The per-peer cap fits go-libp2p's default resource manager, which
	// lets one peer open at least 64 inbound streams of one protocol (more
	// with more memory): all 48 watches and the refusal of the 49th, with
	// room for streams being torn down. A server with a higher cap builds
	// its host's resource manager with SetResourceLimits, or the streams
	// beyond the manager's limit are reset before the server can answer.
	DefaultMaxWatchesPerPeer = 48
	DefaultMaxWatches        = 100_000
	// DefaultWatchQueue is the number of events buffered per watch
	// subscriber; a subscriber that falls further behind is disconnected.
	DefaultWatchQueue = 1024
)

// Limits bounds what the server accepts. Every field is enforced; the zero
// value of a field is not "unlimited" but invalid, so start from
// DefaultLimits and change what you need.
type Limits struct {
	DefaultTTL, MinTTL, MaxTTL time.Duration
	MaxNamespaceLen            int // bytes
	MaxRegistrationsPerPeer    int
	MaxRegistrations           int // total; a full server answers E_UNAVAILABLE
	MaxDiscoverLimit           int // most registrations in one DISCOVER_RESPONSE
	RequestRate                float64
	RequestBurst               int
	StreamTimeout              time.Duration // per-request deadline on a stream
	MaxWatchesPerPeer          int
	MaxWatches                 int
	// MaxRecordSize bounds one signed peer record, in bytes.
	MaxRecordSize int
	// MaxRecordAddrs bounds the addresses of one signed peer record
	// (addrcheck.go).
	MaxRecordAddrs int
	// WatchQueue is the per-subscriber event buffer.
	WatchQueue int

	// Names under the exclusive prefix (lease.go; see the package doc,
	// "Names").
	NameLimits
}

// DefaultLimits returns the limits a server uses unless told otherwise.
func DefaultLimits() Limits {
	return Limits{
		DefaultTTL:              DefaultTTL,
		MinTTL:                  DefaultMinTTL,
		MaxTTL:                  MaxTTL,
		MaxNamespaceLen:         MaxNamespaceLen,
		MaxRegistrationsPerPeer: MaxRegistrationsPerPeer,
		MaxRegistrations:        DefaultMaxRegistrations,
		MaxDiscoverLimit:        MaxDiscoverLimit,
		RequestRate:             DefaultRequestRate,
		RequestBurst:            DefaultRequestBurst,
		StreamTimeout:           DefaultStreamTimeout,
		MaxWatchesPerPeer:       DefaultMaxWatchesPerPeer,
		MaxWatches:              DefaultMaxWatches,
		MaxRecordSize:           DefaultMaxRecordSize,
		MaxRecordAddrs:          DefaultMaxRecordAddrs,
		WatchQueue:              DefaultWatchQueue,
		NameLimits:              DefaultNameLimits(),
	}
}

// Validate reports every inconsistent limit, joined; a server refuses
// limits that fail it. Binaries call it to check flags before starting.
func (l Limits) Validate() error { return l.validate() }

// validate reports every inconsistent limit.
func (l Limits) validate() error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	check(l.MinTTL > 0, "min ttl %v must be positive", l.MinTTL)
	check(l.MinTTL%time.Second == 0 && l.MaxTTL%time.Second == 0, "ttl bounds must be whole seconds")
	check(l.MinTTL <= l.DefaultTTL && l.DefaultTTL <= l.MaxTTL,
		"ttls must satisfy min %v <= default %v <= max %v", l.MinTTL, l.DefaultTTL, l.MaxTTL)
	check(l.MaxNamespaceLen >= 1 && l.MaxNamespaceLen <= MaxNamespaceLen,
		"max namespace length %d out of range 1..%d", l.MaxNamespaceLen, MaxNamespaceLen)
	check(l.MaxRegistrationsPerPeer >= 1, "max registrations per peer %d must be positive", l.MaxRegistrationsPerPeer)
	check(l.MaxRegistrations >= 1, "max registrations %d must be positive", l.MaxRegistrations)
	check(l.MaxDiscoverLimit >= 1 && l.MaxDiscoverLimit <= MaxDiscoverLimit,
		"max discover limit %d out of range 1..%d", l.MaxDiscoverLimit, MaxDiscoverLimit)
	check(l.RequestRate > 0, "request rate %v must be positive", l.RequestRate)
	check(l.RequestBurst >= 1, "request burst %d must be positive", l.RequestBurst)
	check(l.StreamTimeout > 0, "stream timeout %v must be positive", l.StreamTimeout)
	check(l.MaxWatchesPerPeer >= 0 && l.MaxWatches >= 0, "watch caps must not be negative")
	check(l.MaxRecordSize >= 64 && l.MaxRecordSize <= MaxMessageSize/2,
		"max record size %d out of range 64..%d", l.MaxRecordSize, MaxMessageSize/2)
	check(l.WatchQueue >= 1, "watch queue %d must be positive", l.WatchQueue)
	check(l.MaxRecordAddrs >= 1, "max record addresses %d must be positive", l.MaxRecordAddrs)
	errs = append(errs, l.NameLimits.validate()...)
	return errors.Join(errs...)
}
