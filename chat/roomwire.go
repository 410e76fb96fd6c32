package chat

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	pubsubpb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/hkdf"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// This file is the room wire format: the body of a room message (the data
// of a GossipSub message), invites and what is derived from their secret,
// sealing, and the check of a GossipSub signature on a message passed on
// by history sync.

const (
	// RoomTopicPrefix prefixes every room's GossipSub topic.
	RoomTopicPrefix = "/p2p-messaging/room/"
	// MaxRoomNameLen bounds a room name (issue 9: 1-64 bytes).
	MaxRoomNameLen = 64
	// InvitePrefix starts every invite string; ':' is no room-name
	// character, so /join tells an invite from a name.
	InvitePrefix = "p2pm-invite:"

	// maxRoomData bounds the data of one room message: the body (16-byte
	// id, time, MaxTextLen of text, a nick) plus the seal's nonce and tag.
	maxRoomData = 6 << 10
	// maxSignedRoomMessage bounds one signed GossipSub message in a
	// history answer (data, author, seqno, topic, signature, key).
	maxSignedRoomMessage = maxRoomData + 1024

	inviteSecretLen = 32
	sealNonceLen    = chacha20poly1305.NonceSizeX
)

// Room-body fields (protobuf wire format, proto3 semantics):
//
//	1 id      bytes  16 random bytes
//	2 sent_ms uint64 the author's clock, Unix milliseconds
//	3 text    string UTF-8, 1-MaxTextLen bytes
//	4 nick    string the author's claimed nick (optional, only a claim)
//
// Unknown fields are skipped; a field repeated is an error.
const (
	bodyID     protowire.Number = 1
	bodySentMs protowire.Number = 2
	bodyText   protowire.Number = 3
	bodyNick   protowire.Number = 4
)

// roomBody is the content of a room message.
type roomBody struct {
	ID     [16]byte
	SentMs int64
	Text   string
	Nick   string
}

func (b roomBody) encode() []byte {
	out := protowire.AppendTag(nil, bodyID, protowire.BytesType)
	out = protowire.AppendBytes(out, b.ID[:])
	out = protowire.AppendTag(out, bodySentMs, protowire.VarintType)
	out = protowire.AppendVarint(out, uint64(b.SentMs))
	out = protowire.AppendTag(out, bodyText, protowire.BytesType)
	out = protowire.AppendString(out, b.Text)
	if b.Nick != "" {
		out = protowire.AppendTag(out, bodyNick, protowire.BytesType)
		out = protowire.AppendString(out, b.Nick)
	}
	return out
}

var errBadBody = errors.New("malformed room message")

// decodeRoomBody parses and checks a body: a 16-byte id, a time, text of
// valid UTF-8 within MaxTextLen, and a nick that is empty or valid.
func decodeRoomBody(data []byte) (roomBody, error) {
	var b roomBody
	var seen [5]bool
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 {
			return roomBody{}, fmt.Errorf("%w: bad tag", errBadBody)
		}
		data = data[n:]
		if num >= 1 && num <= 4 {
			if seen[num] {
				return roomBody{}, fmt.Errorf("%w: field %d repeated", errBadBody, num)
			}
			seen[num] = true
		}
		switch {
		case num == bodyID && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(data)
			if n < 0 || len(v) != len(b.ID) {
				return roomBody{}, fmt.Errorf("%w: id must be %d bytes", errBadBody, len(b.ID))
			}
			copy(b.ID[:], v)
			data = data[n:]
		case num == bodySentMs && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(data)
			if n < 0 || v > 1<<62 {
				return roomBody{}, fmt.Errorf("%w: bad time", errBadBody)
			}
			b.SentMs = int64(v)
			data = data[n:]
		case (num == bodyText || num == bodyNick) && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(data)
			if n < 0 {
				return roomBody{}, fmt.Errorf("%w: bad string", errBadBody)
			}
			if !utf8.Valid(v) {
				return roomBody{}, fmt.Errorf("%w: text is not UTF-8", errBadBody)
			}
			if num == bodyText {
				b.Text = string(v)
			} else {
				b.Nick = string(v)
			}
			data = data[n:]
		default:
			if num >= 1 && num <= 4 {
				return roomBody{}, fmt.Errorf("%w: field %d has wire type %d", errBadBody, num, typ)
			}
			n := protowire.ConsumeFieldValue(num, typ, data)
			if n < 0 {
				return roomBody{}, fmt.Errorf("%w: bad field %d", errBadBody, num)
			}
			data = data[n:]
		}
	}
	if !seen[bodyID] || !seen[bodySentMs] {
		return roomBody{}, fmt.Errorf("%w: id and time required", errBadBody)
	}
	if err := validateText(b.Text); err != nil {
		return roomBody{}, fmt.Errorf("%w: %v", errBadBody, err)
	}
	if b.Nick != "" && !ValidNick(b.Nick) {
		return roomBody{}, fmt.Errorf("%w: bad nick", errBadBody)
	}
	return b, nil
}

// ValidRoomName reports whether s is a room name: 1-64 bytes of letters,
// digits, '-', '_' and '.'.
func ValidRoomName(s string) bool { return validName(s, MaxRoomNameLen) }

// CheckRoomName explains why s is no room name (nil if it is one).
func CheckRoomName(s string) error {
	switch {
	case s == "":
		return errors.New("room name is empty")
	case len(s) > MaxRoomNameLen:
		return fmt.Errorf("room name is %d bytes, at most %d", len(s), MaxRoomNameLen)
	case !utf8.ValidString(s):
		return errors.New("room name is not UTF-8")
	case !ValidRoomName(s):
		return fmt.Errorf("room name %q may hold only letters, digits, '-', '_' and '.'", s)
	}
	return nil
}

