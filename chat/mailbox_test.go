package chat

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-msgio"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/p2p-messaging/p2p-messaging/rendezvous/mailbox"
)

// mbDaemon is an in-process daemon with a mailbox beside rendezvous.
type mbDaemon struct {
	*rdvServer
	mb  *mailbox.Server
	dir string
}

func newMailboxDaemon(t *testing.T) *mbDaemon {
	t.Helper()
	r := newRendezvous(t)
	dir := t.TempDir()
	mb, err := mailbox.New(r.h, mailbox.WithDataDir(dir))
	require.NoError(t, err)
	d := &mbDaemon{rdvServer: r, mb: mb, dir: dir}
	t.Cleanup(func() { mb.Close() })
	return d
}

func (d *mbDaemon) stopAll() {
	d.mb.Close()
	d.stop()
}

func withDaemons(ds ...*mbDaemon) nodeOpt {
	return func(c *testConfig) {
		c.Rendezvous = nil
		for _, d := range ds {
			c.Rendezvous = append(c.Rendezvous, d.info)
		}
	}
}

func isStored(id string) func(Event) bool {
	return func(e Event) bool { s, ok := e.(EventStored); return ok && s.ID == id }
}

// meet has alice and bob exchange one message, so each is the other's
// pinned contact, then closes bob.
func meet(t *testing.T, alice, bob *tnode) {
	t.Helper()
	m := send(t, alice, "bob", "hello first")
	bob.rec.wait(t, 10*time.Second, isMessage("hello first"))
	alice.rec.wait(t, 10*time.Second, isDelivered(m.ID))
	m = send(t, bob, "alice", "hi back")
	alice.rec.wait(t, 10*time.Second, isMessage("hi back"))
	bob.rec.wait(t, 10*time.Second, isDelivered(m.ID))
}

// The scenario: Alice writes while Bob is offline and quits; Bob
// comes up and gets the message once; Alice comes back and gets
// delivered once, from the sealed receipt, never having been online with
// Bob.
func TestMailboxNeverOnlineTogether(t *testing.T) {
	testNeverOnlineTogether(t, 1)
}

// The same with two daemons, one of them stopped before Bob starts.
func TestMailboxTwoDaemonsOneDown(t *testing.T) {
	testNeverOnlineTogether(t, 2)
}

func testNeverOnlineTogether(t *testing.T, daemons int) {
	var ds []*mbDaemon
	for range daemons {
		ds = append(ds, newMailboxDaemon(t))
	}
	aliceDir, bobDir := t.TempDir(), t.TempDir()
	alice := newNode(t, ds[0].rdvServer, "alice", aliceDir, withDaemons(ds...))
	bob := newNode(t, ds[0].rdvServer, "bob", bobDir, withDaemons(ds...))
	meet(t, alice, bob)
	require.NoError(t, bob.Close())
	alice.rec.wait(t, 10*time.Second, isPresence("bob", false))

	m := send(t, alice, "bob", "while you were away")
	st := alice.rec.wait(t, 10*time.Second, isStored(m.ID)).(EventStored)
	require.Equal(t, daemons, st.Daemons)
	require.Equal(t, "bob", st.To)
	require.NoError(t, alice.Close())

	// No plaintext on any daemon's disk.
	for _, d := range ds {
		raw, err := os.ReadFile(filepath.Join(d.dir, mailbox.DBFileName))
		require.NoError(t, err)
		require.NotContains(t, string(raw), "while you were away")
	}
	if daemons > 1 {
		ds[1].stopAll()
	}

	bob = newNode(t, ds[0].rdvServer, "bob", bobDir, withDaemons(ds...))
	got := bob.rec.wait(t, 15*time.Second, isMessage("while you were away")).(EventMessage)
	require.Equal(t, m.ID, got.Message.ID)
	require.Equal(t, "alice", got.Message.From)
	// The receipt is in Alice's mailbox once Bob's deposits are done;
	// Bob quits before Alice returns (Close waits for them).
	require.NoError(t, bob.Close())
	require.Equal(t, 1, bob.rec.count(isMessage("while you were away")))

	alice = newNode(t, ds[0].rdvServer, "alice", aliceDir, withDaemons(ds...))
	alice.rec.wait(t, 15*time.Second, isDelivered(m.ID))
	// Exactly once, also after every fetch settled.
	require.Eventually(t, func() bool { return ds[0].mb.Stats().Deposits == 0 }, 10*time.Second, 20*time.Millisecond)
	require.Equal(t, 1, alice.rec.count(isDelivered(m.ID)))

	// A restart of Bob finds nothing new: the message is not shown twice.
	bob = newNode(t, ds[0].rdvServer, "bob", bobDir, withDaemons(ds...))
	hist, err := bob.History("alice", 0)
	require.NoError(t, err)
	n := 0
	for _, h := range hist {
		if h.ID == m.ID {
			n++
		}
	}
	require.Equal(t, 1, n)
}

