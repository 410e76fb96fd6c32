package chat

import (
	"bufio"
	"context"
	"strings"
	"testing"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pubsubpb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/p2p-messaging/p2p-messaging/rendezvous"
)

func bodyData(t testing.TB, text string, sent time.Time) []byte {
	t.Helper()
	id, err := newID()
	require.NoError(t, err)
	raw, err := parseID(id)
	require.NoError(t, err)
	b := roomBody{SentMs: sent.UnixMilli(), Text: text}
	copy(b.ID[:], raw)
	return b.encode()
}

// The topic validator, case by case: what is rejected (the forwarder is
// at fault), what is ignored (not shown, not relayed), what passes.
func TestRoomValidator(t *testing.T) {
	alice := newNode(t, nil, "alice", "", inRoom("dev"), func(c *testConfig) { c.RoomRate, c.RoomBurst = 1, 3 })
	_, err := alice.CreateRoom(context.Background(), "plans")
	require.NoError(t, err)
	open, err := alice.rooms.get("dev")
	require.NoError(t, err)
	sealed, err := alice.rooms.get("plans")
	require.NoError(t, err)
	author := rawPeer(t).ID()
	blocked := rawPeer(t).ID()
	require.NoError(t, alice.names.allow(blocked))
	_, err = alice.Block(blocked.String())
	require.NoError(t, err)
	now := time.Now()
	msg := func(from peer.ID, data []byte) *pubsub.Message {
		return &pubsub.Message{Message: &pubsubpb.Message{From: []byte(from), Data: data}}
	}
	sealedData := func(text string) []byte {
		d, err := sealed.spec.seal(bodyData(t, text, now))
		require.NoError(t, err)
		return d
	}
	badUTF8 := bodyData(t, "xx", now)
	badUTF8[len(badUTF8)-1] = 0xff
	otherKey := privateRoom("plans", make([]byte, inviteSecretLen))
	wrongSeal, err := otherKey.seal(bodyData(t, "hi", now))
	require.NoError(t, err)
	for _, tc := range []struct {
		name string
		r    *room
		m    *pubsub.Message
		want pubsub.ValidationResult
	}{
		{"ok", open, msg(author, bodyData(t, "hello", now)), pubsub.ValidationAccept},
		{"oversized", open, msg(author, make([]byte, maxRoomData+1)), pubsub.ValidationReject},
		{"text over MaxTextLen", open, msg(author, bodyData(t, strings.Repeat("x", MaxTextLen+1), now)), pubsub.ValidationReject},
		{"empty text", open, msg(author, bodyData(t, "", now)), pubsub.ValidationReject},
		{"non-UTF-8", open, msg(author, badUTF8), pubsub.ValidationReject},
		{"garbage", open, msg(author, []byte{0xff, 0xff, 0xff}), pubsub.ValidationReject},
		{"replay of an old message", open, msg(author, bodyData(t, "old", now.Add(-time.Hour))), pubsub.ValidationIgnore},
		{"from the future", open, msg(author, bodyData(t, "later", now.Add(time.Hour))), pubsub.ValidationIgnore},
		{"blocked author", open, msg(blocked, bodyData(t, "hi", now)), pubsub.ValidationIgnore},
		{"sealed ok", sealed, msg(author, sealedData("secret")), pubsub.ValidationAccept},
		{"unsealed in a sealed room", sealed, msg(author, bodyData(t, "plain", now)), pubsub.ValidationReject},
		{"sealed with another key", sealed, msg(author, wrongSeal), pubsub.ValidationReject},
	} {
		require.Equal(t, tc.want, alice.rooms.validate(tc.r, tc.m), tc.name)
	}
	// The token bucket: a burst of 3 for one author (one was taken by "ok"),
	// then ignored; another author is served meanwhile.
	flooder := rawPeer(t).ID()
	var accepted int
	for range 10 {
		if alice.rooms.validate(open, msg(flooder, bodyData(t, "flood", now))) == pubsub.ValidationAccept {
			accepted++
		}
	}
	require.Equal(t, 3, accepted)
	require.Equal(t, pubsub.ValidationAccept, alice.rooms.validate(open, msg(rawPeer(t).ID(), bodyData(t, "calm", now))))
}

