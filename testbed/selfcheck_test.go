//go:build e2e

package testbed

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// selfCheckResult is what the plain go-libp2p hosts achieved.
type selfCheckResult struct {
	Direct   bool
	Addr     string
	Elapsed  time.Duration // relayed connection to direct connection
	Attempts int           // highest DCUtR attempt number reported
	Fails    []event       // failed hole punches
	Success  []event       // successful hole punches
}

// selfCheckIPs are where the self-check's hosts sit, so that they can share a
// topology with the chat peers (which use .10 on every network).
const (
	selfRelayIP = "11.2.0.9"
	selfAWAN    = "11.2.0.31" // hpa when alice's side is public
)

// runSelfCheck runs plain go-libp2p hosts (testbed/hpcheck, no chat code)
// through the topology's routers: a relay, hpb behind router B, hpa behind
// router A (or public on the WAN), hpa dialling hpb through the relay and
// waiting for a direct connection. The containers are removed at the end.
func runSelfCheck(s *scenario, tp *topology, p pair, transport string) selfCheckResult {
	s.t.Helper()
	relayIP, relayListen, relayPrefix := selfRelayIP, "", "/ip4/"+selfRelayIP+"/"
	listen := listenFor(transport)
	natA := &natSpec{Router: "10.2.1.2", LAN: "192.168.1.11/24", Gateway: "192.168.1.1"}
	natB := &natSpec{Router: "10.2.2.2", LAN: "192.168.2.11/24", Gateway: "192.168.2.1"}
	if p.v6() {
		relayIP += "," + v6SelfRelay
		relayListen = "/ip4/0.0.0.0/tcp/4001,/ip4/0.0.0.0/udp/4001/quic-v1,/ip6/::/tcp/4001,/ip6/::/udp/4001/quic-v1"
		natA.LAN6, natA.Gateway6 = "2a00:2:a::11/64", "2a00:2:a::1"
		natB.LAN6, natB.Gateway6 = "2a00:2:b::11/64", "2a00:2:b::1"
		v6listen := strings.ReplaceAll(listen, "/ip4/0.0.0.0/", "/ip6/::/")
		if p.A == v6Firewall {
			relayPrefix, listen = "/ip6/"+v6SelfRelay+"/", v6listen
		} else {
			listen += "," + v6listen
		}
	}
	relayArgv := []string{"/hpcheck", "relay"}
	if relayListen != "" {
		// On the IPv6 WAN the relay reaches the LANs through their routers.
		relayArgv = append([]string{"/natrouter", "route", "-route6", v6LANRoutes, "--"}, append(relayArgv, "-listen", relayListen)...)
	}
	relay := tp.startProc("hprelay", "wan", relayIP, nil, relayArgv...)
	defer relay.kill()
	ready := relay.wait(60*time.Second, 0, func(e event) bool { return e.is("ready") })
	var raddr string
	addrs, _ := ready["addrs"].([]any)
	for _, a := range addrs {
		as := fmt.Sprint(a)
		if strings.HasPrefix(as, relayPrefix) && strings.Contains(as, "/quic-v1") == (transport == "quic") {
			raddr = as
		}
	}
	if raddr == "" {
		s.fatalf("relay has no %s address %s...: %v", transport, relayPrefix, addrs)
	}
	b := tp.startProc("hpb", "lan_b", "10.2.2.11", natB, "/hpcheck", "node", "-listen", listen, "-relay", raddr)
	defer b.kill()
	bID := b.wait(60*time.Second, 0, func(e event) bool { return e.is("ready") }).str("peer")
	argv := []string{"/hpcheck", "node", "-listen", listen, "-relay", raddr, "-dial", bID, "-timeout", "30s"}
	var a *peer
	if p.A == "public" {
		a = tp.startProc("hpa", "wan", selfAWAN, nil, argv...)
	} else {
		a = tp.startProc("hpa", "lan_a", "10.2.1.11", natA, argv...)
	}
	defer a.kill()
	var end event
	if p.direct() {
		end = a.wait(90*time.Second, 0, func(e event) bool { return e.is("direct") || e.is("timeout") })
	} else {
		// Where no punch can work, the first attempt's end decides: hpb,
		// the initiator, reports it after DCUtR's dial timeout (10 s), and
		// the next two attempts would add 20 s more of the same.
		b.wait(90*time.Second, 0, func(e event) bool { return e.is("holepunch") || e.is("directdial") })
		end, _ = a.tryWait(0, 0, func(e event) bool { return e.is("direct") })
	}
	var r selfCheckResult
	if end.is("direct") {
		r.Direct, r.Addr = true, end.str("addr")
		if c := a.all(func(e event) bool { return e.is("conn") }); len(c) > 0 {
			r.Elapsed = end.at().Sub(c[0].at())
		}
		// The side whose dial won reports the punch (hpa as the QUIC
		// client, either side over TCP), hpb's trace may follow the
		// connection by a moment; hpb's own end (a success, or its server
		// side given up once hpa's dial won) or a reversal ends the wait.
		if len(a.all(func(e event) bool { return e.is("holepunch") && e.boolean("success") })) == 0 {
			_, _ = b.tryWait(15*time.Second, 0, func(e event) bool { return e.is("holepunch") || e.is("directdial") })
		}
		if end.boolean("limited") {
			r.Direct = false
		}
	}
	for _, p := range []*peer{a, b} {
		for _, e := range p.all(func(e event) bool { return e.is("attempt") }) {
			r.Attempts = max(r.Attempts, int(e.num("attempt")))
		}
		r.Fails = append(r.Fails, p.all(func(e event) bool { return e.is("holepunch") && !e.boolean("success") })...)
		r.Success = append(r.Success, p.all(func(e event) bool { return e.is("holepunch") && e.boolean("success") })...)
	}
	return r
}

