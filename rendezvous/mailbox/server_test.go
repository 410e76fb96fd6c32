package mailbox

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-msgio"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

func newTestHost(t testing.TB) host.Host {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay())
	require.NoError(t, err)
	t.Cleanup(func() { h.Close() })
	return h
}

func connect(t testing.TB, from, to host.Host) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, from.Connect(ctx, peer.AddrInfo{ID: to.ID(), Addrs: to.Addrs()}))
}

type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *fakeClock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

type bed struct {
	t      *testing.T
	dir    string
	daemon host.Host
	srv    *Server
	opts   []Option
}

func newBed(t *testing.T, opts ...Option) *bed {
	b := &bed{t: t, dir: t.TempDir(), daemon: newTestHost(t), opts: opts}
	b.start()
	t.Cleanup(func() { b.srv.Close() })
	return b
}

func (b *bed) start() {
	srv, err := New(b.daemon, append([]Option{WithDataDir(b.dir)}, b.opts...)...)
	require.NoError(b.t, err)
	b.srv = srv
}

// restart closes the server and opens it again on the same file.
func (b *bed) restart() {
	require.NoError(b.t, b.srv.Close())
	b.start()
}

type user struct {
	h  host.Host
	c  *Client
	id peer.ID
}

func (b *bed) user() *user {
	h := newTestHost(b.t)
	connect(b.t, h, b.daemon)
	return &user{h: h, c: NewClient(h, 0), id: h.ID()}
}

func (u *user) seal(t testing.TB, to peer.ID, text string) []byte {
	t.Helper()
	l := testLetter()
	l.Text = text
	box, err := Seal(u.h.Peerstore().PrivKey(u.id), to, l)
	require.NoError(t, err)
	return box
}

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func statusOf(err error) Status {
	var se *StatusError
	if errors.As(err, &se) {
		return se.Status
	}
	return 9999
}

func TestDepositFetchDelete(t *testing.T) {
	b := newBed(t)
	alice, bob := b.user(), b.user()
	box := alice.seal(t, bob.id, "hi")
	id, err := alice.c.Deposit(ctx(t), b.daemon.ID(), bob.id, box)
	require.NoError(t, err)
	require.Len(t, id, IDLen)

	deps, more, err := bob.c.Fetch(ctx(t), b.daemon.ID(), 0)
	require.NoError(t, err)
	require.False(t, more)
	require.Len(t, deps, 1)
	require.Equal(t, id, deps[0].ID)
	require.Equal(t, box, deps[0].Box)
	l, err := Open(bob.h.Peerstore().PrivKey(bob.id), deps[0].Box)
	require.NoError(t, err)
	require.Equal(t, alice.id, l.From)

	n, err := bob.c.Delete(ctx(t), b.daemon.ID(), [][]byte{id})
	require.NoError(t, err)
	require.Equal(t, 1, n)
	deps, _, err = bob.c.Fetch(ctx(t), b.daemon.ID(), 0)
	require.NoError(t, err)
	require.Empty(t, deps)
	require.Equal(t, Stats{}, b.srv.Stats())
}

func TestFetchPages(t *testing.T) {
	b := newBed(t)
	alice, bob := b.user(), b.user()
	for range 5 {
		_, err := alice.c.Deposit(ctx(t), b.daemon.ID(), bob.id, alice.seal(t, bob.id, "x"))
		require.NoError(t, err)
	}
	deps, more, err := bob.c.Fetch(ctx(t), b.daemon.ID(), 3)
	require.NoError(t, err)
	require.True(t, more)
	require.Len(t, deps, 3)
}

func TestPushNotice(t *testing.T) {
	b := newBed(t)
	alice, bob := b.user(), b.user()
	got := make(chan peer.ID, 4)
	stop := HandleNotices(bob.h, func(d peer.ID) { got <- d })
	defer stop()
	_, err := alice.c.Deposit(ctx(t), b.daemon.ID(), bob.id, alice.seal(t, bob.id, "hi"))
	require.NoError(t, err)
	select {
	case d := <-got:
		require.Equal(t, b.daemon.ID(), d)
	case <-ctx(t).Done():
		t.Fatal("no notice")
	}
}

