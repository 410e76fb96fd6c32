package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/p2p-messaging/p2p-messaging/chat"
)

// cmdKind is what one input line asks for.
type cmdKind int

const (
	cmdNone      cmdKind = iota // empty line: nothing to do
	cmdSay                      // plain line: text to the current /to target
	cmdMsg                      // /msg <nick> <text>
	cmdTo                       // /to <nick>
	cmdPeers                    // /peers
	cmdWhois                    // /whois <nick|peer-id>
	cmdJoin                     // /join <room>
	cmdHistory                  // /history [nick] [n]
	cmdID                       // /id
	cmdAllow                    // /allow <nick|peer-id>
	cmdBlock                    // /block <nick|peer-id>
	cmdRequests                 // /requests
	cmdHelp                     // /help
	cmdQuit                     // /quit
	cmdReply                    // /r <text> (contacts.go)
	cmdContacts                 // /contacts (contacts.go)
	cmdTrust                    // /trust <nick> [safety-number] (contacts.go)
	cmdSend                     // /send <nick> <path> (files.go)
	cmdAccept                   // /accept <id> [dir]
	cmdReject                   // /reject <id>
	cmdTransfers                // /transfers
	cmdServers                  // /servers (servers.go)
)

var (
	nickRules = fmt.Sprintf("1 to %d letters, digits, '-', '_' or '.'", chat.MaxNickLen)
	roomRules = fmt.Sprintf("1 to %d letters, digits, '-', '_' or '.'", chat.MaxRoomNameLen)
)

// Bounds of /history.
const (
	defaultHistory = 20
	maxHistory     = 1000
)

// command is one parsed input line.
type command struct {
	kind cmdKind
	nick string   // /msg, /to, /whois (nick or peer ID), /history (optional)
	room string   // /join
	text string   // /msg, plain line
	n    int      // /history
	file fileArgs // /send, /accept, /reject (files.go)
}

// helpLines documents the commands; /help prints them and the JSON mode
// returns them in the help event.
var helpLines = []string{
	"/msg <nick> <text>       send one message to nick",
	"/to <nick>               talk to nick: plain lines then go to that peer",
	"<text>                   send text to the current /to peer (start with // to send a leading /)",
	"/peers                   online peers with connection kind and round-trip time",
	"/whois <nick|peer-id>    peer ID, addresses, pinned or not, connection",
	"/history [nick] [n]      the last n (default 20) messages with nick (default: the /to peer)",
	"/id                      own nick, peer ID and shareable multiaddrs",
	"/requests                messages from strangers waiting for /allow or /block",
	"/allow <nick|peer-id>    accept a stranger: its request joins the conversation",
	"/block <nick|peer-id>    refuse a peer: its request is dropped, its streams refused",
	"/r <text>                reply to the last peer who wrote to you",
	"/contacts                every contact: online or offline, last seen",
	"/trust <nick> [number]   show nick's safety number; with it, accept nick's new key",
	fileHelpLines[0], fileHelpLines[1], fileHelpLines[2], fileHelpLines[3],
	serversHelp,
	"/help                    this list",
	"/quit                    unregister, flush and exit",
}

