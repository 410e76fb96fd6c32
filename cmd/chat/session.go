package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"

	"github.com/p2p-messaging/p2p-messaging/chat"
	"github.com/p2p-messaging/p2p-messaging/internal/atomicfile"
)

// commandTimeout bounds one command (nick resolution can fall back to the DHT).
const commandTimeout = 30 * time.Second

// lastToFile remembers the last /to target in the data dir, so the next start
// shows that conversation again.
const lastToFile = "last-to"

// Results of commands, rendered by each front end.
type (
	sentResult struct {
		Message chat.Message
	}
	toResult struct {
		Nick string
	}
	peersResult struct {
		Peers []chat.PeerStatus
	}
	whoisResult struct {
		Whois chat.Whois
	}
	joinedResult struct {
		Room string
	}
	historyResult struct {
		With     string
		Messages []chat.Message
	}
	idResult struct {
		Nick  string
		Peer  peer.ID
		Addrs []multiaddr.Multiaddr
		Room  string
	}
	allowedResult struct {
		Peer peer.ID
	}
	blockedResult struct {
		Peer peer.ID
	}
	requestsResult struct {
		Requests []chat.Message
	}
	helpResult struct {
		Lines []string
	}
	quitResult struct{}
	// errorResult is a failed command; the process keeps running.
	errorResult struct {
		Err error
	}
)

// session executes parsed commands against a node and holds the small state
// both front ends share: the current /to target.
type session struct {
	node    *chat.Node
	dataDir string // "" = do not persist the /to target

	mu       sync.Mutex
	to       string
	lastFrom string // who /r answers (contacts.go)
}

func newSession(node *chat.Node, dataDir string) *session {
	s := &session{node: node, dataDir: dataDir}
	if dataDir != "" {
		if b, err := os.ReadFile(filepath.Join(dataDir, lastToFile)); err == nil {
			s.to = strings.TrimSpace(string(b))
		}
	}
	return s
}

// target is the current /to peer ("" if none).
func (s *session) target() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.to
}

func (s *session) setTarget(nick string) error {
	s.mu.Lock()
	s.to = nick
	s.mu.Unlock()
	if s.dataDir == "" {
		return nil
	}
	if err := atomicfile.WriteFile(filepath.Join(s.dataDir, lastToFile), []byte(nick+"\n"), 0o600); err != nil {
		return fmt.Errorf("remember /to target: %w", err)
	}
	return nil
}

var errNoTarget = errors.New("no peer selected: use /to <nick> or /msg <nick> <text>")

// exec runs one command. It never returns nil; failures are errorResult.
func (s *session) exec(ctx context.Context, c command) any {
	if c.kind == cmdSend {
		return s.execFile(ctx, c) // hashing a large file takes longer than commandTimeout (files.go)
	}
	ctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	switch c.kind {
	case cmdSay:
		to := s.target()
		if to == "" {
			return errorResult{errNoTarget}
		}
		return s.send(ctx, to, c.text)
	case cmdMsg:
		return s.send(ctx, c.nick, c.text)
	case cmdTo:
		if err := s.setTarget(c.nick); err != nil {
			return errorResult{err}
		}
		return toResult{Nick: c.nick}
	case cmdPeers:
		return peersResult{Peers: withContacts(s.node)}
	case cmdServers:
		return serversResult{Servers: s.node.Servers()}
	case cmdWhois:
		w, err := s.node.Whois(ctx, c.nick)
		if err != nil {
			return errorResult{withContext(err, "whois", c.nick)}
		}
		return whoisResult{Whois: w}
	case cmdJoin, cmdLeave, cmdCreate, cmdInvite, cmdMembers, cmdUnblock:
		return s.execRoom(ctx, c)
	case cmdHistory:
		with := c.nick
		if with == "" {
			with = s.target()
		}
		if with == "" {
			return errorResult{errors.New("no conversation selected: use /history <nick> [n] or /to <nick>")}
		}
		if strings.HasPrefix(with, "#") {
			return s.roomHistory(with, c.n)
		}
		msgs, err := s.node.History(with, c.n)
		if err != nil {
			return errorResult{withContext(err, "history with", with)}
		}
		return historyResult{With: with, Messages: msgs}
	case cmdID:
		return idResult{Nick: s.node.Nick(), Peer: s.node.ID(), Addrs: s.node.Addrs(), Room: s.node.Room()}
	case cmdAllow:
		p, err := s.node.Allow(c.nick)
		if err != nil {
			return errorResult{err}
		}
		return allowedResult{Peer: p}
	case cmdBlock:
		p, err := s.node.Block(c.nick)
		if err != nil {
			return errorResult{err}
		}
		return blockedResult{Peer: p}
	case cmdRequests:
		reqs, err := s.node.Requests()
		if err != nil {
			return errorResult{err}
		}
		return requestsResult{Requests: reqs}
	case cmdReply, cmdContacts, cmdTrust:
		return s.execContact(ctx, c)
	case cmdSend, cmdAccept, cmdReject, cmdTransfers:
		return s.execFile(ctx, c)
	case cmdHelp:
		return helpResult{Lines: slices.Concat(helpLines, roomHelpLines)}
	case cmdQuit:
		return quitResult{}
	default:
		return nil
	}
}

func (s *session) send(ctx context.Context, nick, text string) any {
	if strings.HasPrefix(nick, "#") {
		return s.sendRoom(ctx, nick, text)
	}
	m, err := s.node.Send(ctx, nick, text)
	if err != nil {
		return errorResult{withContext(err, "send to", nick)}
	}
	return sentResult{Message: m}
}

// withContext names the operation and its argument in err unless the node's
// error already does.
func withContext(err error, op, arg string) error {
	if strings.Contains(err.Error(), arg) {
		return err
	}
	return fmt.Errorf("%s %s: %w", op, arg, err)
}
