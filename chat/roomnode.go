package chat

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/discovery"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	dutil "github.com/libp2p/go-libp2p/p2p/discovery/util"
)

// This file is the Node's room API: joining several rooms (by name or by
// invite), leaving them, the rooms' registrations, watches and DHT
// records, and sending, history and members per room. The rooms joined
// are kept in chat.db and rejoined at the next start.

const (
	roomFindInterval = 30 * time.Second // DHT look-up of a room's members
	roomFindLimit    = 20               // members asked of the DHT per look-up
	roomFindDial     = 8                // of which dialled per look-up
)

// keyRoomsInit marks a database whose joined rooms are its own (the
// default room is joined only on a first start).
var keyRoomsInit = []byte("\x00init")

func (cfg *Config) setRoomDefaults() error {
	if cfg.RoomRate <= 0 {
		cfg.RoomRate = DefaultRoomRate
	}
	if cfg.RoomBurst <= 0 {
		cfg.RoomBurst = DefaultRoomBurst
	}
	if cfg.RoomHistoryMax <= 0 {
		cfg.RoomHistoryMax = DefaultRoomHistoryMax
	}
	if cfg.RoomHistoryAge <= 0 {
		cfg.RoomHistoryAge = DefaultRoomHistoryAge
	}
	if cfg.RoomReplayWindow <= 0 {
		cfg.RoomReplayWindow = DefaultRoomReplayWindow
	}
	if cfg.RoomPresenceGrace <= 0 {
		cfg.RoomPresenceGrace = DefaultRoomPresenceGrace
	}
	if cfg.RoomSyncPeers <= 0 {
		cfg.RoomSyncPeers = DefaultRoomSyncPeers
	}
	return nil
}

// openRooms starts GossipSub and joins the rooms kept in chat.db, plus
// cfg.Room when it was given (or on a first start, the default room).
func (n *Node) openRooms(explicitRoom bool) error {
	if err := n.db.initRoomBuckets(); err != nil {
		return fmt.Errorf("init rooms: %w", err)
	}
	rs, err := newRooms(n)
	if err != nil {
		return err
	}
	n.rooms = rs
	joined, err := n.db.joinedRooms()
	if err != nil {
		return fmt.Errorf("load rooms: %w", err)
	}
	first := !n.db.roomsInitialised()
	specs := make([]roomSpec, 0, len(joined)+1)
	for name, j := range joined {
		if j.Secret != nil {
			specs = append(specs, privateRoom(name, j.Secret))
		} else {
			specs = append(specs, openRoom(name))
		}
	}
	if _, ok := joined[n.cfg.Room]; !ok && (explicitRoom || first) {
		specs = append(specs, openRoom(n.cfg.Room))
		if err := n.db.setJoined(n.cfg.Room, &joinedRoom{Joined: time.Now().UTC()}); err != nil {
			return fmt.Errorf("save rooms: %w", err)
		}
	}
	if err := n.db.setRoomsInitialised(); err != nil {
		return fmt.Errorf("save rooms: %w", err)
	}
	for _, spec := range specs {
		if _, err := rs.open(spec); err != nil {
			return err
		}
	}
	// The configured room is the current one.
	if _, ok := joined[n.cfg.Room]; ok || explicitRoom || first {
		rs.mu.Lock()
		if rs.byName[n.cfg.Room] != nil {
			rs.current = n.cfg.Room
		}
		rs.mu.Unlock()
	}
	return nil
}

func (rs *rooms) specs() []roomSpec {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	out := make([]roomSpec, 0, len(rs.byName))
	for _, r := range rs.byName {
		out = append(out, r.spec)
	}
	return out
}

// roomNamespaces returns the rendezvous namespaces of the joined rooms.
func (n *Node) roomNamespaces() []string {
	var out []string
	for _, spec := range n.rooms.specs() {
		out = append(out, spec.NS)
	}
	return out
}

