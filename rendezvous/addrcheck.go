package rendezvous

import (
	"fmt"
	"net/netip"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	peerpb "github.com/libp2p/go-libp2p/core/peer/pb"
	recordpb "github.com/libp2p/go-libp2p/core/record/pb"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
	"google.golang.org/protobuf/proto"
)

// DefaultMaxRecordAddrs caps the addresses of one signed peer record.
const DefaultMaxRecordAddrs = 16

// rejectRecordAddrs is the rejection reason of a record refused for its
// addresses (rendezvous_rejections_total).
const rejectRecordAddrs = "record_addrs"

// ObservedKey precedes the registrant's observed IP in the status text of
// a record refused for an address.
const ObservedKey = "observed="

// recordAddrs decodes the addresses of a signed peer record whose
// signature was already verified (or that is byte-identical to one that
// was): no crypto, only two protobuf decodes.
func recordAddrs(b []byte) ([]ma.Multiaddr, error) {
	var env recordpb.Envelope
	if err := proto.Unmarshal(b, &env); err != nil {
		return nil, fmt.Errorf("envelope: %w", err)
	}
	var pr peerpb.PeerRecord
	if err := proto.Unmarshal(env.GetPayload(), &pr); err != nil {
		return nil, fmt.Errorf("peer record: %w", err)
	}
	addrs := make([]ma.Multiaddr, 0, len(pr.GetAddresses()))
	for _, a := range pr.GetAddresses() {
		m, err := ma.NewMultiaddrBytes(a.GetMultiaddr())
		if err != nil {
			return nil, fmt.Errorf("address: %w", err)
		}
		addrs = append(addrs, m)
	}
	return addrs, nil
}

// addrPolicy is what the address check knows about one REGISTER.
type addrPolicy struct {
	self peer.ID
	// observed are the IPs the registrant's connections come from (the
	// REGISTER's first).
	observed []netip.Addr
	// ownIP reports whether ip is one of this server's addresses.
	ownIP func(netip.Addr) bool
	// relayAt reports whether this server is connected to relay from ip.
	relayAt func(relay peer.ID, ip netip.Addr) bool
}

// firstHost returns the first IP (ok) or DNS (dns) component of a.
func firstHost(a ma.Multiaddr) (ip netip.Addr, dns, ok bool) {
	for _, c := range a {
		switch c.Code() {
		case ma.P_IP4, ma.P_IP6:
			ip, ok := netip.AddrFromSlice(c.RawValue())
			return ip.Unmap(), false, ok
		case ma.P_DNS, ma.P_DNS4, ma.P_DNS6, ma.P_DNSADDR:
			return netip.Addr{}, true, false
		}
	}
	return netip.Addr{}, false, false
}

// sameHost reports whether ip is observed: the same IPv4 address, or an
// IPv6 address in the same /64 (a host's temporary and stable addresses).
func sameHost(ip, observed netip.Addr) bool {
	if ip.Is4() || observed.Is4() {
		return ip == observed
	}
	p, err := observed.Prefix(64)
	return err == nil && p.Contains(ip)
}

// check returns why a may not be in the registrant's record, or "".
func (p *addrPolicy) check(a ma.Multiaddr) string {
	relay, rest := ma.SplitFunc(a, func(c ma.Component) bool { return c.Code() == ma.P_CIRCUIT })
	if len(rest) > 0 {
		return p.checkRelay(a, relay)
	}
	ip, dns, ok := firstHost(a)
	switch {
	case dns:
		return fmt.Sprintf("record address %s is a DNS name, which this server cannot check against your observed address", a)
	case !ok:
		return "" // no IP to aim at (e.g. /p2p/<id> alone)
	case !manet.IsPublicAddr(a):
		return p.checkNonPublic(a, ip)
	}
	for _, o := range p.observed {
		if sameHost(ip, o) {
			return ""
		}
	}
	return fmt.Sprintf("record address %s is public and neither your observed address (%s%s) nor a relay address through this server (/p2p/%s/p2p-circuit)",
		a, ObservedKey, p.firstObserved(), p.self)
}

