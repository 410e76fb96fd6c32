//go:build linux

package main

import (
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

const (
	lanIfName  = "lan0"
	vxlanPort  = 4789
	vxlanExtra = 50 // outer IPv4 + UDP + VXLAN + inner Ethernet headers
)

func newVxlan(under netlink.Link, local, remote net.IP, vni int) (netlink.Link, error) {
	v := &netlink.Vxlan{
		LinkAttrs:    netlink.LinkAttrs{Name: lanIfName, MTU: under.Attrs().MTU - vxlanExtra},
		VxlanId:      vni,
		VtepDevIndex: under.Attrs().Index,
		SrcAddr:      local,
		Group:        remote, // unicast remote (point to point) when set
		Port:         vxlanPort,
		Learning:     remote == nil,
	}
	if err := netlink.LinkAdd(v); err != nil {
		return nil, fmt.Errorf("create vxlan %s: %w", lanIfName, err)
	}
	link, err := netlink.LinkByName(lanIfName)
	if err != nil {
		return nil, fmt.Errorf("find %s: %w", lanIfName, err)
	}
	return link, nil
}

func addrUp(link netlink.Link, ip net.IP, n *net.IPNet) error {
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: ip, Mask: n.Mask}}
	if err := netlink.AddrAdd(link, addr); err != nil {
		return fmt.Errorf("address %s on %s: %w", addr.IPNet, lanIfName, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", lanIfName, err)
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
	link, err := newVxlan(under, underIP, nil, vni)
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

// setupPeerLAN creates the peer side: a point-to-point VXLAN to the router
// and a default route through the router's LAN address.
func setupPeerLAN(routerIP, lanIP net.IP, lanNet *net.IPNet, gw net.IP, vni int) error {
	routes, err := netlink.RouteGet(routerIP)
	if err != nil || len(routes) == 0 {
		return fmt.Errorf("no route to router %s: %v", routerIP, err)
	}
	under, err := netlink.LinkByIndex(routes[0].LinkIndex)
	if err != nil {
		return fmt.Errorf("underlay link: %w", err)
	}
	link, err := newVxlan(under, routes[0].Src, routerIP, vni)
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
