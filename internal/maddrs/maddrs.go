// Package maddrs parses the multiaddr lists that the binaries take on the
// command line (-listen, -announce, -bootstrap, -rendezvous): comma
// separated, blanks ignored.
package maddrs

import (
	"fmt"
	"strings"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// Parse parses a comma-separated list of multiaddrs; blank entries are
// skipped, so "" is an empty list.
func Parse(list string) ([]ma.Multiaddr, error) {
	var out []ma.Multiaddr
	for _, f := range strings.Split(list, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		a, err := ma.NewMultiaddr(f)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", f, err)
		}
		out = append(out, a)
	}
	return out, nil
}

// Peers groups /p2p multiaddrs by peer, in the order each peer first
// appears. Every address must end in /p2p/<peer-id>.
func Peers(addrs []ma.Multiaddr) ([]peer.AddrInfo, error) {
	var out []peer.AddrInfo
	index := map[peer.ID]int{}
	for _, a := range addrs {
		if _, err := a.ValueForProtocol(ma.P_P2P); err != nil {
			return nil, fmt.Errorf("%s: missing /p2p/<peer-id>", a)
		}
		ai, err := peer.AddrInfoFromP2pAddr(a)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", a, err)
		}
		i, ok := index[ai.ID]
		if !ok {
			i = len(out)
			index[ai.ID] = i
			out = append(out, peer.AddrInfo{ID: ai.ID})
		}
		out[i].Addrs = append(out[i].Addrs, ai.Addrs...)
	}
	return out, nil
}

// ParsePeers is Parse followed by Peers.
func ParsePeers(list string) ([]peer.AddrInfo, error) {
	addrs, err := Parse(list)
	if err != nil {
		return nil, err
	}
	return Peers(addrs)
}