// checkRelay checks a relay address: relay is the part before
// /p2p-circuit, ending in /p2p/<relay ID>.
func (p *addrPolicy) checkRelay(a, relay ma.Multiaddr) string {
	transport, last := ma.SplitLast(relay)
	if last == nil || last.Code() != ma.P_P2P {
		return fmt.Sprintf("record address %s is a relay address without the relay's /p2p/<id>", a)
	}
	id, err := peer.IDFromBytes(last.RawValue())
	if err != nil {
		return fmt.Sprintf("record address %s names no valid relay peer ID", a)
	}
	ip, dns, ok := firstHost(transport)
	switch {
	case len(transport) == 0 || (!ok && !dns):
		return "" // dialled through the relay's own known addresses
	case dns:
		return fmt.Sprintf("record address %s reaches its relay through a DNS name, which this server cannot check", a)
	case !manet.IsPublicAddr(transport):
		return p.checkNonPublic(a, ip)
	case id == p.self && p.ownIP(ip):
		return ""
	case id != p.self && p.relayAt(id, ip):
		return ""
	}
	return fmt.Sprintf("record address %s is a relay address at %s, where this server does not know relay %s; "+
		"relay addresses through this server are /p2p/%s/p2p-circuit (%s%s)", a, ip, id, p.self, ObservedKey, p.firstObserved())
}

// checkNonPublic decides a loopback, private or otherwise non-public IP:
// loopback only when the registrant itself comes over loopback (else it
// would aim dialers at their own host), unspecified and multicast never,
// the other ranges (RFC 1918, CGNAT, ULA, link-local, ...) always: they
// reach only inside the dialer's own network, where the registrant may
// really be.
func (p *addrPolicy) checkNonPublic(a ma.Multiaddr, ip netip.Addr) string {
	switch {
	case ip.IsUnspecified() || ip.IsMulticast() || ip == netip.IPv4Unspecified() || ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return fmt.Sprintf("record address %s is not an address one can dial", a)
	case ip.IsLoopback():
		for _, o := range p.observed {
			if o.IsLoopback() {
				return ""
			}
		}
		return fmt.Sprintf("record address %s is a loopback address, but you are not on this server's host (%s%s)",
			a, ObservedKey, p.firstObserved())
	}
	return ""
}

func (p *addrPolicy) firstObserved() string {
	if len(p.observed) == 0 || !p.observed[0].IsValid() {
		return "unknown"
	}
	return p.observed[0].String()
}

// checkAddrs returns why addrs may not be registered under p, or "".
func (p *addrPolicy) checkAddrs(addrs []ma.Multiaddr, max int) string {
	if len(addrs) > max {
		return fmt.Sprintf("signed peer record lists %d addresses, more than %d (%s%s)", len(addrs), max, ObservedKey, p.firstObserved())
	}
	for _, a := range addrs {
		if text := p.check(a); text != "" {
			return text
		}
	}
	return ""
}

// ---- server hook ----

// checkRecordAddrs returns why the addresses of rec (a verified record of
// remote, registered over conn) may not be registered, or "".
func (s *Server) checkRecordAddrs(remote peer.ID, conn network.Conn, rec []byte) string {
	addrs, err := recordAddrs(rec)
	if err != nil {
		return "signed peer record does not decode: " + err.Error()
	}
	p := addrPolicy{
		self:     s.h.ID(),
		observed: []netip.Addr{s.observedIP(conn)},
		ownIP: func(ip netip.Addr) bool {
			mine := append(s.h.Addrs(), s.h.Network().ListenAddresses()...)
			mine = append(mine, conn.LocalMultiaddr())
			for _, m := range mine {
				if own, _, ok := firstHost(m); ok && own == ip {
					return true
				}
			}
			return false
		},
		relayAt: func(relay peer.ID, ip netip.Addr) bool {
			for _, c := range s.h.Network().ConnsToPeer(relay) {
				if s.observedIP(c) == ip {
					return true
				}
			}
			return false
		},
	}
	for _, c := range s.h.Network().ConnsToPeer(remote) {
		if c != conn && !c.Stat().Limited {
			p.observed = append(p.observed, s.observedIP(c))
		}
	}
	return p.checkAddrs(addrs, s.lim.MaxRecordAddrs)
}
