package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/p2p-messaging/p2p-messaging/chat"
)

// Rooms in the CLI (issue 9): /join <room|invite>, /leave, /create,
// /invite, /members, /unblock, and "#room" wherever a nick goes (/msg,
// /to, /history). Parsing, execution, results, JSON and the TUI's text
// lines for them live here; the shared switches only call in.

// Room commands.
const (
	cmdLeave   cmdKind = iota + 100 // /leave <room>
	cmdCreate                       // /create <room>
	cmdInvite                       // /invite <room>
	cmdMembers                      // /members #<room>
	cmdUnblock                      // /unblock <nick|peer-id>
)

var roomHelpLines = []string{
	"/join <room|invite>      join a room (several at once; kept across restarts) or an invite-only room",
	"/leave <room>            leave a room",
	"/create <room>           create an invite-only room; prints its invite",
	"/invite <room>           print the invite of an invite-only room",
	"/msg #<room> <text>      post in a room; /to #<room> makes plain lines go there",
	"/members #<room>         the room's members, online or not",
	"/history #<room> [n]     the last n messages of a room",
	"/unblock <nick|peer-id>  lift a /block",
}

// Results of room commands.
type (
	leftResult struct {
		Room string
	}
	createdResult struct {
		Room, Invite string
	}
	inviteResult struct {
		Room, Invite string
	}
	membersResult struct {
		Room    string
		Members []chat.RoomMember
	}
	unblockedResult struct {
		Peer peer.ID
	}
)

// roomArg is a room named with or without its '#'.
func roomArg(s string) (string, error) {
	name := strings.TrimPrefix(s, "#")
	if err := chat.CheckRoomName(name); err != nil {
		return "", err
	}
	return name, nil
}

// roomTarget reports whether a /msg, /to or /history target is a room
// ("#name") and checks the name.
func roomTarget(s string) (string, bool, error) {
	if !strings.HasPrefix(s, "#") {
		return "", false, nil
	}
	name, err := roomArg(s)
	return "#" + name, true, err
}

// parseJoin takes a room name (with or without '#') or an invite.
func parseJoin(args []string) (command, error) {
	if len(args) != 1 {
		return command{}, errors.New("usage: /join <room|invite>")
	}
	if strings.HasPrefix(args[0], chat.InvitePrefix) {
		if _, _, err := chat.ParseInvite(args[0]); err != nil {
			return command{}, err
		}
		return command{kind: cmdJoin, room: args[0]}, nil
	}
	name, err := roomArg(args[0])
	if err != nil {
		return command{}, fmt.Errorf("invalid room %q: %w", args[0], err)
	}
	return command{kind: cmdJoin, room: name}, nil
}

// parseRoomCommand parses /leave, /create, /invite, /members, /unblock.
func parseRoomCommand(name string, args []string) (command, error) {
	kind := map[string]cmdKind{"/leave": cmdLeave, "/create": cmdCreate, "/invite": cmdInvite, "/members": cmdMembers, "/unblock": cmdUnblock}[name]
	if kind == cmdUnblock {
		if len(args) != 1 {
			return command{}, errors.New("usage: /unblock <nick|peer-id>")
		}
		nick, err := target(args[0])
		if err != nil {
			return command{}, err
		}
		return command{kind: cmdUnblock, nick: nick}, nil
	}
	if len(args) != 1 {
		return command{}, fmt.Errorf("usage: %s <room>", name)
	}
	room, err := roomArg(args[0])
	if err != nil {
		return command{}, fmt.Errorf("invalid room %q: %w", args[0], err)
	}
	return command{kind: kind, room: room}, nil
}

// execRoom runs a room command.
func (s *session) execRoom(ctx context.Context, c command) any {
	switch c.kind {
	case cmdJoin:
		name, err := s.node.JoinRoom(ctx, c.room)
		if err != nil {
			return errorResult{err}
		}
		return joinedResult{Room: name}
	case cmdLeave:
		if err := s.node.Leave(ctx, c.room); err != nil {
			return errorResult{withContext(err, "leave", c.room)}
		}
		if s.target() == "#"+c.room {
			_ = s.setTarget("")
		}
		return leftResult{Room: c.room}
	case cmdCreate:
		inv, err := s.node.CreateRoom(ctx, c.room)
		if err != nil {
			return errorResult{withContext(err, "create", c.room)}
		}
		return createdResult{Room: c.room, Invite: inv}
	case cmdInvite:
		inv, err := s.node.Invite(c.room)
		if err != nil {
			return errorResult{withContext(err, "invite", c.room)}
		}
		return inviteResult{Room: c.room, Invite: inv}
	case cmdMembers:
		ms, err := s.node.Members(c.room)
		if err != nil {
			return errorResult{withContext(err, "members of", c.room)}
		}
		return membersResult{Room: c.room, Members: ms}
	case cmdUnblock:
		p, err := s.node.Unblock(c.nick)
		if err != nil {
			return errorResult{err}
		}
		return unblockedResult{Peer: p}
	}
	return nil
}