// roomSpec is what a room is on the network: its topic, its rendezvous
// namespace and, for an invite-only room, its secret and sealing key.
type roomSpec struct {
	Name   string
	Secret []byte // nil: an open room
	Topic  string
	NS     string
	key    []byte
	proof  []byte // MAC key of the membership proof (roomproof.go)
}

func (r roomSpec) private() bool { return r.Secret != nil }

// openRoom is the spec of the open room name: its name is in the topic and
// the namespace.
func openRoom(name string) roomSpec {
	return roomSpec{Name: name, Topic: RoomTopicPrefix + name, NS: roomNS(name)}
}

// privateRoom derives an invite-only room's topic, namespace and key from
// its secret (HKDF-SHA256, one label each), so that neither the daemons
// nor the DHT see the name, and only holders of the invite can read or
// post.
func privateRoom(name string, secret []byte) roomSpec {
	derive := func(label string, n int) []byte {
		out := make([]byte, n)
		// HKDF over SHA-256 cannot fail for these lengths.
		_, _ = io.ReadFull(hkdf.New(sha256.New, secret, nil, []byte("p2p-messaging room "+label)), out)
		return out
	}
	id := hex.EncodeToString(derive("id", 16))
	return roomSpec{
		Name:   name,
		Secret: append([]byte(nil), secret...),
		Topic:  RoomTopicPrefix + "sealed/" + id,
		NS:     RoomNamespacePrefix + "sealed/" + id,
		key:    derive("key", chacha20poly1305.KeySize),
		proof:  derive("proof", 32),
	}
}

func newRoomSecret() ([]byte, error) {
	s := make([]byte, inviteSecretLen)
	if _, err := rand.Read(s); err != nil {
		return nil, fmt.Errorf("room secret: %w", err)
	}
	return s, nil
}

// Invite is the copy-pasteable invite of an invite-only room:
// p2pm-invite:<name>:<secret, base64url>.
func (r roomSpec) Invite() string {
	return InvitePrefix + r.Name + ":" + base64.RawURLEncoding.EncodeToString(r.Secret)
}

// ParseInvite splits an invite into the room name and its secret.
func ParseInvite(s string) (name string, secret []byte, err error) {
	rest, ok := strings.CutPrefix(s, InvitePrefix)
	if !ok {
		return "", nil, fmt.Errorf("invite must start with %q", InvitePrefix)
	}
	name, enc, ok := strings.Cut(rest, ":")
	if !ok {
		return "", nil, errors.New("invite has no secret")
	}
	if err := CheckRoomName(name); err != nil {
		return "", nil, fmt.Errorf("invite: %w", err)
	}
	secret, err = base64.RawURLEncoding.DecodeString(enc)
	if err != nil || len(secret) != inviteSecretLen {
		return "", nil, fmt.Errorf("invite: the secret must be %d bytes of base64url", inviteSecretLen)
	}
	return name, secret, nil
}

// seal wraps a body for the room: plain for an open room; for an
// invite-only room nonce || XChaCha20-Poly1305(body), the topic as
// associated data.
func (r roomSpec) seal(body []byte) ([]byte, error) {
	if !r.private() {
		return body, nil
	}
	aead, err := chacha20poly1305.NewX(r.key)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, sealNonceLen, sealNonceLen+len(body)+aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return aead.Seal(nonce, nonce, body, []byte(r.Topic)), nil
}

var errUnsealed = errors.New("message not sealed with the room's key")

// open reverses seal.
func (r roomSpec) open(data []byte) ([]byte, error) {
	if !r.private() {
		return data, nil
	}
	aead, err := chacha20poly1305.NewX(r.key)
	if err != nil {
		return nil, err
	}
	if len(data) < sealNonceLen+aead.Overhead() {
		return nil, errUnsealed
	}
	body, err := aead.Open(nil, data[:sealNonceLen], data[sealNonceLen:], []byte(r.Topic))
	if err != nil {
		return nil, errUnsealed
	}
	return body, nil
}

// signPrefix is what GossipSub puts before the bytes it signs.
const signPrefix = "libp2p-pubsub:"

// verifyPubsubSignature checks the author's signature of a GossipSub
// message passed on by another member (history sync): the signature over
// the message without its signature and key, made by the key of the peer
// ID in From (the key inlined, or attached and matching From). It returns
// the author.
func verifyPubsubSignature(m *pubsubpb.Message) (peer.ID, error) {
	author, err := peer.IDFromBytes(m.GetFrom())
	if err != nil {
		return "", fmt.Errorf("bad author: %w", err)
	}
	if len(m.GetSignature()) == 0 {
		return "", errors.New("unsigned")
	}
	var pub crypto.PubKey
	if m.Key == nil {
		pub, err = author.ExtractPublicKey()
		if err != nil || pub == nil {
			return "", errors.New("no key for the author")
		}
	} else {
		pub, err = crypto.UnmarshalPublicKey(m.Key)
		if err != nil {
			return "", fmt.Errorf("bad key: %w", err)
		}
		if !author.MatchesPublicKey(pub) {
			return "", errors.New("key does not match the author")
		}
	}
	bare := &pubsubpb.Message{From: m.From, Data: m.Data, Seqno: m.Seqno, Topic: m.Topic}
	b, err := proto.Marshal(bare)
	if err != nil {
		return "", err
	}
	ok, err := pub.Verify(append([]byte(signPrefix), b...), m.Signature)
	if err != nil || !ok {
		return "", errors.New("bad signature")
	}
	return author, nil
}
