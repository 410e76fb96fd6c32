package chat

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/time/rate"
	"google.golang.org/protobuf/proto"
)

// This file is rooms: group chat over GossipSub, one topic per room. The
// rooms service owns the PubSub instance and the joined rooms (one small
// lock); each joined room runs two goroutines, one taking its messages
// from the subscription into the history, one following its members
// (joins and leaves, coalesced) and starting history sync.
//
// The author of a room message is the GossipSub signing peer (strict
// signing): never a field. The topic validator refuses, before anything is
// stored or passed on:
//
//   - data over maxRoomData, a seal that does not open (invite-only
//     rooms), a body that does not decode (non-UTF-8 or oversized text, a
//     bad id): rejected, which costs the forwarding peer score;
//   - a message sent more than RoomReplayWindow from our clock (a replay
//     of an old message, or a wild clock), an author the user blocked, an
//     author over its per-room token bucket (RoomRate, RoomBurst): ignored,
//     not delivered and not relayed by us, without penalising the
//     forwarder, which may be honest.
//
// GossipSub's own seen cache (by author and sequence number, kept twice
// the replay window) drops copies inside the window; the store drops any
// message whose (author, id) it already holds, so each message is shown
// once, whether it came live or from history sync.

// Room defaults.
const (
	DefaultRoomRate          = 5.0 // messages per second per author per room
	DefaultRoomBurst         = 20
	DefaultRoomHistoryMax    = 1000
	DefaultRoomHistoryAge    = 7 * 24 * time.Hour
	DefaultRoomReplayWindow  = 5 * time.Minute
	DefaultRoomPresenceGrace = 5 * time.Second
	DefaultRoomSyncPeers     = 3

	maxRoomLimiters  = 4096  // authors with a token bucket per room (beyond: the bucket map restarts)
	maxRoomMembers   = 10000 // members remembered per room
	roomSubBuffer    = 4096  // messages GossipSub holds for a room reader
	roomPubsubMaxMsg = 1 << 20
	linkSyncDelay    = 2 * time.Second  // after a member joins, before asking it (two heartbeats)
	linkSyncWindow   = 30 * time.Second // what a member beyond the first RoomSyncPeers is asked for
	linkSyncLimit    = 100
	roomPollInterval = 30 * time.Second // pollOutside
	roomPollPeers    = 2                // members outside the mesh asked per poll
)

// ErrNotInRoom: the node has not joined that room.
var ErrNotInRoom = errors.New("not in that room")

// RoomMember is one member of a room as Members reports it.
type RoomMember struct {
	Nick   string // verified nick, or the peer ID when unverified
	Peer   peer.ID
	Online bool
}

// roomMember is what a room knows of one member.
type roomMember struct {
	inTopic    bool      // GossipSub lists it in the topic now
	shown      bool      // shown online (a presence event went out)
	leaveAt    time.Time // a leave waiting out the grace; zero: none
	lastActive time.Time
}

type room struct {
	spec   roomSpec
	topic  *pubsub.Topic
	sub    *pubsub.Subscription
	evh    *pubsub.TopicEventHandler
	ctx    context.Context // ends when the room is left or the node closes
	cancel context.CancelFunc
	wg     sync.WaitGroup

	done chan struct{} // closed by stop

	mu       sync.Mutex
	limiters *peerLimits // per author, the room rate
	members  map[peer.ID]*roomMember
	leaving  map[peer.ID]*roomMember // members with a leave waiting out the grace (expireLeaves looks only at these)
	asked    map[peer.ID]bool        // history asked of these peers in this spell online
	syncs    int                     // history answers taken in this spell
	proven   map[peer.ID]bool        // invite-only rooms: peers that proved they hold the key
	proving  map[peer.ID]bool        // a proof is being asked of these
}

