package rendezvous

import (
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/p2p-messaging/p2p-messaging/rendezvous/pb"
)

// Protocol identifiers.
const (
	// ProtocolID is the libp2p rendezvous protocol, spec r3.
	ProtocolID protocol.ID = "/rendezvous/1.0.0"
	// WatchProtocolID is the push extension: subscribe to a namespace and
	// receive arrivals and departures as they happen.
	WatchProtocolID protocol.ID = "/p2p-messaging/rendezvous/watch/1.0.0"
)

// Wire limits shared by the server and the client.
const (
	// MaxMessageSize bounds one length-prefixed message, in bytes. A length
	// prefix above it is rejected before anything is allocated.
	MaxMessageSize = 1 << 20
	// MaxNamespaceLen is the spec's bound on a namespace, in bytes.
	MaxNamespaceLen = 255
	// DefaultTTL is the registration lifetime when a REGISTER carries none.
	DefaultTTL = 2 * time.Hour
	// MaxTTL is the longest registration lifetime the spec recommends.
	MaxTTL = 72 * time.Hour
	// MaxDiscoverLimit is the most registrations one DISCOVER returns.
	MaxDiscoverLimit = 1000
	// MaxRegistrationsPerPeer is the spec's recommended per-peer cap.
	MaxRegistrationsPerPeer = 1000
)

// Status is a rendezvous response status code.
type Status = pb.Message_ResponseStatus

// Status codes, as the spec numbers them.
const (
	StatusOK                      = pb.Message_OK
	StatusInvalidNamespace        = pb.Message_E_INVALID_NAMESPACE
	StatusInvalidSignedPeerRecord = pb.Message_E_INVALID_SIGNED_PEER_RECORD
	StatusInvalidTTL              = pb.Message_E_INVALID_TTL
	StatusInvalidCookie           = pb.Message_E_INVALID_COOKIE
	StatusNotAuthorized           = pb.Message_E_NOT_AUTHORIZED
	StatusInternalError           = pb.Message_E_INTERNAL_ERROR
	StatusUnavailable             = pb.Message_E_UNAVAILABLE
)

// StatusError is a non-OK status answered by a rendezvous server.
// Callers match it with errors.As.
type StatusError struct {
	Status Status
	Text   string
}

func (e *StatusError) Error() string {
	if e.Text == "" {
		return fmt.Sprintf("rendezvous: %s", e.Status)
	}
	return fmt.Sprintf("rendezvous: %s: %s", e.Status, e.Text)
}

// Registration is one peer registered under one namespace.
type Registration struct {
	Namespace string
	Peer      peer.AddrInfo
	// TTL is the lifetime left when the server answered.
	TTL time.Duration
}

// cookieSeqLen is the size of the sequence number at the front of a cookie.
const cookieSeqLen = 8
