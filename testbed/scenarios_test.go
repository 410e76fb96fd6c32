//go:build e2e

package testbed

import (
	"context"
	"fmt"
	"os"
	"slices"
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

	t.Run("0-selfcheck-port-restricted-tcp", func(t *testing.T) { testSelfCheck(t, "port-restricted", "tcp") })
	t.Run("0-selfcheck-port-restricted-quic", func(t *testing.T) { testSelfCheck(t, "port-restricted", "quic") })
	t.Run("0-selfcheck-symmetric", func(t *testing.T) { testSelfCheck(t, "symmetric", "tcp") })
	t.Run("1-public", testPublic)
	for _, p := range append(slices.Clone(punchPairs), relayPairs...) {
		t.Run(strings.NewReplacer("/", "-", " ", "-", "+", "-").Replace(pairLabel(p)+"-"+p.String()), func(t *testing.T) { testPair(t, pairLabel(p), p) })
	}
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

// isDirectTo: a direct, unlimited connection to ip (IPv4, or IPv6 if it
// has a colon) on transport ("" for any).
func isDirectTo(e map[string]any, ip, transport string) bool {
	addr := fmt.Sprint(e["addr"])
	proto := "/ip4/"
	if strings.Contains(ip, ":") {
		proto = "/ip6/"
	}
	return e["conn"] == "direct" && strings.Contains(addr, proto+ip+"/") &&
		!strings.Contains(addr, "/p2p-circuit") && e["limited"] == false &&
		(transport == "" || e["transport"] == transport)
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
