package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/p2p-messaging/p2p-messaging/chat"
)

// Answers in command order, and request tags, for -json mode.
//
// Commands run one after another and their answers go to the writer in
// that order. The one answer that comes from the node instead is "sent"
// (the node's EventSent, which always precedes the message's "delivered"):
// after a send the command loop waits until the event forwarder has
// passed that EventSent on, so it is written before the next command's
// answer. Only the command loop sends, so the EventSent that arrives
// while a command runs is that command's.
//
// One command is answered late: /send hashes its file before the offer
// leaves, which takes seconds per GiB, so the loop does not wait for it.
// Its answer (file_offered, or file_failed when hashing or the offer
// failed) is written when it is known, with the /send's tag, and the
// commands after it are answered meanwhile, in their order; lateAnswers
// runs those waits and Close waits for them. An error found before the
// hashing starts (usage, unknown nick, unreadable path) is answered in
// order, at once.
//
// A line may start with "@<tag> ": the tag (1 to 64 letters, digits, '.',
// '_', ':' or '-') is echoed as "tag" in the command's answer (its
// "sent", or "error", or the result event).

const (
	maxTagLen = 64
	// sentWait bounds the wait for a send's EventSent to pass the
	// forwarder (it is queued before Send returns).
	sentWait = 5 * time.Second
)

// tagged is an answer with the tag of its command.
type tagged struct {
	tag string
	v   any
}

// cutTag splits "@tag rest" into the tag and the rest. A line without a
// leading "@" has no tag.
func cutTag(line string) (tag, rest string, err error) {
	if !strings.HasPrefix(line, "@") {
		return "", line, nil
	}
	tag, rest = cutWord(line[1:])
	if !validTag(tag) {
		return "", "", errors.New("invalid request tag: @ then 1 to 64 letters, digits, '.', '_', ':' or '-', then a space and the command")
	}
	return tag, rest, nil
}

func validTag(t string) bool {
	if t == "" || len(t) > maxTagLen {
		return false
	}
	for _, r := range t {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == ':' || r == '-') {
			return false
		}
	}
	return true
}

// withTag adds "tag" to an encoded JSON object line.
func withTag(line []byte, tag string) []byte {
	if tag == "" {
		return line
	}
	end := bytes.LastIndexByte(line, '}')
	if end < 1 {
		return line
	}
	t, _ := json.Marshal(tag)
	out := make([]byte, 0, len(line)+len(t)+8)
	out = append(out, line[:end]...)
	if end > 1 {
		out = append(out, ',')
	}
	out = append(out, `"tag":`...)
	out = append(out, t...)
	return append(out, line[end:]...)
}

// lateAnswers writes the answers that come after the command loop moved
// on.
type lateAnswers struct {
	wg sync.WaitGroup
}

// start writes what wait returns, tagged, to out once it returns.
func (l *lateAnswers) start(out chan<- any, tag string, wait func() any) {
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		out <- tagged{tag: tag, v: wait()}
	}()
}

// close waits until every late answer is queued (the node is closed
// first, which ends the waits).
func (l *lateAnswers) close() { l.wg.Wait() }

// answerOrder ties the node's EventSent to the command that caused it.
type answerOrder struct {
	tag  chan string // the running command's tag; buffered 1, holds one value
	sent chan string // IDs of forwarded EventSent
}

func newAnswerOrder() *answerOrder {
	o := &answerOrder{tag: make(chan string, 1), sent: make(chan string, 64)}
	o.tag <- ""
	return o
}

func (o *answerOrder) setTag(t string) {
	<-o.tag
	o.tag <- t
}

func (o *answerOrder) currentTag() string {
	t := <-o.tag
	o.tag <- t
	return t
}

// forward is what the event forwarder writes for ev, and for EventSent
// what to do once it is queued for the writer: tell the command loop.
func (o *answerOrder) forward(ev chat.Event) (any, func()) {
	s, ok := ev.(chat.EventSent)
	if !ok {
		return ev, nil
	}
	return tagged{tag: o.currentTag(), v: ev}, func() {
		select {
		case o.sent <- s.ID:
		default: // nobody waits that long; the wait times out
		}
	}
}

// waitSent returns once the EventSent of id was forwarded, or after
// sentWait.
func (o *answerOrder) waitSent(id string) {
	timeout := time.NewTimer(sentWait)
	defer timeout.Stop()
	for {
		select {
		case got := <-o.sent:
			if got == id {
				return
			}
		case <-timeout.C:
			return
		}
	}
}

// JSON objects of /contacts and /trust.
type (
	jsonContact struct {
		Nick string `json:"nick"`
		Peer string `json:"peer"`
		jsonConnFields
		Online   bool   `json:"online"`
		LastSeen string `json:"last_seen"`
	}
	jsonContacts struct {
		Event    string        `json:"event"`
		Contacts []jsonContact `json:"contacts"`
	}
	jsonTrust struct {
		Event    string `json:"event"`
		Nick     string `json:"nick"`
		Pinned   string `json:"pinned"`
		New      string `json:"new"`
		Safety   string `json:"safety"`
		Accepted bool   `json:"accepted"`
	}
)

func contactsJSON(r contactsResult) any {
	out := jsonContacts{Event: "contacts", Contacts: make([]jsonContact, 0, len(r.Contacts))}
	for _, c := range r.Contacts {
		out.Contacts = append(out.Contacts, jsonContact{Nick: c.Nick, Peer: peerString(c.Peer), jsonConnFields: connFields(c.Conn), Online: c.Online, LastSeen: jsonTime(c.LastSeen)})
	}
	return out
}

func trustJSON(r trustResult) any {
	k := r.Check
	return jsonTrust{Event: "trust", Nick: k.Nick, Pinned: peerString(k.Pinned), New: peerString(k.New), Safety: k.Safety, Accepted: k.Accepted}
}
