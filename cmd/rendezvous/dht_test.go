package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	drouting "github.com/libp2p/go-libp2p/p2p/discovery/routing"

	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	dsq "github.com/ipfs/go-datastore/query"
	dssync "github.com/ipfs/go-datastore/sync"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	dhtpb "github.com/libp2p/go-libp2p-kad-dht/pb"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-msgio"
	"github.com/multiformats/go-base32"
	mh "github.com/multiformats/go-multihash"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/p2p-messaging/p2p-messaging/internal/dhtstore"
	"github.com/p2p-messaging/p2p-messaging/internal/identity"
	"github.com/p2p-messaging/p2p-messaging/internal/serverhost"
)

// providerSpammer speaks the DHT wire protocol directly: it sends raw
// ADD_PROVIDER messages for ever-new keys on one stream, as the attack tool
// did.
type providerSpammer struct {
	h host.Host
	s network.Stream
	w msgio.WriteCloser
	r msgio.ReadCloser

	next int // index of the next fresh key
}

func newProviderSpammer(t *testing.T, d *daemon) *providerSpammer {
	t.Helper()
	h := newClientHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ai := peerInfoOf(d)
	require.NoError(t, h.Connect(ctx, ai))
	s, err := h.NewStream(ctx, ai.ID, dhtProtocol)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Reset() })
	return &providerSpammer{h: h, s: s, w: msgio.NewVarintWriter(s), r: msgio.NewVarintReaderSize(s, network.MessageSizeMax)}
}

func (p *providerSpammer) send(t *testing.T, m *dhtpb.Message) {
	t.Helper()
	b, err := proto.Marshal(m)
	require.NoError(t, err)
	require.NoError(t, p.w.WriteMsg(b))
}

// spam sends n ADD_PROVIDER messages, each for a new key, then a
// GET_PROVIDERS round trip: once its answer is back, the daemon has handled
// every message before it.
func (p *providerSpammer) spam(t *testing.T, n int) {
	t.Helper()
	self := &dhtpb.Message_Peer{Id: []byte(p.h.ID()), Addrs: [][]byte{p.h.Addrs()[0].Bytes()}}
	for range n {
		m := dhtpb.NewMessage(dhtpb.Message_ADD_PROVIDER, spamKey(p.h.ID().String(), p.next), 0)
		p.next++
		m.ProviderPeers = []*dhtpb.Message_Peer{self}
		p.send(t, m)
	}
	p.send(t, dhtpb.NewMessage(dhtpb.Message_GET_PROVIDERS, spamKey("sync", 0), 0))
	require.NoError(t, p.s.SetReadDeadline(time.Now().Add(time.Minute)))
	b, err := p.r.ReadMsg()
	require.NoError(t, err)
	p.r.ReleaseMsg(b)
}

// spamKey is a distinct multihash per (who, i), the shape of a CID's hash.
func spamKey(who string, i int) []byte {
	k, _ := mh.Sum([]byte(who+"/"+strconv.Itoa(i)), mh.SHA2_256, -1)
	return k
}

// peerSeg is how the DHT names a providing peer in its datastore keys.
func peerSeg(h host.Host) string {
	return base32.RawStdEncoding.EncodeToString([]byte(h.ID()))
}

