// Command hpcheck is the test bed's self-check: plain go-libp2p hosts (no
// chat code) that show whether a NAT topology lets hole punching through.
// It prints one JSON object per line on stdout.
//
//	hpcheck relay -listen /ip4/0.0.0.0/tcp/4001,/ip4/0.0.0.0/udp/4001/quic-v1
//	hpcheck node -relay <relay multiaddr with /p2p> [-listen ...] [-dial <peer id>]
//	hpcheck probe -addr host:port [-timeout 3s]
//
// A node forces private reachability, reserves a slot on the static relay and
// reports {"event":"ready"} only once its relay address exists and its DCUtR
// handler is registered (go-libp2p registers it after the host learned a
// public observed address), so a relayed connection made afterwards is
// always hole-punched. With -dial it connects to that peer through the relay
// and waits for a direct connection ({"event":"direct"}) or the deadline
// ({"event":"timeout"}). Hole-punch tracer events are printed as
// {"event":"holepunch",...}.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	"github.com/libp2p/go-libp2p/p2p/protocol/holepunch"
	ma "github.com/multiformats/go-multiaddr"
)

const dcutrProtocol = "/libp2p/dcutr"

type printer struct {
	mu sync.Mutex
	w  io.Writer
}

func (p *printer) emit(v map[string]any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	b, _ := json.Marshal(v)
	fmt.Fprintln(p.w, string(b))
}

// Trace implements holepunch.EventTracer.
func (p *printer) Trace(e *holepunch.Event) {
	switch ev := e.Evt.(type) {
	case *holepunch.EndHolePunchEvt:
		p.emit(map[string]any{"event": "holepunch", "peer": e.Remote.String(), "success": ev.Success,
			"elapsed_ms": float64(ev.EllapsedTime.Microseconds()) / 1000, "error": ev.Error})
	case *holepunch.HolePunchAttemptEvt:
		p.emit(map[string]any{"event": "attempt", "peer": e.Remote.String(), "attempt": ev.Attempt})
	case *holepunch.DirectDialEvt:
		// Connection reversal: the side that received the relayed
		// connection dialled the other's public address.
		p.emit(map[string]any{"event": "directdial", "peer": e.Remote.String(), "success": ev.Success,
			"elapsed_ms": float64(ev.EllapsedTime.Microseconds()) / 1000, "error": ev.Error})
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "hpcheck:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: hpcheck relay|node [flags]")
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	listen := fs.String("listen", "/ip4/0.0.0.0/tcp/4001,/ip4/0.0.0.0/udp/4001/quic-v1", "comma-separated listen multiaddrs")
	relayAddr := fs.String("relay", "", "relay multiaddr with /p2p/<id> (node)")
	dial := fs.String("dial", "", "peer ID to reach through the relay and hole punching (node)")
	timeout := fs.Duration("timeout", 60*time.Second, "how long -dial waits for a direct connection (probe: for the TCP connect)")
	probeAddr := fs.String("addr", "", "probe: host:port to connect to")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	out := &printer{w: stdout}
	opts := []libp2p.Option{libp2p.ListenAddrStrings(strings.Split(*listen, ",")...)}
	switch args[0] {
	case "relay":
		h, err := libp2p.New(append(opts, libp2p.ForceReachabilityPublic(),
			libp2p.EnableRelayService(relay.WithInfiniteLimits()))...)
		if err != nil {
			return err
		}
		defer h.Close()
		var addrs []string
		for _, a := range h.Addrs() {
			addrs = append(addrs, fmt.Sprintf("%s/p2p/%s", a, h.ID()))
		}
		out.emit(map[string]any{"event": "ready", "peer": h.ID().String(), "addrs": addrs})
		<-ctx.Done()
		return nil
	case "node":
		return runNode(ctx, opts, *relayAddr, *dial, *timeout, out)
	case "probe":
		// A plain TCP connect from outside, to see whether a router lets
		// an unsolicited connection in: {"event":"probe","ok":...}.
		d := net.Dialer{Timeout: *timeout}
		c, err := d.DialContext(ctx, "tcp", *probeAddr)
		e := map[string]any{"event": "probe", "addr": *probeAddr, "ok": err == nil}
		if err != nil {
			e["error"] = err.Error()
		} else {
			c.Close()
		}
		out.emit(e)
		return nil
	}
	return fmt.Errorf("unknown command %q", args[0])
}

func runNode(ctx context.Context, opts []libp2p.Option, relayAddr, dial string, timeout time.Duration, out *printer) error {
	ri, err := peer.AddrInfoFromString(relayAddr)
	if err != nil {
		return fmt.Errorf("-relay: %w", err)
	}
	h, err := libp2p.New(append(opts, libp2p.ForceReachabilityPrivate(),
		libp2p.EnableAutoRelayWithStaticRelays([]peer.AddrInfo{*ri}),
		libp2p.EnableHolePunching(holepunch.WithTracer(out)))...)
	if err != nil {
		return err
	}
	defer h.Close()
	sub, err := h.EventBus().Subscribe([]any{new(event.EvtLocalAddressesUpdated), new(event.EvtLocalProtocolsUpdated)})
	if err != nil {
		return err
	}
	defer sub.Close()
	if err := h.Connect(ctx, *ri); err != nil {
		return fmt.Errorf("connect to relay: %w", err)
	}
	if err := waitReady(ctx, h, sub); err != nil {
		return err
	}
	out.emit(map[string]any{"event": "ready", "peer": h.ID().String()})
	if dial == "" {
		<-ctx.Done()
		return nil
	}
	target, err := peer.Decode(dial)
	if err != nil {
		return fmt.Errorf("-dial: %w", err)
	}
	direct := make(chan network.Conn, 1)
	h.Network().Notify(&network.NotifyBundle{ConnectedF: func(_ network.Network, c network.Conn) {
		if c.RemotePeer() == target && !isCircuit(c.RemoteMultiaddr()) {
			select {
			case direct <- c:
			default:
			}
		}
	}})
	circuit := ri.Addrs[0].Encapsulate(ma.StringCast("/p2p/" + ri.ID.String() + "/p2p-circuit"))
	cctx := network.WithAllowLimitedConn(ctx, "hpcheck")
	if err := h.Connect(cctx, peer.AddrInfo{ID: target, Addrs: []ma.Multiaddr{circuit}}); err != nil {
		return fmt.Errorf("connect through the relay: %w", err)
	}
	for _, c := range h.Network().ConnsToPeer(target) {
		out.emit(map[string]any{"event": "conn", "addr": c.RemoteMultiaddr().String(), "limited": c.Stat().Limited})
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case c := <-direct:
		out.emit(map[string]any{"event": "direct", "addr": c.RemoteMultiaddr().String(), "limited": c.Stat().Limited})
	case <-t.C:
		out.emit(map[string]any{"event": "timeout"})
	case <-ctx.Done():
	}
	return nil
}

// waitReady returns once the host has a relay address and its DCUtR handler.
func waitReady(ctx context.Context, h host.Host, sub event.Subscription) error {
	hasCircuit := func() bool {
		for _, a := range h.Addrs() {
			if isCircuit(a) {
				return true
			}
		}
		return false
	}
	hasDCUtR := func() bool {
		for _, p := range h.Mux().Protocols() {
			if p == dcutrProtocol {
				return true
			}
		}
		return false
	}
	for !hasCircuit() || !hasDCUtR() {
		select {
		case <-sub.Out():
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func isCircuit(a ma.Multiaddr) bool {
	_, err := a.ValueForProtocol(ma.P_CIRCUIT)
	return err == nil
}