// injectRPC writes one GossipSub RPC from a raw host straight onto a
// /meshsub stream to n: messages no honest GossipSub would send.
func injectRPC(t *testing.T, n *tnode, msgs ...*pubsubpb.Message) {
	t.Helper()
	raw := rawPeer(t)
	require.NoError(t, raw.Connect(context.Background(), peer.AddrInfo{ID: n.ID(), Addrs: n.h.Addrs()}))
	s, err := raw.NewStream(context.Background(), n.ID(), pubsub.GossipSubID_v11)
	require.NoError(t, err)
	defer s.Close()
	topic := RoomTopicPrefix + "dev"
	sub := true
	rpc := &pubsubpb.RPC{Subscriptions: []*pubsubpb.RPC_SubOpts{{Subscribe: &sub, Topicid: &topic}}, Publish: msgs}
	b, err := proto.Marshal(rpc)
	require.NoError(t, err)
	require.NoError(t, writeFrame(s, b))
}

// Unsigned and wrongly signed room messages are dropped by GossipSub's
// strict signing; the members keep talking.
func TestRoomUnsignedAndForged(t *testing.T) {
	alice := newNode(t, nil, "alice", "", inRoom("dev"))
	bob := newNode(t, nil, "bob", "", inRoom("dev"))
	require.NoError(t, bob.h.Connect(context.Background(), peer.AddrInfo{ID: alice.ID(), Addrs: alice.h.Addrs()}))
	waitMesh(t, "dev", alice, bob)

	topic := RoomTopicPrefix + "dev"
	unsigned := &pubsubpb.Message{From: []byte(bob.ID()), Data: bodyData(t, "unsigned", time.Now()), Seqno: []byte{1}, Topic: &topic}
	forged := &pubsubpb.Message{From: []byte(bob.ID()), Data: bodyData(t, "forged as bob", time.Now()), Seqno: []byte{2}, Topic: &topic}
	key, _, err := crypto.GenerateEd25519Key(nil)
	require.NoError(t, err)
	sig, err := key.Sign([]byte("libp2p-pubsub:whatever"))
	require.NoError(t, err)
	forged.Signature = sig
	injectRPC(t, alice, unsigned, forged)

	sendRoom(t, bob, "dev", "honest")
	alice.rec.wait(t, 10*time.Second, isRoomMessage("dev", "honest"))
	require.Zero(t, alice.rec.count(isRoomMessage("dev", "unsigned")))
	require.Zero(t, alice.rec.count(isRoomMessage("dev", "forged as bob")))
	hist, err := alice.RoomHistory("dev", 0)
	require.NoError(t, err)
	require.Len(t, hist, 1, "nothing but the honest message stored")
}

// A flooding member is throttled by the others' token buckets while the
// others are served normally.
func TestRoomFloodThrottled(t *testing.T) {
	slow := func(c *testConfig) { c.RoomRate, c.RoomBurst = 2, 5 }
	alice := newNode(t, nil, "alice", "", inRoom("dev"), slow)
	bob := newNode(t, nil, "bob", "", inRoom("dev"), slow)
	mallory := newNode(t, nil, "mallory", "", inRoom("dev"), func(c *testConfig) { c.RoomRate, c.RoomBurst = 1e6, 1e6 })
	for _, tn := range []*tnode{bob, mallory} {
		require.NoError(t, tn.h.Connect(context.Background(), peer.AddrInfo{ID: alice.ID(), Addrs: alice.h.Addrs()}))
	}
	waitMesh(t, "dev", alice, bob)
	waitMesh(t, "dev", alice, mallory)
	start := time.Now()
	for range 100 {
		sendRoom(t, mallory, "dev", "flood")
	}
	span := time.Since(start)
	for i := range 3 {
		sendRoom(t, bob, "dev", "calm "+string(rune('a'+i)))
	}
	for i := range 3 {
		alice.rec.wait(t, 10*time.Second, isRoomMessage("dev", "calm "+string(rune('a'+i))))
	}
	// What mallory also hands over in history is held to the same rate
	// (a bucket of its own, run on the send times): at most twice the
	// bucket gets through, live and from history together.
	r, err := alice.rooms.get("dev")
	require.NoError(t, err)
	alice.rooms.hist.sync(r, mallory.ID(), 0)
	require.NoError(t, alice.db.flush())
	got := alice.rec.count(isRoomMessage("dev", "flood"))
	limit := 2 * (5 + int(2*span.Seconds()) + 1)
	t.Logf("alice showed %d of mallory's 100 sent in %s (the bucket allows %d)", got, span, limit)
	require.LessOrEqual(t, got, limit)
	require.Positive(t, got)
	hist, err := alice.RoomHistory("dev", 0)
	require.NoError(t, err)
	require.LessOrEqual(t, len(hist), limit+3)
}