// registerRooms registers every joined room's namespace on the daemons.
func (n *Node) registerRooms(ctx context.Context) {
	for _, spec := range n.rooms.specs() {
		if err := n.register(ctx, spec.NS); err != nil {
			n.names.warn(n.cfg.Nick, n.h.ID(), fmt.Sprintf("room %q: %v", spec.Name, err))
		}
	}
}

func (n *Node) enterRooms() {
	for _, spec := range n.rooms.specs() {
		n.enterRoom(spec)
	}
}

// enterRoom starts watching a room's namespace on the daemons, advertising
// it on the DHT and looking its members up there, until the node leaves
// the room.
func (n *Node) enterRoom(spec roomSpec) {
	ctx, cancel := context.WithCancel(n.ctx)
	n.life.Lock()
	if n.life.closed {
		n.life.Unlock()
		cancel()
		return
	}
	if stop := n.life.roomStops[spec.Name]; stop != nil {
		stop()
	}
	n.life.roomStops[spec.Name] = cancel
	n.life.Unlock()
	if n.rdv != nil {
		n.names.watch(ctx, spec.NS, "")
	}
	if n.disc != nil {
		n.spawn(func() {
			// util.Advertise waits two minutes after a failure: let the
			// routing table fill first.
			select {
			case <-n.cfg.DHT.RefreshRoutingTable():
			case <-ctx.Done():
				return
			}
			n.spawn(func() { dutil.Advertise(ctx, n.disc, spec.NS) })
			n.findRoomMembers(ctx, spec)
		})
	}
}

