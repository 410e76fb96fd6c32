//go:build linux

// Command natrouter turns a container into a home router for the test bed,
// and prepares peer containers to sit behind one.
//
//	natrouter router -mode full-cone|port-restricted|symmetric|relay-only -wan-net 11.2.0.0/24 \
//	    -underlay-net 10.2.1.0/24 -lan 192.168.1.1/24 [-flood 10.2.1.10,...] [-relay 11.2.0.10] \
//	    [-link internet|lan|25ms,5ms,1%] [-vni 42]
//	    [-uplink-router 10.2.3.2 -uplink 100.64.0.2/24 -uplink-gateway 100.64.0.1]
//	    [-lan6 2a00:2:a::1/64 -route6 2a00:2:b::/64=2a00:2::3]
//	natrouter peer -router 10.2.1.2 -lan 192.168.1.10/24 -gateway 192.168.1.1 \
//	    [-lan6 2a00:2:a::10/64 -gateway6 2a00:2:a::1] -- /chat -json ...
//	natrouter route -route6 2a00:2:a::/64=2a00:2::2,... -- /rendezvous ...
//	natrouter flush      (docker exec into an idle router: forget every NAT mapping)
//
// Why a VXLAN: Docker isolates internal networks with host firewall rules that
// drop any bridged packet whose address lies outside the network's subnet, so
// a peer cannot send packets for the simulated internet to its router across
// a Docker network directly. Router and peers therefore run a private LAN
// inside a VXLAN carried over the Docker network (only in-subnet UDP on the
// bridge); the router NATs between that LAN and its WAN interface with
// nftables. Both sides need CAP_NET_ADMIN; the router also needs the sysctl
// net.ipv4.ip_forward=1. The router prints "ready ..." on stdout once its
// rules are installed and runs until SIGTERM.
//
// -link sets what the WAN link adds to every forwarded packet, in each
// direction (so a peer behind two such routers sees twice that one way):
// "internet" (the default: 25 ms, 5 ms jitter, 1 % loss), "lan" (nothing) or
// "DELAY,JITTER,LOSS%". The kernel has no netem, so the router queues the
// packets to itself (NFQUEUE) and releases or drops them (linkem.go).
//
// With -uplink-router the router sits behind another one (a carrier-grade
// NAT): its WAN is then a VXLAN to that router (interface wan0, VNI
// -uplink-vni), set up as a peer's LAN is, and -wan-net names its subnet.
//
// With -lan6 the router also routes IPv6 between its LAN and the WAN, with
// no NAT: a stateful firewall (BuildRuleset6) as IPv6 home routers have.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "natrouter:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: natrouter router|peer|route|flush [flags]")
	}
	switch args[0] {
	case "router":
		return runRouter(ctx, args[1:], stdout)
	case "peer":
		return runPeer(args[1:])
	case "route":
		return runRoute(args[1:])
	case "flush":
		return runFlush(args[1:], stdout)
	default:
		return fmt.Errorf("unknown command %q (want router, peer, route or flush)", args[0])
	}
}

func envOr(key, def string) string {
	if v, ok := os.LookupEnv(key); ok {
		return v
	}
	return def
}