type rooms struct {
	n            *Node
	ps           *pubsub.PubSub
	now          func() time.Time
	pollInterval time.Duration // pollOutside

	mu      sync.Mutex
	byName  map[string]*room
	byTopic map[string]*room
	current string                // the room joined last (Node.Room)
	waiters map[string]chan error // own messages: id -> stored
	closed  bool

	hist  *roomHistory
	proof *proofServer
	ack   *ackServer
	// ackPause is the pause between the rounds of stored-mark questions
	// (roomack.go).
	ackPause time.Duration
	sealed   sync.Map // topic -> *room, invite-only rooms (peerFilter)
}

func roomPeerScore() (*pubsub.PeerScoreParams, *pubsub.PeerScoreThresholds) {
	p := &pubsub.PeerScoreParams{
		SkipAtomicValidation: true,
		Topics:               map[string]*pubsub.TopicScoreParams{},
		TopicScoreCap:        100,
		AppSpecificScore:     func(peer.ID) float64 { return 0 },
		// Members share one IP on a test machine or behind one NAT: no
		// colocation penalty (the rendezvous daemons bound registrations
		// per IP already).
		IPColocationFactorWeight:  0,
		BehaviourPenaltyWeight:    -10,
		BehaviourPenaltyThreshold: 6,
		BehaviourPenaltyDecay:     pubsub.ScoreParameterDecay(10 * time.Minute),
		DecayInterval:             time.Second,
		DecayToZero:               0.01,
		RetainScore:               10 * time.Minute,
	}
	th := &pubsub.PeerScoreThresholds{
		SkipAtomicValidation:        true,
		GossipThreshold:             -100,
		PublishThreshold:            -500,
		GraylistThreshold:           -1000,
		AcceptPXThreshold:           10,
		OpportunisticGraftThreshold: 5,
	}
	return p, th
}

// roomTopicScore: invalid messages (P4) weigh heavily, first deliveries
// (P2) and time in the mesh (P1) a little.
func roomTopicScore() *pubsub.TopicScoreParams {
	return &pubsub.TopicScoreParams{
		SkipAtomicValidation:            true,
		TopicWeight:                     1,
		TimeInMeshWeight:                0.01,
		TimeInMeshQuantum:               time.Second,
		TimeInMeshCap:                   300,
		FirstMessageDeliveriesWeight:    1,
		FirstMessageDeliveriesDecay:     pubsub.ScoreParameterDecay(10 * time.Minute),
		FirstMessageDeliveriesCap:       50,
		InvalidMessageDeliveriesWeight:  -100,
		InvalidMessageDeliveriesDecay:   pubsub.ScoreParameterDecay(time.Hour),
		MeshFailurePenaltyWeight:        0,
		MeshMessageDeliveriesWeight:     0,
		MeshMessageDeliveriesThreshold:  0,
		MeshMessageDeliveriesActivation: 0,
	}
}

func newRooms(n *Node) (*rooms, error) {
	rs := &rooms{
		n:            n,
		now:          time.Now,
		pollInterval: roomPollInterval,
		ackPause:     ackPause,
		byName:       map[string]*room{},
		byTopic:      map[string]*room{},
		waiters:      map[string]chan error{},
	}
	params, th := roomPeerScore()
	ps, err := pubsub.NewGossipSub(n.ctx, n.h,
		pubsub.WithMessageSignaturePolicy(pubsub.StrictSign),
		pubsub.WithPeerScore(params, th),
		pubsub.WithSeenMessagesTTL(2*n.cfg.RoomReplayWindow),
		pubsub.WithMaxMessageSize(roomPubsubMaxMsg),
		pubsub.WithPeerFilter(rs.peerFilter),
		pubsub.WithLogger(n.log.With("svc", "pubsub")),
	)
	if err != nil {
		return nil, fmt.Errorf("gossipsub: %w", err)
	}
	rs.ps = ps
	rs.hist = newRoomHistory(rs)
	rs.proof = newProofServer(rs)
	rs.ack = newAckServer(rs)
	return rs, nil
}