// A blocked peer's room messages are dropped and not relayed: in the line
// bob - alice - carol, carol stops getting bob's messages once alice
// blocks bob; the block persists across a restart; unblock lifts it.
func TestRoomBlockNotRelayed(t *testing.T) {
	aliceDir := t.TempDir()
	alice := newNode(t, nil, "alice", aliceDir, inRoom("dev"))
	bob := newNode(t, nil, "bob", "", inRoom("dev"))
	carol := newNode(t, nil, "carol", "", inRoom("dev"))
	for _, tn := range []*tnode{bob, carol} {
		require.NoError(t, tn.h.Connect(context.Background(), peer.AddrInfo{ID: alice.ID(), Addrs: alice.h.Addrs()}))
	}
	waitMesh(t, "dev", alice, bob)
	waitMesh(t, "dev", alice, carol)
	sendRoom(t, bob, "dev", "before block")
	carol.rec.wait(t, 10*time.Second, isRoomMessage("dev", "before block"))

	_, err := alice.Block(bob.ID().String())
	require.NoError(t, err)
	sendRoom(t, bob, "dev", "after block")
	sendRoom(t, alice, "dev", "marker")
	carol.rec.wait(t, 10*time.Second, isRoomMessage("dev", "marker"))
	require.Zero(t, alice.rec.count(isRoomMessage("dev", "after block")))
	require.Zero(t, carol.rec.count(isRoomMessage("dev", "after block")), "relayed by alice after the block")

	// Persisted.
	require.NoError(t, alice.Close())
	alice = newNode(t, nil, "alice", aliceDir)
	require.True(t, alice.names.isBlocked(bob.ID()))
	_, err = alice.Unblock(bob.ID().String())
	require.NoError(t, err)
	alice.rec.wait(t, 5*time.Second, func(e Event) bool { u, ok := e.(EventUnblocked); return ok && u.Peer == bob.ID() })
	require.False(t, alice.names.isBlocked(bob.ID()))
	_, err = alice.Unblock(bob.ID().String())
	require.ErrorContains(t, err, "not blocked")
}

