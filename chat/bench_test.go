package chat

import (
	"context"
	"testing"
	"time"
)

// BenchmarkSendToDelivered measures Send until its acknowledgement arrives
// (store, frame, receiver store, ack, sender store) over loopback TCP.
func BenchmarkSendToDelivered(b *testing.B) {
	r := newRendezvous(b)
	alice := newNode(b, r, "alice", "")
	newNode(b, r, "bob", "")
	m := send(b, alice, "bob", "warm-up")
	alice.rec.wait(b, 10*time.Second, isDelivered(m.ID))
	ctx := context.Background()
	b.ResetTimer()
	for b.Loop() {
		m, err := alice.Send(ctx, "bob", "benchmark message")
		if err != nil {
			b.Fatal(err)
		}
		alice.rec.wait(b, 10*time.Second, isDelivered(m.ID))
	}
}
