package main

import (
	"context"
	"io"
	"log/slog"
	"runtime"
	"strconv"
	"testing"
	"time"

	pbv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/pb"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/p2p-messaging/p2p-messaging/internal/serverhost"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	circuitproto "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/proto"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/util"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	"github.com/stretchr/testify/require"
)

func TestRelayReservation(t *testing.T) {
	d := startRun(t, t.TempDir(), "-force-public", "-relay-limit-duration", "3m", "-relay-limit-data", "256KiB")
	h := newClientHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, h.Connect(ctx, d.info()))

	// The relay service starts on the reachability event, just after ready.
	var rsvp *client.Reservation
	require.Eventually(t, func() bool {
		var err error
		rsvp, err = client.Reserve(ctx, h, d.info())
		return err == nil
	}, 10*time.Second, 20*time.Millisecond)
	require.Equal(t, 3*time.Minute, rsvp.LimitDuration)
	require.Equal(t, uint64(256<<10), rsvp.LimitData)
	require.True(t, rsvp.Expiration.After(time.Now().Add(50*time.Minute)))
}

func TestRelayInfinite(t *testing.T) {
	d := startRun(t, t.TempDir(), "-force-public", "-relay-infinite")
	h := newClientHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, h.Connect(ctx, d.info()))
	var rsvp *client.Reservation
	require.Eventually(t, func() bool {
		var err error
		rsvp, err = client.Reserve(ctx, h, d.info())
		return err == nil
	}, 10*time.Second, 20*time.Millisecond)
	require.Zero(t, rsvp.LimitDuration)
	require.Zero(t, rsvp.LimitData)
}

func TestNoRelayWithoutPublicReachability(t *testing.T) {
	d := startRun(t, t.TempDir())
	require.NotEmpty(t, d.logs.find("relay service starts only once AutoNAT confirms public reachability; on a public IP use -force-public"))
	h := newClientHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, h.Connect(ctx, d.info()))
	_, err := client.Reserve(ctx, h, d.info())
	require.Error(t, err)
}

// relayPair reserves a slot for bob on the daemon and connects alice to bob
// through the relay; it returns a stream from alice to bob's echo handler.
func relayPair(t *testing.T, d *testDaemon) (alice, bob host.Host, s network.Stream) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	alice, bob = newClientHost(t), newClientHost(t)
	const echo = "/test/echo"
	bob.SetStreamHandler(echo, func(s network.Stream) {
		_, _ = io.Copy(s, s)
		_ = s.Close()
	})
	require.NoError(t, bob.Connect(ctx, d.info()))
	require.Eventually(t, func() bool {
		_, err := client.Reserve(ctx, bob, d.info())
		return err == nil
	}, 10*time.Second, 20*time.Millisecond)

	circuit := ma.StringCast("/p2p/" + d.peer.String() + "/p2p-circuit")
	var addrs []ma.Multiaddr
	for _, a := range d.addrs {
		base, _ := ma.SplitLast(a) // drop /p2p/<daemon>
		addrs = append(addrs, base.Encapsulate(circuit))
	}
	require.NoError(t, alice.Connect(ctx, peer.AddrInfo{ID: bob.ID(), Addrs: addrs}))
	conns := alice.Network().ConnsToPeer(bob.ID())
	require.Len(t, conns, 1)
	_, err := conns[0].RemoteMultiaddr().ValueForProtocol(ma.P_CIRCUIT)
	require.NoError(t, err, "connected through the relay")

	s, err = alice.NewStream(network.WithAllowLimitedConn(ctx, "test"), bob.ID(), echo)
	require.NoError(t, err)
	return alice, bob, s
}

func TestRelayCircuitLimits(t *testing.T) {
	d := startRun(t, t.TempDir(), "-force-public", "-relay-limit-data", "4KiB")
	_, _, s := relayPair(t, d)
	defer s.Reset()
	require.True(t, s.Conn().Stat().Limited, "a limited relay marks its connections limited")

	// Chat-sized traffic passes.
	msg := []byte("hello over the relay")
	_, err := s.Write(msg)
	require.NoError(t, err)
	buf := make([]byte, len(msg))
	_, err = io.ReadFull(s, buf)
	require.NoError(t, err)
	require.Equal(t, msg, buf)

	// More than -relay-limit-data in one direction: the relay cuts it.
	require.NoError(t, s.SetDeadline(time.Now().Add(20*time.Second)))
	go func() {
		big := make([]byte, 1024)
		for i := 0; i < 64; i++ {
			if _, err := s.Write(big); err != nil {
				return
			}
		}
	}()
	n, err := io.Copy(io.Discard, s)
	require.Error(t, err, "the relayed connection must be reset")
	require.Less(t, n, int64(8<<10), "no more than about -relay-limit-data came back")
}

