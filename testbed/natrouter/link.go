//go:build linux

package main

import (
	"fmt"
	"net"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

const (
	lanIfName    = "lan0"
	uplinkIfName = "wan0"
	vxlanPort    = 4789
	vxlanExtra   = 50 // outer IPv4 + UDP + VXLAN + inner Ethernet headers
)

func newVxlan(name string, under netlink.Link, local, remote net.IP, vni int) (netlink.Link, error) {
	v := &netlink.Vxlan{
		LinkAttrs:    netlink.LinkAttrs{Name: name, MTU: under.Attrs().MTU - vxlanExtra},
		VxlanId:      vni,
		VtepDevIndex: under.Attrs().Index,
		SrcAddr:      local,
		Group:        remote, // unicast remote (point to point) when set
		Port:         vxlanPort,
		Learning:     remote == nil,
	}
	if err := netlink.LinkAdd(v); err != nil {
		return nil, fmt.Errorf("create vxlan %s: %w", name, err)
	}
	link, err := netlink.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("find %s: %w", name, err)
	}
	return link, nil
}

func addrUp(link netlink.Link, ip net.IP, n *net.IPNet) error {
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: ip, Mask: n.Mask}}
	if err := netlink.AddrAdd(link, addr); err != nil {
		return fmt.Errorf("address %s on %s: %w", addr.IPNet, link.Attrs().Name, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", link.Attrs().Name, err)
	}
	return nil
}

// setupRouterLAN creates the router side of the VXLAN LAN: a learning VXLAN
// device with one flooding entry per known peer, so ARP reaches peers that
// have not spoken yet.
func setupRouterLAN(underIf string, underIP, lanIP net.IP, lanNet *net.IPNet, vni int, flood []net.IP) error {
	under, err := netlink.LinkByName(underIf)
	if err != nil {
		return fmt.Errorf("underlay %s: %w", underIf, err)
	}
	link, err := newVxlan(lanIfName, under, underIP, nil, vni)
	if err != nil {
		return err
	}
	for _, ip := range flood {
		err := netlink.NeighAppend(&netlink.Neigh{
			LinkIndex:    link.Attrs().Index,
			Family:       unix.AF_BRIDGE,
			Flags:        netlink.NTF_SELF,
			State:        netlink.NUD_PERMANENT | netlink.NUD_NOARP,
			IP:           ip,
			HardwareAddr: net.HardwareAddr{0, 0, 0, 0, 0, 0},
		})
		if err != nil {
			return fmt.Errorf("flood entry %s: %w", ip, err)
		}
	}
	return addrUp(link, lanIP, lanNet)
}

// setupPeerLAN creates the peer side: a point-to-point VXLAN (named name) to
// the router and a default route through the router's LAN address. A home
// router behind a carrier-grade NAT sets its WAN up the same way.
func setupPeerLAN(name string, routerIP, lanIP net.IP, lanNet *net.IPNet, gw net.IP, vni int) error {
	routes, err := netlink.RouteGet(routerIP)
	if err != nil || len(routes) == 0 {
		return fmt.Errorf("no route to router %s: %v", routerIP, err)
	}
	under, err := netlink.LinkByIndex(routes[0].LinkIndex)
	if err != nil {
		return fmt.Errorf("underlay link: %w", err)
	}
	link, err := newVxlan(name, under, routes[0].Src, routerIP, vni)
	if err != nil {
		return err
	}
	if err := addrUp(link, lanIP, lanNet); err != nil {
		return err
	}
	_, def, _ := net.ParseCIDR("0.0.0.0/0")
	if err := netlink.RouteReplace(&netlink.Route{LinkIndex: link.Attrs().Index, Dst: def, Gw: gw}); err != nil {
		return fmt.Errorf("default route via %s: %w", gw, err)
	}
	return nil
}

// addAddr6 puts an IPv6 address on link without duplicate address
// detection (the test bed assigns every address once; DAD would leave it
// tentative, unusable, for a second).
func addAddr6(link netlink.Link, cidr string) error {
	ip, n, err := net.ParseCIDR(cidr)
	if err != nil || ip.To4() != nil {
		return fmt.Errorf("IPv6 address %q: want an IPv6 CIDR", cidr)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: ip, Mask: n.Mask}, Flags: unix.IFA_F_NODAD}
	if err := netlink.AddrAdd(link, addr); err != nil {
		return fmt.Errorf("address %s on %s: %w", cidr, link.Attrs().Name, err)
	}
	return nil
}

// addRoutes6 adds "PREFIX=VIA" routes (comma-separated), e.g. the other
// routers' LAN prefixes through their WAN addresses.
func addRoutes6(spec string) error {
	for _, r := range strings.Split(spec, ",") {
		r = strings.TrimSpace(r)
		if r == "" {
			continue
		}
		prefix, via, ok := strings.Cut(r, "=")
		_, dst, err := net.ParseCIDR(prefix)
		gw := net.ParseIP(via)
		if !ok || err != nil || gw == nil {
			return fmt.Errorf("route %q: want PREFIX=VIA", r)
		}
		if err := netlink.RouteReplace(&netlink.Route{Dst: dst, Gw: gw}); err != nil {
			return fmt.Errorf("route %s via %s: %w", dst, gw, err)
		}
	}
	return nil
}

// setupPeerLAN6 gives the peer's LAN an IPv6 address and a default route
// through the router.
func setupPeerLAN6(cidr string, gw net.IP) error {
	link, err := netlink.LinkByName(lanIfName)
	if err != nil {
		return fmt.Errorf("find %s: %w", lanIfName, err)
	}
	if err := addAddr6(link, cidr); err != nil {
		return err
	}
	_, def, _ := net.ParseCIDR("::/0")
	if err := netlink.RouteReplace(&netlink.Route{LinkIndex: link.Attrs().Index, Dst: def, Gw: gw}); err != nil {
		return fmt.Errorf("IPv6 default route via %s: %w", gw, err)
	}
	return nil
}