func TestDepositTooLarge(t *testing.T) {
	l := DefaultLimits()
	l.MaxDepositSize = 1024
	b := newBed(t, WithLimits(l))
	alice, bob := b.user(), b.user()
	big := append([]byte{boxVersion}, bytes.Repeat([]byte{1}, 2000)...)
	_, err := alice.c.Deposit(ctx(t), b.daemon.ID(), bob.id, big)
	require.Equal(t, StatusTooLarge, statusOf(err), "%v", err)

	// Above the wire's cap: answered with the status before the body is read.
	s, err := alice.h.NewStream(ctx(t), b.daemon.ID(), ProtocolID)
	require.NoError(t, err)
	defer s.Reset()
	huge := (&request{op: OpDeposit, recipient: []byte(bob.id), box: make([]byte, MaxRequestSize)}).marshal()
	go func() { _ = msgio.NewVarintWriter(s).WriteMsg(huge) }()
	msg, err := msgio.NewVarintReaderSize(s, MaxResponseSize).ReadMsg()
	require.NoError(t, err)
	resp, err := decodeResponse(msg)
	require.NoError(t, err)
	require.Equal(t, StatusTooLarge, resp.status)
	require.Zero(t, b.srv.Stats().Deposits)
}

func TestDepositMalformedRecipient(t *testing.T) {
	b := newBed(t)
	alice, bob := b.user(), b.user()
	box := alice.seal(t, bob.id, "hi")
	for name, r := range map[string][]byte{
		"garbage":   []byte("definitely not a multihash"),
		"truncated": []byte(bob.id)[:10],
		"sha256":    []byte(peer.ID("\x12\x20" + string(bytes.Repeat([]byte{1}, 32)))),
	} {
		_, err := alice.c.Deposit(ctx(t), b.daemon.ID(), peer.ID(r), box)
		require.Equal(t, StatusBadRecipient, statusOf(err), "%s: %v", name, err)
	}
	_, err := alice.c.Deposit(ctx(t), b.daemon.ID(), bob.id, []byte("not a box at all, version wrong"))
	require.Equal(t, StatusBadRequest, statusOf(err), "%v", err)
	require.Zero(t, b.srv.Stats().Deposits)
}

func TestDepositReplay(t *testing.T) {
	b := newBed(t)
	alice, bob, mallory := b.user(), b.user(), b.user()
	box := alice.seal(t, bob.id, "hi")
	id1, err := alice.c.Deposit(ctx(t), b.daemon.ID(), bob.id, box)
	require.NoError(t, err)
	id2, err := alice.c.Deposit(ctx(t), b.daemon.ID(), bob.id, box)
	require.NoError(t, err)
	// Someone who saw the box on the wire replays it: nothing new is stored.
	id3, err := mallory.c.Deposit(ctx(t), b.daemon.ID(), bob.id, box)
	require.NoError(t, err)
	require.Equal(t, id1, id2)
	require.Equal(t, id1, id3)
	require.Equal(t, 1, b.srv.Stats().Deposits)
	deps, _, err := bob.c.Fetch(ctx(t), b.daemon.ID(), 0)
	require.NoError(t, err)
	require.Len(t, deps, 1)
	// After the delete a replay is stored again, and the recipient's
	// dedupe by message ID (chat) shows it once.
	_, err = bob.c.Delete(ctx(t), b.daemon.ID(), [][]byte{id1})
	require.NoError(t, err)
	_, err = mallory.c.Deposit(ctx(t), b.daemon.ID(), bob.id, box)
	require.NoError(t, err)
	require.Equal(t, 1, b.srv.Stats().Deposits)
}

func TestOnlyRecipientFetchesAndDeletes(t *testing.T) {
	b := newBed(t)
	alice, bob, carol := b.user(), b.user(), b.user()
	id, err := alice.c.Deposit(ctx(t), b.daemon.ID(), bob.id, alice.seal(t, bob.id, "for bob only"))
	require.NoError(t, err)
	deps, _, err := carol.c.Fetch(ctx(t), b.daemon.ID(), 0)
	require.NoError(t, err)
	require.Empty(t, deps, "carol sees nothing of bob's")
	n, err := carol.c.Delete(ctx(t), b.daemon.ID(), [][]byte{id})
	require.NoError(t, err)
	require.Zero(t, n)
	// The sender cannot take it back either.
	n, err = alice.c.Delete(ctx(t), b.daemon.ID(), [][]byte{id})
	require.NoError(t, err)
	require.Zero(t, n)
	deps, _, err = bob.c.Fetch(ctx(t), b.daemon.ID(), 0)
	require.NoError(t, err)
	require.Len(t, deps, 1)
}

