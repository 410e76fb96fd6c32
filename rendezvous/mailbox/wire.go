package mailbox

import (
	"errors"
	"fmt"

	"github.com/libp2p/go-libp2p/core/protocol"
	"google.golang.org/protobuf/encoding/protowire"
)

// Protocol identifiers.
const (
	// ProtocolID carries deposits, fetches and deletes (doc.go).
	ProtocolID protocol.ID = "/p2p-messaging/mailbox/1.0.0"
	// NotifyProtocolID is the daemon's push notice to a connected
	// recipient: a stream that carries no data and tells the recipient to
	// fetch.
	NotifyProtocolID protocol.ID = "/p2p-messaging/mailbox/notify/1.0.0"
)

// Wire limits.
const (
	// IDLen is the length of a deposit ID.
	IDLen = 16
	// MaxBoxSize is the largest sealed box the wire format carries; a
	// server's Limits.MaxDepositSize may only be smaller.
	MaxBoxSize = 64 << 10
	// MaxRequestSize bounds one request: a deposit of MaxBoxSize plus its
	// fields, or a delete of MaxFetch IDs.
	MaxRequestSize = MaxBoxSize + 1024
	// MaxFetch is the most deposits one FETCH returns, and the most IDs one
	// DELETE names.
	MaxFetch = 256
	// MaxResponseSize bounds one response.
	MaxResponseSize = 1 << 20
	// maxPeerIDLen bounds a recipient peer ID on the wire (an Ed25519
	// identity multihash is 38 bytes).
	maxPeerIDLen = 64
)

// Op is a request type.
type Op uint64

// Request types.
const (
	OpDeposit Op = 1
	OpFetch   Op = 2
	OpDelete  Op = 3
)

// Status is a response status.
type Status uint64

// Status codes.
const (
	StatusOK Status = 0
	// Request errors: the sender's fault; the stream was well formed.
	StatusBadRequest   Status = 100 // malformed or unknown request
	StatusBadRecipient Status = 101 // not a peer ID with an Ed25519 key
	StatusTooLarge     Status = 102 // deposit above Limits.MaxDepositSize
	// Quotas: the request is valid, the daemon will not store it now.
	StatusRecipientFull Status = 200 // the recipient's count or bytes
	StatusSenderFull    Status = 201 // this sender's share for the recipient, or its total
	StatusStoreFull     Status = 202 // the daemon's total store size
	StatusRateLimited   Status = 203 // this peer's request rate
	// Server side.
	StatusInternal Status = 300
)

func (s Status) String() string {
	switch s {
	case StatusOK:
		return "OK"
	case StatusBadRequest:
		return "E_BAD_REQUEST"
	case StatusBadRecipient:
		return "E_BAD_RECIPIENT"
	case StatusTooLarge:
		return "E_TOO_LARGE"
	case StatusRecipientFull:
		return "E_RECIPIENT_FULL"
	case StatusSenderFull:
		return "E_SENDER_FULL"
	case StatusStoreFull:
		return "E_STORE_FULL"
	case StatusRateLimited:
		return "E_RATE_LIMITED"
	case StatusInternal:
		return "E_INTERNAL"
	}
	return fmt.Sprintf("E_%d", uint64(s))
}

// StatusError is a non-OK status answered by a mailbox server. Callers
// match it with errors.As.
type StatusError struct {
	Status Status
	Text   string
}

func (e *StatusError) Error() string {
	if e.Text == "" {
		return "mailbox: " + e.Status.String()
	}
	return "mailbox: " + e.Status.String() + ": " + e.Text
}

// request is one decoded request.
type request struct {
	op        Op
	recipient []byte // OpDeposit
	box       []byte // OpDeposit
	limit     uint64 // OpFetch
	after     []byte // OpFetch: only deposits after this deposit ID
	ids       [][]byte
}

// Deposit is one stored deposit as a FETCH returns it.
type Deposit struct {
	ID       []byte // IDLen bytes
	Box      []byte // the sealed box, opaque to the daemon
	StoredMs int64  // when the daemon stored it (unix milliseconds)
}

// response is one decoded response.
type response struct {
	status   Status
	text     string
	id       []byte // OpDeposit: the deposit's ID
	deposits []Deposit
	more     bool   // OpFetch: more deposits wait
	count    uint64 // OpDelete: deposits deleted
}

// Field numbers (protobuf wire format, hand-encoded).
const (
	fReqOp        = 1
	fReqRecipient = 2
	fReqBox       = 3
	fReqLimit     = 4
	fReqID        = 5
	fReqAfter     = 6

	fRespStatus  = 1
	fRespText    = 2
	fRespID      = 3
	fRespDeposit = 4
	fRespMore    = 5
	fRespCount   = 6

	fDepID     = 1
	fDepBox    = 2
	fDepStored = 3
)

func (r *request) marshal() []byte {
	b := protowire.AppendTag(nil, fReqOp, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(r.op))
	if r.recipient != nil {
		b = protowire.AppendTag(b, fReqRecipient, protowire.BytesType)
		b = protowire.AppendBytes(b, r.recipient)
	}
	if r.box != nil {
		b = protowire.AppendTag(b, fReqBox, protowire.BytesType)
		b = protowire.AppendBytes(b, r.box)
	}
	if r.limit != 0 {
		b = protowire.AppendTag(b, fReqLimit, protowire.VarintType)
		b = protowire.AppendVarint(b, r.limit)
	}
	for _, id := range r.ids {
		b = protowire.AppendTag(b, fReqID, protowire.BytesType)
		b = protowire.AppendBytes(b, id)
	}
	if r.after != nil {
		b = protowire.AppendTag(b, fReqAfter, protowire.BytesType)
		b = protowire.AppendBytes(b, r.after)
	}
	return b
}

