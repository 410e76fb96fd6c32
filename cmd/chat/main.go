// Command chat is the p2p-messaging chat client: a terminal UI, or with -json
// a headless JSON-lines mode for scripts and test harnesses (see JSON.md).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"

	"github.com/p2p-messaging/p2p-messaging/chat"
	"github.com/p2p-messaging/p2p-messaging/internal/paths"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "chat: %v\n", err)
		os.Exit(1)
	}
}

// config is the parsed command line.
type config struct {
	nick         string
	rendezvous   []peer.AddrInfo
	dataDir      string
	listen       []multiaddr.Multiaddr
	room         string
	json         bool
	reachability chat.Reachability
	logLevel     slog.Level
}

const noDaemonHint = "no rendezvous daemon: start one with `go run ./cmd/rendezvous` or pass -rendezvous"

// parseConfig reads flags, then the environment for flags not given, then
// defaults.
func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("chat", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: chat -nick <nick> [flags]\n\nEvery flag can also be set by the environment variable in brackets.\n\n")
		fs.PrintDefaults()
		fmt.Fprintf(stderr, "\nCommands, typed in the UI or written one per line on stdin in -json mode:\n")
		for _, l := range helpLines {
			fmt.Fprintf(stderr, "  %s\n", l)
		}
	}
	var (
		nick         = fs.String("nick", getenv("CHAT_NICK"), "your nick, unique on the rendezvous daemons (required) [CHAT_NICK]")
		rendezvous   = fs.String("rendezvous", getenv("CHAT_RENDEZVOUS"), "comma-separated /p2p multiaddrs of rendezvous daemons (default: the addrs file of a daemon on this machine) [CHAT_RENDEZVOUS]")
		dataDir      = fs.String("data-dir", getenv("CHAT_DATA_DIR"), "identity, history, outbox and contacts (default: per-nick dir under the user config dir) [CHAT_DATA_DIR]")
		listen       = fs.String("listen", getenv("CHAT_LISTEN"), "comma-separated listen multiaddrs (default: TCP and QUIC on all IPv4 and IPv6 addresses, random ports) [CHAT_LISTEN]")
		room         = fs.String("room", getenv("CHAT_ROOM"), "room to join (default \""+chat.DefaultRoom+"\") [CHAT_ROOM]")
		reachability = fs.String("reachability", envOr(getenv, "CHAT_REACHABILITY", "auto"), "auto|public|private: force what the node believes about its reachability [CHAT_REACHABILITY]")
		logLevel     = fs.String("log-level", envOr(getenv, "CHAT_LOG_LEVEL", "info"), "debug|info|warn|error; logs go to stderr in -json mode, to <data-dir>/chat.log in the UI [CHAT_LOG_LEVEL]")
	)
	jsonDefault := false
	if v := getenv("CHAT_JSON"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return config{}, fmt.Errorf("CHAT_JSON=%q: want true or false", v)
		}
		jsonDefault = b
	}
	jsonMode := fs.Bool("json", jsonDefault, "headless mode: commands on stdin, one JSON object per line on stdout (see cmd/chat/JSON.md) [CHAT_JSON]")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected argument %q (flags only; see -h)", fs.Arg(0))
	}

	cfg := config{nick: strings.TrimSpace(*nick), room: strings.TrimSpace(*room), json: *jsonMode}
	if cfg.nick == "" {
		return config{}, errors.New("-nick is required (or set CHAT_NICK)")
	}
	canonical, err := chat.NormalizeNick(cfg.nick)
	if err != nil {
		return config{}, fmt.Errorf("-nick %q: %w (%s)", cfg.nick, err, nickRules)
	}
	cfg.nick = canonical
	if cfg.room != "" && !chat.ValidRoom(cfg.room) {
		return config{}, fmt.Errorf("-room %q: %s", cfg.room, roomRules)
	}

	switch strings.ToLower(strings.TrimSpace(*reachability)) {
	case "", "auto":
		cfg.reachability = chat.ReachabilityAuto
	case "public":
		cfg.reachability = chat.ReachabilityPublic
	case "private":
		cfg.reachability = chat.ReachabilityPrivate
	default:
		return config{}, fmt.Errorf("-reachability %q: want auto, public or private", *reachability)
	}
	if err := cfg.logLevel.UnmarshalText([]byte(*logLevel)); err != nil {
		return config{}, fmt.Errorf("-log-level %q: want debug, info, warn or error", *logLevel)
	}

	if cfg.listen, err = parseMultiaddrs(*listen); err != nil {
		return config{}, fmt.Errorf("-listen: %w", err)
	}

	rv := strings.TrimSpace(*rendezvous)
	if rv == "" {
		rv, err = readAddrFile()
		if err != nil {
			return config{}, err
		}
	}
	if cfg.rendezvous, err = parseRendezvous(rv); err != nil {
		return config{}, fmt.Errorf("-rendezvous: %w", err)
	}

	cfg.dataDir = *dataDir
	if cfg.dataDir == "" {
		if cfg.dataDir, err = paths.ChatDataDir(cfg.nick); err != nil {
			return config{}, fmt.Errorf("default -data-dir: %w", err)
		}
	}
	return cfg, nil
}

