package mailbox

import (
	"crypto/cipher"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"fmt"
	"io"
	"time"
	"unicode/utf8"

	"filippo.io/edwards25519"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/curve25519"
	"golang.org/x/crypto/hkdf"
	"google.golang.org/protobuf/encoding/protowire"
)

// Sealing (doc.go describes the construction).

// Kind is what a sealed letter carries.
type Kind uint64

const (
	// KindMessage is a chat message.
	KindMessage Kind = 1
	// KindReceipt acknowledges messages: the recipient stored them (ID
	// and Acks).
	KindReceipt Kind = 2
)

// Sealing constants.
const (
	boxVersion = 1
	// MessageIDLen is the length of a chat message ID.
	MessageIDLen = 16
	// MaxTextLen bounds a letter's text (the chat's MaxTextLen).
	MaxTextLen = 4096
	// MaxNickLen bounds a letter's claimed nick.
	MaxNickLen = 64
	// MaxAcks bounds the further message IDs one receipt acknowledges.
	MaxAcks = 255
	// padBlock: the plaintext is padded to a multiple of it, so a box's
	// size tells the daemon the text length only to within padBlock.
	padBlock = 256
	// boxOverhead is version + ephemeral key + AEAD tag.
	boxOverhead = 1 + curve25519.PointSize + chacha20poly1305.Overhead

	sigContext = "p2p-messaging/mailbox/seal/v1\x00"
	kdfInfo    = "p2p-messaging/mailbox/v1 chacha20poly1305 key"
)

// Letter is the content of a sealed box.
type Letter struct {
	Kind Kind
	// From is the sender: the peer whose key signed the letter (set by
	// Open; ignored by Seal, which signs with its key).
	From peer.ID
	// To is the recipient the sender addressed (and signed).
	To peer.ID
	// ID is the chat message ID (for a receipt: the first message
	// acknowledged).
	ID []byte
	// Acks are the further message IDs a receipt acknowledges (at most
	// MaxAcks, each MessageIDLen bytes); empty in a message.
	Acks [][]byte
	// Time is the sender's clock when it wrote the letter (milliseconds).
	Time time.Time
	// Nick is the nick the sender claims (unverified: a claim, as in a
	// chat Hello).
	Nick string
	// Text is the message (empty in a receipt).
	Text string
}

// ErrOpen is wrapped by every failure to open a box: it was not sealed to
// us, was tampered with, or its signature does not hold.
var ErrOpen = errors.New("sealed box does not open")

// Seal seals l to recipient to: only to's key opens it, and the letter
// inside is signed by priv (an Ed25519 key, the sender's libp2p
// identity). Seal draws the ephemeral key from crypto/rand.
func Seal(priv crypto.PrivKey, to peer.ID, l Letter) ([]byte, error) {
	return seal(rand.Reader, priv, to, l)
}

func seal(rnd io.Reader, priv crypto.PrivKey, to peer.ID, l Letter) ([]byte, error) {
	if priv.Type() != crypto.Ed25519 {
		return nil, fmt.Errorf("seal: sender key is %s, want Ed25519", priv.Type())
	}
	if err := l.check(); err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	recipMont, err := MontgomeryKey(to)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	pub, err := crypto.MarshalPublicKey(priv.GetPublic())
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	body := l.marshalBody(pub, []byte(to))
	sig, err := priv.Sign(append([]byte(sigContext), body...))
	if err != nil {
		return nil, fmt.Errorf("seal: sign: %w", err)
	}
	plain := protowire.AppendBytes(nil, body)
	plain = protowire.AppendBytes(plain, sig)
	return encrypt(rnd, to, recipMont, plain)
}

// encrypt pads plain and seals it to to (whose X25519 key is recipMont)
// under a fresh ephemeral key.
func encrypt(rnd io.Reader, to peer.ID, recipMont, plain []byte) ([]byte, error) {
	if pad := (padBlock - len(plain)%padBlock) % padBlock; pad > 0 {
		plain = append(plain, make([]byte, pad)...)
	}
	var ephPriv [curve25519.ScalarSize]byte
	if _, err := io.ReadFull(rnd, ephPriv[:]); err != nil {
		return nil, fmt.Errorf("seal: ephemeral key: %w", err)
	}
	ephPub, err := curve25519.X25519(ephPriv[:], curve25519.Basepoint)
	if err != nil {
		return nil, fmt.Errorf("seal: ephemeral key: %w", err)
	}
	shared, err := curve25519.X25519(ephPriv[:], recipMont)
	if err != nil {
		return nil, fmt.Errorf("seal: key agreement: %w", err)
	}
	aead, err := boxAEAD(shared, ephPub, recipMont)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	box := make([]byte, 0, boxOverhead+len(plain))
	box = append(box, boxVersion)
	box = append(box, ephPub...)
	// The key is used once (a fresh ephemeral key per box): a zero nonce
	// is safe.
	nonce := make([]byte, chacha20poly1305.NonceSize)
	return aead.Seal(box, nonce, plain, boxAAD(box[:1+curve25519.PointSize], to)), nil
}