func TestQuotaOneSenderCannotFillRecipient(t *testing.T) {
	l := DefaultLimits()
	l.MaxPerSenderPerRecipient = 3
	l.MaxPerRecipient = 5
	b := newBed(t, WithLimits(l))
	alice, carol, dave, bob := b.user(), b.user(), b.user(), b.user()
	for range 3 {
		_, err := alice.c.Deposit(ctx(t), b.daemon.ID(), bob.id, alice.seal(t, bob.id, "spam"))
		require.NoError(t, err)
	}
	_, err := alice.c.Deposit(ctx(t), b.daemon.ID(), bob.id, alice.seal(t, bob.id, "spam"))
	require.Equal(t, StatusSenderFull, statusOf(err), "%v", err)
	// Alice can still write to others.
	_, err = alice.c.Deposit(ctx(t), b.daemon.ID(), carol.id, alice.seal(t, carol.id, "hi"))
	require.NoError(t, err)
	// Carol still gets through to Bob, up to the recipient's quota.
	for range 2 {
		_, err = carol.c.Deposit(ctx(t), b.daemon.ID(), bob.id, carol.seal(t, bob.id, "hi"))
		require.NoError(t, err)
	}
	_, err = dave.c.Deposit(ctx(t), b.daemon.ID(), bob.id, dave.seal(t, bob.id, "hi"))
	require.Equal(t, StatusRecipientFull, statusOf(err), "%v", err)
}

func TestQuotaBytes(t *testing.T) {
	alice0 := newTestHost(t)
	box0 := (&user{h: alice0, id: alice0.ID()}).seal(t, alice0.ID(), "x")
	c := cost(box0)

	l := DefaultLimits()
	l.MaxBytesPerRecipient = 2 * c
	l.MaxBytesPerSender = 3 * c
	l.MaxStoreSize = 4 * c
	b := newBed(t, WithLimits(l))
	alice, bob, carol, dave, erin := b.user(), b.user(), b.user(), b.user(), b.user()
	dep := func(from *user, to peer.ID) error {
		_, err := from.c.Deposit(ctx(t), b.daemon.ID(), to, from.seal(t, to, "x"))
		return err
	}
	require.NoError(t, dep(alice, bob.id))
	require.NoError(t, dep(alice, bob.id))
	require.Equal(t, StatusRecipientFull, statusOf(dep(carol, bob.id)))
	require.NoError(t, dep(alice, carol.id))
	require.Equal(t, StatusSenderFull, statusOf(dep(alice, dave.id)), "alice's total")
	require.NoError(t, dep(dave, erin.id))
	require.Equal(t, StatusStoreFull, statusOf(dep(erin, dave.id)), "the store's total")
}

func TestExpiryFreesSpace(t *testing.T) {
	clk := newFakeClock()
	l := DefaultLimits()
	l.TTL = time.Hour
	l.MaxPerRecipient = 1
	b := newBed(t, WithLimits(l), WithClock(clk.now), WithSweepInterval(time.Hour))
	alice, bob := b.user(), b.user()
	_, err := alice.c.Deposit(ctx(t), b.daemon.ID(), bob.id, alice.seal(t, bob.id, "old"))
	require.NoError(t, err)
	_, err = alice.c.Deposit(ctx(t), b.daemon.ID(), bob.id, alice.seal(t, bob.id, "full"))
	require.Equal(t, StatusRecipientFull, statusOf(err))

	clk.advance(time.Hour + time.Millisecond)
	deps, _, err := bob.c.Fetch(ctx(t), b.daemon.ID(), 0)
	require.NoError(t, err)
	require.Empty(t, deps, "expired deposits are not handed out")
	n, err := b.srv.Sweep()
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Equal(t, Stats{Expired: 1}, b.srv.Stats())
	_, err = alice.c.Deposit(ctx(t), b.daemon.ID(), bob.id, alice.seal(t, bob.id, "new"))
	require.NoError(t, err)
}