// A message that goes both ways (the mailbox and then directly, once both
// are online) is shown once and delivered once.
func TestMailboxAndDirectPathDedupe(t *testing.T) {
	d := newMailboxDaemon(t)
	bobDir := t.TempDir()
	alice := newNode(t, d.rdvServer, "alice", "", withDaemons(d))
	bob := newNode(t, d.rdvServer, "bob", bobDir, withDaemons(d))
	meet(t, alice, bob)
	require.NoError(t, bob.Close())
	alice.rec.wait(t, 10*time.Second, isPresence("bob", false))
	m := send(t, alice, "bob", "two roads")
	alice.rec.wait(t, 10*time.Second, isStored(m.ID))

	bob = newNode(t, d.rdvServer, "bob", bobDir, withDaemons(d))
	bob.rec.wait(t, 15*time.Second, isMessage("two roads"))
	alice.rec.wait(t, 15*time.Second, isDelivered(m.ID))
	// Both paths have run: Alice's outbox resend reached Bob directly, or
	// the receipt arrived; either way nothing more is reported.
	require.Eventually(t, func() bool { return !alice.out.pending(bob.ID()) && d.mb.Stats().Deposits == 0 }, 15*time.Second, 20*time.Millisecond)
	require.Equal(t, 1, bob.rec.count(isMessage("two roads")))
	require.Equal(t, 1, alice.rec.count(isDelivered(m.ID)))
}

// An online recipient that takes the message directly leaves nothing in
// the mailbox.
func TestMailboxNotUsedWhenDirectWorks(t *testing.T) {
	d := newMailboxDaemon(t)
	alice := newNode(t, d.rdvServer, "alice", "", withDaemons(d), func(c *testConfig) { c.DepositAfter = 200 * time.Millisecond })
	bob := newNode(t, d.rdvServer, "bob", "", withDaemons(d))
	meet(t, alice, bob)
	m := send(t, alice, "bob", "direct")
	alice.rec.wait(t, 10*time.Second, isDelivered(m.ID))
	require.NoError(t, alice.Close())
	require.Zero(t, alice.rec.count(isStored(m.ID)))
	require.Zero(t, d.mb.Stats().Deposits)
}

// -mailbox=false on the chat (NoDeposit): nothing is deposited.
func TestMailboxNoDeposit(t *testing.T) {
	d := newMailboxDaemon(t)
	alice := newNode(t, d.rdvServer, "alice", "", withDaemons(d), func(c *testConfig) { c.NoDeposit = true })
	bob := newNode(t, d.rdvServer, "bob", "", withDaemons(d))
	meet(t, alice, bob)
	require.NoError(t, bob.Close())
	alice.rec.wait(t, 10*time.Second, isPresence("bob", false))
	m := send(t, alice, "bob", "stays home")
	require.NoError(t, alice.Close())
	require.Zero(t, alice.rec.count(isStored(m.ID)))
	require.Zero(t, d.mb.Stats().Deposits)
}

