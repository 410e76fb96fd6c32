//go:build e2e

package testbed

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// pair is one NAT scenario: alice's side (a router mode, or "public": alice
// on the WAN itself) and bob's router mode, with one transport ("tcp",
// "quic", or "" for both) and the WAN link profile of both routers.
type pair struct {
	A, B      string
	Transport string
	Link      string // natrouter -link; "" is the default (internet)
}

func (p pair) nat() string {
	switch p.A {
	case doubleNAT:
		return "port-restricted behind CGN/" + p.B
	case dualStack:
		return "v4 symmetric + v6 firewall (both)"
	}
	return p.A + "/" + p.B
}

func (p pair) transportName() string {
	if p.Transport == "" {
		return "tcp+quic"
	}
	return p.Transport
}

// direct reports whether the pair must end up direct (and how: punch or reversal).
func (p pair) direct() bool {
	return p.A == "public" || p.v6() || ((punchable(p.A) || p.A == doubleNAT) && punchable(p.B))
}

// doubleNAT as alice's side: a port-restricted home router behind a
// port-restricted carrier-grade NAT (compose/nat-double.yml).
const doubleNAT = "double"

// IPv6 sides (compose/nat-v6.yml): the routers' IPv4 side is symmetric,
// their IPv6 side a stateful firewall without NAT. v6Firewall peers listen
// on IPv6 only; dualStack peers on both, and must end up direct over IPv6.
const (
	v6Firewall = "ipv6-firewall"
	dualStack  = "dual-stack"
)

func (p pair) v6() bool { return p.A == v6Firewall || p.A == dualStack }

// aliceWAN is the address bob sees alice's connections come from.
func (p pair) aliceWAN() string {
	switch {
	case p.A == "public":
		return alicePublicIP
	case p.A == doubleNAT:
		return cgnWAN
	case p.v6():
		return "2a00:2:a::10"
	}
	return routerAWAN
}

// bobWAN is the address alice sees bob's connections come from.
func (p pair) bobWAN() string {
	if p.v6() {
		return "2a00:2:b::10"
	}
	return routerBWAN
}

const (
	v6LANRoutes  = "2a00:2:a::/64=2a00:2::2,2a00:2:b::/64=2a00:2::3" // as the daemon's in nat-v6.yml
	cgnWAN       = "11.2.0.4"
	v6DaemonWAN  = "2a00:2::10"
	v6SelfRelay  = "2a00:2::9"
	v6RouterMode = "symmetric" // IPv4 side of the IPv6 routers
)

func (p pair) String() string { return p.A + "/" + p.B + "/" + p.transportName() }

// natRouters are the router services of p's topology.
func (p pair) routers() []string {
	if p.A == doubleNAT {
		return []string{"router_a", "router_b", "cgn"}
	}
	return []string{"router_a", "router_b"}
}

// natTopology brings up the daemon and the routers of p.
func natTopology(t *testing.T, p pair) (*topology, daemon) {
	modeA, file := p.A, "nat.yml"
	switch p.A {
	case "public":
		modeA = "port-restricted" // router A is idle
	case doubleNAT:
		modeA, file = "port-restricted", "nat-double.yml"
	}
	modeB := p.B
	if p.v6() {
		modeA, modeB, file = v6RouterMode, v6RouterMode, "nat-v6.yml"
	}
	env := []string{"NAT_MODE_A=" + modeA, "NAT_MODE_B=" + modeB}
	if p.Link != "" {
		env = append(env, "LINK_A="+p.Link, "LINK_B="+p.Link)
	}
	tp := newTopology(t, file, env...)
	tp.up(append([]string{"rendezvous"}, p.routers()...)...)
	for _, r := range p.routers() {
		tp.waitRouter(r)
	}
	return tp, tp.waitDaemon("rendezvous", time.Time{})
}

func listenFor(transport string) string {
	switch transport {
	case "tcp":
		return "/ip4/0.0.0.0/tcp/0"
	case "quic":
		return "/ip4/0.0.0.0/udp/0/quic-v1"
	}
	return ""
}