func TestSurvivesRestart(t *testing.T) {
	l := DefaultLimits()
	l.MaxPerSenderPerRecipient = 2
	b := newBed(t, WithLimits(l))
	alice, bob := b.user(), b.user()
	var ids [][]byte
	for range 2 {
		id, err := alice.c.Deposit(ctx(t), b.daemon.ID(), bob.id, alice.seal(t, bob.id, "x"))
		require.NoError(t, err)
		ids = append(ids, id)
	}
	b.restart()
	require.Equal(t, 2, b.srv.Stats().Deposits)
	// The quota counters came back with the deposits.
	_, err := alice.c.Deposit(ctx(t), b.daemon.ID(), bob.id, alice.seal(t, bob.id, "x"))
	require.Equal(t, StatusSenderFull, statusOf(err))
	deps, _, err := bob.c.Fetch(ctx(t), b.daemon.ID(), 0)
	require.NoError(t, err)
	require.Len(t, deps, 2)
	require.ElementsMatch(t, ids, [][]byte{deps[0].ID, deps[1].ID})
}

func TestNoPlaintextOnDisk(t *testing.T) {
	b := newBed(t)
	alice, bob := b.user(), b.user()
	_, err := alice.c.Deposit(ctx(t), b.daemon.ID(), bob.id, alice.seal(t, bob.id, "the secret plan"))
	require.NoError(t, err)
	require.NoError(t, b.srv.Close())
	raw, err := os.ReadFile(filepath.Join(b.dir, DBFileName))
	require.NoError(t, err)
	require.NotContains(t, string(raw), "the secret plan")
	require.NotContains(t, string(raw), "alice")
	b.start()
}

func TestMalformedRequestResetsOnlyThatStream(t *testing.T) {
	b := newBed(t)
	alice, bob := b.user(), b.user()
	s, err := alice.h.NewStream(ctx(t), b.daemon.ID(), ProtocolID)
	require.NoError(t, err)
	require.NoError(t, msgio.NewVarintWriter(s).WriteMsg([]byte{0xff, 0xff, 0xff}))
	_, err = msgio.NewVarintReaderSize(s, MaxResponseSize).ReadMsg()
	require.Error(t, err, "reset")
	s.Reset()
	_, err = alice.c.Deposit(ctx(t), b.daemon.ID(), bob.id, alice.seal(t, bob.id, "still served"))
	require.NoError(t, err)
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	l := DefaultLimits()
	l.MaxDepositSize = 1024
	b := newBed(t, WithRegisterer(reg), WithLimits(l))
	alice, bob := b.user(), b.user()
	_, err := alice.c.Deposit(ctx(t), b.daemon.ID(), bob.id, alice.seal(t, bob.id, "x"))
	require.NoError(t, err)
	_, err = alice.c.Deposit(ctx(t), b.daemon.ID(), bob.id, append([]byte{1}, make([]byte, 2000)...))
	require.Error(t, err)
	_, _, err = bob.c.Fetch(ctx(t), b.daemon.ID(), 0)
	require.NoError(t, err)
	got := gather(t, reg)
	require.Equal(t, 1.0, got["rendezvous_mailbox_deposits_total"])
	require.Equal(t, 1.0, got["rendezvous_mailbox_fetched_total"])
	require.Equal(t, 1.0, got["rendezvous_mailbox_rejected_total{E_TOO_LARGE}"])
	require.Equal(t, 1.0, got["rendezvous_mailbox_deposits_held"])
	require.Positive(t, got["rendezvous_mailbox_bytes_held"])
	// Close unregisters, so a new server can register again.
	b.restart()
}

