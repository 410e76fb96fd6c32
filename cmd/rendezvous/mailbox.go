package main

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/p2p-messaging/p2p-messaging/internal/cli"
	"github.com/p2p-messaging/p2p-messaging/rendezvous/mailbox"
)

// This file wires the sealed mailbox (rendezvous/mailbox, issue 10) into
// the daemon: its flags and its start.

type mailboxFlagValues struct {
	on                                  *bool
	size                                byteSize
	perRecipient, perSenderPerRecipient *int
	bytesPerRecipient, bytesPerSender   byteSize
	storeSize                           byteSize
	ttl                                 *time.Duration
	rate                                *float64
	burst                               *int
}

// mailboxFlags defines the -mailbox* flags (each with its RENDEZVOUS_
// variable).
func mailboxFlags(fs *cli.FlagSet) *mailboxFlagValues {
	def := mailbox.DefaultLimits()
	v := &mailboxFlagValues{
		on: fs.Bool("mailbox", true, "serve the sealed offline mailbox ("+string(mailbox.ProtocolID)+"): peers leave messages sealed to offline recipients; false opts this daemon out"),
		perRecipient: fs.Int("mailbox-max-per-recipient", def.MaxPerRecipient,
			"deposits waiting for one recipient, from all senders; beyond it E_RECIPIENT_FULL"),
		perSenderPerRecipient: fs.Int("mailbox-max-per-sender-per-recipient", def.MaxPerSenderPerRecipient,
			"deposits one sender may have waiting for one recipient, so one sender cannot fill a recipient's quota; beyond it E_SENDER_FULL"),
		ttl:               fs.Duration("mailbox-ttl", def.TTL, "how long a deposit is kept before it is deleted"),
		rate:              fs.Float64("mailbox-rate", def.RequestRate, "mailbox requests per second from one peer (token bucket); beyond it E_RATE_LIMITED"),
		burst:             fs.Int("mailbox-burst", def.RequestBurst, "mailbox request burst of one peer (token bucket size)"),
		size:              byteSize(def.MaxDepositSize),
		bytesPerRecipient: byteSize(def.MaxBytesPerRecipient),
		bytesPerSender:    byteSize(def.MaxBytesPerSender),
		storeSize:         byteSize(def.MaxStoreSize),
	}
	fs.Var(&v.size, "mailbox-max-deposit-size", fmt.Sprintf("largest sealed deposit, a `size` (at most %d bytes); beyond it E_TOO_LARGE", mailbox.MaxBoxSize))
	fs.Var(&v.bytesPerRecipient, "mailbox-max-bytes-per-recipient", "bytes waiting for one recipient, a `size`")
	fs.Var(&v.bytesPerSender, "mailbox-max-bytes-per-sender", "bytes one sender may have stored for all recipients together, a `size`")
	fs.Var(&v.storeSize, "mailbox-max-store-size", "all deposits together, a `size`; beyond it E_STORE_FULL")
	return v
}

func (v *mailboxFlagValues) config() (bool, mailbox.Limits) {
	l := mailbox.DefaultLimits()
	l.MaxDepositSize = int(min(int64(v.size), 1<<31-1))
	l.MaxPerRecipient = *v.perRecipient
	l.MaxBytesPerRecipient = int64(v.bytesPerRecipient)
	l.MaxPerSenderPerRecipient = *v.perSenderPerRecipient
	l.MaxBytesPerSender = int64(v.bytesPerSender)
	l.MaxStoreSize = int64(v.storeSize)
	l.TTL = *v.ttl
	l.RequestRate, l.RequestBurst = *v.rate, *v.burst
	return *v.on, l
}

// startMailbox starts the mailbox server on the daemon's host, unless
// -mailbox=false.
func (d *daemon) startMailbox(reg prometheus.Registerer, log *slog.Logger) error {
	if !d.cfg.mailbox {
		log.Info("mailbox off (-mailbox=false)")
		return nil
	}
	srv, err := mailbox.New(d.host,
		mailbox.WithDataDir(d.cfg.dataDir),
		mailbox.WithLimits(d.cfg.mailboxLimits),
		mailbox.WithLogger(log),
		mailbox.WithRegisterer(reg),
	)
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return fmt.Errorf("start mailbox: %s is locked: is another daemon using this data dir? %w", mailbox.DBFileName, err)
		}
		return fmt.Errorf("start mailbox: %w", err)
	}
	d.mailbox = srv
	st := srv.Stats()
	log.Info("mailbox", "deposits", st.Deposits, "bytes", st.Bytes, "ttl", d.cfg.mailboxLimits.TTL)
	return nil
}

func (d *daemon) closeMailbox() error {
	if d.mailbox == nil {
		return nil
	}
	if err := d.mailbox.Close(); err != nil {
		return fmt.Errorf("close mailbox: %w", err)
	}
	return nil
}