// An invite-only room: its name is in no registration on the daemon, a
// peer in the open room of that name sees nothing, and a peer on the
// derived topic without the key can neither read nor post.
func TestInviteOnlyRoom(t *testing.T) {
	r := newRendezvous(t)
	alice := newNode(t, r, "alice", "", inRoom("lobby"))
	bob := newNode(t, r, "bob", "", inRoom("lobby"))
	eve := newNode(t, r, "eve", "", inRoom("lobby"))
	invite, err := alice.CreateRoom(context.Background(), "secret-plans")
	require.NoError(t, err)
	name, secret, err := ParseInvite(invite)
	require.NoError(t, err)
	require.Equal(t, "secret-plans", name)
	spec := privateRoom(name, secret)
	require.NotContains(t, spec.Topic, name)
	require.NotContains(t, spec.NS, name)
	require.NoError(t, bob.Join(context.Background(), invite))
	inv, err := bob.Invite("secret-plans")
	require.NoError(t, err)
	require.Equal(t, invite, inv)

	// Eve: the open room of that name, and the sealed topic without the key.
	require.NoError(t, eve.Join(context.Background(), "secret-plans"))
	_, err = eve.rooms.open(roomSpec{Name: "stolen", Topic: spec.Topic, NS: spec.NS})
	require.NoError(t, err)
	waitMesh(t, "secret-plans", alice, bob)

	sendRoom(t, alice, "secret-plans", "for members only")
	bob.rec.wait(t, 10*time.Second, isRoomMessage("secret-plans", "for members only"))
	sendRoom(t, eve, "stolen", "eve posts")
	sendRoom(t, bob, "secret-plans", "second")
	alice.rec.wait(t, 10*time.Second, isRoomMessage("secret-plans", "second"))
	require.Zero(t, alice.rec.count(isRoomMessage("secret-plans", "eve posts")))
	require.Zero(t, bob.rec.count(isRoomMessage("secret-plans", "eve posts")))
	for _, e := range eve.rec.all() {
		if m, ok := e.(EventMessage); ok {
			require.NotEqual(t, "for members only", m.Message.Text)
			require.NotEqual(t, "second", m.Message.Text)
		}
	}

	// Eve is on the topic but never proved the key: not a member, not in
	// the mesh (the peer filter), no history for her.
	ar, err := alice.rooms.get("secret-plans")
	require.NoError(t, err)
	require.Eventually(t, func() bool { return ar.isProven(bob.ID()) }, 10*time.Second, 20*time.Millisecond)
	require.False(t, ar.isProven(eve.ID()))
	require.False(t, alice.rooms.peerFilter(eve.ID(), spec.Topic))
	require.True(t, alice.rooms.peerFilter(bob.ID(), spec.Topic))
	ms, err := alice.Members("secret-plans")
	require.NoError(t, err)
	for _, m := range ms {
		require.NotEqual(t, eve.ID(), m.Peer, "eve listed as a member")
	}
	require.Zero(t, alice.rec.count(isRoomPresence("secret-plans", eve.ID(), true)))
	stolen, err := eve.rooms.get("stolen")
	require.NoError(t, err)
	hctx, hcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer hcancel()
	_, err = eve.rooms.hist.fetch(hctx, stolen, alice.ID(), histRequest{topic: spec.Topic, limit: 10})
	require.ErrorContains(t, err, "status 1")
	// Whatever alice answers eve proves nothing to eve without the key.
	require.Error(t, eve.rooms.prove(hctx, stolen, alice.ID()))

	// The daemon never saw the name.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	regs, err := alice.rdv.Discover(ctx, "", 1000)
	require.NoError(t, err)
	var nss []string
	for _, reg := range regs {
		nss = append(nss, reg.Namespace)
		require.NotContains(t, reg.Namespace, "secret-plans@", reg.Namespace)
	}
	require.Contains(t, nss, spec.NS)
	for _, ns := range nss {
		if ns == roomNS("secret-plans") {
			// Only eve's open room of that name, never alice's or bob's.
			continue
		}
		require.NotContains(t, ns, "secret-plans")
	}
	open, err := alice.rdv.Discover(ctx, roomNS("secret-plans"), 100)
	require.NoError(t, err)
	for _, reg := range open {
		require.Equal(t, eve.ID(), reg.Peer.ID, "only eve registered the open room of that name")
	}
}