func TestRelayInfiniteCircuitNotLimited(t *testing.T) {
	d := startRun(t, t.TempDir(), "-force-public", "-relay-infinite")
	_, _, s := relayPair(t, d)
	defer s.Reset()
	require.False(t, s.Conn().Stat().Limited, "-relay-infinite gives connections that are not limited")
	big := make([]byte, 64<<10)
	go func() { _, _ = s.Write(big); _ = s.CloseWrite() }()
	n, err := io.Copy(io.Discard, s)
	require.NoError(t, err)
	require.Equal(t, int64(len(big)), n)
}

// hostFrom is a TCP-only host listening (and so, with port reuse, dialling)
// on the loopback address ip: 127.0.0.2 is a second source address on
// loopback.
func hostFrom(t *testing.T, ip string) host.Host {
	t.Helper()
	if ip != "127.0.0.1" && runtime.GOOS != "linux" {
		t.Skip("a second loopback address needs Linux")
	}
	h, err := libp2p.New(
		libp2p.ListenAddrStrings("/ip4/"+ip+"/tcp/0"),
		libp2p.NoTransports, libp2p.Transport(tcp.NewTCPTransport),
		libp2p.DisableMetrics(),
	)
	require.NoError(t, err)
	t.Cleanup(func() { _ = h.Close() })
	return h
}

// reserve takes a relay reservation for h on the daemon.
func reserve(ctx context.Context, h host.Host, d *daemon) error {
	if err := h.Connect(ctx, peerInfoOf(d)); err != nil {
		return err
	}
	_, err := client.Reserve(ctx, h, peerInfoOf(d))
	return err
}

// rawConnect asks the relay for a circuit to dest the way a throwaway
// attack tool does: one hop CONNECT, and no handshake behind it. The stream
// stays open, and with it the circuit, until the caller resets it.
func rawConnect(t *testing.T, h host.Host, d *daemon, dest peer.ID) (network.Stream, pbv2.Status) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, h.Connect(ctx, peerInfoOf(d)))
	s, err := h.NewStream(ctx, d.host.ID(), circuitproto.ProtoIDv2Hop)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Reset() })
	require.NoError(t, s.SetDeadline(time.Now().Add(10*time.Second)))
	req := &pbv2.HopMessage{Type: pbv2.HopMessage_CONNECT.Enum(), Peer: util.PeerInfoToPeerV2(peer.AddrInfo{ID: dest})}
	require.NoError(t, util.NewDelimitedWriter(s).WriteMsg(req))
	var resp pbv2.HopMessage
	rd := util.NewDelimitedReader(s, 4096)
	defer rd.Close()
	require.NoError(t, rd.ReadMsg(&resp))
	require.NoError(t, s.SetDeadline(time.Time{}))
	return s, resp.GetStatus()
}

// relayedConnect connects from to dest through the daemon's relay with a
// normal libp2p dial.
func relayedConnect(ctx context.Context, from host.Host, d *daemon, dest peer.ID) error {
	var addrs []ma.Multiaddr
	for _, a := range d.host.Addrs() {
		addrs = append(addrs, a.Encapsulate(ma.StringCast("/p2p/"+d.host.ID().String()+"/p2p-circuit")))
	}
	return from.Connect(ctx, peer.AddrInfo{ID: dest, Addrs: addrs})
}

