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
	"strings"
	"syscall"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"

	"github.com/p2p-messaging/p2p-messaging/chat"
	"github.com/p2p-messaging/p2p-messaging/internal/addrfile"
	"github.com/p2p-messaging/p2p-messaging/internal/cli"
	"github.com/p2p-messaging/p2p-messaging/internal/maddrs"
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
	bell         bool
	noDeposit    bool   // -mailbox=false (mailbox.go)
	downloadDir  string // files.go
	strangerFile bool
	// The start-up's view of the servers (daemon selection, chat/embed_start.go).
	serve chat.ServeConfig
}

// envPrefix prefixes the environment variable of every flag (internal/cli):
// -data-dir is CHAT_DATA_DIR.
const envPrefix = "CHAT_"

// parseConfig reads flags, then the environment for flags not given, then
// defaults. An environment variable set to "" counts as unset.
func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	fs := cli.New("chat", envPrefix, stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: chat -nick <nick> [flags]\n\nEvery flag can also be set by the environment variable in brackets.\n\n")
		fs.PrintDefaults()
		fmt.Fprintf(stderr, "\nCommands, typed in the UI or written one per line on stdin in -json mode:\n")
		for _, l := range helpLines {
			fmt.Fprintf(stderr, "  %s\n", l)
		}
	}
	var (
		nick         = fs.String("nick", "", "your nick, unique on the rendezvous daemons (required)")
		rendezvous   = fs.String("rendezvous", "", "comma-separated /p2p multiaddrs of rendezvous daemons or of other chats (default: the addrs file of a daemon or chat on this machine; none: this chat serves rendezvous itself)")
		serve        = fs.Bool("serve", false, "also serve others: rendezvous, circuit relay v2 with the daemon's limits and the DHT in server mode, even when a daemon is reachable")
		dataDir      = fs.String("data-dir", "", "identity, history, outbox and contacts (default: per-nick dir under the user config dir)")
		listen       = fs.String("listen", "", "comma-separated listen multiaddrs (default: TCP and QUIC on all IPv4 and IPv6 addresses, random ports)")
		room         = fs.String("room", "", "room to join (default \""+chat.DefaultRoom+"\")")
		reachability = fs.String("reachability", "auto", "auto|public|private: force what the node believes about its reachability")
		logLevel     = fs.String("log-level", "info", "debug|info|warn|error; logs go to stderr in -json mode, to <data-dir>/chat.log in the UI")
		bell         = fs.Bool("bell", true, "ring the terminal bell for a message outside the visible conversation (-bell=false: never)")
		downloadDir  = fs.String("download-dir", "", "where accepted files are saved (default: <data-dir>/downloads)")
		strangerFile = fs.Bool("accept-stranger-files", false, "show file offers from peers that are not contacts (offers from blocked peers are always refused)")
		jsonMode     = fs.Bool("json", false, "headless mode: commands on stdin, one JSON object per line on stdout (see cmd/chat/JSON.md)")
		mailboxOn    = fs.Bool("mailbox", true, mailboxFlagHelp)
	)
	if err := fs.Parse(args, cli.NonEmpty(getenv)); err != nil {
		return config{}, err
	}

	cfg := config{nick: strings.TrimSpace(*nick), room: strings.TrimSpace(*room), json: *jsonMode, bell: *bell, noDeposit: !*mailboxOn,
		downloadDir: *downloadDir, strangerFile: *strangerFile}
	if cfg.nick == "" {
		return config{}, errors.New("-nick is required (or set CHAT_NICK)")
	}
	canonical, err := chat.NormalizeNick(cfg.nick)
	if err != nil {
		return config{}, fmt.Errorf("-nick %q: %w (%s)", cfg.nick, err, nickRules)
	}
	cfg.nick = canonical
	if cfg.room != "" && !chat.ValidRoomName(cfg.room) {
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

	if cfg.listen, err = maddrs.Parse(*listen); err != nil {
		return config{}, fmt.Errorf("-listen: %w", err)
	}

	cfg.serve.Mode = chat.EmbedAuto
	if *serve {
		cfg.serve.Mode = chat.EmbedServe
	}
	if file, err := paths.DefaultAddrFile(); err == nil {
		cfg.serve.AddrFile = file
	}
	if rv := strings.TrimSpace(*rendezvous); rv != "" {
		if cfg.rendezvous, err = maddrs.ParsePeers(rv); err != nil {
			return config{}, fmt.Errorf("-rendezvous: %w", err)
		}
		for range cfg.rendezvous {
			cfg.serve.Sources = append(cfg.serve.Sources, "flag")
		}
	} else if cfg.serve.AddrFile != "" {
		// No addrs file (or a bad one) is no error: the chat serves
		// rendezvous itself (chat/embed_start.go).
		cfg.rendezvous = readAddrFile(cfg.serve.AddrFile, stderr)
		for _, ai := range cfg.rendezvous {
			cfg.serve.Sources = append(cfg.serve.Sources, "addrs file")
			cfg.serve.AddrFileHolders = append(cfg.serve.AddrFileHolders, ai.ID)
		}
	}

	cfg.dataDir = *dataDir
	if cfg.dataDir == "" {
		if cfg.dataDir, err = paths.ChatDataDir(cfg.nick); err != nil {
			return config{}, fmt.Errorf("default -data-dir: %w", err)
		}
	}
	return cfg, nil
}

// readAddrFile returns the servers in the addrs file that a daemon or a
// chat's embedded server on this machine wrote (internal/addrfile); none
// when there is no file, and none, with a one-line note, when it is bad.
func readAddrFile(file string, stderr io.Writer) []peer.AddrInfo {
	addrs, err := addrfile.Read(file)
	switch {
	case errors.Is(err, os.ErrNotExist), errors.Is(err, addrfile.ErrEmpty):
		return nil
	case err != nil:
		fmt.Fprintf(stderr, "chat: ignoring the addrs file: %v\n", err)
		return nil
	}
	infos, err := maddrs.Peers(addrs)
	if err != nil {
		fmt.Fprintf(stderr, "chat: ignoring the addrs file %s: %v\n", file, err)
		return nil
	}
	return infos
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
		NoDeposit:  cfg.noDeposit,

		DownloadDir:         cfg.downloadDir,
		AcceptStrangerFiles: cfg.strangerFile,
		Serve:               cfg.serve,
	})
	if err != nil {
		logger.Error("start node", "err", err)
		err = fmt.Errorf("start node: %s", oneSentence(err))
		if cfg.json {
			writeStartError(stdout, err)
		}
		return err
	}
	defer p.Close()
	if cfg.json {
		return runJSON(ctx, p.Node, p.Start, cfg.dataDir, stdin, stdout, logger)
	}
	return runTUI(ctx, p.Node, p.Start, cfg.dataDir, cfg.bell, stdin, stdout, logger)
}
