package chat

import (
	"bufio"
	"context"
	"encoding/hex"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/stretchr/testify/require"
)

func isDeliveredTo(id, to string) func(Event) bool {
	return func(e Event) bool {
		d, ok := e.(EventDelivered)
		return ok && d.ID == id && d.To == to
	}
}

// Our own room message is marked once another member stored it: the
// delivered event (To "#room") comes once, the history says delivered,
// and the mark survives a restart.
func TestRoomStoredMark(t *testing.T) {
	r := newRendezvous(t)
	dir := t.TempDir()
	alice := newNode(t, r, "alice", dir, inRoom("dev"))
	bob := newNode(t, r, "bob", "", inRoom("dev"))
	waitMesh(t, "dev", alice, bob)

	m := sendRoom(t, alice, "dev", "is anybody there")
	require.Equal(t, StatusPending, m.Status, "nobody confirmed it yet")
	alice.rec.wait(t, 20*time.Second, isDeliveredTo(m.ID, "#dev"))
	bob.rec.wait(t, 10*time.Second, isRoomMessage("dev", "is anybody there"))
	require.Eventually(t, func() bool {
		h, err := alice.RoomHistory("dev", 0)
		return err == nil && len(h) == 1 && h[0].Status == StatusDelivered
	}, 10*time.Second, 20*time.Millisecond)
	require.Equal(t, 1, alice.rec.count(isDeliveredTo(m.ID, "#dev")))

	// Bob's history of alice's message carries no mark of its own.
	h, err := bob.RoomHistory("dev", 0)
	require.NoError(t, err)
	require.Len(t, h, 1)
	require.False(t, h[0].Outgoing)

	alice.Close()
	alice2 := newNode(t, r, "alice", dir, inRoom("dev"))
	h, err = alice2.RoomHistory("dev", 0)
	require.NoError(t, err)
	require.Len(t, h, 1)
	require.Equal(t, StatusDelivered, h[0].Status, "the mark is kept in chat.db")
}

// Alone in the room, nobody can confirm: the message stays pending, in
// the events and on disk.
func TestRoomStoredMarkAlone(t *testing.T) {
	dir := t.TempDir()
	alice := newNode(t, nil, "alice", dir, inRoom("dev"))
	alice.rooms.ackPause = time.Millisecond
	m := sendRoom(t, alice, "dev", "echo")
	require.NoError(t, alice.Close()) // waits for the questions to end
	require.Zero(t, alice.rec.count(isDeliveredTo(m.ID, "#dev")))
	again := newNode(t, nil, "alice", dir, inRoom("dev"))
	h, err := again.RoomHistory("dev", 0)
	require.NoError(t, err)
	require.Len(t, h, 1)
	require.Equal(t, StatusPending, h[0].Status)
}

