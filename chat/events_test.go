package chat

import (
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestEventQueueNeverBlocksAndDropsOldest(t *testing.T) {
	q := newEventQueue(slog.New(slog.DiscardHandler))
	total := maxQueuedEvents + EventBuffer + 500
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range total {
			q.emit(EventSent{ID: fmt.Sprint(i)})
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("emit blocked without a consumer")
	}
	// Read until the newest event, then close.
	var got []string
	for len(got) == 0 || got[len(got)-1] != fmt.Sprint(total-1) {
		got = append(got, (<-q.out).(EventSent).ID)
	}
	q.close()
	_, open := <-q.out
	require.False(t, open, "closed after close")
	q.mu.Lock()
	dropped := q.dropped
	q.mu.Unlock()
	require.NotZero(t, dropped)
	require.Equal(t, fmt.Sprint(total-1), got[len(got)-1], "the newest event survives")
	for i := 1; i < len(got); i++ {
		var a, b int
		fmt.Sscan(got[i-1], &a)
		fmt.Sscan(got[i], &b)
		require.Less(t, a, b, "order kept")
	}
}