func runRouter(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("router", flag.ContinueOnError)
	mode := fs.String("mode", envOr("NATROUTER_MODE", string(ModePortRestricted)), "full-cone | port-restricted | symmetric | relay-only [NATROUTER_MODE]")
	linkSpec := fs.String("link", envOr("NATROUTER_LINK", "internet"), "WAN link profile: internet | lan | DELAY,JITTER,LOSS% [NATROUTER_LINK]")
	wanNet := fs.String("wan-net", envOr("NATROUTER_WAN_NET", ""), "subnet of the WAN interface [NATROUTER_WAN_NET]")
	underlayNet := fs.String("underlay-net", envOr("NATROUTER_UNDERLAY_NET", ""), "subnet of the Docker network shared with the peers [NATROUTER_UNDERLAY_NET]")
	lan := fs.String("lan", envOr("NATROUTER_LAN", ""), "router address and prefix on the VXLAN LAN, e.g. 192.168.1.1/24 [NATROUTER_LAN]")
	vni := fs.Int("vni", 42, "VXLAN network identifier")
	flood := fs.String("flood", envOr("NATROUTER_FLOOD", ""), "comma-separated underlay IPs of peers (ARP flooding targets) [NATROUTER_FLOOD]")
	relays := fs.String("relay", envOr("NATROUTER_RELAY", ""), "comma-separated WAN IPs allowed in relay-only mode [NATROUTER_RELAY]")
	upRouter := fs.String("uplink-router", "", "behind a carrier-grade NAT: the upstream router's address on the shared Docker network")
	upLAN := fs.String("uplink", "", "behind a carrier-grade NAT: our WAN address and prefix on the carrier's VXLAN, e.g. 100.64.0.2/24")
	upGW := fs.String("uplink-gateway", "", "behind a carrier-grade NAT: the upstream router's address on the carrier's VXLAN")
	upVNI := fs.Int("uplink-vni", 43, "VXLAN network identifier of the carrier's VXLAN")
	lan6 := fs.String("lan6", "", "IPv6: the router's address and prefix on the LAN (global, no NAT: a stateful firewall), e.g. 2a00:2:a::1/64")
	routes6 := fs.String("route6", "", "IPv6: PREFIX=VIA routes to add, comma-separated (the other LANs through their routers)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	m, err := ParseMode(*mode)
	if err != nil {
		return err
	}
	profile, err := ParseLinkProfile(*linkSpec)
	if err != nil {
		return fmt.Errorf("-link: %w", err)
	}
	_, wn, err := net.ParseCIDR(*wanNet)
	if err != nil {
		return fmt.Errorf("-wan-net: %w", err)
	}
	_, un, err := net.ParseCIDR(*underlayNet)
	if err != nil {
		return fmt.Errorf("-underlay-net: %w", err)
	}
	lanIP, lanNet, err := net.ParseCIDR(*lan)
	if err != nil {
		return fmt.Errorf("-lan: %w", err)
	}
	floodIPs, err := parseIPs(*flood)
	if err != nil {
		return fmt.Errorf("-flood: %w", err)
	}
	relayIPs, err := parseIPs(*relays)
	if err != nil {
		return fmt.Errorf("-relay: %w", err)
	}
	if err := checkForwarding(); err != nil {
		return err
	}
	if *upRouter != "" {
		// A double NAT: our WAN is a VXLAN to the carrier-grade NAT.
		rip, gw := net.ParseIP(*upRouter), net.ParseIP(*upGW)
		ip, n, err := net.ParseCIDR(*upLAN)
		if rip == nil || gw == nil || err != nil {
			return fmt.Errorf("-uplink-router, -uplink and -uplink-gateway: want two IPs and a CIDR (%q, %q, %q)", *upRouter, *upGW, *upLAN)
		}
		if err := setupPeerLAN(uplinkIfName, rip, ip, n, gw, *upVNI); err != nil {
			return fmt.Errorf("uplink: %w", err)
		}
	}
	wanIf, wanIP, err := interfaceIn(wn)
	if err != nil {
		return fmt.Errorf("wan: %w", err)
	}
	underIf, underIP, err := interfaceIn(un)
	if err != nil {
		return fmt.Errorf("underlay: %w", err)
	}
	if err := setupRouterLAN(underIf, underIP, lanIP, lanNet, *vni, floodIPs); err != nil {
		return err
	}
	rs, err := BuildRuleset(RuleConfig{Mode: m, WANIf: wanIf, LANIf: lanIfName, LANNet: lanNet, Relays: relayIPs, Link: !profile.Off()})
	if err != nil {
		return err
	}
	linkErr := make(chan error, 1)
	if !profile.Off() {
		// Bound before the rules queue anything to it.
		lem, err := openLinkEmulator(profile)
		if err != nil {
			return err
		}
		go func() { linkErr <- lem.run(ctx) }()
	}
	conn, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	if err := rs.Install(conn); err != nil {
		return err
	}
	var rs6 *Ruleset
	if *lan6 != "" {
		if rs6, err = setupRouter6(*lan6, *routes6, wanIf, !profile.Off()); err != nil {
			return err
		}
		if err := rs6.Install(conn); err != nil {
			return err
		}
	}
	v6 := ""
	if *lan6 != "" {
		v6 = " lan6=" + *lan6 + " (ipv6 firewall)"
	}
	fmt.Fprintf(stdout, "ready mode=%s link=%s wan=%s/%s lan=%s/%s%s\n", m, profile, wanIf, wanIP, lanIfName, *lan, v6)
	select {
	case <-ctx.Done():
	case err = <-linkErr:
	}
	conn.DelTable(rs.Table)
	if rs6 != nil {
		conn.DelTable(rs6.Table)
	}
	_ = conn.Flush()
	return err
}

func runPeer(args []string) error {
	fs := flag.NewFlagSet("peer", flag.ContinueOnError)
	router := fs.String("router", envOr("NATROUTER_ROUTER", ""), "the router's address on the shared Docker network [NATROUTER_ROUTER]")
	lan := fs.String("lan", envOr("NATROUTER_LAN", ""), "this peer's address and prefix on the VXLAN LAN [NATROUTER_LAN]")
	gw := fs.String("gateway", envOr("NATROUTER_GATEWAY", ""), "the router's VXLAN LAN address [NATROUTER_GATEWAY]")
	vni := fs.Int("vni", 42, "VXLAN network identifier")
	lan6 := fs.String("lan6", "", "this peer's IPv6 address and prefix on the LAN")
	gw6 := fs.String("gateway6", "", "the router's IPv6 LAN address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cmd := fs.Args()
	if len(cmd) == 0 {
		return errors.New("peer: no command to run after the flags (use -- /chat ...)")
	}
	routerIP := net.ParseIP(*router)
	gwIP := net.ParseIP(*gw)
	if routerIP == nil || gwIP == nil {
		return errors.New("peer: -router and -gateway must be IP addresses")
	}
	lanIP, lanNet, err := net.ParseCIDR(*lan)
	if err != nil {
		return fmt.Errorf("-lan: %w", err)
	}
	if err := setupPeerLAN(lanIfName, routerIP, lanIP, lanNet, gwIP, *vni); err != nil {
		return err
	}
	if *lan6 != "" {
		gw := net.ParseIP(*gw6)
		if gw == nil {
			return errors.New("peer: -lan6 needs -gateway6")
		}
		if err := setupPeerLAN6(*lan6, gw); err != nil {
			return err
		}
	}
	return syscall.Exec(cmd[0], cmd, os.Environ())
}

func parseIPs(s string) ([]net.IP, error) {
	var out []net.IP
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		ip := net.ParseIP(f)
		if ip == nil {
			return nil, fmt.Errorf("bad IP address %q", f)
		}
		out = append(out, ip)
	}
	return out, nil
}

func checkForwarding() error {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if err != nil {
		return fmt.Errorf("read ip_forward: %w", err)
	}
	if strings.TrimSpace(string(b)) != "1" {
		return errors.New("IPv4 forwarding is off: start the container with sysctl net.ipv4.ip_forward=1")
	}
	return nil
}

// interfaceIn finds the interface holding an IPv4 address inside n.
func interfaceIn(n *net.IPNet) (string, net.IP, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return "", nil, err
	}
	for _, ifc := range ifs {
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && n.Contains(ipn.IP) {
				return ifc.Name, ipn.IP.To4(), nil
			}
		}
	}
	return "", nil, fmt.Errorf("no interface with an address in %s", n)
}

