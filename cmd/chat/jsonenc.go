package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"

	"github.com/p2p-messaging/p2p-messaging/chat"
)

// The JSON-lines schema of -json mode. Field names are part of the CLI
// contract (see JSON.md); only add fields, never rename them.

// jsonTimeFormat is RFC 3339 in UTC with millisecond precision.
const jsonTimeFormat = "2006-01-02T15:04:05.000Z07:00"

type jsonConnFields struct {
	Conn      string `json:"conn"`
	Transport string `json:"transport"`
	IP        int    `json:"ip"`
	Addr      string `json:"addr"`
	Limited   bool   `json:"limited"`
}

type jsonReady struct {
	Event string   `json:"event"`
	Nick  string   `json:"nick"`
	Peer  string   `json:"peer"`
	Addrs []string `json:"addrs"`
}

type jsonSent struct {
	Event string `json:"event"`
	ID    string `json:"id"`
	To    string `json:"to"`
}

type jsonMessage struct {
	Event string `json:"event"`
	ID    string `json:"id"`
	From  string `json:"from"`
	Peer  string `json:"peer"`
	Text  string `json:"text"`
	Time  string `json:"time"`
	To    string `json:"to"`
	Room  string `json:"room,omitempty"` // rooms.go
}

type jsonRequest struct {
	Event string `json:"event"`
	Peer  string `json:"peer"`
	Nick  string `json:"nick"`
	Text  string `json:"text"`
	ID    string `json:"id"`
	Time  string `json:"time"`
}

type jsonPeerEvent struct {
	Event string `json:"event"`
	Peer  string `json:"peer"`
}

type jsonRequests struct {
	Event    string        `json:"event"`
	Requests []jsonRequest `json:"requests"`
}

type jsonPresence struct {
	Event  string `json:"event"`
	Nick   string `json:"nick"`
	Peer   string `json:"peer"`
	Online bool   `json:"online"`
	Room   string `json:"room,omitempty"` // rooms.go
}

type jsonPeer struct {
	Nick string `json:"nick"`
	Peer string `json:"peer"`
	jsonConnFields
	RTTms  float64 `json:"rtt_ms"`
	Online bool    `json:"online"`
	Punch  string  `json:"punch,omitempty"` // why the last hole punch failed (cmd/chat/nat.go)
}

type jsonPeers struct {
	Event string     `json:"event"`
	Peers []jsonPeer `json:"peers"`
}

type jsonConnEvent struct {
	Event string `json:"event"`
	Nick  string `json:"nick"`
	Peer  string `json:"peer"`
	jsonConnFields
}

type jsonHolePunch struct {
	Event     string  `json:"event"`
	Peer      string  `json:"peer"`
	Success   bool    `json:"success"`
	Attempts  int     `json:"attempts"`
	ElapsedMs float64 `json:"elapsed_ms"`
	Error     string  `json:"error"`
	Reason    string  `json:"reason,omitempty"`
}

type jsonWarning struct {
	Event string `json:"event"`
	Text  string `json:"text"`
	Nick  string `json:"nick"`
	Peer  string `json:"peer"`
}

type jsonWhois struct {
	Event  string   `json:"event"`
	Nick   string   `json:"nick"`
	Peer   string   `json:"peer"`
	Addrs  []string `json:"addrs"`
	Pinned bool     `json:"pinned"`
	Online bool     `json:"online"`
	jsonConnFields
}

type jsonHistoryMessage struct {
	ID       string `json:"id"`
	From     string `json:"from"`
	To       string `json:"to"`
	Peer     string `json:"peer"`
	Text     string `json:"text"`
	Time     string `json:"time"`
	Outgoing bool   `json:"outgoing"`
	Status   string `json:"status"`
	Room     string `json:"room,omitempty"` // rooms.go
}

type jsonHistory struct {
	Event    string               `json:"event"`
	With     string               `json:"with"`
	Messages []jsonHistoryMessage `json:"messages"`
}

type jsonID struct {
	Event string   `json:"event"`
	Nick  string   `json:"nick"`
	Peer  string   `json:"peer"`
	Addrs []string `json:"addrs"`
	Room  string   `json:"room"`
}

type jsonJoined struct {
	Event string `json:"event"`
	Room  string `json:"room"`
}

type jsonTo struct {
	Event string `json:"event"`
	Nick  string `json:"nick"`
}

type jsonHelp struct {
	Event    string   `json:"event"`
	Commands []string `json:"commands"`
}

type jsonError struct {
	Event string `json:"event"`
	Error string `json:"error"`
}

type jsonUnknown struct {
	Event string `json:"event"`
	Type  string `json:"type"`
}