func envOr(getenv func(string) string, key, def string) string {
	if v := getenv(key); v != "" {
		return v
	}
	return def
}

// readAddrFile returns the multiaddrs a daemon on this machine wrote, one per
// line, as a comma-separated list.
func readAddrFile() (string, error) {
	file, err := paths.DefaultAddrFile()
	if err != nil {
		return "", fmt.Errorf("%s (%v)", noDaemonHint, err)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("%s (no %s)", noDaemonHint, file)
		}
		return "", fmt.Errorf("%s (read %s: %v)", noDaemonHint, file, err)
	}
	var addrs []string
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		if l != "" && !strings.HasPrefix(l, "#") {
			addrs = append(addrs, l)
		}
	}
	if len(addrs) == 0 {
		return "", fmt.Errorf("%s (%s is empty)", noDaemonHint, file)
	}
	return strings.Join(addrs, ","), nil
}

func parseMultiaddrs(list string) ([]multiaddr.Multiaddr, error) {
	var out []multiaddr.Multiaddr
	for _, s := range strings.Split(list, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		a, err := multiaddr.NewMultiaddr(s)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", s, err)
		}
		out = append(out, a)
	}
	return out, nil
}

// parseRendezvous parses /p2p multiaddrs, grouping the addresses of one
// daemon into one AddrInfo.
func parseRendezvous(list string) ([]peer.AddrInfo, error) {
	addrs, err := parseMultiaddrs(list)
	if err != nil {
		return nil, err
	}
	if len(addrs) == 0 {
		return nil, errors.New(noDaemonHint)
	}
	for _, a := range addrs {
		if _, err := a.ValueForProtocol(multiaddr.P_P2P); err != nil {
			return nil, fmt.Errorf("%s: missing /p2p/<peer-id>", a)
		}
	}
	infos, err := peer.AddrInfosFromP2pAddrs(addrs...)
	if err != nil {
		return nil, err
	}
	return infos, nil
}

// run is the whole program, testable: it returns when the user quits, stdin
// ends (-json) or ctx is cancelled (SIGINT, SIGTERM).
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	cfg, err := parseConfig(args, os.Getenv, stderr)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.dataDir, 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}

	var logger *slog.Logger
	if cfg.json {
		logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: cfg.logLevel}))
	} else {
		// The terminal belongs to the UI: logs go to a file.
		f, err := os.OpenFile(filepath.Join(cfg.dataDir, "chat.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return fmt.Errorf("open log file: %w", err)
		}
		defer f.Close()
		logger = slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: cfg.logLevel}))
	}

	p, err := chat.Open(chat.HostConfig{
		ListenAddrs:  cfg.listen,
		Reachability: cfg.reachability,
	}, chat.Config{
		Nick:       cfg.nick,
		Room:       cfg.room,
		DataDir:    cfg.dataDir,
		Rendezvous: cfg.rendezvous,
		Logger:     logger,
	})
	if err != nil {
		return fmt.Errorf("start node: %w", err)
	}
	defer p.Host.Close()
	if cfg.json {
		return runJSON(ctx, p.Node, p.Start, cfg.dataDir, stdin, stdout, logger)
	}
	return runTUI(ctx, p.Node, p.Start, cfg.dataDir, stdin, stdout, logger)
}