// Open opens a box sealed to priv's peer, verifies the sender's signature
// and that the letter was addressed to us, and returns the letter with
// From set to the signer. Every failure wraps ErrOpen.
func Open(priv crypto.PrivKey, box []byte) (Letter, error) {
	fail := func(why string, err error) (Letter, error) {
		if err != nil {
			return Letter{}, fmt.Errorf("%w: %s: %v", ErrOpen, why, err)
		}
		return Letter{}, fmt.Errorf("%w: %s", ErrOpen, why)
	}
	if priv.Type() != crypto.Ed25519 {
		return fail("our key is not Ed25519", nil)
	}
	self, err := peer.IDFromPrivateKey(priv)
	if err != nil {
		return fail("our peer ID", err)
	}
	if len(box) < boxOverhead || len(box) > MaxBoxSize {
		return fail(fmt.Sprintf("%d bytes", len(box)), nil)
	}
	if box[0] != boxVersion {
		return fail(fmt.Sprintf("version %d", box[0]), nil)
	}
	raw, err := priv.Raw()
	if err != nil || len(raw) != ed25519.PrivateKeySize {
		return fail("our key", err)
	}
	// The X25519 private scalar of an Ed25519 key: the first half of
	// SHA-512(seed), as Ed25519 itself derives it (X25519 clamps it).
	h := sha512.Sum512(raw[:ed25519.SeedSize])
	scalar := h[:curve25519.ScalarSize]
	recipMont, err := curve25519.X25519(scalar, curve25519.Basepoint)
	if err != nil {
		return fail("our key", err)
	}
	ephPub := box[1 : 1+curve25519.PointSize]
	shared, err := curve25519.X25519(scalar, ephPub)
	if err != nil {
		return fail("key agreement", err)
	}
	aead, err := boxAEAD(shared, ephPub, recipMont)
	if err != nil {
		return fail("key", err)
	}
	nonce := make([]byte, chacha20poly1305.NonceSize)
	plain, err := aead.Open(nil, nonce, box[1+curve25519.PointSize:], boxAAD(box[:1+curve25519.PointSize], self))
	if err != nil {
		return fail("authentication", err)
	}
	body, n := protowire.ConsumeBytes(plain)
	if n < 0 {
		return fail("malformed letter", nil)
	}
	sig, m := protowire.ConsumeBytes(plain[n:])
	if m < 0 {
		return fail("malformed signature", nil)
	}
	l, pubBytes, to, err := unmarshalBody(body)
	if err != nil {
		return fail("malformed letter", err)
	}
	pub, err := crypto.UnmarshalPublicKey(pubBytes)
	if err != nil {
		return fail("sender key", err)
	}
	if pub.Type() != crypto.Ed25519 {
		return fail("sender key is not Ed25519", nil)
	}
	ok, err := pub.Verify(append([]byte(sigContext), body...), sig)
	if err != nil || !ok {
		return fail("sender signature", err)
	}
	if l.From, err = peer.IDFromPublicKey(pub); err != nil {
		return fail("sender key", err)
	}
	if l.To, err = peer.IDFromBytes(to); err != nil || l.To != self {
		return fail("addressed to another peer", err)
	}
	if err := l.check(); err != nil {
		return fail("letter", err)
	}
	return l, nil
}

// MontgomeryKey returns the X25519 public key of p's Ed25519 identity (the
// birational map from the Edwards curve to its Montgomery form). It fails
// for a malformed peer ID or one without an embedded Ed25519 key.
func MontgomeryKey(p peer.ID) ([]byte, error) {
	pub, err := p.ExtractPublicKey()
	if err != nil {
		return nil, fmt.Errorf("recipient %q: %w", p, err)
	}
	if pub.Type() != crypto.Ed25519 {
		return nil, fmt.Errorf("recipient %s: key is %s, want Ed25519", p, pub.Type())
	}
	raw, err := pub.Raw()
	if err != nil {
		return nil, fmt.Errorf("recipient %s: %w", p, err)
	}
	pt, err := new(edwards25519.Point).SetBytes(raw)
	if err != nil {
		return nil, fmt.Errorf("recipient %s: %w", p, err)
	}
	return pt.BytesMontgomery(), nil
}