// TestRelayCircuitStarvation reproduces issue 13's relay starvation: throwaway
// identities, one circuit each, used to take all of a NATed user's circuits.
// Now one source peer and one source address hold only a few of them, a
// peer from another address still gets through, and ended circuits free
// their slots.
func TestRelayCircuitStarvation(t *testing.T) {
	const maxCircuits, perSource, perIP = 8, 2, 3
	d := startDaemonT(t, t.TempDir(), "-force-public",
		"-relay-max-circuits", strconv.Itoa(maxCircuits),
		"-relay-max-circuits-per-source", strconv.Itoa(perSource),
		"-relay-max-circuits-per-source-ip", strconv.Itoa(perIP))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	bob := hostFrom(t, "127.0.0.1") // the NATed user, reserved on the relay
	require.Eventually(t, func() bool { return reserve(ctx, bob, d) == nil }, 10*time.Second, 20*time.Millisecond)

	// One identity: perSource circuits, then refused.
	spammer := hostFrom(t, "127.0.0.1")
	var spam []network.Stream
	for range perSource {
		s, st := rawConnect(t, spammer, d, bob.ID())
		require.Equal(t, pbv2.Status_OK, st)
		spam = append(spam, s)
	}
	_, st := rawConnect(t, spammer, d, bob.ID())
	require.Equal(t, pbv2.Status_PERMISSION_DENIED, st, "per-source limit")

	// Many identities on the same address: perIP circuits in all.
	ok := perSource
	for range maxCircuits {
		if _, st := rawConnect(t, hostFrom(t, "127.0.0.1"), d, bob.ID()); st == pbv2.Status_OK {
			ok++
		} else {
			require.Equal(t, pbv2.Status_PERMISSION_DENIED, st)
		}
	}
	require.Equal(t, perIP, ok, "per-source-address limit")

	// Bob is still reachable from another address, with a real dial.
	alice := hostFrom(t, "127.0.0.2")
	require.NoError(t, relayedConnect(ctx, alice, d, bob.ID()))
	conns := alice.Network().ConnsToPeer(bob.ID())
	require.NotEmpty(t, conns)
	require.True(t, conns[0].Stat().Limited)

	// Circuits that end free their slots: the spammer drops its circuits,
	// and a peer on the first address gets through again.
	for _, s := range spam {
		require.NoError(t, s.Reset())
	}
	carol := hostFrom(t, "127.0.0.1")
	require.Eventually(t, func() bool {
		return relayedConnect(ctx, carol, d, bob.ID()) == nil
	}, 20*time.Second, 50*time.Millisecond)
}

// TestRelayReservationsPerIP reproduces the reservation grab: one address
// taking every reservation in a second. New reservations from one address
// are rate limited (renewals are not), and another address is unaffected.
func TestRelayReservationsPerIP(t *testing.T) {
	const rate, perIP = 4, 6
	d := startDaemonT(t, t.TempDir(), "-force-public",
		"-relay-reservation-rate-per-ip", strconv.Itoa(rate),
		"-relay-max-reservations-per-ip", strconv.Itoa(perIP))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	first := hostFrom(t, "127.0.0.1")
	require.Eventually(t, func() bool { return reserve(ctx, first, d) == nil }, 10*time.Second, 20*time.Millisecond)
	got := 1
	for range 3 * rate {
		if reserve(ctx, hostFrom(t, "127.0.0.1"), d) == nil {
			got++
		}
	}
	require.Equal(t, rate, got, "a burst of new reservations from one address is cut at the rate")

	// The first peer renews its reservation although the bucket is empty.
	require.NoError(t, reserve(ctx, first, d))

	// Another address has its own budget.
	other := hostFrom(t, "127.0.0.2")
	require.NoError(t, reserve(ctx, other, d))

	_, held := d.relayACL.Counts("", "127.0.0.1")
	require.Equal(t, rate, held)
}

// TestRelayReservationCapPerIP: with a generous rate, the count cap per
// address holds, and a peer that disconnects frees its slot.
func TestRelayReservationCapPerIP(t *testing.T) {
	const perIP = 3
	d := startDaemonT(t, t.TempDir(), "-force-public",
		"-relay-reservation-rate-per-ip", "1000",
		"-relay-max-reservations-per-ip", strconv.Itoa(perIP))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var holders []host.Host
	h := hostFrom(t, "127.0.0.1")
	require.Eventually(t, func() bool { return reserve(ctx, h, d) == nil }, 10*time.Second, 20*time.Millisecond)
	holders = append(holders, h)
	for len(holders) < perIP {
		h := hostFrom(t, "127.0.0.1")
		require.NoError(t, reserve(ctx, h, d))
		holders = append(holders, h)
	}
	late := hostFrom(t, "127.0.0.1")
	require.Error(t, reserve(ctx, late, d), "the per-address cap holds")

	require.NoError(t, holders[0].Close())
	require.Eventually(t, func() bool { return reserve(ctx, late, d) == nil }, 10*time.Second, 20*time.Millisecond,
		"a disconnected holder's slot is free again")
}