// A hostile asker: a malformed question is answered bad request, a
// question about a room the member is not in "not in room", one about
// another author's message "not seen" (the asker is the author, never a
// field: nobody learns what a member got from others), a question over
// the per-peer rate "busy" at once, and a full waiting list "busy".
func TestRoomAckServerLimits(t *testing.T) {
	r := newRendezvous(t)
	alice := newNode(t, r, "alice", "", inRoom("dev"))
	bob := newNode(t, r, "bob", "", inRoom("dev"))
	waitMesh(t, "dev", alice, bob)
	m := sendRoom(t, bob, "dev", "bob's own")
	alice.rec.wait(t, 10*time.Second, isRoomMessage("dev", "bob's own"))
	alice.rooms.ack.wait.Store(int64(50 * time.Millisecond))
	room, err := alice.rooms.get("dev")
	require.NoError(t, err)

	client := rawPeer(t)
	client.Peerstore().AddAddrs(alice.ID(), alice.h.Addrs(), time.Minute)
	ask := func(payload []byte) (uint64, error) {
		s, err := client.NewStream(context.Background(), alice.ID(), RoomAckProtocol)
		require.NoError(t, err)
		defer s.Close()
		_, err = s.Write(payload)
		require.NoError(t, err)
		require.NoError(t, s.CloseWrite())
		b, err := readFrame(bufio.NewReader(s), maxAckFrame)
		if err != nil {
			return 0, err
		}
		_, _, st, err := decodeAck(b, true)
		require.NoError(t, err)
		return st, nil
	}
	frame := func(b []byte) []byte { return append([]byte{byte(len(b))}, b...) }
	id, err := hex.DecodeString(m.ID)
	require.NoError(t, err)

	// An oversized prefix resets the stream.
	_, err = ask([]byte{0xff, 0xff, 0x7f})
	require.Error(t, err)
	st, err := ask(frame([]byte{0x08, 0x01}))
	require.NoError(t, err)
	require.EqualValues(t, ackBadReq, st)
	st, err = ask(frame(encodeAckQuestion(room.spec.Topic, id[:8])))
	require.NoError(t, err)
	require.EqualValues(t, ackBadReq, st, "an id of the wrong length")
	st, err = ask(frame(encodeAckQuestion("/nope", id)))
	require.NoError(t, err)
	require.EqualValues(t, ackNoRoom, st)
	st, err = ask(frame(encodeAckQuestion(room.spec.Topic, id)))
	require.NoError(t, err)
	require.EqualValues(t, ackNotSeen, st, "bob's message is not the asker's")

	// Bob asking about his own: stored.
	got, err := bob.rooms.ask(context.Background(), bob.rooms.byName["dev"], alice.ID(), id)
	require.NoError(t, err)
	require.EqualValues(t, ackStored, got)

	// Over the per-peer rate: busy, at once. (The bucket refills at
	// ackRate while we ask, so a slow machine needs more than a burst.)
	busy := false
	for range 20 * ackBurst {
		if st, err := ask(frame(encodeAckQuestion("/nope", id))); err == nil && st == ackBusy {
			busy = true
			break
		}
	}
	require.True(t, busy, "no busy answer over the rate")

	// A full waiting list: busy. Fill it from alice's own semaphore.
	for range ackWaiting {
		alice.rooms.ack.sem <- struct{}{}
	}
	defer func() {
		for range ackWaiting {
			<-alice.rooms.ack.sem
		}
	}()
	other := rawPeer(t)
	other.Peerstore().AddAddrs(alice.ID(), alice.h.Addrs(), time.Minute)
	s, err := other.NewStream(network.WithAllowLimitedConn(context.Background(), "test"), alice.ID(), RoomAckProtocol)
	require.NoError(t, err)
	defer s.Close()
	_, err = s.Write(frame(encodeAckQuestion(room.spec.Topic, id)))
	require.NoError(t, err)
	require.NoError(t, s.CloseWrite())
	b, err := readFrame(bufio.NewReader(s), maxAckFrame)
	require.NoError(t, err)
	_, _, st, err = decodeAck(b, true)
	require.NoError(t, err)
	require.EqualValues(t, ackBusy, st)
}

// A question that arrives before the message waits for its commit and
// is answered stored then.
func TestRoomAckWaitsForCommit(t *testing.T) {
	alice := newNode(t, nil, "alice", "", inRoom("dev"))
	room, err := alice.rooms.get("dev")
	require.NoError(t, err)
	author := rawPeer(t)
	author.Peerstore().AddAddrs(alice.ID(), alice.h.Addrs(), time.Minute)
	id := make([]byte, ackIDLength)
	id[0] = 7
	s, err := author.NewStream(context.Background(), alice.ID(), RoomAckProtocol)
	require.NoError(t, err)
	defer s.Close()
	q := encodeAckQuestion(room.spec.Topic, id)
	_, err = s.Write(append([]byte{byte(len(q))}, q...))
	require.NoError(t, err)
	require.NoError(t, s.CloseWrite())
	waiting := func() int {
		alice.rooms.ack.mu.Lock()
		defer alice.rooms.ack.mu.Unlock()
		return len(alice.rooms.ack.waiting)
	}
	require.Eventually(t, func() bool { return waiting() == 1 }, 10*time.Second, 5*time.Millisecond)
	alice.rooms.ack.committed(room.spec.Topic, author.ID(), id)
	b, err := readFrame(bufio.NewReader(s), maxAckFrame)
	require.NoError(t, err)
	_, _, st, err := decodeAck(b, true)
	require.NoError(t, err)
	require.EqualValues(t, ackStored, st)
	require.Eventually(t, func() bool { return waiting() == 0 }, 10*time.Second, 5*time.Millisecond)
}

func FuzzRoomAckDecode(f *testing.F) {
	f.Add(encodeAckQuestion("/p2p-messaging/room/dev", make([]byte, 16)), false)
	f.Add(encodeAckAnswer(ackStored), true)
	f.Add([]byte{0x08}, false)
	f.Fuzz(func(t *testing.T, b []byte, answer bool) {
		topic, id, st, err := decodeAck(b, answer)
		if err != nil {
			return
		}
		if answer {
			_, _, again, err := decodeAck(encodeAckAnswer(st), true)
			require.NoError(t, err)
			require.Equal(t, st, again)
			return
		}
		require.NotEmpty(t, topic)
		require.Len(t, id, ackIDLength)
	})
}