// natPeers starts alice (behind router A, or public on the WAN) and bob
// (behind router B), knowing only the daemon's addresses of p's transport.
func natPeers(s *scenario, p pair, d daemon) (*peer, *peer) {
	rdv := d.addrsWith("/ip4/" + natDaemonIP + "/")
	listen := listenFor(p.Transport)
	switch p.A {
	case v6Firewall:
		rdv = d.addrsWith("/ip6/" + v6DaemonWAN + "/")
		listen = strings.ReplaceAll(listen, "/ip4/0.0.0.0/", "/ip6/::/")
	case dualStack:
		rdv = append(rdv, d.addrsWith("/ip6/"+v6DaemonWAN+"/")...)
		listen += "," + strings.ReplaceAll(listen, "/ip4/0.0.0.0/", "/ip6/::/")
	}
	if p.Transport != "" {
		rdv = transportAddrs(rdv, p.Transport)
	}
	natA := &natSpec{Router: "10.2.1.2", LAN: "192.168.1.10/24", Gateway: "192.168.1.1"}
	natB := &natSpec{Router: "10.2.2.2", LAN: "192.168.2.10/24", Gateway: "192.168.2.1"}
	if p.v6() {
		natA.LAN6, natA.Gateway6 = "2a00:2:a::10/64", "2a00:2:a::1"
		natB.LAN6, natB.Gateway6 = "2a00:2:b::10/64", "2a00:2:b::1"
	}
	aspec := peerSpec{Nick: "alice", Network: "lan_a", IP: "10.2.1.10", Listen: listen, Rendezvous: rdv,
		Reachability: "private", NAT: natA}
	if p.A == "public" {
		aspec = peerSpec{Nick: "alice", Network: "wan", IP: alicePublicIP, Listen: listen, Rendezvous: rdv}
	}
	ps := s.peersAtOnce(aspec, peerSpec{Nick: "bob", Network: "lan_b", IP: "10.2.2.10", Listen: listen, Rendezvous: rdv,
		Reachability: "private", NAT: natB})
	return ps[0], ps[1]
}

// alicePublicIP is alice's address when she is on the WAN (no NAT).
const alicePublicIP = "11.2.0.21"

// chatResult is what the chat achieved in one run of a pair.
type chatResult struct {
	Direct   bool
	Elapsed  time.Duration // first relayed conn event to the first direct one (alice's view)
	Attempts int           // DCUtR attempts over every reported punch
	// MaxAttempt is the highest attempt number a punch reported (as the
	// self-check counts); BrokeOff the punches that ended before any dial
	// (protocol errors: a reset stream, a peer not ready).
	MaxAttempt, BrokeOff int
}