func TestIPKey(t *testing.T) {
	for in, want := range map[string]string{
		"/ip4/203.0.113.7/tcp/1":                 "203.0.113.7",
		"/ip6/2001:db8:1:2ff:1::1/udp/1/quic-v1": "2001:db8:1:200::/56",
		"/ip6/2001:db8:1:2aa::9/tcp/1":           "2001:db8:1:200::/56",
		"/ip6/::ffff:198.51.100.1/tcp/1":         "198.51.100.1",
	} {
		got, err := serverhost.IPKey(ma.StringCast(in))
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	_, err := serverhost.IPKey(ma.StringCast("/dns4/example.com/tcp/1"))
	require.Error(t, err)
}

// TestRelayACLReservationsPerPrefix drives the ACL directly with an
// injected clock: IPv6 sources count per /56, the token bucket refills with
// time, and reservations expire after the TTL.
func TestRelayACLReservationsPerPrefix(t *testing.T) {
	c, err := parseConfig([]string{"-relay-max-reservations-per-ip", "3", "-relay-reservation-rate-per-ip", "2", "-relay-reservation-ttl", "1h"}, noEnv, io.Discard)
	require.NoError(t, err)
	acl, err := serverhost.NewRelayACL(c.relay.shared(), slog.New(slog.DiscardHandler), nil)
	require.NoError(t, err)
	now := time.Unix(1_000_000, 0)
	acl.SetClock(func() time.Time { return now })

	relay := newClientHost(t)
	require.False(t, acl.AllowReserve(relay.ID(), ma.StringCast("/ip4/198.51.100.1/tcp/1")), "no network attached yet: refuse")
	acl.Attach(relay.Network())
	peers := make([]host.Host, 6)
	for i := range peers {
		peers[i] = newClientHost(t)
		require.NoError(t, peers[i].Connect(context.Background(), peer.AddrInfo{ID: relay.ID(), Addrs: relay.Addrs()}))
	}
	// Three /64s of one /56.
	addr := func(i int) ma.Multiaddr {
		return ma.StringCast("/ip6/2001:db8:0:" + strconv.Itoa(10+i) + "::1/tcp/1")
	}
	require.True(t, acl.AllowReserve(peers[0].ID(), addr(0)))
	require.True(t, acl.AllowReserve(peers[1].ID(), addr(1)))
	require.False(t, acl.AllowReserve(peers[2].ID(), addr(2)), "burst of 2 spent for the /56")
	require.True(t, acl.AllowReserve(peers[3].ID(), ma.StringCast("/ip6/2001:db8:0:100::1/tcp/1")), "another /56")
	require.True(t, acl.AllowReserve(peers[0].ID(), addr(0)), "a renewal is not rate limited")

	now = now.Add(time.Minute) // the bucket refills
	require.True(t, acl.AllowReserve(peers[2].ID(), addr(2)))
	now = now.Add(time.Minute)
	require.False(t, acl.AllowReserve(peers[4].ID(), addr(4)), "3 reservations held in the /56: the count cap")
	_, held := acl.Counts("", "2001:db8::/56")
	require.Equal(t, 3, held)

	// A holder that disconnects frees its slot; so does expiry.
	require.NoError(t, peers[1].Close())
	require.Eventually(t, func() bool { return relay.Network().Connectedness(peers[1].ID()) != network.Connected },
		10*time.Second, 10*time.Millisecond)
	require.True(t, acl.AllowReserve(peers[4].ID(), addr(4)))
	now = now.Add(2 * time.Hour)
	_, held = acl.Counts("", "2001:db8::/56")
	require.Zero(t, held, "expired")
	require.True(t, acl.AllowReserve(peers[5].ID(), addr(5)))
}