func boxAEAD(shared, ephPub, recipMont []byte) (cipher.AEAD, error) {
	salt := make([]byte, 0, 2*curve25519.PointSize)
	salt = append(append(salt, ephPub...), recipMont...)
	key := make([]byte, chacha20poly1305.KeySize)
	if _, err := io.ReadFull(hkdf.New(sha256.New, shared, salt, []byte(kdfInfo)), key); err != nil {
		return nil, err
	}
	return chacha20poly1305.New(key)
}

// boxAAD binds the header and the recipient's peer ID to the ciphertext.
func boxAAD(header []byte, to peer.ID) []byte {
	return append(append([]byte{}, header...), []byte(to)...)
}

func (l *Letter) check() error {
	switch l.Kind {
	case KindMessage:
		if l.Text == "" || len(l.Text) > MaxTextLen || !utf8.ValidString(l.Text) {
			return fmt.Errorf("message text must be 1-%d bytes of UTF-8", MaxTextLen)
		}
		if len(l.Acks) > 0 {
			return errors.New("a message acknowledges nothing")
		}
	case KindReceipt:
		if l.Text != "" {
			return errors.New("a receipt carries no text")
		}
		if len(l.Acks) > MaxAcks {
			return fmt.Errorf("a receipt acknowledges at most %d further messages", MaxAcks)
		}
		for _, a := range l.Acks {
			if len(a) != MessageIDLen {
				return fmt.Errorf("acknowledged ID of %d bytes, want %d", len(a), MessageIDLen)
			}
		}
	default:
		return fmt.Errorf("unknown kind %d", l.Kind)
	}
	if len(l.ID) != MessageIDLen {
		return fmt.Errorf("message ID of %d bytes, want %d", len(l.ID), MessageIDLen)
	}
	if len(l.Nick) > MaxNickLen || !utf8.ValidString(l.Nick) {
		return errors.New("bad nick")
	}
	return nil
}

const (
	fLetKind = 1
	fLetPub  = 2
	fLetTo   = 3
	fLetID   = 4
	fLetTime = 5
	fLetNick = 6
	fLetText = 7
	fLetAck  = 8
)

func (l *Letter) marshalBody(pub, to []byte) []byte {
	b := protowire.AppendTag(nil, fLetKind, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(l.Kind))
	b = protowire.AppendTag(b, fLetPub, protowire.BytesType)
	b = protowire.AppendBytes(b, pub)
	b = protowire.AppendTag(b, fLetTo, protowire.BytesType)
	b = protowire.AppendBytes(b, to)
	b = protowire.AppendTag(b, fLetID, protowire.BytesType)
	b = protowire.AppendBytes(b, l.ID)
	b = protowire.AppendTag(b, fLetTime, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(l.Time.UnixMilli()))
	b = protowire.AppendTag(b, fLetNick, protowire.BytesType)
	b = protowire.AppendString(b, l.Nick)
	b = protowire.AppendTag(b, fLetText, protowire.BytesType)
	b = protowire.AppendString(b, l.Text)
	for _, a := range l.Acks {
		b = protowire.AppendTag(b, fLetAck, protowire.BytesType)
		b = protowire.AppendBytes(b, a)
	}
	return b
}

func unmarshalBody(b []byte) (l Letter, pub, to []byte, err error) {
	err = fields(b, func(num protowire.Number, v uint64, bs []byte) error {
		switch num {
		case fLetKind:
			l.Kind = Kind(v)
		case fLetPub:
			pub = bs
		case fLetTo:
			to = bs
		case fLetID:
			l.ID = append([]byte(nil), bs...)
		case fLetTime:
			l.Time = time.UnixMilli(int64(v)).UTC()
		case fLetNick:
			l.Nick = string(bs)
		case fLetText:
			l.Text = string(bs)
		case fLetAck:
			if len(l.Acks) > MaxAcks {
				return errors.New("too many acknowledged IDs")
			}
			l.Acks = append(l.Acks, append([]byte(nil), bs...))
		}
		return nil
	})
	if err == nil && (pub == nil || to == nil) {
		err = errors.New("missing sender key or recipient")
	}
	return l, pub, to, err
}