// peerFilter keeps blocked peers out of every mesh and gossip, and out of
// an invite-only room's mesh every peer that has not proven it holds the
// room's key (roomproof.go).
func (rs *rooms) peerFilter(p peer.ID, topic string) bool {
	if rs.n.names.isBlocked(p) {
		return false
	}
	// GossipSub calls this from its event loop, which open waits on while
	// holding rs.mu: so the sealed rooms have a map of their own.
	v, ok := rs.sealed.Load(topic)
	if !ok {
		return true
	}
	return v.(*room).isProven(p)
}

// close leaves every room (without forgetting them: they are rejoined at
// the next start) and removes the protocol handlers. The PubSub instance
// ends with the node's context.
func (rs *rooms) close() {
	rs.mu.Lock()
	rs.closed = true
	all := make([]*room, 0, len(rs.byName))
	for _, r := range rs.byName {
		all = append(all, r)
	}
	rs.mu.Unlock()
	for _, r := range all {
		r.stop()
	}
	rs.hist.close()
	rs.proof.close()
	rs.ack.close()
	for _, id := range pubsub.GossipSubDefaultProtocols {
		rs.n.h.RemoveStreamHandler(id)
	}
}

func (rs *rooms) get(name string) (*room, error) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	r := rs.byName[name]
	if r == nil {
		return nil, fmt.Errorf("room %q: %w", name, ErrNotInRoom)
	}
	return r, nil
}

func (rs *rooms) byTopicName(topic string) *room {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.byTopic[topic]
}