// history answers from a hostile member: each bad answer is refused with
// a warning, what was valid before it is kept, the node keeps serving.
func TestRoomHistoryBadAnswers(t *testing.T) {
	alice := newNode(t, nil, "alice", "", inRoom("dev"))
	for i := range 3 {
		sendRoom(t, alice, "dev", "genuine "+string(rune('a'+i)))
	}
	recs, err := alice.db.roomMessages(RoomTopicPrefix+"dev", 0, 0)
	require.NoError(t, err)
	require.Len(t, recs, 3)
	good := recs[0].Raw

	// Altered: alice's second message with another text, her signature kept.
	var m pubsubpb.Message
	require.NoError(t, proto.Unmarshal(recs[1].Raw, &m))
	b, err := decodeRoomBody(m.Data)
	require.NoError(t, err)
	b.Text = "altered"
	m.Data = b.encode()
	altered, err := proto.Marshal(&m)
	require.NoError(t, err)
	// Another topic.
	require.NoError(t, proto.Unmarshal(recs[2].Raw, &m))
	other := "/p2p-messaging/room/other"
	m.Topic = &other
	otherTopic, err := proto.Marshal(&m)
	require.NoError(t, err)

	bob := newNode(t, nil, "bob", "", inRoom("dev"))
	r, err := bob.rooms.get("dev")
	require.NoError(t, err)
	for _, tc := range []struct {
		name   string
		frames [][]byte
		kept   int
	}{
		{"garbage frame", [][]byte{encodeHistMessage(good), []byte("\x00\x01garbage")}, 1},
		{"not a GossipSub message", [][]byte{encodeHistMessage([]byte{0xff, 0xff})}, 0},
		{"altered message", [][]byte{encodeHistMessage(good), encodeHistMessage(altered)}, 1},
		{"another topic", [][]byte{encodeHistMessage(otherTopic)}, 0},
		{"more than asked", [][]byte{encodeHistMessage(good), encodeHistMessage(good), encodeHistMessage(good)}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := rawPeer(t)
			raw.SetStreamHandler(RoomHistoryProtocol, func(s network.Stream) {
				defer s.Close()
				_, _ = readFrame(bufio.NewReader(s), maxHistoryRequest)
				for _, f := range tc.frames {
					if writeFrame(s, f) != nil {
						return
					}
				}
				_ = writeFrame(s, encodeHistEnd(histStatusOK, ""))
			})
			bob.h.Peerstore().AddAddrs(raw.ID(), raw.Addrs(), time.Minute)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			msgs, err := bob.rooms.hist.fetch(ctx, r, raw.ID(), histRequest{topic: r.spec.Topic, limit: 2})
			var bad *badHistoryError
			require.ErrorAs(t, err, &bad)
			require.Len(t, msgs, tc.kept)
			for _, m := range msgs {
				require.NotEqual(t, "altered", m.body.Text)
			}
		})
	}
	// An oversized frame prefix is refused before it is read.
	raw := rawPeer(t)
	raw.SetStreamHandler(RoomHistoryProtocol, func(s network.Stream) {
		defer s.Close()
		_, _ = readFrame(bufio.NewReader(s), maxHistoryRequest)
		_, _ = s.Write([]byte{0xff, 0xff, 0xff, 0x7f})
	})
	bob.h.Peerstore().AddAddrs(raw.ID(), raw.Addrs(), time.Minute)
	_, err = bob.rooms.hist.fetch(context.Background(), r, raw.ID(), histRequest{topic: r.spec.Topic, limit: 10})
	require.ErrorContains(t, err, "over")

	// sync with a liar: a warning names it, nothing altered is stored.
	liar := rawPeer(t)
	liar.SetStreamHandler(RoomHistoryProtocol, func(s network.Stream) {
		defer s.Close()
		_, _ = readFrame(bufio.NewReader(s), maxHistoryRequest)
		_ = writeFrame(s, encodeHistMessage(good))
		_ = writeFrame(s, encodeHistMessage(altered))
	})
	bob.h.Peerstore().AddAddrs(liar.ID(), liar.Addrs(), time.Minute)
	bob.rooms.hist.sync(r, liar.ID(), 0)
	bob.rec.wait(t, 5*time.Second, func(e Event) bool { w, ok := e.(EventWarning); return ok && w.Peer == liar.ID() })
	bob.rec.wait(t, 5*time.Second, isRoomMessage("dev", "genuine a"))
	hist, err := bob.RoomHistory("dev", 0)
	require.NoError(t, err)
	require.Len(t, hist, 1)
	require.Equal(t, "genuine a", hist[0].Text)
	require.Equal(t, alice.ID(), hist[0].Peer, "the author is the signer, whoever passed it on")
}

