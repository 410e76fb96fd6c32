package chat

import (
	"bytes"
	"testing"
	"time"

	pubsubpb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

func TestRoomBodyRoundTrip(t *testing.T) {
	b := roomBody{SentMs: time.Now().UnixMilli(), Text: "héllo ✓", Nick: "alice"}
	copy(b.ID[:], bytes.Repeat([]byte{7}, 16))
	got, err := decodeRoomBody(b.encode())
	require.NoError(t, err)
	require.Equal(t, b, got)
	// A repeated field is refused, an unknown one skipped.
	_, err = decodeRoomBody(append(b.encode(), b.encode()...))
	require.ErrorContains(t, err, "repeated")
	_, err = decodeRoomBody(append(b.encode(), 0x48, 0x01)) // field 9 varint
	require.NoError(t, err)
}

func TestInviteAndSeal(t *testing.T) {
	secret, err := newRoomSecret()
	require.NoError(t, err)
	spec := privateRoom("plans", secret)
	name, got, err := ParseInvite(spec.Invite())
	require.NoError(t, err)
	require.Equal(t, "plans", name)
	require.Equal(t, secret, got)
	require.Equal(t, spec.Topic, privateRoom("other-name", secret).Topic, "the topic derives from the secret alone")
	sealed, err := spec.seal([]byte("body"))
	require.NoError(t, err)
	plain, err := spec.open(sealed)
	require.NoError(t, err)
	require.Equal(t, []byte("body"), plain)
	sealed[len(sealed)-1] ^= 1
	_, err = spec.open(sealed)
	require.ErrorIs(t, err, errUnsealed)
	for _, bad := range []string{"plans", InvitePrefix + "plans", InvitePrefix + "bad name:AAAA", InvitePrefix + "plans:!!!"} {
		_, _, err := ParseInvite(bad)
		require.Error(t, err, bad)
	}
}

// verifyPubsubSignature accepts what GossipSub signs and nothing altered.
func TestVerifyPubsubSignature(t *testing.T) {
	key, _, err := crypto.GenerateEd25519Key(nil)
	require.NoError(t, err)
	id, err := peer.IDFromPrivateKey(key)
	require.NoError(t, err)
	topic := "t"
	m := &pubsubpb.Message{From: []byte(id), Data: []byte("data"), Seqno: []byte{1, 2}, Topic: &topic}
	b, err := proto.Marshal(m)
	require.NoError(t, err)
	m.Signature, err = key.Sign(append([]byte(signPrefix), b...))
	require.NoError(t, err)
	got, err := verifyPubsubSignature(m)
	require.NoError(t, err)
	require.Equal(t, id, got)
	m.Data = []byte("datb")
	_, err = verifyPubsubSignature(m)
	require.Error(t, err)
	m.Data, m.Signature = []byte("data"), nil
	_, err = verifyPubsubSignature(m)
	require.Error(t, err)
}

func FuzzDecodeRoomBody(f *testing.F) {
	b := roomBody{SentMs: 1700000000000, Text: "hi", Nick: "bob"}
	f.Add(b.encode())
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0x10})
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := decodeRoomBody(data)
		if err != nil {
			return
		}
		again, err := decodeRoomBody(got.encode())
		if err != nil || again != got {
			t.Fatalf("round trip: %v %+v %+v", err, got, again)
		}
	})
}

func FuzzDecodeHistFrames(f *testing.F) {
	f.Add(encodeHistMessage([]byte("x")))
	f.Add(encodeHistEnd(histStatusBusy, "busy"))
	f.Add(encodeHistRequest(histRequest{topic: "t", sinceMs: 5, limit: 3}))
	f.Fuzz(func(t *testing.T, data []byte) {
		if fr, err := decodeHistFrame(data); err == nil {
			var again histFrame
			if fr.end {
				again, err = decodeHistFrame(encodeHistEnd(fr.status, fr.text))
			} else {
				again, err = decodeHistFrame(encodeHistMessage(fr.msg))
			}
			if err != nil || again.end != fr.end || again.status != fr.status || !bytes.Equal(again.msg, fr.msg) {
				t.Fatalf("frame round trip: %v", err)
			}
		}
		if req, err := decodeHistRequest(data); err == nil {
			again, err := decodeHistRequest(encodeHistRequest(req))
			if err != nil || again != req {
				t.Fatalf("request round trip: %v %+v %+v", err, req, again)
			}
		}
	})
}

// FuzzCheckHistMessage feeds arbitrary bytes to the check a history
// answer's messages go through: nothing that is not a validly signed
// message of the room passes, and nothing panics.
func FuzzCheckHistMessage(f *testing.F) {
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		f.Fatal(err)
	}
	id, _ := peer.IDFromPrivateKey(key)
	spec := openRoom("dev")
	body := roomBody{SentMs: time.Now().UnixMilli(), Text: "hi"}
	m := &pubsubpb.Message{From: []byte(id), Data: body.encode(), Seqno: []byte{1}, Topic: &spec.Topic}
	b, _ := proto.Marshal(m)
	m.Signature, _ = key.Sign(append([]byte(signPrefix), b...))
	good, _ := proto.Marshal(m)
	f.Add(good)
	f.Add([]byte{0xff})
	rs := &rooms{n: &Node{cfg: Config{RoomReplayWindow: DefaultRoomReplayWindow}}, now: time.Now}
	r := &room{spec: spec}
	f.Fuzz(func(t *testing.T, raw []byte) {
		hm, err := rs.checkHistMessage(r, raw)
		if err != nil {
			return
		}
		var pm pubsubpb.Message
		if proto.Unmarshal(raw, &pm) != nil || pm.GetTopic() != spec.Topic {
			t.Fatal("accepted a message that is not of the room")
		}
		if _, err := verifyPubsubSignature(&pm); err != nil || hm.author == "" {
			t.Fatal("accepted an unsigned message")
		}
	})
}

func FuzzDecodeProof(f *testing.F) {
	req := protowire.AppendTag(nil, proofFieldTopic, protowire.BytesType)
	req = protowire.AppendString(req, "/p2p-messaging/room/sealed/ab")
	req = protowire.AppendTag(req, proofFieldNonce, protowire.BytesType)
	f.Add(protowire.AppendBytes(req, make([]byte, proofNonceLen)))
	f.Add([]byte{0x08, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		topic, nonce, mac, err := decodeProof(b)
		if err != nil {
			return
		}
		if len(topic)+len(nonce)+len(mac) > len(b) {
			t.Fatal("decoded more than was given")
		}
	})
}