func (rs *rooms) names() []string {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	out := make([]string, 0, len(rs.byName))
	for name := range rs.byName {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// open joins spec's topic and starts the room's goroutines.
func (rs *rooms) open(spec roomSpec) (*room, error) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.closed {
		return nil, ErrClosed
	}
	if old := rs.byName[spec.Name]; old != nil {
		if old.spec.Topic != spec.Topic {
			return nil, fmt.Errorf("room %q: already joined as another room (leave it first)", spec.Name)
		}
		rs.current = spec.Name
		return old, nil
	}
	r := &room{
		spec:     spec,
		limiters: newPeerLimits(rate.Limit(rs.n.cfg.RoomRate), rs.n.cfg.RoomBurst, maxRoomLimiters),
		members:  map[peer.ID]*roomMember{},
		leaving:  map[peer.ID]*roomMember{},
		asked:    map[peer.ID]bool{},
		proven:   map[peer.ID]bool{},
		proving:  map[peer.ID]bool{},
		done:     make(chan struct{}),
	}
	if spec.private() {
		rs.sealed.Store(spec.Topic, r)
	}
	// Inline: the validator never blocks (no I/O, two short locks), so it
	// runs in GossipSub's validation worker instead of a goroutine per
	// message.
	if err := rs.ps.RegisterTopicValidator(spec.Topic, func(ctx context.Context, from peer.ID, m *pubsub.Message) pubsub.ValidationResult {
		return rs.validate(r, m)
	}, pubsub.WithValidatorInline(true)); err != nil {
		return nil, fmt.Errorf("room %q: validator: %w", spec.Name, err)
	}
	fail := func(err error) (*room, error) {
		if r.sub != nil {
			r.sub.Cancel()
		}
		if r.evh != nil {
			r.evh.Cancel()
		}
		if r.topic != nil {
			_ = r.topic.Close()
		}
		_ = rs.ps.UnregisterTopicValidator(spec.Topic)
		rs.sealed.Delete(spec.Topic)
		return nil, fmt.Errorf("room %q: %w", spec.Name, err)
	}
	var err error
	if r.topic, err = rs.ps.Join(spec.Topic); err != nil {
		return fail(err)
	}
	if err := r.topic.SetScoreParams(roomTopicScore()); err != nil {
		return fail(err)
	}
	if r.evh, err = r.topic.EventHandler(); err != nil {
		return fail(err)
	}
	if r.sub, err = r.topic.Subscribe(pubsub.WithBufferSize(roomSubBuffer)); err != nil {
		return fail(err)
	}
	ctx, cancel := context.WithCancel(rs.n.ctx)
	r.ctx, r.cancel = ctx, cancel
	r.wg.Add(2)
	go func() { defer r.wg.Done(); rs.readLoop(ctx, r) }()
	go func() { defer r.wg.Done(); rs.memberLoop(ctx, r) }()
	rs.byName[spec.Name] = r
	rs.byTopic[spec.Topic] = r
	rs.current = spec.Name
	return r, nil
}

// leave stops a room and forgets it.
func (rs *rooms) leave(name string) (*room, error) {
	rs.mu.Lock()
	r := rs.byName[name]
	if r != nil {
		delete(rs.byName, name)
		delete(rs.byTopic, r.spec.Topic)
		if rs.current == name {
			rs.current = ""
			for other := range rs.byName {
				rs.current = other
				break
			}
		}
	}
	rs.mu.Unlock()
	if r == nil {
		return nil, fmt.Errorf("room %q: %w", name, ErrNotInRoom)
	}
	r.stop()
	_ = rs.ps.UnregisterTopicValidator(r.spec.Topic)
	rs.sealed.Delete(r.spec.Topic)
	return r, nil
}

func (r *room) stop() {
	r.cancel()
	close(r.done)
	r.sub.Cancel()
	r.evh.Cancel()
	r.wg.Wait()
	_ = r.topic.Close()
}

// validate is the room's topic validator (see the top of the file).
func (rs *rooms) validate(r *room, m *pubsub.Message) pubsub.ValidationResult {
	author := m.GetFrom()
	if len(m.Data) > maxRoomData {
		return pubsub.ValidationReject
	}
	plain, err := r.spec.open(m.Data)
	if err != nil {
		return pubsub.ValidationReject
	}
	body, err := decodeRoomBody(plain)
	if err != nil {
		return pubsub.ValidationReject
	}
	if rs.n.names.isBlocked(author) {
		return pubsub.ValidationIgnore
	}
	now := rs.now()
	if d := now.Sub(time.UnixMilli(body.SentMs)); d > rs.n.cfg.RoomReplayWindow || d < -rs.n.cfg.RoomReplayWindow {
		return pubsub.ValidationIgnore
	}
	if !r.limiters.allowAt(author, now) {
		return pubsub.ValidationIgnore
	}
	m.ValidatorData = body
	return pubsub.ValidationAccept
}

// readLoop stores the room's messages as GossipSub delivers them (our own
// included) and shows the new ones.
func (rs *rooms) readLoop(ctx context.Context, r *room) {
	for {
		m, err := r.sub.Next(ctx)
		if err != nil {
			return
		}
		body, ok := m.ValidatorData.(roomBody)
		if !ok {
			continue
		}
		raw, err := proto.Marshal(m.Message)
		if err != nil {
			continue
		}
		rs.take(r, m.GetFrom(), body, raw, m.GetFrom() == rs.n.h.ID())
	}
}

// take stores one checked room message (live or from history sync) and,
// once committed and new, shows it (EventMessage); own (our own message
// as GossipSub hands it back) wakes the sender.
func (rs *rooms) take(r *room, author peer.ID, body roomBody, raw []byte, own bool) {
	local := own
	id := hex.EncodeToString(body.ID[:])
	rec := roomRecord{ID: id, Author: author.String(), Nick: body.Nick, Text: body.Text, SentMs: body.SentMs, Raw: raw}
	r.touch(author, rs.now())
	var msg Message
	if !local && author != rs.n.h.ID() {
		msg = rs.message(r.ctx, r.spec.Name, rec, true)
	}
	err := rs.n.db.addRoomMessage(r.spec.Topic, rec, rs.n.cfg.RoomHistoryMax, rs.n.cfg.RoomHistoryAge, rs.now(), func(res roomAddResult, err error) {
		if local {
			rs.stored(id, err)
		}
		if err != nil {
			rs.n.log.Error("store room message", "room", r.spec.Name, "err", err)
			return
		}
		if local || author == rs.n.h.ID() {
			return
		}
		if res == roomStored || res == roomDuplicate {
			rs.ack.committed(r.spec.Topic, author, body.ID[:]) // roomack.go
		}
		if res == roomStored {
			rs.n.ev.emit(EventMessage{Message: msg})
		}
	})
	if err != nil && local {
		rs.stored(id, err)
	}
}

// message turns a stored record into a Message. With verify, an author
// whose claimed nick is not pinned yet is checked at the daemons (bounded
// like a Hello's claim); otherwise it is shown by its peer ID.
func (rs *rooms) message(ctx context.Context, room string, rec roomRecord, verify bool) Message {
	author, _ := peer.Decode(rec.Author)
	m := Message{
		ID:     rec.ID,
		To:     "#" + room,
		Peer:   author,
		Text:   rec.Text,
		Time:   time.UnixMilli(rec.SentMs).UTC(),
		Status: StatusDelivered,
		Room:   room,
	}
	switch {
	case author == rs.n.h.ID():
		m.From, m.Outgoing = rs.n.cfg.Nick, true
		if !rec.Stored {
			m.Status = StatusPending // no member said it stored it (roomack.go)
		}
	case rs.n.names.nickOf(author) != "":
		m.From = rs.n.names.nickOf(author)
	case verify && rec.Nick != "" && rs.n.rdv != nil:
		ctx, cancel := context.WithTimeout(ctx, verifyTimeout)
		m.From, _ = rs.n.names.identify(ctx, author, rec.Nick)
		cancel()
	default:
		m.From = author.String()
	}
	return m
}

func (rs *rooms) stored(id string, err error) {
	rs.mu.Lock()
	ch := rs.waiters[id]
	delete(rs.waiters, id)
	rs.mu.Unlock()
	if ch != nil {
		ch <- err
	}
}

// touch records activity of a member.
func (r *room) touch(p peer.ID, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.members[p]
	if m == nil {
		if len(r.members) >= maxRoomMembers {
			return
		}
		m = &roomMember{}
		r.members[p] = m
	}
	m.lastActive = now
}

// memberLoop follows the peers in the room's topic: a join shows a member
// online, a leave shows it offline once it stayed away RoomPresenceGrace
// (so a reconnect shows nothing), and new peers are asked for the history
// until RoomSyncPeers answered.
func (rs *rooms) memberLoop(ctx context.Context, r *room) {
	events := make(chan pubsub.PeerEvent, 64)
	go func() {
		defer close(events)
		for {
			ev, err := r.evh.NextPeerEvent(ctx)
			if err != nil {
				return
			}
			select {
			case events <- ev:
			case <-ctx.Done():
				return
			}
		}
	}()
	grace := rs.n.cfg.RoomPresenceGrace
	tick := time.NewTicker(max(grace/4, 10*time.Millisecond))
	defer tick.Stop()
	poll := time.NewTicker(rs.pollInterval)
	defer poll.Stop()
	for {
		select {
		case <-poll.C:
			rs.pollOutside(r)
		case ev, ok := <-events:
			if !ok {
				return
			}
			switch ev.Type {
			case pubsub.PeerJoin:
				rs.memberJoined(r, ev.Peer)
			case pubsub.PeerLeave:
				rs.memberLeft(r, ev.Peer)
			}
		case <-tick.C:
			rs.expireLeaves(r)
		case <-ctx.Done():
			return
		}
	}
}

// pollOutside asks members the daemons list in the room but GossipSub
// does not (a member reachable only over a limited relay, where GossipSub
// opens no streams) for what was said lately, a few per poll: so such a
// member still reads the room, and what it posts still reaches us. While
// we have no mesh peer at all, the poll asks for everything since our
// newest message instead.
func (rs *rooms) pollOutside(r *room) {
	if rs.n.rdv == nil {
		return
	}
	inTopic := map[peer.ID]bool{}
	for _, p := range r.topic.ListPeers() {
		if !r.spec.private() || r.isProven(p) {
			inTopic[p] = true
		}
	}
	window := rs.pollInterval + linkSyncWindow
	if len(inTopic) == 0 {
		window = 0
	}
	asked := 0
	for _, p := range rs.n.peers.listed(r.spec.NS) {
		if asked >= roomPollPeers {
			break
		}
		if inTopic[p] || p == rs.n.h.ID() || rs.n.names.isBlocked(p) {
			continue
		}
		asked++
		rs.n.spawn(func() { rs.hist.sync(r, p, window) })
	}
}

func (rs *rooms) memberJoined(r *room, p peer.ID) {
	if r.spec.private() && !r.isProven(p) {
		// Not a member until it proves it holds the key; then this runs again.
		rs.proveLater(r, p)
		return
	}
	now := rs.now()
	r.mu.Lock()
	m := r.members[p]
	if m == nil {
		if len(r.members) >= maxRoomMembers {
			r.mu.Unlock()
			return
		}
		m = &roomMember{}
		r.members[p] = m
	}
	m.inTopic = true
	m.leaveAt = time.Time{}
	delete(r.leaving, p)
	m.lastActive = now
	show := !m.shown
	m.shown = true
	full := len(r.asked) < maxRoomMembers && !r.asked[p] && r.syncs < rs.n.cfg.RoomSyncPeers
	if full {
		r.asked[p] = true
	}
	r.mu.Unlock()
	if show {
		rs.n.ev.emit(EventPresence{Nick: rs.displayName(p), Peer: p, Online: true, Room: r.spec.Name})
	}
	// The first RoomSyncPeers are asked at once for everything since our
	// newest message. A message published while a new link forms (before
	// GossipSub has the peer in the topic on both sides) can miss that
	// link: so every new member is also asked, a moment later, for what
	// was said lately.
	if full {
		rs.n.spawn(func() { rs.hist.sync(r, p, 0) })
	}
	time.AfterFunc(linkSyncDelay, func() {
		select {
		case <-r.done:
		default:
			rs.n.spawn(func() { rs.hist.sync(r, p, linkSyncWindow) })
		}
	})
}

func (rs *rooms) memberLeft(r *room, p peer.ID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if m := r.members[p]; m != nil {
		m.inTopic = false
		m.leaveAt = rs.now().Add(rs.n.cfg.RoomPresenceGrace)
		r.leaving[p] = m
	}
	anyone := false
	for _, m := range r.members {
		if m.inTopic {
			anyone = true
			break
		}
	}
	if !anyone {
		// Alone in the room: whoever comes next is asked again, so what
		// was said meanwhile is caught up.
		r.asked = map[peer.ID]bool{}
		r.syncs = 0
	}
}

func (rs *rooms) expireLeaves(r *room) {
	now := rs.now()
	var gone []peer.ID
	r.mu.Lock()
	for p, m := range r.leaving {
		if !now.Before(m.leaveAt) {
			m.leaveAt = time.Time{}
			delete(r.leaving, p)
			if m.shown {
				m.shown = false
				gone = append(gone, p)
			}
		}
	}
	r.mu.Unlock()
	for _, p := range gone {
		rs.n.ev.emit(EventPresence{Nick: rs.displayName(p), Peer: p, Online: false, Room: r.spec.Name})
	}
}

func (rs *rooms) displayName(p peer.ID) string {
	if nick := rs.n.names.nickOf(p); nick != "" {
		return nick
	}
	return p.String()
}

// members lists a room's members: ourselves, the peers in its topic, and
// the authors seen, each online or not.
func (rs *rooms) members(name string) ([]RoomMember, error) {
	r, err := rs.get(name)
	if err != nil {
		return nil, err
	}
	online := map[peer.ID]bool{}
	for _, p := range r.topic.ListPeers() {
		if !r.spec.private() || r.isProven(p) {
			online[p] = true
		}
	}
	r.mu.Lock()
	ids := make([]peer.ID, 0, len(r.members)+len(online))
	for p := range r.members {
		ids = append(ids, p)
	}
	r.mu.Unlock()
	for p := range online {
		ids = append(ids, p)
	}
	self := rs.n.h.ID()
	out := []RoomMember{{Nick: rs.n.cfg.Nick, Peer: self, Online: true}}
	seen := map[peer.ID]bool{self: true}
	for _, p := range ids {
		if seen[p] {
			continue
		}
		seen[p] = true
		out = append(out, RoomMember{Nick: rs.displayName(p), Peer: p, Online: online[p]})
	}
	sort.Slice(out[1:], func(i, j int) bool {
		a, b := out[1+i], out[1+j]
		if a.Online != b.Online {
			return a.Online
		}
		return a.Nick < b.Nick
	})
	return out, nil
}

// send publishes text in a room and returns once our own copy is stored.
func (rs *rooms) send(ctx context.Context, name, text string) (Message, error) {
	r, err := rs.get(name)
	if err != nil {
		return Message{}, err
	}
	now := rs.now().UTC().Truncate(time.Millisecond)
	idHex, err := newID()
	if err != nil {
		return Message{}, err
	}
	id, err := parseID(idHex)
	if err != nil {
		return Message{}, err
	}
	body := roomBody{SentMs: now.UnixMilli(), Text: text, Nick: rs.n.cfg.Nick}
	copy(body.ID[:], id)
	data, err := r.spec.seal(body.encode())
	if err != nil {
		return Message{}, err
	}
	ch := make(chan error, 1)
	rs.mu.Lock()
	rs.waiters[idHex] = ch
	rs.mu.Unlock()
	if err := r.topic.Publish(ctx, data); err != nil {
		rs.mu.Lock()
		delete(rs.waiters, idHex)
		rs.mu.Unlock()
		if strings.Contains(err.Error(), "validation") {
			return Message{}, fmt.Errorf("room %q: over the room's rate (%g/s, bursts of %d): %w", name, rs.n.cfg.RoomRate, rs.n.cfg.RoomBurst, err)
		}
		return Message{}, fmt.Errorf("room %q: publish: %w", name, err)
	}
	select {
	case err = <-ch:
	case <-ctx.Done():
		return Message{}, fmt.Errorf("room %q: waiting for the commit: %w", name, ctx.Err())
	}
	if err != nil {
		return Message{}, fmt.Errorf("room %q: store: %w", name, err)
	}
	m := Message{ID: idHex, From: rs.n.cfg.Nick, To: "#" + name, Peer: rs.n.h.ID(), Text: text, Time: now, Outgoing: true, Status: StatusPending, Room: name}
	rs.n.ev.emit(EventSent{ID: idHex, To: "#" + name})
	rs.n.spawn(func() { rs.confirm(r, idHex, id) }) // roomack.go: EventDelivered once a member stored it
	return m, nil
}

// history returns the last limit messages of a room, oldest first.
func (rs *rooms) history(name string, limit int) ([]Message, error) {
	r, err := rs.get(name)
	if err != nil {
		return nil, err
	}
	recs, err := rs.n.db.roomMessages(r.spec.Topic, 0, limit)
	if err != nil {
		return nil, err
	}
	out := make([]Message, 0, len(recs))
	for _, rec := range recs {
		out = append(out, rs.message(r.ctx, name, rec, false))
	}
	return out, nil
}
