package transfer

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// BenchmarkTransfer moves a 64 MiB file between two in-process hosts over
// TCP on loopback (both sides in this process: for profiles; cmd/bench
// measures the two sides in two processes beside a plain stream copy).
func BenchmarkTransfer(b *testing.B) {
	ha, hb := newHost(b), newHost(b)
	connect(b, ha, hb)
	a, r := newSvc(b, ha, "", ""), newSvc(b, hb, "", "")
	const size = 64 << 20
	src, _ := randomFile(b, b.TempDir(), size)
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		info, err := a.Offer(ctx, hb.ID(), src, "alice")
		cancel()
		require.NoError(b, err)
		_, err = r.Accept(info.ID, "")
		require.NoError(b, err)
		d := r.rec.wait(b, time.Minute, isDone(info.ID, true)).(DoneEvent)
		b.StopTimer()
		require.NoError(b, os.Remove(d.Path))
		b.StartTimer()
	}
}
