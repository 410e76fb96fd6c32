//go:build e2e

package testbed

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// Addresses of the compose topologies (testbed/compose/*.yml).
const (
	publicDaemonIP  = "11.1.0.10"
	publicDaemon2IP = "11.1.0.11"
	natDaemonIP     = "11.2.0.10"
	routerAWAN      = "11.2.0.2"
	routerBWAN      = "11.2.0.3"
	v6DaemonIP      = "fd00:6::10"
)

// TestE2E runs every scenario in order and prints the results table.
func TestE2E(t *testing.T) {
	requireEnv(t)
	t.Cleanup(func() { printResults(os.Stdout) })

	t.Run("0-selfcheck-cone-tcp", func(t *testing.T) { testSelfCheck(t, "cone", "tcp") })
	t.Run("0-selfcheck-cone-quic", func(t *testing.T) { testSelfCheck(t, "cone", "quic") })
	t.Run("0-selfcheck-symmetric", func(t *testing.T) { testSelfCheck(t, "symmetric", "tcp") })
	t.Run("1-public", testPublic)
	for _, tr := range []string{"tcp", "quic"} {
		t.Run("2-cone-"+tr, func(t *testing.T) { testCone(t, tr) })
	}
	t.Run("3-symmetric", func(t *testing.T) { testRelayed(t, "symmetric") })
	t.Run("3b-relay-only", func(t *testing.T) { testRelayed(t, "relay-only") })
	t.Run("4-ipv6-only", testIPv6)
	t.Run("5-faults", testFaults)
	t.Run("6-two-daemons", testTwoDaemons)
}

func publicPeer(nick, ip string, rdv []string) peerSpec {
	return peerSpec{Nick: nick, Network: "wan", IP: ip, Rendezvous: rdv}
}

// testPublic: one daemon and three peers on one network register, look each
// other up by nick and chat both ways.
func testPublic(t *testing.T) {
	tp := newTopology(t, "public.yml")
	s := newScenario(t, tp, &result{Scenario: "1 public", Transport: "tcp+quic", NAT: "none"})
	tp.up("rendezvous")
	d := tp.waitDaemon("rendezvous", time.Time{})
	rdv := d.addrsWith("/ip4/" + publicDaemonIP + "/")

	alice := s.peer(publicPeer("alice", "11.1.0.21", rdv))
	bob := s.peer(publicPeer("bob", "11.1.0.22", rdv))
	carol := s.peer(publicPeer("carol", "11.1.0.23", rdv))
	for _, pair := range [][2]*peer{{alice, bob}, {bob, alice}, {bob, carol}, {carol, bob}, {carol, alice}, {alice, carol}} {
		s.exchange(pair[0], pair[1].spec.Nick)
	}
	e := alice.peerEntry("bob")
	if e == nil || e["conn"] != "direct" || !strings.Contains(fmt.Sprint(e["addr"]), "/ip4/11.1.0.22/") {
		s.fatalf("alice's view of bob: %v (want a direct connection to 11.1.0.22)", e)
	}
}

func natPeers(s *scenario, listen string, rdv []string) (*peer, *peer) {
	alice := s.peer(peerSpec{Nick: "alice", Network: "lan_a", IP: "10.2.1.10", Listen: listen, Rendezvous: rdv,
		Reachability: "private", NAT: &natSpec{Router: "10.2.1.2", LAN: "192.168.1.10/24", Gateway: "192.168.1.1"}})
	bob := s.peer(peerSpec{Nick: "bob", Network: "lan_b", IP: "10.2.2.10", Listen: listen, Rendezvous: rdv,
		Reachability: "private", NAT: &natSpec{Router: "10.2.2.2", LAN: "192.168.2.10/24", Gateway: "192.168.2.1"}})
	return alice, bob
}

func natTopology(t *testing.T, modeA, modeB string) (*topology, daemon) {
	tp := newTopology(t, "nat.yml", "NAT_MODE_A="+modeA, "NAT_MODE_B="+modeB)
	tp.up("rendezvous", "router_a", "router_b")
	tp.waitRouter("router_a")
	tp.waitRouter("router_b")
	return tp, tp.waitDaemon("rendezvous", time.Time{})
}

// transportAddrs keeps the daemon addresses of one transport.
func transportAddrs(addrs []string, transport string) []string {
	var out []string
	for _, a := range addrs {
		isQUIC := strings.Contains(a, "/quic-v1")
		if (transport == "quic") == isQUIC {
			out = append(out, a)
		}
	}
	return out
}