// findRoomMembers looks a room's members up on the DHT now and then and
// connects to a few, so that the room's mesh forms without the daemons.
func (n *Node) findRoomMembers(ctx context.Context, spec roomSpec) {
	t := time.NewTicker(roomFindInterval)
	defer t.Stop()
	for {
		fctx, cancel := context.WithTimeout(ctx, resolveTimeout)
		ch, err := n.disc.FindPeers(fctx, spec.NS, discovery.Limit(roomFindLimit))
		dialled := 0
		if err == nil {
			for ai := range ch {
				if ai.ID == n.h.ID() || len(ai.Addrs) == 0 || n.names.isBlocked(ai.ID) || dialled >= roomFindDial {
					continue
				}
				if n.h.Network().Connectedness(ai.ID) == network.Connected {
					continue
				}
				dialled++
				addAddrs(n.h.Peerstore(), ai)
				n.spawn(func() {
					dctx, dcancel := context.WithTimeout(ctx, dialTimeout)
					defer dcancel()
					_ = n.h.Connect(dctx, peer.AddrInfo{ID: ai.ID})
				})
			}
		}
		cancel()
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

// Room returns the current room: the one joined last ("" if none).
func (n *Node) Room() string {
	n.rooms.mu.Lock()
	defer n.rooms.mu.Unlock()
	return n.rooms.current
}

// Rooms returns the joined rooms, sorted.
func (n *Node) Rooms() []string { return n.rooms.names() }

// Join joins a room by name (an open room) or by invite (an invite-only
// room, see CreateRoom), and keeps it joined across restarts: registers
// its namespace on the daemons, watches it, advertises it on the DHT,
// subscribes to its topic and catches up on its history from members.
// Joining a room already joined makes it the current one. It returns the
// room's name.
func (n *Node) Join(ctx context.Context, roomOrInvite string) error {
	_, err := n.JoinRoom(ctx, roomOrInvite)
	return err
}

// JoinRoom is Join returning the room's name.
func (n *Node) JoinRoom(ctx context.Context, roomOrInvite string) (string, error) {
	var spec roomSpec
	if strings.HasPrefix(roomOrInvite, InvitePrefix) {
		name, secret, err := ParseInvite(roomOrInvite)
		if err != nil {
			return "", err
		}
		spec = privateRoom(name, secret)
	} else {
		if err := CheckRoomName(roomOrInvite); err != nil {
			return "", fmt.Errorf("join: %w", err)
		}
		spec = openRoom(roomOrInvite)
	}
	return spec.Name, n.join(ctx, spec)
}

func (n *Node) join(ctx context.Context, spec roomSpec) error {
	if n.isClosed() {
		return ErrClosed
	}
	if r, err := n.rooms.get(spec.Name); err == nil {
		if r.spec.Topic != spec.Topic {
			return fmt.Errorf("join %q: already joined as another room (leave it first)", spec.Name)
		}
		_, err := n.rooms.open(spec) // makes it the current room
		return err
	}
	n.life.Lock()
	started := n.life.started
	n.life.Unlock()
	if started && n.rdv != nil {
		if err := n.register(ctx, spec.NS); err != nil {
			return fmt.Errorf("join %q: %w", spec.Name, err)
		}
	}
	if _, err := n.rooms.open(spec); err != nil {
		return err
	}
	if err := n.db.setJoined(spec.Name, &joinedRoom{Secret: spec.Secret, Joined: time.Now().UTC()}); err != nil {
		return fmt.Errorf("join %q: save: %w", spec.Name, err)
	}
	if started {
		n.enterRoom(spec)
	}
	return nil
}

// Leave leaves a room: unsubscribes, unregisters its namespace, stops
// watching it, forgets the members the node never talked to, and no
// longer rejoins it at start. Its history stays in chat.db.
func (n *Node) Leave(ctx context.Context, room string) error {
	r, err := n.rooms.leave(room)
	if err != nil {
		return err
	}
	if err := n.db.setJoined(room, nil); err != nil {
		return fmt.Errorf("leave %q: save: %w", room, err)
	}
	n.life.Lock()
	started := n.life.started
	if stop := n.life.roomStops[room]; stop != nil {
		stop()
		delete(n.life.roomStops, room)
	}
	n.life.Unlock()
	if started && n.rdv != nil {
		uctx, cancel := context.WithTimeout(ctx, unregisterLimit)
		if err := n.rdv.Unregister(uctx, r.spec.NS); err != nil {
			n.log.Debug("unregister room", "ns", r.spec.NS, "err", err)
		}
		cancel()
	}
	n.peers.leftNamespace(r.spec.NS)
	return nil
}

// CreateRoom creates and joins an invite-only room and returns its invite.
// The topic, the namespace and the sealing key derive from the invite's
// secret: the daemons and the DHT never see the name, and a peer without
// the invite can neither read the room nor post in it.
func (n *Node) CreateRoom(ctx context.Context, name string) (string, error) {
	if err := CheckRoomName(name); err != nil {
		return "", fmt.Errorf("create: %w", err)
	}
	if _, err := n.rooms.get(name); err == nil {
		return "", fmt.Errorf("create %q: a room of that name is joined already", name)
	}
	secret, err := newRoomSecret()
	if err != nil {
		return "", err
	}
	spec := privateRoom(name, secret)
	if err := n.join(ctx, spec); err != nil {
		return "", err
	}
	return spec.Invite(), nil
}

// Invite returns the invite of a joined invite-only room.
func (n *Node) Invite(room string) (string, error) {
	r, err := n.rooms.get(room)
	if err != nil {
		return "", err
	}
	if !r.spec.private() {
		return "", fmt.Errorf("room %q is open: anyone may /join %s", room, room)
	}
	return r.spec.Invite(), nil
}

// SendRoom posts text in a joined room. It returns once the message,
// signed by this node, is stored in the room's history and on its way to
// the members, after EventSent (To "#room"). Over the room's rate it fails.
func (n *Node) SendRoom(ctx context.Context, room, text string) (Message, error) {
	if err := validateText(text); err != nil {
		return Message{}, fmt.Errorf("send to #%s: %w", room, err)
	}
	if n.isClosed() {
		return Message{}, ErrClosed
	}
	return n.rooms.send(ctx, room, text)
}

// RoomHistory returns the last limit messages of a joined room (limit <=
// 0: all kept), oldest by send time first.
func (n *Node) RoomHistory(room string, limit int) ([]Message, error) {
	return n.rooms.history(room, limit)
}

// Members lists a joined room's members: this node, the peers in the
// room's topic (online) and the authors seen in it (offline unless in the
// topic), online ones first.
func (n *Node) Members(room string) ([]RoomMember, error) { return n.rooms.members(room) }