// testSelfCheck checks the NAT topology itself with plain go-libp2p hosts:
// through punchable routers the relayed connection is hole-punched into a
// direct one to the other router's WAN address; through symmetric routers
// every punch fails.
func testSelfCheck(t *testing.T, mode, transport string) {
	tp := newTopology(t, "nat.yml", "NAT_MODE_A="+mode, "NAT_MODE_B="+mode)
	s := newScenario(t, tp, &result{Scenario: "0 self-check (plain libp2p)", Transport: transport, NAT: mode + "/" + mode})
	tp.up("router_a", "router_b")
	tp.waitRouter("router_a")
	tp.waitRouter("router_b")
	r := runSelfCheck(s, tp, pair{A: mode, B: mode, Transport: transport}, transport)
	if punchable(mode) {
		if !r.Direct {
			s.fatalf("no direct connection through %s NATs", mode)
		}
		if !strings.HasPrefix(r.Addr, "/ip4/"+routerBWAN+"/") || strings.Contains(r.Addr, "/quic-v1") != (transport == "quic") {
			s.fatalf("direct connection %s: want %s to %s", r.Addr, transport, routerBWAN)
		}
		if len(r.Success) == 0 {
			s.fatalf("direct connection without a successful hole punch")
		}
		s.res.Direct = fmt.Sprintf("%d ms", r.Elapsed.Milliseconds())
		s.res.HPAttempts = fmt.Sprint(r.Attempts)
		s.res.Note = "direct to " + r.Addr
		return
	}
	if r.Direct {
		s.fatalf("direct connection through %s NATs: %s", mode, r.Addr)
	}
	if len(r.Success) > 0 {
		s.fatalf("a hole punch succeeded through %s NATs", mode)
	}
	if len(r.Fails) == 0 {
		s.fatalf("no hole punch attempted through %s NATs", mode)
	}
	s.res.HPAttempts = fmt.Sprintf("%d, all failed", len(r.Fails))
	s.res.Note = "stays relayed: " + r.Fails[0].str("error")
}

// punchable reports whether hole punching can work with both routers in mode.
func punchable(mode string) bool { return mode == "full-cone" || mode == "port-restricted" }