func TestConcurrentDepositsShareQuotaExactly(t *testing.T) {
	l := DefaultLimits()
	l.MaxPerSenderPerRecipient = 10
	b := newBed(t, WithLimits(l))
	alice, bob := b.user(), b.user()
	var ok atomic.Int32
	var wg sync.WaitGroup
	for range 25 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			box, err := Seal(alice.h.Peerstore().PrivKey(alice.id), bob.id, testLetter())
			if err != nil {
				return
			}
			if _, err := alice.c.Deposit(context.Background(), b.daemon.ID(), bob.id, box); err == nil {
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	require.Equal(t, int32(10), ok.Load())
	require.Equal(t, 10, b.srv.Stats().Deposits)
}

func TestLimitsValidate(t *testing.T) {
	require.NoError(t, DefaultLimits().Validate())
	l := DefaultLimits()
	l.MaxDepositSize = MaxBoxSize + 1
	l.TTL = 0
	l.MaxPerRecipient = -1
	err := l.Validate()
	require.ErrorContains(t, err, "MaxDepositSize")
	require.ErrorContains(t, err, "TTL")
	require.ErrorContains(t, err, "MaxPerRecipient")
	_, err = New(newTestHost(t), WithDataDir(t.TempDir()), WithLimits(l))
	require.Error(t, err)
}

// gather returns every sample of reg by name (and label values in braces).
func gather(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			for _, lp := range m.GetLabel() {
				name += "{" + lp.GetValue() + "}"
			}
			switch {
			case m.GetCounter() != nil:
				out[name] = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				out[name] = m.GetGauge().GetValue()
			}
		}
	}
	return out
}

func newFuzzHost() (host.Host, error) {
	return libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay())
}

func addrInfo(h host.Host) peer.AddrInfo { return peer.AddrInfo{ID: h.ID(), Addrs: h.Addrs()} }

func TestRateLimitPerPeer(t *testing.T) {
	l := DefaultLimits()
	l.RequestRate, l.RequestBurst = 0.001, 3
	b := newBed(t, WithLimits(l))
	alice, bob := b.user(), b.user()
	for range 3 {
		_, _, err := alice.c.Fetch(ctx(t), b.daemon.ID(), 0)
		require.NoError(t, err)
	}
	_, _, err := alice.c.Fetch(ctx(t), b.daemon.ID(), 0)
	require.Equal(t, StatusRateLimited, statusOf(err), "%v", err)
	_, err = alice.c.Deposit(ctx(t), b.daemon.ID(), bob.id, alice.seal(t, bob.id, "x"))
	require.Equal(t, StatusRateLimited, statusOf(err), "%v", err)
	// Another peer has its own bucket.
	_, _, err = bob.c.Fetch(ctx(t), b.daemon.ID(), 0)
	require.NoError(t, err)
}

func TestFetchOrderAndCursor(t *testing.T) {
	b := newBed(t)
	alice, bob := b.user(), b.user()
	var ids [][]byte
	for range 5 {
		id, err := alice.c.Deposit(ctx(t), b.daemon.ID(), bob.id, alice.seal(t, bob.id, "x"))
		require.NoError(t, err)
		ids = append(ids, id)
	}
	deps, more, err := bob.c.Fetch(ctx(t), b.daemon.ID(), 2)
	require.NoError(t, err)
	require.True(t, more)
	require.Equal(t, ids[0], deps[0].ID, "arrival order")
	require.Equal(t, ids[1], deps[1].ID)
	// Keep those two, page past them.
	deps, more, err = bob.c.FetchAfter(ctx(t), b.daemon.ID(), deps[1].ID, 0)
	require.NoError(t, err)
	require.False(t, more)
	require.Len(t, deps, 3)
	require.Equal(t, ids[2:], [][]byte{deps[0].ID, deps[1].ID, deps[2].ID})
	// A cursor that is not a held ID still seeks correctly.
	gone := append([]byte(nil), ids[2]...)
	_, err = bob.c.Delete(ctx(t), b.daemon.ID(), [][]byte{ids[2]})
	require.NoError(t, err)
	deps, _, err = bob.c.FetchAfter(ctx(t), b.daemon.ID(), gone, 0)
	require.NoError(t, err)
	require.Len(t, deps, 2)
	require.Equal(t, ids[3], deps[0].ID)
	// And the order survives a restart.
	b.restart()
	id, err := alice.c.Deposit(ctx(t), b.daemon.ID(), bob.id, alice.seal(t, bob.id, "after restart"))
	require.NoError(t, err)
	deps, _, err = bob.c.Fetch(ctx(t), b.daemon.ID(), 0)
	require.NoError(t, err)
	require.Equal(t, id, deps[len(deps)-1].ID)
}
