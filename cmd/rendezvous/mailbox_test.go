package main

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/p2p-messaging/p2p-messaging/rendezvous/mailbox"
)

func TestMailboxFlagsAndEnv(t *testing.T) {
	c, err := parseConfig([]string{"-data-dir", t.TempDir()}, noEnv, io.Discard)
	require.NoError(t, err)
	require.True(t, c.mailbox)
	require.Equal(t, mailbox.DefaultLimits(), c.mailboxLimits)

	env := map[string]string{
		"RENDEZVOUS_MAILBOX":                              "false",
		"RENDEZVOUS_MAILBOX_MAX_DEPOSIT_SIZE":             "8KiB",
		"RENDEZVOUS_MAILBOX_MAX_PER_RECIPIENT":            "7",
		"RENDEZVOUS_MAILBOX_MAX_BYTES_PER_RECIPIENT":      "1MiB",
		"RENDEZVOUS_MAILBOX_MAX_PER_SENDER_PER_RECIPIENT": "3",
		"RENDEZVOUS_MAILBOX_MAX_BYTES_PER_SENDER":         "2MiB",
		"RENDEZVOUS_MAILBOX_MAX_STORE_SIZE":               "1GiB",
		"RENDEZVOUS_MAILBOX_TTL":                          "48h",
		"RENDEZVOUS_MAILBOX_RATE":                         "5",
		"RENDEZVOUS_MAILBOX_BURST":                        "6",
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	c, err = parseConfig([]string{"-data-dir", t.TempDir(), "-mailbox-max-per-recipient", "9"}, lookup, io.Discard)
	require.NoError(t, err)
	require.False(t, c.mailbox)
	l := c.mailboxLimits
	require.Equal(t, 8<<10, l.MaxDepositSize)
	require.Equal(t, 9, l.MaxPerRecipient, "the flag wins over the variable")
	require.Equal(t, int64(1<<20), l.MaxBytesPerRecipient)
	require.Equal(t, 3, l.MaxPerSenderPerRecipient)
	require.Equal(t, int64(2<<20), l.MaxBytesPerSender)
	require.Equal(t, int64(1<<30), l.MaxStoreSize)
	require.Equal(t, 48*time.Hour, l.TTL)
	require.Equal(t, 5.0, l.RequestRate)
	require.Equal(t, 6, l.RequestBurst)

	for _, bad := range [][]string{
		{"-mailbox-max-deposit-size", "1MiB"},
		{"-mailbox-ttl", "0s"},
		{"-mailbox-max-per-recipient", "0"},
	} {
		_, err := parseConfig(append([]string{"-data-dir", t.TempDir()}, bad...), noEnv, io.Discard)
		require.Error(t, err, "%v", bad)
	}
}

func TestMailboxOnDaemon(t *testing.T) {
	d := startDaemonT(t, t.TempDir())
	require.NotNil(t, d.mailbox)
	alice, bob := newClientHost(t), newClientHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, alice.Connect(ctx, peerInfoOf(d)))
	require.NoError(t, bob.Connect(ctx, peerInfoOf(d)))
	box, err := mailbox.Seal(alice.Peerstore().PrivKey(alice.ID()), bob.ID(), mailbox.Letter{
		Kind: mailbox.KindMessage, ID: make([]byte, mailbox.MessageIDLen), Time: time.Now(), Text: "hi"})
	require.NoError(t, err)
	_, err = mailbox.NewClient(alice, 0).Deposit(ctx, d.host.ID(), bob.ID(), box)
	require.NoError(t, err)
	deps, _, err := mailbox.NewClient(bob, 0).Fetch(ctx, d.host.ID(), 0)
	require.NoError(t, err)
	require.Len(t, deps, 1)

	off := startDaemonT(t, t.TempDir(), "-mailbox=false")
	require.Nil(t, off.mailbox)
	require.NoError(t, alice.Connect(ctx, peerInfoOf(off)))
	_, err = mailbox.NewClient(alice, 0).Deposit(ctx, off.host.ID(), bob.ID(), box)
	require.Error(t, err, "an opted-out daemon does not speak the protocol")
}

func TestMailboxMetricsServed(t *testing.T) {
	d := startRun(t, t.TempDir(), "-metrics", "127.0.0.1:0", "-mailbox-max-deposit-size", "1KiB")
	alice, bob := newClientHost(t), newClientHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, alice.Connect(ctx, d.info()))
	box, err := mailbox.Seal(alice.Peerstore().PrivKey(alice.ID()), bob.ID(), mailbox.Letter{
		Kind: mailbox.KindMessage, ID: make([]byte, mailbox.MessageIDLen), Time: time.Now(), Text: "hi"})
	require.NoError(t, err)
	cl := mailbox.NewClient(alice, 0)
	_, err = cl.Deposit(ctx, d.peer, bob.ID(), box)
	require.NoError(t, err)
	_, err = cl.Deposit(ctx, d.peer, bob.ID(), append([]byte{1}, make([]byte, 2000)...))
	require.Error(t, err)
	resp, err := http.Get("http://" + d.metrics + "/metrics")
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	s := string(b)
	for _, want := range []string{
		"rendezvous_mailbox_deposits_total 1",
		"rendezvous_mailbox_deposits_held 1",
		`rendezvous_mailbox_rejected_total{reason="E_TOO_LARGE"} 1`,
		"rendezvous_mailbox_bytes_held",
		"rendezvous_mailbox_fetched_total 0",
	} {
		require.Contains(t, s, want)
	}
	require.NoError(t, d.stop(t))
}