// runChat runs the chat over p in tp: alice writes to bob (so they meet
// through the relay), then, for a direct pair, both must see a direct,
// unlimited connection to the other's WAN address on the chosen transport
// and the chat must go on with the daemon stopped; for a relayed pair every
// punch must fail, the chat stays on the relay and every message arrives
// once, and /peers says why there is no direct connection.
func runChat(s *scenario, tp *topology, d daemon, p pair) chatResult {
	s.t.Helper()
	alice, bob := natPeers(s, p, d)
	if p.Transport == "tcp" && p.A != "public" {
		probeFilter(s, tp, p, bob)
	}
	s.exchange(alice, "bob")
	var r chatResult
	if !p.direct() {
		runRelayed(s, alice, bob, &r)
		return r
	}
	aliceWAN := p.aliceWAN()
	isDirect := func(e event) bool {
		return e.is("conn") && isDirectTo(e, p.bobWAN(), p.Transport)
	}
	de := alice.wait(90*time.Second, 0, func(e event) bool { return isDirect(e) && e.str("nick") == "bob" })
	// From the first relayed connection, as the self-check measures from
	// its relayed connection: alice's earlier "conn none" (bob online,
	// nothing dialled yet) would add the relay dial to the chat's time.
	first := alice.all(func(e event) bool { return e.is("conn") && e.str("nick") == "bob" && e.str("conn") == "relayed" })
	if len(first) == 0 && p.A == "public" {
		// Bob may reach public alice before her dial through the relay.
		first = alice.all(func(e event) bool { return e.is("conn") && e.str("nick") == "bob" })
	}
	if len(first) == 0 {
		s.fatalf("alice went direct to bob without a relayed connection first")
	}
	r.Elapsed = de.at().Sub(first[0].at())
	r.Direct = true
	if p.A != "public" {
		// The side that ran the punch reports it; its trace may follow
		// the connection by a moment.
		ch := make(chan struct{}, 2)
		for _, q := range []*peer{alice, bob} {
			go func(q *peer) {
				_, _ = q.tryWait(30*time.Second, 0, func(e event) bool { return e.is("holepunch") && e.boolean("success") })
				ch <- struct{}{}
			}(q)
		}
		<-ch
	}
	hps := append(alice.all(func(e event) bool { return e.is("holepunch") }), bob.all(func(e event) bool { return e.is("holepunch") })...)
	var ok event
	for _, e := range hps {
		r.Attempts += int(e.num("attempts"))
		r.MaxAttempt = max(r.MaxAttempt, int(e.num("attempts")))
		if strings.HasPrefix(e.str("error"), "protocol: ") {
			r.BrokeOff++
		}
		if e.boolean("success") && ok == nil {
			ok = e
		}
	}
	if p.A == "public" {
		// Connection reversal: bob, who got the relayed connection, dials
		// alice's public address; nothing is punched.
		if r.Attempts != 0 {
			s.fatalf("a public peer was reached with %d hole-punch attempts (want connection reversal, no punch)", r.Attempts)
		}
		s.res.HPAttempts = "0 (reversal)"
	} else {
		if ok == nil {
			s.fatalf("direct connection but no successful hole punch reported (%d events)", len(hps))
		}
		s.res.HPAttempts = strconv.Itoa(r.Attempts)
	}
	s.res.Direct = fmt.Sprintf("%d ms", r.Elapsed.Milliseconds())

	if e := alice.peerEntry("bob"); e == nil || !isDirectTo(e, p.bobWAN(), p.Transport) {
		s.fatalf("alice's /peers entry for bob: %v (want direct %s to %s, no circuit, not limited)", e, p.transportName(), p.bobWAN())
	}
	s.exchange(bob, "alice")
	if e := bob.peerEntry("alice"); e == nil || !isDirectTo(e, aliceWAN, p.Transport) {
		s.fatalf("bob's /peers entry for alice: %v (want direct %s to %s)", e, p.transportName(), aliceWAN)
	}
	// Without the daemon (and its relay) the conversation continues.
	tp.stop("rendezvous")
	for range 2 {
		s.exchange(alice, "bob")
		s.exchange(bob, "alice")
	}
	if e := alice.peerEntry("bob"); e == nil || !isDirectTo(e, p.bobWAN(), p.Transport) {
		s.fatalf("after the daemon stopped, alice's entry for bob: %v", e)
	}
	s.res.Note = "direct via " + aliceWAN + " / " + p.bobWAN() + "; chat continues with daemon stopped"
	return r
}

// runRelayed: every punch fails, messages flow over the relay, /peers shows
// the relay and the reason of the failed punch.
func runRelayed(s *scenario, alice, bob *peer, r *chatResult) {
	s.t.Helper()
	s.exchange(bob, "alice")
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
		s.fatalf("hole punch succeeded: %v", succeeded[0])
	}
	if hp == nil {
		s.fatal("no failed hole punch reported by either peer")
	}
	for range 3 {
		s.exchange(alice, "bob")
		s.exchange(bob, "alice")
	}
	maxAttempts := 0
	for _, e := range append(alice.all(failed), bob.all(failed)...) {
		maxAttempts = max(maxAttempts, int(e.num("attempts")))
		r.Attempts += int(e.num("attempts"))
	}
	s.res.HPAttempts = fmt.Sprintf("%d, all failed", maxAttempts)
	var reasons []string
	for _, v := range []struct {
		p    *peer
		nick string
	}{{alice, "bob"}, {bob, "alice"}} {
		e := relayedEntry(v.p, v.nick)
		if e == nil || e["conn"] != "relayed" || !strings.Contains(fmt.Sprint(e["addr"]), "/p2p-circuit") {
			s.fatalf("%s's /peers entry for %s: %v (want a relayed connection)", v.p.spec.Nick, v.nick, e)
		}
		if why, _ := e["punch"].(string); why != "" {
			reasons = append(reasons, v.p.spec.Nick+": "+why)
		}
	}
	if len(reasons) == 0 {
		s.fatalf("neither peer's /peers entry says why the punch failed")
	}
	s.res.Note = "relayed; /peers: " + strings.Join(reasons, "; ")
}

// testPair is one CI scenario: the pair once, with the default link.
func testPair(t *testing.T, label string, p pair) {
	tp, d := natTopology(t, p)
	s := newScenario(t, tp, &result{Scenario: label, Transport: p.transportName(), NAT: p.nat()})
	runChat(s, tp, d, p)
}

