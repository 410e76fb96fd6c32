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

// FuzzRead: whatever the file holds, Read returns addresses that write back
// to a file that reads the same, or an error; it never panics.
func FuzzRead(f *testing.F) {
	f.Add("/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWDqvf1rarn59QDCwmmkTb85aG86cQMxtzKY4JtMExipHU\n")
	f.Add("# c\n\n/ip6/::1/udp/1/quic-v1\r\n")
	f.Add("/ip4/1.2.3.4\x00/tcp/1\n")
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, content string) {
		path := filepath.Join(dir, "addrs")
		require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
		addrs, err := Read(path)
		if err != nil {
			return
		}
		require.NotEmpty(t, addrs)
		require.NoError(t, Write(path, addrs))
		again, err := Read(path)
		require.NoError(t, err)
		require.Equal(t, len(addrs), len(again))
		for i := range addrs {
			require.True(t, addrs[i].Equal(again[i]), "%s != %s", addrs[i], again[i])
		}
	})
}
