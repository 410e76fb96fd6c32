package rendezvous

// Everything this package writes on the wire is encoded here: the server's
// responses and watch events, the client's requests, cookies.

import (
	"encoding/binary"
	"io"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-msgio/pbio"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/p2p-messaging/p2p-messaging/rendezvous/pb"
)

// newWriter returns a delimited protobuf writer (the client's requests).
func newWriter(w io.Writer) pbio.WriteCloser {
	return pbio.NewDelimitedWriter(w)
}

// appendFrame appends m with its varint length prefix. The messages given
// to it are built from checked fields and always marshal; should one not,
// b comes back unchanged.
func appendFrame(b []byte, m proto.Message) []byte {
	size := proto.Size(m)
	b = slices.Grow(b, protowire.SizeVarint(uint64(size))+size)
	start := len(b)
	b = protowire.AppendVarint(b, uint64(size))
	out, err := proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(b, m)
	if err != nil {
		return b[:start]
	}
	return out
}

// ---- server responses ----

// appendRegisterResponse appends the framed REGISTER_RESPONSE for resp.
func appendRegisterResponse(b []byte, resp *pb.Message_RegisterResponse) []byte {
	return appendFrame(b, &pb.Message{
		Type:             pb.Message_REGISTER_RESPONSE.Enum(),
		RegisterResponse: resp,
	})
}

// appendDiscoverRefusal appends the framed DISCOVER_RESPONSE for a non-OK
// status.
func appendDiscoverRefusal(b []byte, status Status, text string) []byte {
	return appendFrame(b, &pb.Message{
		Type: pb.Message_DISCOVER_RESPONSE.Enum(),
		DiscoverResponse: &pb.Message_DiscoverResponse{
			Status:     status.Enum(),
			StatusText: proto.String(text),
		},
	})
}

// registrationFieldSize is the encoded size of e, with remaining lifetime
// ttl, as one `registrations` field of a DISCOVER_RESPONSE.
func registrationFieldSize(e *regEntry, ttl uint64) int {
	return protowire.SizeTag(1) + protowire.SizeBytes(registerSize(e, ttl))
}

// discoverTrailerSize is the encoded size of what an OK DISCOVER_RESPONSE
// for ns holds besides its registrations: the cookie, the status and, when
// the name ns is leased, its holder (name_holder, field 100).
func discoverTrailerSize(ns string, holder peer.ID) int {
	n := protowire.SizeTag(2) + protowire.SizeBytes(cookieSeqLen+len(ns)) + protowire.SizeTag(3) + 1
	if holder != "" {
		n += protowire.SizeTag(fieldNameHolder) + protowire.SizeBytes(len(holder))
	}
	return n
}

// fieldNameHolder is DiscoverResponse.name_holder, an extension.
const fieldNameHolder = 100

// appendDiscoverResponse appends the framed OK DISCOVER_RESPONSE Message
// holding sel (with their remaining lifetimes ttls; regBytes is the sum of
// their registrationFieldSize), the cookie after sequence number last for
// ns and, unless holder is empty, the name's lease holder. It is written by
// hand, byte for byte what proto.Marshal makes, so that the stored record
// bytes are copied once and nothing is allocated.
func appendDiscoverResponse(b []byte, sel []*regEntry, ttls []uint64, regBytes int, last uint64, ns string, holder peer.ID) []byte {
	cookieLen := cookieSeqLen + len(ns)
	body := regBytes + discoverTrailerSize(ns, holder)
	msg := protowire.SizeTag(1) + 1 + protowire.SizeTag(6) + protowire.SizeBytes(body)

	b = protowire.AppendVarint(b, uint64(msg))
	b = protowire.AppendTag(b, 1, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(pb.Message_DISCOVER_RESPONSE))
	b = protowire.AppendTag(b, 6, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(body))
	for i, e := range sel {
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(registerSize(e, ttls[i])))
		b = appendRegister(b, e, ttls[i])
	}
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(cookieLen))
	b = appendCookie(b, last, ns)
	b = protowire.AppendTag(b, 3, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(StatusOK))
	if holder != "" {
		b = protowire.AppendTag(b, fieldNameHolder, protowire.BytesType)
		b = protowire.AppendString(b, string(holder))
	}
	return b
}

// registerSize is the encoded size of a Message.Register for e.
func registerSize(e *regEntry, ttl uint64) int {
	return protowire.SizeTag(1) + protowire.SizeBytes(len(e.ns)) +
		protowire.SizeTag(2) + protowire.SizeBytes(len(e.rec)) +
		protowire.SizeTag(3) + protowire.SizeVarint(ttl)
}

