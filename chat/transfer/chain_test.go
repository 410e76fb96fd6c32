package transfer

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestChainIsSHA256 pins what the hash list rests on: the list's last
// entry is the SHA-256 of the content, each chunk checks on its own from
// the entry before it (in any order), and a changed byte fails exactly
// the chunk that holds it.
func TestChainIsSHA256(t *testing.T) {
	cs := MinChunkSize
	for _, size := range []int{0, 1, 63, 64, cs - 1, cs, cs + 1, 3*cs + 100, 4 * cs} {
		content := make([]byte, size)
		_, _ = rand.Read(content)
		hashes, whole, err := hashChain(func() error { return nil }, bytes.NewReader(content), int64(size), cs, make([]byte, 1000), nil)
		require.NoError(t, err)
		require.Equal(t, sha256.Sum256(content), whole, "size %d", size)
		x := &xfer{size: int64(size), chunkSize: cs}
		n := x.chunks()
		require.Len(t, hashes, n*hashLen)
		if n > 0 {
			require.Equal(t, whole[:], hashes[(n-1)*hashLen:], "the last entry is the file's SHA-256")
		}
		c := newChunkChecker(x, hashes)
		for i := n - 1; i >= 0; i-- { // any order
			chunk := content[i*cs : min((i+1)*cs, size)]
			c.begin(i)
			c.write(chunk[:len(chunk)/2])
			c.write(chunk[len(chunk)/2:])
			require.True(t, c.end(), "size %d chunk %d", size, i)

			bad := append([]byte(nil), chunk...)
			bad[len(bad)/2] ^= 1
			c.begin(i)
			c.write(bad)
			require.False(t, c.end(), "size %d chunk %d with a flipped bit", size, i)
		}
		if n > 1 {
			// A chunk checked against another chunk's link fails.
			c.begin(1)
			c.write(content[:cs])
			require.False(t, c.end())
		}
	}
}
