package mailbox

import (
	"errors"
	"fmt"
	"time"
)

// Default limits.
const (
	DefaultMaxDepositSize           = 16 << 10
	DefaultMaxPerRecipient          = 10_000
	DefaultMaxBytesPerRecipient     = 64 << 20
	DefaultMaxPerSenderPerRecipient = 1000
	DefaultMaxBytesPerSender        = 64 << 20
	DefaultTTL                      = 7 * 24 * time.Hour
	DefaultMaxStoreSize             = 1 << 30
	DefaultStreamTimeout            = 10 * time.Second
	// DefaultRequestRate and DefaultRequestBurst shape the per-peer token
	// bucket over all requests: a recipient catching up on 1000 deposits
	// needs about 32 (fetch and delete pages of 64), a burst of sends
	// fits, a flood is held to the rate.
	DefaultRequestRate  = 50
	DefaultRequestBurst = 500
)

// Limits bounds what the server stores. Every field is enforced and must
// be positive; start from DefaultLimits.
type Limits struct {
	// MaxDepositSize bounds one sealed box, in bytes (at most MaxBoxSize).
	MaxDepositSize int
	// MaxPerRecipient and MaxBytesPerRecipient bound what waits for one
	// recipient, from all senders together.
	MaxPerRecipient      int
	MaxBytesPerRecipient int64
	// MaxPerSenderPerRecipient bounds what one sender has waiting for one
	// recipient, so one sender cannot fill a recipient's quota for others.
	MaxPerSenderPerRecipient int
	// MaxBytesPerSender bounds what one sender has stored for all
	// recipients together, so one sender cannot fill the store with
	// deposits for made-up recipients.
	MaxBytesPerSender int64
	// TTL is how long a deposit is kept; then it is deleted.
	TTL time.Duration
	// MaxStoreSize bounds all deposits together, in bytes.
	MaxStoreSize int64
	// StreamTimeout bounds one request and its response.
	StreamTimeout time.Duration
	// RequestRate (per second) and RequestBurst bound the requests of one
	// peer; beyond them E_RATE_LIMITED.
	RequestRate  float64
	RequestBurst int
}

// DefaultLimits returns the defaults.
func DefaultLimits() Limits {
	return Limits{
		MaxDepositSize:           DefaultMaxDepositSize,
		MaxPerRecipient:          DefaultMaxPerRecipient,
		MaxBytesPerRecipient:     DefaultMaxBytesPerRecipient,
		MaxPerSenderPerRecipient: DefaultMaxPerSenderPerRecipient,
		MaxBytesPerSender:        DefaultMaxBytesPerSender,
		TTL:                      DefaultTTL,
		MaxStoreSize:             DefaultMaxStoreSize,
		StreamTimeout:            DefaultStreamTimeout,
		RequestRate:              DefaultRequestRate,
		RequestBurst:             DefaultRequestBurst,
	}
}

// Validate reports every invalid field.
func (l Limits) Validate() error {
	var errs []error
	pos := func(name string, v int64) {
		if v <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive, got %d", name, v))
		}
	}
	pos("MaxDepositSize", int64(l.MaxDepositSize))
	if l.MaxDepositSize > MaxBoxSize {
		errs = append(errs, fmt.Errorf("MaxDepositSize must be at most %d, got %d", MaxBoxSize, l.MaxDepositSize))
	}
	pos("MaxPerRecipient", int64(l.MaxPerRecipient))
	pos("MaxBytesPerRecipient", l.MaxBytesPerRecipient)
	pos("MaxPerSenderPerRecipient", int64(l.MaxPerSenderPerRecipient))
	pos("MaxBytesPerSender", l.MaxBytesPerSender)
	pos("MaxStoreSize", l.MaxStoreSize)
	if l.TTL <= 0 {
		errs = append(errs, fmt.Errorf("TTL must be positive, got %v", l.TTL))
	}
	if l.StreamTimeout <= 0 {
		errs = append(errs, fmt.Errorf("StreamTimeout must be positive, got %v", l.StreamTimeout))
	}
	if !(l.RequestRate > 0) {
		errs = append(errs, fmt.Errorf("RequestRate must be positive, got %v", l.RequestRate))
	}
	pos("RequestBurst", int64(l.RequestBurst))
	return errors.Join(errs...)
}
