package mailbox

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protowire"
)

func newKey(t testing.TB) (crypto.PrivKey, peer.ID) {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	require.NoError(t, err)
	id, err := peer.IDFromPrivateKey(k)
	require.NoError(t, err)
	return k, id
}

func testLetter() Letter {
	return Letter{Kind: KindMessage, ID: bytes.Repeat([]byte{7}, MessageIDLen),
		Time: time.UnixMilli(1_800_000_000_000).UTC(), Nick: "alice", Text: "hello bob, ünïcode"}
}

func TestSealOpenRoundTrip(t *testing.T) {
	aliceKey, alice := newKey(t)
	bobKey, bob := newKey(t)
	receipt := Letter{Kind: KindReceipt, ID: bytes.Repeat([]byte{1}, MessageIDLen), Time: time.UnixMilli(5).UTC(),
		Acks: [][]byte{bytes.Repeat([]byte{2}, MessageIDLen), bytes.Repeat([]byte{3}, MessageIDLen)}}
	for _, l := range []Letter{testLetter(), receipt} {
		box, err := Seal(aliceKey, bob, l)
		require.NoError(t, err)
		require.Zero(t, (len(box)-boxOverhead)%padBlock, "padded to the block")
		require.NotContains(t, string(box), "hello", "no plaintext in the box")
		got, err := Open(bobKey, box)
		require.NoError(t, err)
		require.Equal(t, alice, got.From)
		require.Equal(t, bob, got.To)
		require.Equal(t, l.Kind, got.Kind)
		require.Equal(t, l.ID, got.ID)
		require.Equal(t, l.Text, got.Text)
		require.Equal(t, l.Nick, got.Nick)
		require.Equal(t, l.Acks, got.Acks)
		require.True(t, l.Time.Equal(got.Time))
	}
	// Two seals of one letter differ (fresh ephemeral key).
	a, err := Seal(aliceKey, bob, testLetter())
	require.NoError(t, err)
	b, err := Seal(aliceKey, bob, testLetter())
	require.NoError(t, err)
	require.NotEqual(t, a, b)
}

func TestOpenRejectsTamperedBox(t *testing.T) {
	aliceKey, _ := newKey(t)
	bobKey, bob := newKey(t)
	box, err := Seal(aliceKey, bob, testLetter())
	require.NoError(t, err)
	for i := range box {
		bad := bytes.Clone(box)
		bad[i] ^= 0x01
		_, err := Open(bobKey, bad)
		require.ErrorIs(t, err, ErrOpen, "byte %d flipped", i)
	}
	_, err = Open(bobKey, box[:len(box)-1])
	require.ErrorIs(t, err, ErrOpen)
	_, err = Open(bobKey, append(bytes.Clone(box), 0))
	require.ErrorIs(t, err, ErrOpen)
}

func TestOpenOnlyByRecipient(t *testing.T) {
	aliceKey, _ := newKey(t)
	_, bob := newKey(t)
	carolKey, _ := newKey(t)
	box, err := Seal(aliceKey, bob, testLetter())
	require.NoError(t, err)
	_, err = Open(carolKey, box)
	require.ErrorIs(t, err, ErrOpen)
}

// A box that opens but whose signature is not the embedded key's: only the
// sender can have written a letter.
func TestOpenRejectsForgedSender(t *testing.T) {
	aliceKey, _ := newKey(t)
	malloryKey, _ := newKey(t)
	bobKey, bob := newKey(t)
	mont, err := MontgomeryKey(bob)
	require.NoError(t, err)
	l := testLetter()
	alicePub, err := crypto.MarshalPublicKey(aliceKey.GetPublic())
	require.NoError(t, err)
	body := l.marshalBody(alicePub, []byte(bob))
	sig, err := malloryKey.Sign(append([]byte(sigContext), body...))
	require.NoError(t, err)
	plain := protowire.AppendBytes(protowire.AppendBytes(nil, body), sig)
	box, err := encrypt(rand.Reader, bob, mont, plain)
	require.NoError(t, err)
	_, err = Open(bobKey, box)
	require.ErrorIs(t, err, ErrOpen)
	require.Contains(t, err.Error(), "signature")

	// A letter signed for Carol and re-sealed to Bob is refused too.
	_, carol := newKey(t)
	body = l.marshalBody(alicePub, []byte(carol))
	sig, err = aliceKey.Sign(append([]byte(sigContext), body...))
	require.NoError(t, err)
	box, err = encrypt(rand.Reader, bob, mont, protowire.AppendBytes(protowire.AppendBytes(nil, body), sig))
	require.NoError(t, err)
	_, err = Open(bobKey, box)
	require.ErrorIs(t, err, ErrOpen)
	require.Contains(t, err.Error(), "another peer")
}

func TestSealRejectsBadRecipientsAndLetters(t *testing.T) {
	aliceKey, _ := newKey(t)
	_, bob := newKey(t)
	rsa, _, err := crypto.GenerateRSAKeyPair(2048, rand.Reader)
	require.NoError(t, err)
	rsaID, err := peer.IDFromPrivateKey(rsa)
	require.NoError(t, err)
	for name, to := range map[string]peer.ID{"garbage": peer.ID("not a peer id"), "empty": "", "rsa": rsaID} {
		_, err := Seal(aliceKey, to, testLetter())
		require.Error(t, err, name)
	}
	_, err = Seal(rsa, bob, testLetter())
	require.Error(t, err, "RSA sender")
	for name, l := range map[string]Letter{
		"empty text":   {Kind: KindMessage, ID: make([]byte, MessageIDLen)},
		"long text":    {Kind: KindMessage, ID: make([]byte, MessageIDLen), Text: string(bytes.Repeat([]byte{'a'}, MaxTextLen+1))},
		"bad utf8":     {Kind: KindMessage, ID: make([]byte, MessageIDLen), Text: "\xff"},
		"short id":     {Kind: KindMessage, ID: make([]byte, 3), Text: "x"},
		"receipt text": {Kind: KindReceipt, ID: make([]byte, MessageIDLen), Text: "x"},
		"kind":         {Kind: 9, ID: make([]byte, MessageIDLen), Text: "x"},
		"message acks": {Kind: KindMessage, ID: make([]byte, MessageIDLen), Text: "x", Acks: [][]byte{make([]byte, MessageIDLen)}},
		"short ack":    {Kind: KindReceipt, ID: make([]byte, MessageIDLen), Acks: [][]byte{make([]byte, 3)}},
		"many acks":    {Kind: KindReceipt, ID: make([]byte, MessageIDLen), Acks: make([][]byte, MaxAcks+1)},
	} {
		_, err := Seal(aliceKey, bob, l)
		require.Error(t, err, name)
	}
}

func FuzzOpen(f *testing.F) {
	aliceKey, _ := newKey(f)
	bobKey, bob := newKey(f)
	box, err := Seal(aliceKey, bob, testLetter())
	require.NoError(f, err)
	f.Add(box)
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := Open(bobKey, b)
		if err != nil {
			if !errors.Is(err, ErrOpen) {
				t.Fatalf("error does not wrap ErrOpen: %v", err)
			}
			return
		}
		if l.To != bob {
			t.Fatalf("opened a letter to %s", l.To)
		}
	})
}