func isDirectTo(e map[string]any, ip, transport string) bool {
	addr := fmt.Sprint(e["addr"])
	return e["conn"] == "direct" && strings.Contains(addr, "/ip4/"+ip+"/") &&
		!strings.Contains(addr, "/p2p-circuit") && e["limited"] == false &&
		(transport == "" || e["transport"] == transport)
}

// testCone: both peers behind cone NATs meet through the relay and hole
// punching upgrades them to a direct connection; the chat then survives the
// daemon (and its relay) stopping.
func testCone(t *testing.T, transport string) {
	tp, d := natTopology(t, "cone", "cone")
	s := newScenario(t, tp, &result{Scenario: "2 cone NAT", Transport: transport, NAT: "cone/cone"})
	rdv := transportAddrs(d.addrsWith("/ip4/"+natDaemonIP+"/"), transport)
	listen := "/ip4/0.0.0.0/tcp/0"
	if transport == "quic" {
		listen = "/ip4/0.0.0.0/udp/0/quic-v1"
	}
	alice, bob := natPeers(s, listen, rdv)

	s.exchange(alice, "bob")

	// The tracer reports success on the side that ran the punch.
	var hp event
	hpMatch := func(e event) bool { return e.is("holepunch") && e.boolean("success") }
	ch := make(chan event, 2)
	for _, p := range []*peer{alice, bob} {
		go func(p *peer) {
			e, _ := p.tryWait(90*time.Second, 0, hpMatch)
			ch <- e
		}(p)
	}
	for range 2 {
		if e := <-ch; e != nil && hp == nil {
			hp = e
		}
	}
	failures := len(alice.all(func(e event) bool { return e.is("holepunch") && !e.boolean("success") })) +
		len(bob.all(func(e event) bool { return e.is("holepunch") && !e.boolean("success") }))
	if hp == nil {
		s.res.HPAttempts = fmt.Sprintf("%d failed", failures)
		s.fatal("no successful hole punch reported by either peer")
	}
	s.res.Direct = fmt.Sprintf("%.0f ms", hp.num("elapsed_ms"))
	s.res.HPAttempts = fmt.Sprintf("%.0f", hp.num("attempts"))

	// Each side sees a direct, unlimited connection to the other router's WAN address.
	alice.wait(60*time.Second, 0, func(e event) bool {
		return e.is("conn") && e.str("nick") == "bob" && isDirectTo(e, routerBWAN, transport)
	})
	if e := alice.peerEntry("bob"); e == nil || !isDirectTo(e, routerBWAN, transport) {
		s.fatalf("alice's /peers entry for bob: %v (want direct %s to %s, no circuit, not limited)", e, transport, routerBWAN)
	}
	s.exchange(bob, "alice")
	if e := bob.peerEntry("alice"); e == nil || !isDirectTo(e, routerAWAN, transport) {
		s.fatalf("bob's /peers entry for alice: %v (want direct %s to %s)", e, transport, routerAWAN)
	}

	// Without the daemon (and its relay) the conversation continues.
	tp.stop("rendezvous")
	for i := 0; i < 3; i++ {
		s.exchange(alice, "bob")
		s.exchange(bob, "alice")
	}
	if e := alice.peerEntry("bob"); e == nil || !isDirectTo(e, routerBWAN, transport) {
		s.fatalf("after the daemon stopped, alice's entry for bob: %v", e)
	}
	s.res.Note = "direct via router WAN IPs; chat continues with daemon stopped"
}

// testRelayed: behind symmetric (or relay-only) NATs hole punching fails and
// the chat runs over the relay, every message acknowledged.
func testRelayed(t *testing.T, mode string) {
	tp, d := natTopology(t, mode, mode)
	s := newScenario(t, tp, &result{Scenario: "3 " + mode + " NAT", Transport: "tcp+quic", NAT: mode + "/" + mode})
	rdv := d.addrsWith("/ip4/" + natDaemonIP + "/")
	alice, bob := natPeers(s, "", rdv)

	s.exchange(alice, "bob")
	s.exchange(bob, "alice")

	// Wait for the hole punch to be reported as failed by either peer.
	failed := func(e event) bool { return e.is("holepunch") && !e.boolean("success") }
	ch := make(chan event, 2)
	for _, p := range []*peer{alice, bob} {
		go func(p *peer) {
			e, _ := p.tryWait(120*time.Second, 0, failed)
			ch <- e
		}(p)
	}
	var hp event
	for range 2 {
		if e := <-ch; e != nil && hp == nil {
			hp = e
		}
	}
	succeeded := append(alice.all(func(e event) bool { return e.is("holepunch") && e.boolean("success") }),
		bob.all(func(e event) bool { return e.is("holepunch") && e.boolean("success") })...)
	if len(succeeded) > 0 {
		s.fatalf("hole punch succeeded through %s NATs: %v", mode, succeeded[0])
	}
	if hp == nil {
		s.fatal("no failed hole punch reported by either peer")
	}
	for i := 0; i < 3; i++ {
		s.exchange(alice, "bob")
		s.exchange(bob, "alice")
	}
	fails := append(alice.all(failed), bob.all(failed)...)
	maxAttempts := 0.0
	for _, e := range fails {
		maxAttempts = max(maxAttempts, e.num("attempts"))
	}
	s.res.HPAttempts = fmt.Sprintf("%.0f, all failed", maxAttempts)
	e := alice.peerEntry("bob")
	if e == nil || e["conn"] != "relayed" || !strings.Contains(fmt.Sprint(e["addr"]), "/p2p-circuit") {
		s.fatalf("alice's /peers entry for bob: %v (want a relayed connection)", e)
	}
	s.res.Note = fmt.Sprintf("relayed (limited=%v); hole punch failed: %s", e["limited"], hp.str("error"))
}