// appendRegister encodes e as a Message.Register, fields in number order
// (as proto.Marshal does).
func appendRegister(b []byte, e *regEntry, ttl uint64) []byte {
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, e.ns)
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendBytes(b, e.rec)
	b = protowire.AppendTag(b, 3, protowire.VarintType)
	return protowire.AppendVarint(b, ttl)
}

// appendCookie appends the cookie for namespace ns positioned after sequence
// number seq: 8 bytes of big-endian seq, then the namespace ("" for a
// discover over all namespaces).
func appendCookie(b []byte, seq uint64, ns string) []byte {
	b = binary.BigEndian.AppendUint64(b, seq)
	return append(b, ns...)
}

// ---- watch events ----

// eventFrame frames one watch event; nil if it cannot be encoded.
func eventFrame(ev *pb.WatchEvent) []byte {
	if b := appendFrame(nil, ev); len(b) > 0 {
		return b
	}
	return nil
}

// registeredEvent is the REGISTERED event for e with ttlNanos left.
func registeredEvent(e *regEntry, ttlNanos int64) []byte {
	return eventFrame(&pb.WatchEvent{
		Kind: pb.WatchEvent_REGISTERED.Enum(),
		Registration: &pb.Message_Register{
			Ns:               proto.String(e.ns),
			SignedPeerRecord: e.rec,
			Ttl:              proto.Uint64(remainingSeconds(ttlNanos, 0)),
		},
		Ns: proto.String(e.ns),
	})
}

// unregisteredEvent is the UNREGISTERED event for e.
func unregisteredEvent(e *regEntry) []byte {
	return eventFrame(&pb.WatchEvent{
		Kind: pb.WatchEvent_UNREGISTERED.Enum(),
		Peer: []byte(e.peer),
		Ns:   proto.String(e.ns),
	})
}

// syncedEvent ends a watch snapshot.
func syncedEvent(ns string) []byte {
	return eventFrame(&pb.WatchEvent{Kind: pb.WatchEvent_SYNCED.Enum(), Ns: proto.String(ns)})
}

// errorEvent refuses a watch with status.
func errorEvent(ns string, status Status, text string) []byte {
	ev := &pb.WatchEvent{
		Kind:       pb.WatchEvent_ERROR.Enum(),
		Status:     status.Enum(),
		StatusText: proto.String(text),
	}
	if ns != "" {
		ev.Ns = proto.String(ns)
	}
	return eventFrame(ev)
}

// ---- client requests ----

// registerRequest is a REGISTER of spr under ns; ttl 0 leaves the TTL to
// the server.
func registerRequest(ns string, spr []byte, ttl time.Duration) *pb.Message {
	reg := &pb.Message_Register{Ns: proto.String(ns), SignedPeerRecord: spr}
	if ttl > 0 {
		reg.Ttl = proto.Uint64(ttlSeconds(ttl))
	}
	return &pb.Message{Type: pb.Message_REGISTER.Enum(), Register: reg}
}

// unregisterRequest is an UNREGISTER of ns.
func unregisterRequest(ns string) *pb.Message {
	return &pb.Message{
		Type:       pb.Message_UNREGISTER.Enum(),
		Unregister: &pb.Message_Unregister{Ns: proto.String(ns)},
	}
}

// releaseRequest is the UNREGISTER that also gives up the name's lease.
func releaseRequest(ns string) *pb.Message {
	return &pb.Message{
		Type:       pb.Message_UNREGISTER.Enum(),
		Unregister: &pb.Message_Unregister{Ns: proto.String(ns), ReleaseName: proto.Bool(true)},
	}
}

// discoverRequest is a DISCOVER of ns ("" for all) after cookie; limit 0
// lets the server choose.
func discoverRequest(ns string, limit int, cookie []byte) *pb.Message {
	d := &pb.Message_Discover{Cookie: cookie}
	if ns != "" {
		d.Ns = proto.String(ns)
	}
	if limit > 0 {
		d.Limit = proto.Uint64(uint64(limit))
	}
	return &pb.Message{Type: pb.Message_DISCOVER.Enum(), Discover: d}
}

// watchRequest subscribes to ns.
func watchRequest(ns string) *pb.WatchRequest {
	return &pb.WatchRequest{Ns: proto.String(ns)}
}

// ttlSeconds rounds d up to whole seconds, at least 1.
func ttlSeconds(d time.Duration) uint64 {
	s := uint64((d + time.Second - 1) / time.Second)
	return max(s, 1)
}