// toJSON maps a chat event or a command result to the object written on
// stdout, or nil when nothing is written for it (a sent message is reported
// by the node's own EventSent, /quit by the process ending).
func toJSON(v any) any {
	if obj, ok := roomJSON(v); ok {
		return obj
	}
	switch e := v.(type) {
	case chat.EventReady:
		return jsonReady{Event: "ready", Nick: e.Nick, Peer: peerString(e.Peer), Addrs: addrStrings(e.Addrs)}
	case chat.EventSent:
		return jsonSent{Event: "sent", ID: e.ID, To: e.To}
	case chat.EventDelivered:
		return jsonSent{Event: "delivered", ID: e.ID, To: e.To}
	case chat.EventStored:
		return storedJSON(e) // mailbox.go
	case chat.EventMessage:
		m := e.Message
		return jsonMessage{Event: "message", ID: m.ID, From: m.From, Peer: peerString(m.Peer), Text: m.Text, Time: jsonTime(m.Time), To: m.To, Room: m.Room}
	case chat.EventRequest:
		return jsonRequest{Event: "request", Peer: peerString(e.Peer), Nick: e.Nick, Text: e.Text, ID: e.ID, Time: jsonTime(e.Time)}
	case chat.EventAllowed:
		return jsonPeerEvent{Event: "allowed", Peer: peerString(e.Peer)}
	case chat.EventBlocked:
		return jsonPeerEvent{Event: "blocked", Peer: peerString(e.Peer)}
	case requestsResult:
		out := jsonRequests{Event: "requests", Requests: make([]jsonRequest, 0, len(e.Requests))}
		for _, m := range e.Requests {
			out.Requests = append(out.Requests, jsonRequest{Event: "request", Peer: peerString(m.Peer), Nick: m.From, Text: m.Text, ID: m.ID, Time: jsonTime(m.Time)})
		}
		return out
	case allowedResult, blockedResult:
		return nil // the node's own EventAllowed / EventBlocked reports it
	case chat.EventPresence:
		return jsonPresence{Event: "presence", Nick: e.Nick, Peer: peerString(e.Peer), Online: e.Online, Room: e.Room}
	case chat.EventConn:
		return jsonConnEvent{Event: "conn", Nick: e.Nick, Peer: peerString(e.Peer), jsonConnFields: connFields(e.Conn)}
	case chat.EventHolePunch:
		return jsonHolePunch{Event: "holepunch", Peer: peerString(e.Peer), Success: e.Success, Attempts: e.Attempts, ElapsedMs: millis(e.Elapsed), Error: e.Err, Reason: e.Reason}
	case chat.EventWarning:
		return jsonWarning{Event: "warning", Text: e.Text, Nick: e.Nick, Peer: peerString(e.Peer)}
	case peersResult:
		out := jsonPeers{Event: "peers", Peers: make([]jsonPeer, 0, len(e.Peers))}
		for _, p := range e.Peers {
			out.Peers = append(out.Peers, jsonPeer{Nick: p.Nick, Peer: peerString(p.Peer), jsonConnFields: connFields(p.Conn), RTTms: millis(p.RTT), Online: p.Online, Punch: p.Punch})
		}
		return out
	case serversResult:
		return serversJSON(e)
	case whoisResult:
		w := e.Whois
		return jsonWhois{Event: "whois", Nick: w.Nick, Peer: peerString(w.Peer), Addrs: addrStrings(w.Addrs), Pinned: w.Pinned, Online: w.Online, jsonConnFields: connFields(w.Conn)}
	case historyResult:
		out := jsonHistory{Event: "history", With: e.With, Messages: make([]jsonHistoryMessage, 0, len(e.Messages))}
		for _, m := range e.Messages {
			out.Messages = append(out.Messages, jsonHistoryMessage{ID: m.ID, From: m.From, To: m.To, Peer: peerString(m.Peer), Text: m.Text, Time: jsonTime(m.Time), Outgoing: m.Outgoing, Status: m.Status.String(), Room: m.Room})
		}
		return out
	case idResult:
		return jsonID{Event: "id", Nick: e.Nick, Peer: peerString(e.Peer), Addrs: addrStrings(e.Addrs), Room: e.Room}
	case joinedResult:
		return jsonJoined{Event: "joined", Room: e.Room}
	case toResult:
		return jsonTo{Event: "to", Nick: e.Nick}
	case helpResult:
		return jsonHelp{Event: "help", Commands: e.Lines}
	case fileOfferedResult, fileAcceptedResult, fileRejectedResult, fileFailedResult, transfersResult, chat.EventFileOffer,
		chat.EventFileProgress, chat.EventFileState, chat.EventFileDone, chat.EventFileFailed:
		return fileJSON(v) // files.go
	case errorResult:
		return jsonError{Event: "error", Error: e.Err.Error()}
	case contactsResult:
		return contactsJSON(e)
	case trustResult:
		return trustJSON(e)
	case sentResult, quitResult, nil:
		return nil
	default:
		// A new chat event type the CLI does not know yet: still visible.
		return jsonUnknown{Event: "unknown", Type: fmt.Sprintf("%T", v)}
	}
}

// marshalLine encodes one object as a JSON line (with the trailing newline).
func marshalLine(obj any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(obj); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func connFields(c chat.ConnInfo) jsonConnFields {
	kind := string(c.Kind)
	if kind == "" {
		kind = string(chat.ConnNone)
	}
	f := jsonConnFields{Conn: kind, Transport: c.Transport, IP: c.IPVersion, Limited: c.Limited}
	if c.Remote != nil {
		f.Addr = c.Remote.String()
	}
	return f
}

func peerString(id peer.ID) string {
	if id == "" {
		return ""
	}
	return id.String()
}

func addrStrings(as []multiaddr.Multiaddr) []string {
	out := make([]string, 0, len(as))
	for _, a := range as {
		if a != nil {
			out = append(out, a.String())
		}
	}
	return out
}

func jsonTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(jsonTimeFormat)
}

// millis is d in milliseconds with microsecond precision.
func millis(d time.Duration) float64 {
	return float64(d.Microseconds()) / 1000
}