// testIPv6: registration, lookup and chat with only IPv6 addresses.
func testIPv6(t *testing.T) {
	tp := newTopology(t, "ipv6.yml")
	s := newScenario(t, tp, &result{Scenario: "4 IPv6 only", Transport: "tcp+quic", NAT: "none"})
	tp.up("rendezvous")
	d := tp.waitDaemon("rendezvous", time.Time{})
	rdv := d.addrsWith("/ip6/" + v6DaemonIP + "/")
	for _, a := range d.Addrs {
		if !strings.HasPrefix(a, "/ip6/") {
			s.fatalf("daemon listens on a non-IPv6 address %s", a)
		}
	}
	listen := "/ip6/::/tcp/0,/ip6/::/udp/0/quic-v1"
	alice := s.peer(peerSpec{Nick: "alice", Network: "v6", IP: "fd00:6::21", IPv6: true, Listen: listen, Rendezvous: rdv})
	bob := s.peer(peerSpec{Nick: "bob", Network: "v6", IP: "fd00:6::22", IPv6: true, Listen: listen, Rendezvous: rdv})
	s.exchange(alice, "bob")
	s.exchange(bob, "alice")
	e := alice.peerEntry("bob")
	if e == nil || e["conn"] != "direct" || e["ip"] != float64(6) || !strings.HasPrefix(fmt.Sprint(e["addr"]), "/ip6/fd00:6::22/") {
		s.fatalf("alice's /peers entry for bob: %v (want direct over IPv6)", e)
	}
	m := alice.mark()
	alice.command("/whois bob")
	w := alice.wait(60*time.Second, m, func(e event) bool { return e.is("whois") || e.is("error") })
	if w.is("error") {
		s.fatalf("/whois bob: %s", w.str("error"))
	}
	addrs, _ := w["addrs"].([]any)
	for _, a := range addrs {
		if !strings.HasPrefix(fmt.Sprint(a), "/ip6/") {
			s.fatalf("bob announced a non-IPv6 address %v", a)
		}
	}
	s.res.Note = "all addresses /ip6"
}

func waitPresence(p *peer, from int, nick string, online bool, timeout time.Duration) error {
	_, err := p.tryWait(timeout, from, func(e event) bool {
		return e.is("presence") && e.str("nick") == nick && e.boolean("online") == online
	})
	return err
}