var errMalformed = errors.New("malformed message")

// fields walks the protobuf fields of b, calling f for each; unknown
// fields are skipped. Only varint and bytes fields are accepted.
func fields(b []byte, f func(num protowire.Number, v uint64, bs []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return errMalformed
		}
		b = b[n:]
		switch typ {
		case protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return errMalformed
			}
			b = b[n:]
			if err := f(num, v, nil); err != nil {
				return err
			}
		case protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return errMalformed
			}
			b = b[n:]
			if err := f(num, 0, v); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%w: wire type %d", errMalformed, typ)
		}
	}
	return nil
}

// decodeRequest decodes and validates the shape of a request (not its
// recipient, which the server checks).
func decodeRequest(b []byte) (*request, error) {
	r := &request{}
	err := fields(b, func(num protowire.Number, v uint64, bs []byte) error {
		switch num {
		case fReqOp:
			r.op = Op(v)
		case fReqRecipient:
			if len(bs) > maxPeerIDLen {
				return fmt.Errorf("%w: recipient of %d bytes", errMalformed, len(bs))
			}
			r.recipient = bs
		case fReqBox:
			r.box = bs
		case fReqLimit:
			r.limit = v
		case fReqID:
			if len(bs) != IDLen {
				return fmt.Errorf("%w: deposit ID of %d bytes", errMalformed, len(bs))
			}
			if len(r.ids) >= MaxFetch {
				return fmt.Errorf("%w: more than %d IDs", errMalformed, MaxFetch)
			}
			r.ids = append(r.ids, bs)
		case fReqAfter:
			if len(bs) != IDLen {
				return fmt.Errorf("%w: cursor of %d bytes", errMalformed, len(bs))
			}
			r.after = bs
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	switch r.op {
	case OpDeposit:
		if r.recipient == nil || r.box == nil {
			return nil, fmt.Errorf("%w: deposit without recipient or box", errMalformed)
		}
	case OpFetch, OpDelete:
	default:
		return nil, fmt.Errorf("%w: unknown op %d", errMalformed, r.op)
	}
	return r, nil
}

func (r *response) marshal() []byte {
	b := protowire.AppendTag(nil, fRespStatus, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(r.status))
	if r.text != "" {
		b = protowire.AppendTag(b, fRespText, protowire.BytesType)
		b = protowire.AppendString(b, r.text)
	}
	if r.id != nil {
		b = protowire.AppendTag(b, fRespID, protowire.BytesType)
		b = protowire.AppendBytes(b, r.id)
	}
	for _, d := range r.deposits {
		b = protowire.AppendTag(b, fRespDeposit, protowire.BytesType)
		b = protowire.AppendBytes(b, marshalDeposit(d))
	}
	if r.more {
		b = protowire.AppendTag(b, fRespMore, protowire.VarintType)
		b = protowire.AppendVarint(b, 1)
	}
	if r.count != 0 {
		b = protowire.AppendTag(b, fRespCount, protowire.VarintType)
		b = protowire.AppendVarint(b, r.count)
	}
	return b
}

func marshalDeposit(d Deposit) []byte {
	b := protowire.AppendTag(nil, fDepID, protowire.BytesType)
	b = protowire.AppendBytes(b, d.ID)
	b = protowire.AppendTag(b, fDepBox, protowire.BytesType)
	b = protowire.AppendBytes(b, d.Box)
	b = protowire.AppendTag(b, fDepStored, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(d.StoredMs))
	return b
}

// depositWireSize is what one deposit adds to a FETCH response.
func depositWireSize(boxLen int) int {
	inner := 1 + protowire.SizeBytes(IDLen) + 1 + protowire.SizeBytes(boxLen) + 1 + 10
	return 1 + protowire.SizeBytes(inner)
}

// decodeResponse decodes a response; the deposits' slices alias b.
func decodeResponse(b []byte) (*response, error) {
	r := &response{}
	err := fields(b, func(num protowire.Number, v uint64, bs []byte) error {
		switch num {
		case fRespStatus:
			r.status = Status(v)
		case fRespText:
			r.text = string(bs)
		case fRespID:
			r.id = bs
		case fRespDeposit:
			if len(r.deposits) >= MaxFetch {
				return fmt.Errorf("%w: more than %d deposits", errMalformed, MaxFetch)
			}
			var d Deposit
			err := fields(bs, func(num protowire.Number, v uint64, bs []byte) error {
				switch num {
				case fDepID:
					d.ID = bs
				case fDepBox:
					d.Box = bs
				case fDepStored:
					d.StoredMs = int64(v)
				}
				return nil
			})
			if err != nil {
				return err
			}
			if len(d.ID) != IDLen || len(d.Box) == 0 || len(d.Box) > MaxBoxSize {
				return fmt.Errorf("%w: bad deposit", errMalformed)
			}
			r.deposits = append(r.deposits, d)
		case fRespMore:
			r.more = v != 0
		case fRespCount:
			r.count = v
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return r, nil
}
