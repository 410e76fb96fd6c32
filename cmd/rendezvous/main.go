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