// Scenario lists: punchable pairs per transport, the mixed pair, connection
// reversal, and the relayed ones.
var (
	punchPairs = []pair{
		{A: "full-cone", B: "full-cone", Transport: "tcp"},
		{A: "full-cone", B: "full-cone", Transport: "quic"},
		{A: "port-restricted", B: "port-restricted", Transport: "tcp"},
		{A: "port-restricted", B: "port-restricted", Transport: "quic"},
		{A: "full-cone", B: "port-restricted", Transport: "tcp"},
		{A: "full-cone", B: "port-restricted", Transport: "quic"},
		{A: doubleNAT, B: "port-restricted", Transport: "tcp"},
		{A: doubleNAT, B: "port-restricted", Transport: "quic"},
		{A: v6Firewall, B: v6Firewall, Transport: "tcp"},
		{A: v6Firewall, B: v6Firewall, Transport: "quic"},
		{A: dualStack, B: dualStack},
		{A: "public", B: "port-restricted", Transport: "tcp"},
		{A: "public", B: "port-restricted", Transport: "quic"},
	}
	relayPairs = []pair{
		{A: "symmetric", B: "symmetric"},
		{A: "port-restricted", B: "symmetric"},
		{A: "relay-only", B: "relay-only"},
	}
)

func pairLabel(p pair) string {
	switch {
	case p.A == "public":
		return "2r reversal"
	case p.A == doubleNAT:
		return "2d double NAT"
	case p.A == v6Firewall:
		return "2v IPv6 firewall"
	case p.A == dualStack:
		return "2v dual stack"
	case p.direct():
		return "2 punch"
	}
	return "3 relayed"
}

// TestMatrix is the success-rate matrix: with TESTBED_MATRIX=N every pair
// runs N times (the target is N=20). Each row brings its topology
// (networks, routers) up once; every repetition starts from a clean state:
// a new daemon (new identity, no registrations, leases or reservations),
// routers that have forgotten every NAT mapping and tracked flow (natrouter
// flush, which must leave nothing), and new peers with new identities. In
// each repetition the plain go-libp2p self-check and the chat run at the
// same time through the same routers (they use their own addresses and
// relays), so both meet the same load. It prints successes/N for both side
// by side, p50 and p95 of the time from the relayed to the direct
// connection, and the punch attempts per success. TESTBED_MATRIX_ROWS (a
// substring of the row name, e.g. "tcp") limits the rows; TESTBED_LINK
// sets the link profile.
func TestMatrix(t *testing.T) {
	nStr := os.Getenv("TESTBED_MATRIX")
	if nStr == "" {
		t.Skip("set TESTBED_MATRIX=N to run the success-rate matrix (N runs of every scenario)")
	}
	n, err := strconv.Atoi(nStr)
	if err != nil || n < 1 {
		t.Fatalf("TESTBED_MATRIX=%q: want a positive number of runs", nStr)
	}
	requireEnv(t)
	var rows []*matrixRow
	start := time.Now()
	t.Cleanup(func() {
		printMatrix(os.Stdout, n, rows)
		fmt.Printf("matrix: %d rows x %d runs in %s\n", len(rows), n, time.Since(start).Round(time.Second))
	})
	for _, p := range append(slices.Clone(punchPairs), relayPairs...) {
		if f := os.Getenv("TESTBED_MATRIX_ROWS"); f != "" && !strings.Contains(p.String(), f) {
			continue
		}
		p.Link = os.Getenv("TESTBED_LINK")
		row := &matrixRow{Pair: p}
		rows = append(rows, row)
		t.Run(strings.ReplaceAll(p.String(), "/", "-"), func(t *testing.T) {
			rowStart := time.Now()
			tp, _ := natTopology(t, p)
			for i := range n {
				t.Run(strconv.Itoa(i+1), func(t *testing.T) { matrixRun(t, tp, p, row, i+1) })
			}
			t.Logf("row %s: %d runs in %s", p, n, time.Since(rowStart).Round(time.Second))
		})
		// Each row as it completes, so a cut-short run keeps what it measured.
		printMatrix(os.Stdout, n, []*matrixRow{row})
	}
}