// runRoute adds IPv6 routes, then execs the command (a daemon on the WAN
// that must reach the LANs behind the routers).
func runRoute(args []string) error {
	fs := flag.NewFlagSet("route", flag.ContinueOnError)
	routes6 := fs.String("route6", "", "PREFIX=VIA IPv6 routes, comma-separated")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cmd := fs.Args()
	if len(cmd) == 0 {
		return errors.New("route: no command to run after the flags (use -- /rendezvous ...)")
	}
	if err := addRoutes6(*routes6); err != nil {
		return err
	}
	return syscall.Exec(cmd[0], cmd, os.Environ())
}

// setupRouter6 turns on the router's IPv6 side: its LAN address, the routes
// to the other LANs, and the stateful firewall.
func setupRouter6(lan6, routes6, wanIf string, link bool) (*Ruleset, error) {
	b, err := os.ReadFile("/proc/sys/net/ipv6/conf/all/forwarding")
	if err != nil || strings.TrimSpace(string(b)) != "1" {
		return nil, errors.New("IPv6 forwarding is off: start the container with sysctl net.ipv6.conf.all.forwarding=1")
	}
	l, err := netlink.LinkByName(lanIfName)
	if err != nil {
		return nil, fmt.Errorf("find %s: %w", lanIfName, err)
	}
	if err := addAddr6(l, lan6); err != nil {
		return nil, err
	}
	if err := addRoutes6(routes6); err != nil {
		return nil, err
	}
	return BuildRuleset6(Rule6Config{WANIf: wanIf, LANIf: lanIfName, Link: link})
}
