package maddrs

import (
	"testing"

	"github.com/stretchr/testify/require"
)

const (
	idA = "12D3KooWDqvf1rarn59QDCwmmkTb85aG86cQMxtzKY4JtMExipHU"
	idB = "12D3KooWJWoaqZhDaoEFshF7Rh1bpY9ohihFhzcW6d69Lr2NASuq"
)

func TestParse(t *testing.T) {
	got, err := Parse(" /ip4/127.0.0.1/tcp/1 ,, /ip6/::1/udp/2/quic-v1 ,")
	require.NoError(t, err)
	require.Len(t, got, 2)
	require.Equal(t, "/ip6/::1/udp/2/quic-v1", got[1].String())

	got, err = Parse("")
	require.NoError(t, err)
	require.Empty(t, got)

	_, err = Parse("/ip4/127.0.0.1/tcp/1,nonsense")
	require.ErrorContains(t, err, `"nonsense"`)
}

func TestParsePeers(t *testing.T) {
	infos, err := ParsePeers("/ip4/127.0.0.1/tcp/1/p2p/" + idB + ",/ip4/127.0.0.1/tcp/2/p2p/" + idA + ",/ip6/::1/tcp/1/p2p/" + idB)
	require.NoError(t, err)
	require.Len(t, infos, 2)
	require.Equal(t, idB, infos[0].ID.String(), "first seen first")
	require.Len(t, infos[0].Addrs, 2, "addresses of one peer grouped")

	_, err = ParsePeers("/ip4/127.0.0.1/tcp/1")
	require.ErrorContains(t, err, "missing /p2p/<peer-id>")

	infos, err = ParsePeers(" , ")
	require.NoError(t, err)
	require.Empty(t, infos)
}

func FuzzParsePeers(f *testing.F) {
	f.Add("/ip4/127.0.0.1/tcp/1/p2p/" + idA)
	f.Add(",,/ip6/::1/udp/1/quic-v1")
	f.Add("/p2p/" + idB + ",x")
	f.Fuzz(func(t *testing.T, s string) {
		infos, err := ParsePeers(s)
		if err == nil {
			for _, ai := range infos {
				if ai.ID == "" {
					t.Fatalf("%q: empty peer id", s)
				}
			}
		}
	})
}
