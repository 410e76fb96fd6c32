// Command rendezvous is the p2p-messaging daemon: a /rendezvous/1.0.0 server
// (with the watch and exclusive-namespace extensions), a circuit relay v2,
// an AutoNAT service and a Kademlia DHT server under the /p2p-messaging
// prefix, with Prometheus metrics and a health check on their own listener.
//
// Started with no flags it listens on TCP and QUIC port 4001 on every IPv4
// and IPv6 address, keeps its identity key and registration store in the
// user's config directory and writes its multiaddrs to the addrs file there,
// where a chat on the same machine finds it.
//
// The DHT server keeps provider and value records in a pebble database in
// the data directory (dht/), bounded by -dht-max-provider-records (total),
// -dht-max-provider-records-per-peer and -dht-max-value-records: beyond a
// cap new records are dropped (the peer is not told; its ADD_PROVIDER
// succeeds as far as it can see) until stored ones expire after 48 hours,
// while refreshes of records already stored are always kept.
//
// # Relay fairness
//
// The circuit relay v2 service holds at most -relay-max-circuits relayed
// connections per peer (as source and as destination together). So that a
// few identities cannot take all of one user's circuits, the daemon also
// limits the circuits to one destination per source peer
// (-relay-max-circuits-per-source, default 4) and per source address, an
// IPv4 address or an IPv6 /56 (-relay-max-circuits-per-source-ip, default
// 8): filling a user's 64 circuits takes 8 addresses, not 64 throwaway keys.
// A CONNECT beyond a limit is answered PERMISSION_DENIED; the dialling chat
// then has no relayed path to that user through this daemon (it may try
// another daemon, or succeed once circuits end), while everyone else still
// gets through.
//
// Reservations: at most -relay-max-reservations-per-ip (default 128) peers
// behind one IPv4 address or IPv6 /56 hold a reservation at once, enough
// for an office or a small CGNAT pool (the resource manager admits at most
// -conns-per-ip, default 64, connections from one address anyway, loopback
// excepted), and new reservations from one address are limited to
// -relay-reservation-rate-per-ip a minute (default 16, bursting to 16), so a
// single address cannot take every slot in a second; renewing a reservation
// one holds is never rate limited. At a limit RESERVE is refused
// (PERMISSION_DENIED from the rate or the /56 count, RESERVATION_REFUSED
// from the relay's own count): the peer is not reachable through this
// daemon's relay until a slot frees (a holder disconnects or its
// reservation expires after -relay-reservation-ttl) and its AutoRelay
// retries, with backoff, here or on another daemon. Refusals are counted in
// rendezvous_relay_refused_total{reason}.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	golog "github.com/ipfs/go-log/v2"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// After the first signal, a second one kills the process at once
	// instead of waiting for the graceful shutdown.
	context.AfterFunc(ctx, stop)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	default:
		fmt.Fprintln(os.Stderr, "rendezvous:", err)
		os.Exit(1)
	}
}

// run starts the daemon and serves until ctx is done, then shuts down
// gracefully. Logs go to stderr; stdout is unused (kept for symmetry with the
// other binaries and for tests).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	_ = stdout
	c, err := parseConfig(args, os.LookupEnv, stderr)
	if err != nil {
		return err
	}
	if c.logFormat == "json" {
		// libp2p's own logs (go-log, error level unless GOLOG_LOG_LEVEL
		// says otherwise) then use json too, so stderr stays parseable.
		cfg := golog.GetConfig()
		if cfg.Format != golog.JSONOutput {
			cfg.Format = golog.JSONOutput
			golog.SetupLogging(cfg)
		}
	}
	d, err := startDaemon(ctx, c, stderr)
	if err != nil {
		return err
	}
	<-ctx.Done()
	return d.shutdown()
}
