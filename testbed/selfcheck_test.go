//go:build e2e

package testbed

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// testSelfCheck checks the NAT topology itself with plain go-libp2p hosts
// (testbed/hpcheck, no chat code): through cone routers a relayed
// connection is hole-punched into a direct one to the other router's WAN
// address; through symmetric routers every punch fails.
func testSelfCheck(t *testing.T, mode, transport string) {
	tp := newTopology(t, "nat.yml", "NAT_MODE_A="+mode, "NAT_MODE_B="+mode)
	s := newScenario(t, tp, &result{Scenario: "0 self-check (plain libp2p)", Transport: transport, NAT: mode + "/" + mode})
	tp.up("router_a", "router_b")
	tp.waitRouter("router_a")
	tp.waitRouter("router_b")

	relay := tp.startProc("hprelay", "wan", natDaemonIP, nil, "/hpcheck", "relay")
	ready := relay.wait(60*time.Second, 0, func(e event) bool { return e.is("ready") })
	var raddr string
	addrs, _ := ready["addrs"].([]any)
	for _, a := range addrs {
		as := fmt.Sprint(a)
		if strings.HasPrefix(as, "/ip4/"+natDaemonIP+"/") && strings.Contains(as, "/quic-v1") == (transport == "quic") {
			raddr = as
		}
	}
	if raddr == "" {
		s.fatalf("relay has no %s address on %s: %v", transport, natDaemonIP, addrs)
	}
	listen := "/ip4/0.0.0.0/tcp/0"
	if transport == "quic" {
		listen = "/ip4/0.0.0.0/udp/0/quic-v1"
	}
	b := tp.startProc("hpb", "lan_b", "10.2.2.10", &natSpec{Router: "10.2.2.2", LAN: "192.168.2.10/24", Gateway: "192.168.2.1"},
		"/hpcheck", "node", "-listen", listen, "-relay", raddr)
	bID := b.wait(60*time.Second, 0, func(e event) bool { return e.is("ready") }).str("peer")
	a := tp.startProc("hpa", "lan_a", "10.2.1.10", &natSpec{Router: "10.2.1.2", LAN: "192.168.1.10/24", Gateway: "192.168.1.1"},
		"/hpcheck", "node", "-listen", listen, "-relay", raddr, "-dial", bID, "-timeout", "30s")
	end := a.wait(90*time.Second, 0, func(e event) bool { return e.is("direct") || e.is("timeout") })

	hp := func(success bool) []event {
		m := func(e event) bool { return e.is("holepunch") && e.boolean("success") == success }
		return append(a.all(m), b.all(m)...)
	}
	switch mode {
	case "cone":
		if !end.is("direct") {
			s.fatalf("no direct connection through cone NATs")
		}
		addr := end.str("addr")
		if !strings.HasPrefix(addr, "/ip4/"+routerBWAN+"/") || strings.Contains(addr, "/quic-v1") != (transport == "quic") || end.boolean("limited") {
			s.fatalf("direct connection %s (limited %v): want %s to %s", addr, end.boolean("limited"), transport, routerBWAN)
		}
		// The initiator (b, dialed through the relay) reports the punch;
		// its trace may follow the connection by a moment.
		_, _ = b.tryWait(15*time.Second, 0, func(e event) bool { return e.is("holepunch") && e.boolean("success") })
		ok := hp(true)
		if len(ok) == 0 {
			s.fatalf("direct connection without a successful hole punch")
		}
		s.res.Direct = fmt.Sprintf("%.0f ms", ok[0].num("elapsed_ms"))
		attempts := 0.0
		for _, e := range append(a.all(func(e event) bool { return e.is("attempt") }), b.all(func(e event) bool { return e.is("attempt") })...) {
			attempts = max(attempts, e.num("attempt"))
		}
		s.res.HPAttempts = fmt.Sprintf("%.0f", attempts)
		s.res.Note = "direct to " + addr
	default:
		if end.is("direct") {
			s.fatalf("direct connection through %s NATs: %s", mode, end.str("addr"))
		}
		if len(hp(true)) > 0 {
			s.fatalf("a hole punch succeeded through %s NATs", mode)
		}
		fails := hp(false)
		if len(fails) == 0 {
			s.fatalf("no hole punch attempted through %s NATs", mode)
		}
		s.res.HPAttempts = fmt.Sprintf("%d, all failed", len(fails))
		s.res.Note = "stays relayed: " + fails[0].str("error")
		if len(s.res.Note) > 110 {
			s.res.Note = s.res.Note[:110] + "..."
		}
	}
}
