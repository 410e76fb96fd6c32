package rendezvous

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestRemainingSeconds(t *testing.T) {
	s := int64(time.Second)
	for _, tt := range []struct {
		expires, now int64
		want         uint64
	}{
		{10 * s, 0, 10},
		{10 * s, 1, 10},
		{10 * s, s - 1, 10},
		{10 * s, s, 9},
		{10 * s, 10*s - 1, 1},
		{10 * s, 10 * s, 0},
		{10 * s, 11 * s, 0},
	} {
		require.Equal(t, tt.want, remainingSeconds(tt.expires, tt.now), "%+v", tt)
	}
}

func TestIndexCompaction(t *testing.T) {
	var ix seqIndex
	var es []*regEntry
	for i := range 100 {
		e := &regEntry{seq: uint64(i + 1)}
		es = append(es, e)
		ix.entries = append(ix.entries, e)
	}
	for _, e := range es[:60] {
		e.dead = true
		ix.removed()
	}
	require.LessOrEqual(t, len(ix.entries), 2*ix.live()+16)
	require.Equal(t, 40, ix.live())
	require.Equal(t, 0, ix.after(60)-countDead(ix.entries[:ix.after(60)]), "positions stay sorted after compaction")
	require.Equal(t, uint64(61), firstLive(ix.entries[ix.after(0):]).seq)
	for _, e := range es[60:] {
		e.dead = true
		ix.removed()
	}
	require.Nil(t, ix.entries)
}

func countDead(es []*regEntry) int {
	n := 0
	for _, e := range es {
		if e.dead {
			n++
		}
	}
	return n
}

func firstLive(es []*regEntry) *regEntry {
	for _, e := range es {
		if !e.dead {
			return e
		}
	}
	return nil
}