// sendRoom posts in a room ("#name").
func (s *session) sendRoom(ctx context.Context, to, text string) any {
	m, err := s.node.SendRoom(ctx, strings.TrimPrefix(to, "#"), text)
	if err != nil {
		return errorResult{withContext(err, "send to", to)}
	}
	return sentResult{Message: m}
}

// roomHistory answers /history #room.
func (s *session) roomHistory(with string, n int) any {
	msgs, err := s.node.RoomHistory(strings.TrimPrefix(with, "#"), n)
	if err != nil {
		return errorResult{withContext(err, "history of", with)}
	}
	return historyResult{With: with, Messages: msgs}
}

// JSON of the room results (JSON.md, "Rooms").

type jsonRoom struct {
	Event string `json:"event"`
	Room  string `json:"room"`
}

type jsonInvite struct {
	Event  string `json:"event"`
	Room   string `json:"room"`
	Invite string `json:"invite"`
}

type jsonMember struct {
	Nick   string `json:"nick"`
	Peer   string `json:"peer"`
	Online bool   `json:"online"`
}

type jsonMembers struct {
	Event   string       `json:"event"`
	Room    string       `json:"room"`
	Members []jsonMember `json:"members"`
}

// roomJSON maps a room result or event to its JSON object (ok false: not
// a room value).
func roomJSON(v any) (any, bool) {
	switch e := v.(type) {
	case leftResult:
		return jsonRoom{Event: "left", Room: e.Room}, true
	case createdResult:
		return jsonInvite{Event: "created", Room: e.Room, Invite: e.Invite}, true
	case inviteResult:
		return jsonInvite{Event: "invite", Room: e.Room, Invite: e.Invite}, true
	case membersResult:
		out := jsonMembers{Event: "members", Room: e.Room, Members: make([]jsonMember, 0, len(e.Members))}
		for _, m := range e.Members {
			out.Members = append(out.Members, jsonMember{Nick: m.Nick, Peer: peerString(m.Peer), Online: m.Online})
		}
		return out, true
	case chat.EventUnblocked:
		return jsonPeerEvent{Event: "unblocked", Peer: peerString(e.Peer)}, true
	case unblockedResult:
		return nil, true // the node's EventUnblocked reports it
	}
	return nil, false
}

// roomResultLines is what the TUI shows for a room result or event.
func roomResultLines(v any) []string {
	switch e := v.(type) {
	case leftResult:
		return []string{"left room #" + e.Room}
	case createdResult:
		return []string{fmt.Sprintf("created invite-only room #%s; share this invite (whoever has it can read and post):", e.Room), "  " + e.Invite}
	case inviteResult:
		return []string{fmt.Sprintf("invite to #%s:", e.Room), "  " + e.Invite}
	case membersResult:
		lines := []string{fmt.Sprintf("#%s: %d member(s)", e.Room, len(e.Members))}
		for _, m := range e.Members {
			state := "offline"
			if m.Online {
				state = "online"
			}
			lines = append(lines, fmt.Sprintf("  %s (%s) %s", m.Nick, shortID(m.Peer), state))
		}
		return lines
	case chat.EventUnblocked:
		return []string{fmt.Sprintf("unblocked %s", e.Peer)}
	}
	return nil
}

// roomPresenceLine is the TUI's line for a member joining or leaving a
// room ("" for a presence event of no room).
func roomPresenceLine(e chat.EventPresence) string {
	if e.Room == "" {
		return ""
	}
	if e.Online {
		return fmt.Sprintf("%s joined #%s", e.Nick, e.Room)
	}
	return fmt.Sprintf("%s left #%s", e.Nick, e.Room)
}
