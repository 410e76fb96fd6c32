package chat

import (
	"fmt"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"
)

// Each peer has its own bucket, and the map never holds more than max
// peers however many identities a remote makes up.
func TestPeerLimits(t *testing.T) {
	pl := newPeerLimits(rate.Every(time.Hour), 2, 8)
	now := time.Now()
	a, b := peer.ID("a"), peer.ID("b")
	require.True(t, pl.allowAt(a, now))
	require.True(t, pl.allowAt(a, now))
	require.False(t, pl.allowAt(a, now), "a's burst is spent")
	require.True(t, pl.allowAt(b, now), "b has its own bucket")
	for i := range 100 {
		pl.allowAt(peer.ID(fmt.Sprint("sybil-", i)), now)
		require.LessOrEqual(t, len(pl.m), 8)
	}
}