// A sealed box tampered with on the daemon: the recipient rejects it, says
// so, and deletes it; the good deposit beside it still arrives.
func TestMailboxTamperedDeposit(t *testing.T) {
	d := newMailboxDaemon(t)
	bobDir := t.TempDir()
	alice := newNode(t, d.rdvServer, "alice", "", withDaemons(d))
	bob := newNode(t, d.rdvServer, "bob", bobDir, withDaemons(d))
	meet(t, alice, bob)
	bobID := bob.ID()
	require.NoError(t, bob.Close())

	// Alice's key seals two letters; the daemon (here: whoever deposits)
	// flips a byte of one before storing it.
	priv := alice.h.Peerstore().PrivKey(alice.ID())
	good, err := mailbox.Seal(priv, bobID, mailbox.Letter{Kind: mailbox.KindMessage, ID: make([]byte, 16), Time: time.Now(), Nick: "alice", Text: "good one"})
	require.NoError(t, err)
	bad, err := mailbox.Seal(priv, bobID, mailbox.Letter{Kind: mailbox.KindMessage, ID: append(make([]byte, 15), 1), Time: time.Now(), Nick: "alice", Text: "bad one"})
	require.NoError(t, err)
	bad[len(bad)-5] ^= 0x40
	cl := mailbox.NewClient(alice.h, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = cl.Deposit(ctx, d.h.ID(), bobID, bad)
	require.NoError(t, err)
	_, err = cl.Deposit(ctx, d.h.ID(), bobID, good)
	require.NoError(t, err)
	require.NoError(t, alice.Close())

	bob = newNode(t, d.rdvServer, "bob", bobDir, withDaemons(d))
	bob.rec.wait(t, 15*time.Second, isMessage("good one"))
	w := bob.rec.wait(t, 15*time.Second, func(e Event) bool {
		w, ok := e.(EventWarning)
		return ok && w.Peer == d.h.ID()
	}).(EventWarning)
	require.Contains(t, w.Text, "rejected 1 sealed deposit(s)")
	require.Zero(t, bob.rec.count(isMessage("bad one")))
	require.Eventually(t, func() bool { return d.mb.Stats().Deposits <= 1 }, 10*time.Second, 20*time.Millisecond, "both fetched and deleted (the receipt may be waiting)")
}

// A push notice makes an online recipient fetch at once: a deposit left by
// a third party's client (not a chat stream) reaches a running node.
func TestMailboxPushNotice(t *testing.T) {
	d := newMailboxDaemon(t)
	alice := newNode(t, d.rdvServer, "alice", "", withDaemons(d))
	bob := newNode(t, d.rdvServer, "bob", "", withDaemons(d))
	meet(t, alice, bob)
	priv := alice.h.Peerstore().PrivKey(alice.ID())
	box, err := mailbox.Seal(priv, bob.ID(), mailbox.Letter{Kind: mailbox.KindMessage, ID: append(make([]byte, 15), 9), Time: time.Now(), Nick: "alice", Text: "pushed"})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = mailbox.NewClient(alice.h, 0).Deposit(ctx, d.h.ID(), bob.ID(), box)
	require.NoError(t, err)
	bob.rec.wait(t, 10*time.Second, isMessage("pushed"))
}

// A stranger's held deposits (its later messages wait until it is
// allowed) do not block a contact's message that came after them.
func TestMailboxStrangerCannotBlockQueue(t *testing.T) {
	d := newMailboxDaemon(t)
	bobDir := t.TempDir()
	alice := newNode(t, d.rdvServer, "alice", "", withDaemons(d))
	bob := newNode(t, d.rdvServer, "bob", bobDir, withDaemons(d))
	meet(t, alice, bob)
	bobID := bob.ID()
	require.NoError(t, bob.Close())
	alice.rec.wait(t, 10*time.Second, isPresence("bob", false))

	mallory := newTestHostForMailbox(t, d)
	priv := mallory.Peerstore().PrivKey(mallory.ID())
	cl := mailbox.NewClient(mallory, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range mailboxFetchPage + 6 {
		box, err := mailbox.Seal(priv, bobID, mailbox.Letter{Kind: mailbox.KindMessage, ID: []byte(fmt.Sprintf("mallory-%08d", i)),
			Time: time.Now(), Text: fmt.Sprintf("spam %d", i)})
		require.NoError(t, err)
		_, err = cl.Deposit(ctx, d.h.ID(), bobID, box)
		require.NoError(t, err)
	}
	m := send(t, alice, "bob", "the one that matters")
	alice.rec.wait(t, 10*time.Second, isStored(m.ID))

	bob = newNode(t, d.rdvServer, "bob", bobDir, withDaemons(d))
	bob.rec.wait(t, 15*time.Second, isMessage("the one that matters"))
	bob.rec.wait(t, 15*time.Second, isRequest("spam 0"))
	require.Equal(t, 1, bob.rec.count(func(e Event) bool { _, ok := e.(EventRequest); return ok }), "one request per stranger")
	alice.rec.wait(t, 15*time.Second, isDelivered(m.ID))
}

func newTestHostForMailbox(t *testing.T, d *mbDaemon) host.Host {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay(), libp2p.DisableMetrics())
	require.NoError(t, err)
	t.Cleanup(func() { h.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, h.Connect(ctx, d.info))
	return h
}

// A hostile daemon answers every FETCH with a full page of garbage and
// "more", and storms the node with push notices: the node's work stays
// bounded (maxFetchPerRound per round, fetchRoundRate rounds a second
// after a burst) and it says so once per round, not once per deposit.
func TestMailboxHostileDaemonIsBounded(t *testing.T) {
	evil, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay(), libp2p.DisableMetrics())
	require.NoError(t, err)
	t.Cleanup(func() { evil.Close() })
	var fetches, deletes atomic.Int64
	page := protowire.AppendTag(nil, 1, protowire.VarintType)
	page = protowire.AppendVarint(page, 0)
	for i := range mailboxFetchPage {
		var dep []byte
		dep = protowire.AppendTag(dep, 1, protowire.BytesType)
		dep = protowire.AppendBytes(dep, append(make([]byte, 15), byte(i)))
		dep = protowire.AppendTag(dep, 2, protowire.BytesType)
		dep = protowire.AppendBytes(dep, append([]byte{2}, make([]byte, 300)...)) // a version no one opens: cheap to refuse
		page = protowire.AppendTag(page, 4, protowire.BytesType)
		page = protowire.AppendBytes(page, dep)
	}
	page = protowire.AppendTag(page, 5, protowire.VarintType)
	page = protowire.AppendVarint(page, 1)
	ok := protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 0)
	evil.SetStreamHandler(mailbox.ProtocolID, func(s network.Stream) {
		defer s.Close()
		msg, err := msgio.NewVarintReaderSize(s, mailbox.MaxRequestSize).ReadMsg()
		if err != nil || len(msg) < 2 {
			s.Reset()
			return
		}
		resp := ok
		if msg[1] == byte(mailbox.OpFetch) {
			fetches.Add(1)
			resp = page
		} else {
			deletes.Add(1)
		}
		_ = msgio.NewVarintWriter(s).WriteMsg(resp)
	})
	start := time.Now()
	bob := newNode(t, nil, "bob", "", func(c *testConfig) {
		c.Rendezvous = []peer.AddrInfo{{ID: evil.ID(), Addrs: evil.Addrs()}}
	})
	// A storm of notices.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for range 50 {
		if s, err := evil.NewStream(ctx, bob.ID(), mailbox.NotifyProtocolID); err == nil {
			_ = s.CloseWrite()
			_, _ = s.Read(make([]byte, 1))
			s.Close()
		}
	}
	isRejection := func(e Event) bool {
		w, ok := e.(EventWarning)
		return ok && w.Peer == evil.ID() && strings.Contains(w.Text, "rejected")
	}
	require.Eventually(t, func() bool { return bob.rec.count(isRejection) >= 2 }, 60*time.Second, 10*time.Millisecond)
	elapsed := time.Since(start)
	rounds := int64(fetchRoundBurst + int(elapsed.Seconds()*fetchRoundRate) + 1)
	perRound := int64(maxFetchPerRound/mailboxFetchPage + 1)
	require.LessOrEqual(t, fetches.Load(), rounds*perRound, "fetches in %s", elapsed)
	require.LessOrEqual(t, int64(bob.rec.count(isRejection)), rounds, "one warning per round")
	w := bob.rec.wait(t, time.Second, isRejection).(EventWarning)
	require.Contains(t, w.Text, fmt.Sprintf("rejected %d sealed deposit(s)", maxFetchPerRound))
	require.Positive(t, deletes.Load(), "garbage is deleted")
}