// storedProviders reads the store after the daemon stopped, when the
// provider manager has flushed everything it buffered.
func storedProviders(t *testing.T, dir string, l dhtstore.Limits) *dhtstore.Store {
	t.Helper()
	s, err := dhtstore.Open(dir, l)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// TestProviderSpamBounded reproduces the ADD_PROVIDER flood of issue 13: one
// peer announcing itself for thousands of fresh keys through the real DHT
// protocol. Only its per-peer cap is stored, an honest peer's record still
// lands, and sybils together never exceed the total cap.
func TestProviderSpamBounded(t *testing.T) {
	const perPeer, total, spamEach = 50, 400, 1500
	dir := t.TempDir()
	d := startDaemonT(t, dir,
		"-dht-max-provider-records-per-peer", strconv.Itoa(perPeer),
		"-dht-max-provider-records", strconv.Itoa(total))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	spammer := newProviderSpammer(t, d)
	spammer.spam(t, spamEach)
	require.Eventually(t, func() bool {
		return d.dhtStore.Stats().Refused >= uint64(spamEach-perPeer-300) // at most 256+64 wait in the DHT's buffer
	}, 20*time.Second, 10*time.Millisecond)
	require.LessOrEqual(t, d.dhtStore.ProvidersOf(peerSeg(spammer.h)), perPeer)

	// An honest chat peer provides through a real DHT client and a third
	// peer finds it.
	newDHTClient := func() (host.Host, *dht.IpfsDHT) {
		h := newClientHost(t)
		kad, err := dht.New(h, dht.Mode(dht.ModeClient), dht.ProtocolPrefix(dhtPrefix), dht.BootstrapPeers(peerInfoOf(d)))
		require.NoError(t, err)
		t.Cleanup(func() { _ = kad.Close() })
		require.NoError(t, h.Connect(ctx, peerInfoOf(d)))
		require.Eventually(t, func() bool { return kad.RoutingTable().Find(d.host.ID()) != "" }, 10*time.Second, 10*time.Millisecond)
		return h, kad
	}
	honest, hkad := newDHTClient()
	key := cid.NewCidV1(cid.Raw, spamKey("p2p-messaging/user/ivy", 0))
	require.NoError(t, hkad.Provide(ctx, key, true))
	_, fkad := newDHTClient()
	require.Eventually(t, func() bool {
		for ai := range fkad.FindProvidersAsync(ctx, key, 1) {
			if ai.ID == honest.ID() {
				return true
			}
		}
		return false
	}, 20*time.Second, 50*time.Millisecond)

	// Sybils: each is held to its own cap, and all together to the total.
	sybils := make([]*providerSpammer, total/perPeer+2)
	for i := range sybils {
		sybils[i] = newProviderSpammer(t, d)
		sybils[i].spam(t, perPeer*3)
	}
	require.NoError(t, d.shutdown()) // flushes the DHT's write buffer

	st := storedProviders(t, dhtDir(dir), dhtstore.Limits{MaxProviders: total, MaxProvidersPerPeer: perPeer, MaxValues: 1})
	require.Equal(t, perPeer, st.ProvidersOf(peerSeg(spammer.h)), "the spammer kept exactly its cap")
	require.Equal(t, 1, st.ProvidersOf(peerSeg(honest)), "the honest record landed")
	require.Equal(t, total, st.Stats().Providers, "the total cap holds")
	for _, s := range sybils {
		require.LessOrEqual(t, st.ProvidersOf(peerSeg(s.h)), perPeer)
	}
}

func dhtDir(dataDir string) string { return filepath.Join(dataDir, DHTDirName) }

// rss is the process's resident set size in bytes (Linux; 0 elsewhere).
func rss() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseUint(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// TestProviderSpamMemory measures the daemon's heap under a large
// ADD_PROVIDER flood, once with the library's default in-memory datastore
// (what the daemon used before) and once with the bounded store, bounded
// first so that its RSS is not inflated by the other run. It sends
// P2P_SPAM_RECORDS records (unset: skipped, as it takes a while).
func TestProviderSpamMemory(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("P2P_SPAM_RECORDS"))
	if n <= 0 {
		t.Skip("set P2P_SPAM_RECORDS=<n> to measure")
	}
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse
	}
	for _, bounded := range []bool{true, false} {
		t.Run(fmt.Sprintf("bounded=%v", bounded), func(t *testing.T) {
			d := startDaemonT(t, t.TempDir())
			var mem ds.Batching
			if !bounded {
				// The daemon's DHT as it was: default options, a map
				// datastore on the heap.
				require.NoError(t, d.kad.Close())
				mem = dssync.MutexWrap(ds.NewMapDatastore())
				kad, err := dht.New(d.host, dht.Mode(dht.ModeServer), dht.ProtocolPrefix(dhtPrefix), dht.Datastore(mem))
				require.NoError(t, err)
				d.kad = kad
			}
			spammer := newProviderSpammer(t, d)
			before, rssBefore := heap(), rss()
			start := time.Now()
			for sent := 0; sent < n; sent += 10_000 {
				spammer.spam(t, min(10_000, n-sent))
			}
			elapsed := time.Since(start)
			provs, err := d.kad.ProviderStore().GetProviders(context.Background(), spamKey(spammer.h.ID().String(), spammer.next-1))
			require.NoError(t, err)
			t.Logf("providers of the last key: %d", len(provs))
			if mem != nil {
				res, err := mem.Query(context.Background(), dsq.Query{KeysOnly: true})
				require.NoError(t, err)
				all, err := res.Rest()
				require.NoError(t, err)
				t.Logf("records in the map datastore: %d", len(all))
			}
			after, rssAfter := heap(), rss()
			t.Logf("bounded=%v: %d ADD_PROVIDER in %v (%.0f/s); heap in use %d MiB -> %d MiB; process RSS %d MiB -> %d MiB; store %+v",
				bounded, n, elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds(),
				before>>20, after>>20, rssBefore>>20, rssAfter>>20, d.dhtStore.Stats())
		})
	}
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func TestBootstrapDHT(t *testing.T) {
	// Daemon A's identity and port are fixed up front, so B can be told to
	// bootstrap from A before A runs: B must keep retrying.
	dirA, dirB := t.TempDir(), t.TempDir()
	keyA, _, err := identity.LoadOrCreate(filepath.Join(dirA, identity.FileName))
	require.NoError(t, err)
	idA, err := peer.IDFromPrivateKey(keyA)
	require.NoError(t, err)
	listenA := "/ip4/127.0.0.1/tcp/" + itoa(freePort(t))
	addrA := listenA + "/p2p/" + idA.String()

	logs := newLogSink()
	cb, err := parseConfig([]string{
		"-listen", "/ip4/127.0.0.1/tcp/0", "-data-dir", dirB, "-log-format", "json", "-log-level", "debug",
		// Its own address in the list is ignored, so one list serves all daemons.
		"-bootstrap", addrA,
	}, noEnv, io.Discard)
	require.NoError(t, err)
	b, err := startDaemon(context.Background(), cb, logs)
	require.NoError(t, err)
	defer b.shutdown()

	ca, err := parseConfig([]string{
		"-listen", listenA, "-data-dir", dirA, "-log-format", "json",
		"-bootstrap", addrA + "," + serverhost.LocalAddrs(b.host)[0].String(),
	}, noEnv, io.Discard)
	require.NoError(t, err)
	a, err := startDaemon(context.Background(), ca, io.Discard)
	require.NoError(t, err)
	defer a.shutdown()
	require.Equal(t, idA, a.host.ID())

	require.Eventually(t, func() bool {
		return a.kad.RoutingTable().Find(b.host.ID()) != "" && b.kad.RoutingTable().Find(a.host.ID()) != ""
	}, 20*time.Second, 20*time.Millisecond)
	require.True(t, b.cm.IsProtected(idA, bootstrapProtectTag))

	// A restarts (same key, same port): B reconnects by itself.
	require.NoError(t, a.shutdown())
	require.Eventually(t, func() bool {
		return b.host.Network().Connectedness(idA) != network.Connected
	}, 10*time.Second, 20*time.Millisecond)
	ca2, err := parseConfig([]string{"-listen", listenA, "-data-dir", dirA, "-log-format", "json"}, noEnv, io.Discard)
	require.NoError(t, err)
	a2, err := startDaemon(context.Background(), ca2, io.Discard)
	require.NoError(t, err)
	defer a2.shutdown()
	require.Eventually(t, func() bool {
		return b.kad.RoutingTable().Find(idA) != "" && a2.kad.RoutingTable().Find(b.host.ID()) != ""
	}, 30*time.Second, 20*time.Millisecond)
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// TestRoutingDiscoveryAcrossDaemons: alice knows only daemon A, bob only
// daemon B; A and B are bootstrapped to each other. Bob finds alice through
// the DHT alone.
func TestRoutingDiscoveryAcrossDaemons(t *testing.T) {
	a := startRun(t, t.TempDir())
	b := startRun(t, t.TempDir(), "-bootstrap", a.addrs[0].String())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	newPeer := func(daemon *testDaemon) (host.Host, *dht.IpfsDHT) {
		h := newClientHost(t)
		kad, err := dht.New(h, dht.Mode(dht.ModeClient), dht.ProtocolPrefix(dhtPrefix), dht.BootstrapPeers(daemon.info()))
		require.NoError(t, err)
		t.Cleanup(func() { _ = kad.Close() })
		require.NoError(t, h.Connect(ctx, daemon.info()))
		require.Eventually(t, func() bool { return kad.RoutingTable().Find(daemon.peer) != "" },
			10*time.Second, 10*time.Millisecond)
		return h, kad
	}
	alice, akad := newPeer(a)
	bob, bkad := newPeer(b)
	require.Equal(t, network.NotConnected, bob.Network().Connectedness(alice.ID()))

	const ns = "p2p-messaging/user/alice"
	_, err := drouting.NewRoutingDiscovery(akad).Advertise(ctx, ns)
	require.NoError(t, err)

	require.Eventually(t, func() bool {
		ch, err := drouting.NewRoutingDiscovery(bkad).FindPeers(ctx, ns)
		if err != nil {
			return false
		}
		for ai := range ch {
			if ai.ID == alice.ID() && len(ai.Addrs) > 0 {
				return true
			}
		}
		return false
	}, 30*time.Second, 50*time.Millisecond)
}
