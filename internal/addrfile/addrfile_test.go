package addrfile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	ma "github.com/multiformats/go-multiaddr"
	"github.com/stretchr/testify/require"
)

func TestWriteRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "addrs")
	_, err := Read(path)
	require.ErrorIs(t, err, os.ErrNotExist)

	want := []ma.Multiaddr{
		ma.StringCast("/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWDqvf1rarn59QDCwmmkTb85aG86cQMxtzKY4JtMExipHU"),
		ma.StringCast("/ip6/::1/udp/4001/quic-v1/p2p/12D3KooWDqvf1rarn59QDCwmmkTb85aG86cQMxtzKY4JtMExipHU"),
	}
	require.NoError(t, Write(path, want))
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, want[0].String()+"\n"+want[1].String()+"\n", string(b), "one per line")
	got, err := Read(path)
	require.NoError(t, err)
	require.Equal(t, want, got)
}

func TestReadSkipsAndRejects(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) string {
		p := filepath.Join(dir, "addrs")
		require.NoError(t, os.WriteFile(p, []byte(s), 0o600))
		return p
	}
	got, err := Read(write("# written by hand\n\n  /ip4/127.0.0.1/tcp/1  \n"))
	require.NoError(t, err)
	require.Len(t, got, 1)

	_, err = Read(write("\n  \n# nothing\n"))
	require.ErrorIs(t, err, ErrEmpty)

	_, err = Read(write("/ip4/127.0.0.1/tcp/1\nnot an address\n"))
	require.ErrorContains(t, err, `"not an address"`)

	_, err = Read(write(strings.Repeat("#", maxSize+1)))
	require.ErrorContains(t, err, "larger than")
}