// parseCommand parses one input line. It is pure: resolving a plain line to
// the current /to target is the caller's job. Errors are meant for the user.
func parseCommand(line string) (command, error) {
	line = strings.TrimRight(line, "\r\n")
	if !utf8.ValidString(line) {
		return command{}, errors.New("input is not valid UTF-8")
	}
	trimmed := strings.TrimSpace(line)
	if trimmed == "" {
		return command{kind: cmdNone}, nil
	}
	if !strings.HasPrefix(trimmed, "/") {
		return command{kind: cmdSay, text: trimmed}, nil
	}
	if strings.HasPrefix(trimmed, "//") {
		// Escape: "//etc" sends the text "/etc".
		return command{kind: cmdSay, text: trimmed[1:]}, nil
	}
	name, rest := cutWord(trimmed)
	args := strings.Fields(rest)
	switch strings.ToLower(name) {
	case "/msg", "/m":
		nick, text := cutWord(rest)
		if nick == "" {
			return command{}, errors.New("usage: /msg <nick> <text>")
		}
		nick, err := target(nick)
		if err != nil {
			return command{}, err
		}
		if text == "" {
			return command{}, fmt.Errorf("usage: /msg <nick> <text> (no text for %s)", nick)
		}
		return command{kind: cmdMsg, nick: nick, text: text}, nil
	case "/to":
		if len(args) != 1 {
			return command{}, errors.New("usage: /to <nick>")
		}
		nick, err := target(args[0])
		if err != nil {
			return command{}, err
		}
		return command{kind: cmdTo, nick: nick}, nil
	case "/peers":
		if len(args) != 0 {
			return command{}, errors.New("usage: /peers")
		}
		return command{kind: cmdPeers}, nil
	case "/servers":
		return parseServers(args)
	case "/whois":
		if len(args) != 1 {
			return command{}, errors.New("usage: /whois <nick|peer-id>")
		}
		return command{kind: cmdWhois, nick: args[0]}, nil
	case "/join":
		return parseJoin(args)
	case "/leave", "/create", "/invite", "/members", "/unblock":
		return parseRoomCommand(strings.ToLower(name), args)
	case "/history":
		return parseHistory(args)
	case "/id":
		if len(args) != 0 {
			return command{}, errors.New("usage: /id")
		}
		return command{kind: cmdID}, nil
	case "/allow", "/block":
		if len(args) != 1 {
			return command{}, fmt.Errorf("usage: %s <nick|peer-id>", name)
		}
		kind := cmdAllow
		if strings.ToLower(name) == "/block" {
			kind = cmdBlock
		}
		nick, err := target(args[0])
		if err != nil {
			return command{}, err
		}
		return command{kind: kind, nick: nick}, nil
	case "/requests":
		if len(args) != 0 {
			return command{}, errors.New("usage: /requests")
		}
		return command{kind: cmdRequests}, nil
	case "/r", "/reply", "/contacts", "/trust":
		return parseContactCommand(strings.ToLower(name), rest)
	case "/send", "/accept", "/reject", "/transfers":
		return parseFileCommand(strings.ToLower(name), rest)
	case "/help", "/?":
		return command{kind: cmdHelp}, nil
	case "/quit", "/exit":
		return command{kind: cmdQuit}, nil
	default:
		return command{}, fmt.Errorf("unknown command %s (try /help)", name)
	}
}

func parseHistory(args []string) (command, error) {
	const usage = "usage: /history [nick] [n]"
	c := command{kind: cmdHistory, n: defaultHistory}
	if len(args) > 2 {
		return command{}, errors.New(usage)
	}
	for i, a := range args {
		n, err := strconv.Atoi(a)
		if err != nil {
			if i != 0 {
				return command{}, errors.New(usage)
			}
			nick, err := target(a)
			if err != nil {
				return command{}, err
			}
			c.nick = nick
			continue
		}
		if i == 0 && len(args) == 2 {
			// "/history 5 bob" is ambiguous; keep the order strict.
			return command{}, errors.New(usage)
		}
		if n < 1 || n > maxHistory {
			return command{}, fmt.Errorf("history length must be between 1 and %d", maxHistory)
		}
		c.n = n
	}
	return c, nil
}

// target is a nick in its canonical form (chat.NormalizeNick: "Bob" is
// bob), a peer ID string as given, or a room as "#name".
func target(s string) (string, error) {
	if room, ok, err := roomTarget(s); ok {
		return room, err
	}
	if _, err := peer.Decode(s); err == nil {
		return s, nil
	}
	nick, err := chat.NormalizeNick(s)
	if err != nil {
		return "", fmt.Errorf("%w (%s)", err, nickRules)
	}
	return nick, nil
}

// cutWord splits s into its first whitespace-separated word and the rest,
// with the rest's surrounding whitespace removed.
func cutWord(s string) (word, rest string) {
	s = strings.TrimSpace(s)
	i := strings.IndexAny(s, " \t")
	if i < 0 {
		return s, ""
	}
	return s[:i], strings.TrimSpace(s[i+1:])
}