// A deposit replayed after the recipient took it (by anyone who saw the
// box) is stored again by the daemon, fetched again, and shown once.
func TestMailboxReplayShownOnce(t *testing.T) {
	d := newMailboxDaemon(t)
	alice := newNode(t, d.rdvServer, "alice", "", withDaemons(d))
	bob := newNode(t, d.rdvServer, "bob", "", withDaemons(d))
	meet(t, alice, bob)
	priv := alice.h.Peerstore().PrivKey(alice.ID())
	box, err := mailbox.Seal(priv, bob.ID(), mailbox.Letter{Kind: mailbox.KindMessage, ID: append(make([]byte, 15), 7), Time: time.Now(), Nick: "alice", Text: "only once"})
	require.NoError(t, err)
	mallory := newTestHostForMailbox(t, d)
	cl := mailbox.NewClient(mallory, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for range 3 {
		_, err = cl.Deposit(ctx, d.h.ID(), bob.ID(), box)
		require.NoError(t, err)
		bob.rec.wait(t, 10*time.Second, isMessage("only once"))
		require.Eventually(t, func() bool { return d.mb.Stats().Deposits == 0 }, 10*time.Second, 10*time.Millisecond)
	}
	require.Equal(t, 1, bob.rec.count(isMessage("only once")))
}

// Quitting right after Send still leaves the message in the mailbox:
// Close waits for the deposit in flight.
func TestMailboxCloseRightAfterSend(t *testing.T) {
	d := newMailboxDaemon(t)
	alice := newNode(t, d.rdvServer, "alice", "", withDaemons(d))
	bob := newNode(t, d.rdvServer, "bob", "", withDaemons(d))
	meet(t, alice, bob)
	require.NoError(t, bob.Close())
	alice.rec.wait(t, 10*time.Second, isPresence("bob", false))
	m := send(t, alice, "bob", "last words")
	require.NoError(t, alice.Close())
	require.Equal(t, 1, d.mb.Stats().Deposits)
	require.Equal(t, 1, alice.rec.count(isStored(m.ID)))
}

// A daemon that could not take a message when it was sent gets it when
// its connection comes back, and a recipient that only reaches that
// daemon receives it.
func TestMailboxDaemonBackGetsMissedDeposit(t *testing.T) {
	d1, d2 := newMailboxDaemon(t), newMailboxDaemon(t)
	bobDir := t.TempDir()
	fast := func(c *testConfig) { c.DepositAfter = 100 * time.Millisecond }
	alice := newNode(t, d1.rdvServer, "alice", "", withDaemons(d1, d2), fast)
	bob := newNode(t, d1.rdvServer, "bob", bobDir, withDaemons(d1, d2))
	meet(t, alice, bob)
	require.NoError(t, bob.Close())
	alice.rec.wait(t, 10*time.Second, isPresence("bob", false))

	// d2's mailbox is away (its host stays up).
	require.NoError(t, d2.mb.Close())
	m := send(t, alice, "bob", "catch up, d2")
	st := alice.rec.wait(t, 10*time.Second, isStored(m.ID)).(EventStored)
	require.Equal(t, 1, st.Daemons)

	mb2, err := mailbox.New(d2.h, mailbox.WithDataDir(d2.dir))
	require.NoError(t, err)
	d2.mb = mb2
	t.Cleanup(func() { mb2.Close() })
	// Alice's connection to d2 comes back.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.Eventually(t, func() bool {
		_ = alice.h.Network().ClosePeer(d2.h.ID())
		_ = alice.h.Connect(ctx, d2.info)
		return mb2.Stats().Deposits == 1
	}, 20*time.Second, 50*time.Millisecond)
	alice.rec.wait(t, 10*time.Second, func(e Event) bool { s, ok := e.(EventStored); return ok && s.ID == m.ID && s.Daemons == 2 })
	require.NoError(t, alice.Close())

	d1.stopAll()
	bob = newNode(t, d2.rdvServer, "bob", bobDir, withDaemons(d2))
	bob.rec.wait(t, 15*time.Second, isMessage("catch up, d2"))
}