// testFaults: a killed peer goes offline within 5 s and gets its pending
// messages exactly once after restarting; the daemon restarts and lookups
// work again; a cut network goes offline within 20 s and heals.
func testFaults(t *testing.T) {
	tp := newTopology(t, "public.yml")
	s := newScenario(t, tp, &result{Scenario: "5 faults", Transport: "tcp+quic", NAT: "none"})
	tp.up("rendezvous")
	d := tp.waitDaemon("rendezvous", time.Time{})
	rdv := d.addrsWith("/ip4/" + publicDaemonIP + "/")

	alice := s.peer(publicPeer("alice", "11.1.0.21", rdv))
	bob := s.peer(publicPeer("bob", "11.1.0.22", rdv))
	carol := s.peer(publicPeer("carol", "11.1.0.23", rdv))
	s.exchange(alice, "bob")
	s.exchange(carol, "bob")
	for _, p := range []*peer{alice, carol} {
		if err := waitPresence(p, 0, "bob", true, 30*time.Second); err != nil {
			s.fatal(err)
		}
	}

	// 1. Kill bob.
	marks := []int{alice.mark(), carol.mark()}
	bob.kill()
	killed := time.Now()
	for i, p := range []*peer{alice, carol} {
		if err := waitPresence(p, marks[i], "bob", false, 5*time.Second-time.Since(killed)); err != nil {
			s.fatalf("after kill: %v", err)
		}
	}
	offlineAfterKill := time.Since(killed)
	pending := []sentMsg{s.send(alice, "bob"), s.send(alice, "bob"), s.send(carol, "bob")}
	for _, m := range pending {
		if n := len(s.current(m.From).all(func(e event) bool { return e.is("delivered") && e.str("id") == m.ID })); n != 0 {
			s.fatalf("message %s to a dead peer reported delivered", m.ID)
		}
	}
	bob = s.peer(publicPeer("bob", "11.1.0.22", rdv))
	for _, m := range pending {
		s.awaitDelivery(m, 90*time.Second)
	}

	// 2. Restart the daemon; peers re-register by themselves.
	tp.stop("rendezvous")
	since := tp.start("rendezvous")
	d2 := tp.waitDaemon("rendezvous", since)
	if d2.ID != d.ID {
		s.fatalf("daemon identity changed across restart: %s -> %s", d.ID, d2.ID)
	}
	dave := s.peer(peerSpec{Nick: "dave", Network: "wan", IP: "11.1.0.24", Rendezvous: rdv, Room: "dave-room"})
	s.exchange(dave, "alice")
	s.exchange(dave, "bob")

	// 3. Cut bob's network, then heal it.
	marks = []int{alice.mark(), carol.mark()}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := docker(ctx, "network", "disconnect", "-f", tp.network("wan"), bob.container); err != nil {
		s.fatal(err)
	}
	cut := time.Now()
	for i, p := range []*peer{alice, carol} {
		if err := waitPresence(p, marks[i], "bob", false, 20*time.Second-time.Since(cut)); err != nil {
			s.fatalf("after network cut: %v", err)
		}
	}
	offlineAfterCut := time.Since(cut)
	pending = []sentMsg{s.send(alice, "bob"), s.send(carol, "bob")}
	if _, err := docker(ctx, "network", "connect", "--ip", "11.1.0.22", tp.network("wan"), bob.container); err != nil {
		s.fatal(err)
	}
	for _, m := range pending {
		s.awaitDelivery(m, 120*time.Second)
	}
	s.exchange(bob, "alice")
	s.res.Note = fmt.Sprintf("offline after kill %.1fs, after cut %.1fs", offlineAfterKill.Seconds(), offlineAfterCut.Seconds())
}

// testTwoDaemons: peers registered on two daemons; one stopped, lookups go
// through the other; both stopped, pinned contacts still talk.
func testTwoDaemons(t *testing.T) {
	tp := newTopology(t, "public.yml")
	s := newScenario(t, tp, &result{Scenario: "6 two daemons", Transport: "tcp+quic", NAT: "none"})
	tp.up("rendezvous")
	d1 := tp.waitDaemon("rendezvous", time.Time{})
	boot := transportAddrs(d1.addrsWith("/ip4/"+publicDaemonIP+"/"), "tcp")
	tp.env = append(tp.env, "RENDEZVOUS2_BOOTSTRAP="+strings.Join(boot, ","))
	tp.up("rendezvous2")
	d2 := tp.waitDaemon("rendezvous2", time.Time{})
	rdv := append(d1.addrsWith("/ip4/"+publicDaemonIP+"/"), d2.addrsWith("/ip4/"+publicDaemon2IP+"/")...)

	// Separate rooms, so nobody learns the others from room membership.
	spec := func(nick, ip string) peerSpec {
		p := publicPeer(nick, ip, rdv)
		p.Room = "room-" + nick
		return p
	}
	alice := s.peer(spec("alice", "11.1.0.21"))
	s.peer(spec("bob", "11.1.0.22"))
	carol := s.peer(spec("carol", "11.1.0.23"))
	s.peer(spec("dave", "11.1.0.24"))

	tp.stop("rendezvous")
	s.exchange(alice, "bob")
	s.exchange(carol, "dave") // carol and dave pin each other through the 2nd daemon

	// With every daemon gone, pinned contacts still talk; an unknown nick
	// is no longer resolved through the DHT (it would make an unverified
	// claim trusted), so this is the case that must keep working.
	tp.stop("rendezvous2")
	s.exchange(carol, "dave")
	s.exchange(s.current("dave"), "carol")
	s.res.Note = "lookups via 2nd daemon; pinned contacts with no daemon"
}
