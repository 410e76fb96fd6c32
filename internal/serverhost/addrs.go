package serverhost

import (
	"slices"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// LocalAddrs are h's listen addresses expanded to each interface, with
// /p2p/<id>, without relayed ones, loopback first, then private, then
// public: what the addrs file holds, so a chat on the same machine dials the
// cheapest address first.
func LocalAddrs(h host.Host) []multiaddr.Multiaddr {
	ifaddrs, err := h.Network().InterfaceListenAddresses()
	if err != nil || len(ifaddrs) == 0 {
		ifaddrs = h.Network().ListenAddresses()
	}
	p2p := multiaddr.StringCast("/p2p/" + h.ID().String())
	out := make([]multiaddr.Multiaddr, 0, len(ifaddrs))
	for _, a := range ifaddrs {
		if _, err := a.ValueForProtocol(multiaddr.P_CIRCUIT); err == nil {
			continue
		}
		full := a.Encapsulate(p2p)
		if !slices.ContainsFunc(out, full.Equal) {
			out = append(out, full)
		}
	}
	slices.SortStableFunc(out, func(a, b multiaddr.Multiaddr) int { return addrRank(a) - addrRank(b) })
	return out
}

func addrRank(a multiaddr.Multiaddr) int {
	switch {
	case manet.IsIPLoopback(a):
		return 0
	case manet.IsPrivateAddr(a):
		return 1
	}
	return 2
}