// matrixRun is one repetition of a row in its standing topology: a fresh
// daemon, flushed routers, then the self-check and the chat side by side.
func matrixRun(t *testing.T, tp *topology, p pair, row *matrixRow, i int) {
	tag := fmt.Sprintf("r%02d_", i)
	rtp := tp.with(t, tag)
	d := rtp.freshDaemon("rendezvous", "rdv")
	flushed := rtp.flushRouters(p.routers())
	row.start()
	row.flushed(flushed)
	t.Run("self-check", func(t *testing.T) {
		t.Parallel()
		stp := tp.with(t, tag)
		s := newScenario(t, stp, &result{Scenario: "0 self-check (plain libp2p)", Transport: p.transportName(), NAT: p.nat()})
		row.addSelf(p, runSelfCheckRow(s, stp, p))
	})
	t.Run("chat", func(t *testing.T) {
		t.Parallel()
		ctp := tp.with(t, tag)
		s := newScenario(t, ctp, &result{Scenario: pairLabel(p), Transport: p.transportName(), NAT: p.nat()})
		c := runChat(s, ctp, d, p)
		if delivered, dup := s.account(); delivered == len(s.sent) && dup == 0 {
			row.addChat(p, c)
		}
	})
}

// runSelfCheckRow is the self-check of p's routers, on one transport (TCP
// for the rows that use both).
func runSelfCheckRow(s *scenario, tp *topology, p pair) selfCheckResult {
	tr := p.Transport
	if tr == "" {
		tr = "tcp"
	}
	return runSelfCheck(s, tp, p, tr)
}

// probeFilter proves router B's filtering in the kernel: once bob is up (and
// has talked to the daemon from his listen port), a host on the WAN that bob
// never contacted connects to bob's public TCP address. A full cone lets it
// in (endpoint-independent filtering); a port-restricted cone, a symmetric
// NAT and the IPv6 firewall drop it, so that a direct connection there can
// only come from a punch.
func probeFilter(s *scenario, tp *topology, p pair, bob *peer) {
	s.t.Helper()
	ready := bob.all(func(e event) bool { return e.is("ready") })[0]
	lan := "/ip4/10.2.2.10/tcp/"
	target := routerBWAN
	if p.v6() {
		// Behind private reachability the host does not announce its
		// global IPv6 address; its listen port shows on ::1.
		lan, target = "/ip6/::1/tcp/", "[2a00:2:b::10]"
	}
	var port string
	addrs, _ := ready["addrs"].([]any)
	for _, a := range addrs {
		if rest, ok := strings.CutPrefix(fmt.Sprint(a), lan); ok {
			port, _, _ = strings.Cut(rest, "/")
		}
	}
	if port == "" {
		s.fatalf("bob announced no %s... address: %v", lan, addrs)
	}
	ip, argv := selfAWAN, []string{"/hpcheck", "probe", "-addr", target + ":" + port, "-timeout", "3s"}
	if p.v6() {
		ip += ",2a00:2::31"
		argv = append([]string{"/natrouter", "route", "-route6", v6LANRoutes, "--"}, argv...)
	}
	// Bob is ready with a relay address: he has talked to the daemon, so
	// a full cone has mapped his port.
	pr := tp.startProc("probe", "wan", ip, nil, argv...)
	defer pr.kill()
	res := pr.wait(30*time.Second, 0, func(e event) bool { return e.is("probe") })
	if want := p.B == "full-cone"; res.boolean("ok") != want {
		s.fatalf("unsolicited TCP connect to bob at %s:%s from the WAN: ok=%v (%s), want ok=%v for %s", target, port, res.boolean("ok"), res.str("error"), want, p.B)
	}
}

// relayedEntry returns p's /peers entry for nick once it shows a relayed
// connection, or the last entry after 30 s. A re-armed punch replaces the
// relayed connection (chat/nat.go: close, then dial through the relay
// again), and /peers can catch the moment between (conn "none", the peer
// still online); the next conn event says the connection is back.
func relayedEntry(p *peer, nick string) map[string]any {
	deadline := time.Now().Add(30 * time.Second)
	for {
		m := p.mark()
		e := p.peerEntry(nick)
		if (e != nil && e["conn"] == "relayed") || time.Now().After(deadline) {
			return e
		}
		_, _ = p.tryWait(time.Until(deadline), m, func(e event) bool { return e.is("conn") && e.str("nick") == nick })
	}
}