// The history server's bounds: an oversized request resets the stream, a
// bad one and an unknown room get a status, a burst gets busy, and a
// client that never reads is cut off at the deadline.
func TestRoomHistoryServerLimits(t *testing.T) {
	alice := newNode(t, nil, "alice", "", inRoom("dev"))
	alice.rooms.hist.timeout = time.Second
	// Enough history that an answer does not fit the stream's buffers.
	r, err := alice.rooms.get("dev")
	require.NoError(t, err)
	big := strings.Repeat("x", MaxTextLen)
	for i := range 1000 {
		id, _ := newID()
		rec := roomRecord{ID: id, Author: alice.ID().String(), Text: big, SentMs: time.Now().UnixMilli() + int64(i), Raw: []byte(big)}
		done := make(chan error, 1)
		require.NoError(t, alice.db.addRoomMessage(r.spec.Topic, rec, 1000, time.Hour, time.Now(), func(_ roomAddResult, err error) { done <- err }))
		require.NoError(t, <-done)
	}
	client := rawPeer(t)
	client.Peerstore().AddAddrs(alice.ID(), alice.h.Addrs(), time.Minute)
	ask := func(payload []byte) network.Stream {
		s, err := client.NewStream(context.Background(), alice.ID(), RoomHistoryProtocol)
		require.NoError(t, err)
		_, err = s.Write(payload)
		require.NoError(t, err)
		return s
	}
	status := func(s network.Stream) uint64 {
		defer s.Close()
		br := bufio.NewReader(s)
		for {
			b, err := readFrame(br, maxSignedRoomMessage+histFrameOverhead)
			require.NoError(t, err)
			f, err := decodeHistFrame(b)
			require.NoError(t, err)
			if f.end {
				return f.status
			}
		}
	}
	frame := func(b []byte) []byte {
		var out []byte
		out = append(out, byte(len(b)))
		return append(out, b...)
	}
	// Oversized prefix: reset.
	s := ask([]byte{0xff, 0xff, 0x7f})
	_, err = bufio.NewReader(s).ReadByte()
	require.Error(t, err)
	s.Reset()
	// Bad request, unknown room.
	require.EqualValues(t, histStatusBadReq, status(ask(frame([]byte{0x08}))))
	require.EqualValues(t, histStatusNoRoom, status(ask(frame(encodeHistRequest(histRequest{topic: "/nope", limit: 1})))))
	// A client that never reads: the server gives up at its deadline.
	stuck := ask(frame(encodeHistRequest(histRequest{topic: r.spec.Topic, limit: 1000})))
	defer stuck.Reset()
	require.Eventually(t, func() bool {
		alice.rooms.hist.mu.Lock()
		defer alice.rooms.hist.mu.Unlock()
		return len(alice.rooms.hist.streams) == 0
	}, 10*time.Second, 20*time.Millisecond, "a stuck answer still held")
	// Over the per-peer rate: busy, at once.
	var busy bool
	for range historyBurst + 2 {
		if status(ask(frame(encodeHistRequest(histRequest{topic: "/nope", limit: 1})))) == histStatusBusy {
			busy = true
			break
		}
	}
	require.True(t, busy)
}

// A member the daemons list in the room but GossipSub does not reach (a
// member behind a limited relay, here a host that speaks no GossipSub) is
// polled for history: what it posted reaches the room.
func TestRoomPollOutsideMesh(t *testing.T) {
	r := newRendezvous(t)
	alice := newNode(t, r, "alice", "", inRoom("dev"))
	outside := rawPeer(t)
	topic := RoomTopicPrefix + "dev"
	key := outside.Peerstore().PrivKey(outside.ID())
	m := &pubsubpb.Message{From: []byte(outside.ID()), Data: bodyData(t, "from behind the relay", time.Now()), Seqno: []byte{1}, Topic: &topic}
	b, err := proto.Marshal(m)
	require.NoError(t, err)
	m.Signature, err = key.Sign(append([]byte(signPrefix), b...))
	require.NoError(t, err)
	raw, err := proto.Marshal(m)
	require.NoError(t, err)
	outside.SetStreamHandler(RoomHistoryProtocol, func(s network.Stream) {
		defer s.Close()
		_, _ = readFrame(bufio.NewReader(s), maxHistoryRequest)
		_ = writeFrame(s, encodeHistMessage(raw))
		_ = writeFrame(s, encodeHistEnd(histStatusOK, ""))
	})
	rc, err := rendezvous.NewClient(outside, []peer.AddrInfo{r.info})
	require.NoError(t, err)
	t.Cleanup(func() { rc.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, outside.Connect(ctx, r.info))
	require.NoError(t, rc.Register(ctx, roomNS("dev"), time.Hour))
	require.Eventually(t, func() bool {
		for _, p := range alice.peers.listed(roomNS("dev")) {
			if p == outside.ID() {
				return true
			}
		}
		return false
	}, 10*time.Second, 20*time.Millisecond)
	rm, err := alice.rooms.get("dev")
	require.NoError(t, err)
	alice.rooms.pollOutside(rm)
	ev := alice.rec.wait(t, 10*time.Second, isRoomMessage("dev", "from behind the relay")).(EventMessage)
	require.Equal(t, outside.ID(), ev.Message.Peer)
}
