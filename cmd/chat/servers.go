package main

// /servers: the rendezvous servers and relays the node uses, how it learnt
// each and whether it is connected now; and the start-up's error as the
// user sees it (one sentence) and as -json reports it (an error event).

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/p2p-messaging/p2p-messaging/chat"
)

const serversHelp = "/servers                 rendezvous servers and relays in use: kind, how learnt, reachable"

type serversResult struct {
	Servers []chat.ServerInfo
}

type jsonServer struct {
	Addr      string `json:"addr"`
	Peer      string `json:"peer"`
	Kind      string `json:"kind"`
	Source    string `json:"source"`
	Authority bool   `json:"authority"`
	Relay     bool   `json:"relay"`
	Reachable bool   `json:"reachable"`
}

type jsonServers struct {
	Event   string       `json:"event"`
	Servers []jsonServer `json:"servers"`
}

func parseServers(args []string) (command, error) {
	if len(args) != 0 {
		return command{}, errors.New("usage: /servers")
	}
	return command{kind: cmdServers}, nil
}

// serverAddr is the server's first address with /p2p/<id>, or its bare
// /p2p/<id>.
func serverAddr(s chat.ServerInfo) string {
	addrs, err := peer.AddrInfoToP2pAddrs(&peer.AddrInfo{ID: s.Peer, Addrs: s.Addrs})
	if err != nil || len(addrs) == 0 {
		return "/p2p/" + s.Peer.String()
	}
	return addrs[0].String()
}

func serversJSON(r serversResult) jsonServers {
	out := jsonServers{Event: "servers", Servers: make([]jsonServer, 0, len(r.Servers))}
	for _, s := range r.Servers {
		out.Servers = append(out.Servers, jsonServer{Addr: serverAddr(s), Peer: s.Peer.String(), Kind: string(s.Kind),
			Source: s.Source, Authority: s.Authority, Relay: s.Relay, Reachable: s.Reachable})
	}
	return out
}

// serversLines renders /servers for the terminal UI, one line per server.
func serversLines(r serversResult) []string {
	if len(r.Servers) == 0 {
		return []string{"no rendezvous server in use: contacts are reached directly or through the DHT"}
	}
	lines := []string{fmt.Sprintf("%d server(s):", len(r.Servers))}
	for _, s := range r.Servers {
		state := "unreachable"
		if s.Reachable {
			state = "reachable"
		}
		what := string(s.Kind)
		if s.Relay {
			what += "+relay"
		}
		trust := "names unverified"
		if s.Authority {
			trust = "verifies names"
		}
		lines = append(lines, fmt.Sprintf("  %s  %s, %s, %s, learnt from %s", serverAddr(s), what, state, trust, s.Source))
	}
	return lines
}

// oneSentence is err as the user sees it: its first line, without the
// wrapped libp2p detail after the first colon-separated clause that names
// the failure. The whole error goes to the log.
func oneSentence(err error) string {
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	const max = 200
	if len(s) > max {
		s = s[:max] + "…"
	}
	return s
}

// writeStartError reports a failed start in -json mode: one error event on
// stdout, so a harness reading only stdout sees why.
func writeStartError(w io.Writer, err error) {
	line, merr := marshalLine(jsonError{Event: "error", Error: err.Error()})
	if merr == nil {
		_, _ = w.Write(line)
	}
}
