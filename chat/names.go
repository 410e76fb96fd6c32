package chat

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
	"golang.org/x/time/rate"

	"github.com/p2p-messaging/p2p-messaging/rendezvous"
)

// This file is names and contacts: pins (nick -> peer, like known_hosts),
// the user's allowed and blocked peers, verification of claimed nicks at
// the daemons, warnings, and the rendezvous watches that feed presence.
// Its state sits under one small lock, never held across I/O; the pins
// themselves are in the database.
//
// Verification fails closed: a nick counts as held by a peer only when at
// least one daemon answers and the answering daemons name that peer, and
// no other, for the nick's exclusive namespace: as registered there, or as
// the holder of the name's lease (the daemon's answer reports it, also
// while the holder is offline and has no registration, so a letter from
// the mailbox is shown under its sender's nick). A look-up that errs, is
// refused or is rate-limited, a daemon that lists or names someone else,
// or no daemon at all leaves the claim unverified: the peer is shown by
// its ID with a warning and nothing is pinned. The DHT is used only to find the
// addresses of peers the node already knows by ID; it never names anyone.

const (
	verifyTimeout     = 5 * time.Second  // one verification look-up
	verifyCacheTTL    = 30 * time.Second // how long a look-up's answer is reused
	maxVerifyCache    = 1024             // nicks whose look-up answer is cached
	maxClaimsPerPeer  = 4                // distinct nicks one peer may make us look up
	maxClaimers       = 4096             // peers whose claims are counted
	verifyRate        = 5                // claim look-ups per second, all peers together
	verifyBurst       = 20               //
	maxContactWatch   = 32               // contacts whose user namespace we watch
	maxWarned         = 4096             // (nick, peer) warnings remembered, to warn once
	discoverPerServer = 10               // registrations asked per look-up
)

// Whois describes a nick or peer ID.
type Whois struct {
	Nick     string
	Peer     peer.ID
	Addrs    []multiaddr.Multiaddr
	Pinned   bool
	Verified bool // the daemons agree that Peer holds Nick
	Online   bool
	Conn     ConnInfo
}

// lookup is the daemons' answer about one nick.
type lookup struct {
	holders  []peer.AddrInfo // distinct peers registered or holding the lease at the answering daemons
	answered int             // daemons that answered
	// vouched are the distinct peers listed by servers that are no
	// authority (other chats' services, embed_start.go): unverified.
	vouched []peer.AddrInfo
	at      time.Time
	err     error // every daemon failed
}

// holder returns the one peer every answering daemon lists, if any.
func (l *lookup) holder() (peer.AddrInfo, bool) {
	if l.answered == 0 || len(l.holders) != 1 {
		return peer.AddrInfo{}, false
	}
	return l.holders[0], true
}

type inflight struct {
	done chan struct{}
	res  *lookup
}

type names struct {
	n *Node

	limiter *rate.Limiter // claim look-ups, all peers together

	mu       sync.Mutex
	byPeer   map[peer.ID]string // pinned nick of a peer
	allowed  map[peer.ID]bool   // peers the user wrote to or allowed
	talked   map[peer.ID]bool   // peers with a conversation: allowed, or a message stored from them
	blocked  map[peer.ID]bool
	cache    map[string]*lookup
	pending  map[string]*inflight
	claims   map[peer.ID]map[string]bool
	warned   map[string]bool
	watching map[string]context.CancelFunc
	claimers map[string]peer.ID // last peer that claimed a pinned nick (contacts.go)
}

func newNames(n *Node) *names {
	return &names{
		n:        n,
		limiter:  rate.NewLimiter(verifyRate, verifyBurst),
		byPeer:   map[peer.ID]string{},
		allowed:  map[peer.ID]bool{},
		talked:   map[peer.ID]bool{},
		blocked:  map[peer.ID]bool{},
		cache:    map[string]*lookup{},
		pending:  map[string]*inflight{},
		claims:   map[peer.ID]map[string]bool{},
		warned:   map[string]bool{},
		watching: map[string]context.CancelFunc{},
		claimers: map[string]peer.ID{},
	}
}

// loadContact indexes a pin read at start and remembers its addresses.
func (nm *names) loadContact(c contact) {
	if len(c.Addrs) > 0 {
		addAddrs(nm.n.h.Peerstore(), peer.AddrInfo{ID: c.Peer, Addrs: c.Addrs})
	}
	nm.mu.Lock()
	nm.byPeer[c.Peer] = c.Nick
	nm.mu.Unlock()
	nm.n.peers.peer(c.Peer).nick = c.Nick // before the loop runs
}

// loadRelations reads the allowed and blocked peers and the peers with a
// conversation.
func (nm *names) loadRelations() error {
	allowed, blocked, err := nm.n.db.relations()
	if err != nil {
		return err
	}
	talked, err := nm.n.db.historyPeers()
	if err != nil {
		return err
	}
	nm.mu.Lock()
	defer nm.mu.Unlock()
	nm.allowed, nm.blocked, nm.talked = allowed, blocked, talked
	for p := range allowed {
		nm.talked[p] = true
	}
	return nil
}

// hasTalked reports whether the user has a conversation with p (wrote to
// it, allowed it, or stored a message from it): what makes a contact worth
// following, as opposed to a room member whose nick is merely verified.
func (nm *names) hasTalked(p peer.ID) bool {
	nm.mu.Lock()
	defer nm.mu.Unlock()
	return nm.talked[p]
}

// talkedWith records a conversation with p and starts following its nick.
func (nm *names) talkedWith(p peer.ID) {
	nm.mu.Lock()
	had := nm.talked[p]
	nm.talked[p] = true
	nick := nm.byPeer[p]
	nm.mu.Unlock()
	if !had && nick != "" {
		nm.watchContact(nick)
	}
}

// isContact reports whether p's messages go to the conversation rather
// than to the requests: a pinned contact, or a peer the user wrote to or
// allowed.
func (nm *names) isContact(p peer.ID) bool {
	nm.mu.Lock()
	defer nm.mu.Unlock()
	_, pinned := nm.byPeer[p]
	return (pinned || nm.allowed[p]) && !nm.blocked[p]
}

func (nm *names) isBlocked(p peer.ID) bool {
	nm.mu.Lock()
	defer nm.mu.Unlock()
	return nm.blocked[p]
}

// nickOf returns p's pinned nick, or "".
func (nm *names) nickOf(p peer.ID) string {
	nm.mu.Lock()
	defer nm.mu.Unlock()
	return nm.byPeer[p]
}

// allow makes p a contact (the user wrote to it).
func (nm *names) allow(p peer.ID) error {
	nm.mu.Lock()
	known := nm.allowed[p]
	nm.mu.Unlock()
	if known {
		return nil
	}
	_, _, err := nm.setRelation(p, relAllowed)
	return err
}

func (nm *names) setRelation(p peer.ID, rel string) (Message, bool, error) {
	req, ok, err := nm.n.db.setRelation(p, rel)
	if err != nil {
		return Message{}, false, err
	}
	nm.mu.Lock()
	nm.allowed[p] = rel == relAllowed
	nm.blocked[p] = rel == relBlocked
	nm.mu.Unlock()
	if rel == relAllowed {
		nm.talkedWith(p)
	}
	return req, ok, nil
}

// resolve maps a nick (or a peer ID string) to a peer: the pinned contact
// first, then the daemons. A nick the daemons verify is pinned.
func (nm *names) resolve(ctx context.Context, nick string) (peer.ID, error) {
	c, ok, err := nm.n.db.contact(nick)
	if err != nil {
		return "", err
	}
	if ok {
		return c.Peer, nil
	}
	if p, err := peer.Decode(nick); err == nil {
		return p, nil
	}
	if !ValidNick(nick) {
		return "", ErrUnknownNick
	}
	l := nm.lookupNick(ctx, nick)
	ai, ok := l.holder()
	switch {
	case ok:
		return nm.pin(nick, ai, false)
	case len(l.holders) > 1:
		nm.warnConflict(nick, l.holders)
		return "", fmt.Errorf("the daemons disagree on who holds nick %q (%s, %s); not pinning", nick, l.holders[0].ID, l.holders[1].ID)
	case len(l.holders) == 0 && len(l.vouched) == 1:
		// Only chats' servers know the nick: use the peer, unverified,
		// pin nothing (embed_start.go's trust rule).
		ai := l.vouched[0]
		addAddrs(nm.n.h.Peerstore(), ai)
		nm.warn(nick, ai.ID, fmt.Sprintf("nick %q is unverified: only chat nodes' servers list it, for peer %s; not pinned", nick, ai.ID))
		return ai.ID, nil
	case len(l.holders) == 0 && len(l.vouched) > 1:
		return "", fmt.Errorf("nick %q is unverified and chat nodes' servers disagree on it (%s, %s); send to a peer ID", nick, l.vouched[0].ID, l.vouched[1].ID)
	case l.answered == 0 && nm.n.rdv != nil:
		return "", fmt.Errorf("cannot verify nick %q: no daemon answered (%v); send to its peer ID to trust a peer without the daemons", nick, l.err)
	default:
		return "", ErrUnknownNick
	}
}

// errNoAuthority: the node uses no daemon that is an authority on names.
var errNoAuthority = errors.New("no rendezvous daemon is configured, only chat nodes' servers")

// pin records nick -> ai.ID (verified) unless the nick is pinned already,
// and returns the peer it is pinned to. A nick confusable with a contact's
// (bоb with a Cyrillic о for bob) is flagged; with auto (a Hello's claim,
// not the user's choice) it is then not pinned (errConfusable).
func (nm *names) pin(nick string, ai peer.AddrInfo, auto bool) (peer.ID, error) {
	if c, ok := nm.confusableContact(nick, ai.ID); ok {
		nm.warn(nick, ai.ID, fmt.Sprintf("nick %q of peer %s looks like your contact %q (%s)", nick, ai.ID, c.Nick, c.Peer))
		if auto {
			return "", errConfusable
		}
	}
	addAddrs(nm.n.h.Peerstore(), ai)
	pinned, err := nm.n.db.pin(nick, ai.ID, ai.Addrs, time.Now())
	if err != nil {
		return "", fmt.Errorf("pin %q: %w", nick, err)
	}
	if pinned == ai.ID {
		nm.learn(ai.ID, nick)
	}
	return pinned, nil
}

// errConfusable: a claimed nick looks like a contact's; not pinned.
var errConfusable = errors.New("nick confusable with a contact's")

// confusableContact returns a contact of another peer whose nick looks
// like nick.
func (nm *names) confusableContact(nick string, p peer.ID) (contact, bool) {
	contacts, err := nm.n.db.contacts()
	if err != nil {
		return contact{}, false
	}
	for _, c := range contacts {
		if c.Peer != p && Confusable(nick, c.Nick) {
			return c, true
		}
	}
	return contact{}, false
}

// learn indexes a verified nick, and follows it if the user talks with
// the peer (a room member's verified nick alone is not followed).
func (nm *names) learn(p peer.ID, nick string) {
	nm.mu.Lock()
	nm.byPeer[p] = nick
	talked := nm.talked[p]
	nm.mu.Unlock()
	nm.n.peers.learnNick(p, nick)
	if talked {
		nm.watchContact(nick)
	}
}

// identify decides how to show peer p that claims nick in its Hello. It
// returns the nick and true when the claim holds (the nick is pinned to
// p, or the daemons verify it now and it is pinned), otherwise p's ID
// string and false, with a warning once.
func (nm *names) identify(ctx context.Context, p peer.ID, claimed string) (string, bool) {
	n := nm.n
	if claimed == n.cfg.Nick {
		nm.warn(claimed, p, fmt.Sprintf("peer %s claims our own nick %q", p, claimed))
		return p.String(), false
	}
	c, ok, err := n.db.contact(claimed)
	if err != nil {
		n.log.Warn("read contact", "nick", claimed, "err", err)
		return p.String(), false
	}
	if ok {
		if c.Peer == p {
			nm.learn(p, claimed)
			return claimed, true
		}
		nm.warnImpersonation(claimed, p, c.Peer)
		return p.String(), false
	}
	if !nm.countClaim(p, claimed) {
		nm.warn(claimed, p, fmt.Sprintf("peer %s claims more nicks than it may have looked up (%q); shown by peer ID", p, claimed))
		return p.String(), false
	}
	if !nm.limiter.Allow() {
		nm.warn(claimed, p, fmt.Sprintf("peer %s claims nick %q; too many claims to verify now, shown by peer ID", p, claimed))
		return p.String(), false
	}
	l := nm.lookupNick(ctx, claimed)
	ai, ok := l.holder()
	switch {
	case ok && ai.ID == p:
		pinned, err := nm.pin(claimed, ai, true)
		switch {
		case errors.Is(err, errConfusable):
		case err != nil:
			n.log.Warn("pin contact", "nick", claimed, "peer", p, "err", err)
		case pinned != p:
			nm.warnImpersonation(claimed, p, pinned)
		default:
			return claimed, true
		}
		return p.String(), false
	case ok:
		nm.warn(claimed, p, fmt.Sprintf("peer %s claims nick %q, which the rendezvous daemons name for %s (registered, or holding its lease); not accepted", p, claimed, ai.ID))
	case len(l.holders) > 1:
		nm.warnConflict(claimed, l.holders)
	case l.answered == 0 && errors.Is(l.err, errNoAuthority):
		nm.warn(claimed, p, fmt.Sprintf("peer %s claims nick %q, unverified: no rendezvous daemon here verifies nicks; shown by peer ID", p, claimed))
	case l.answered == 0:
		nm.warn(claimed, p, fmt.Sprintf("peer %s claims nick %q, which cannot be verified now (no daemon answered); shown by peer ID", p, claimed))
	default:
		nm.warn(claimed, p, fmt.Sprintf("peer %s claims nick %q, which it neither holds nor has registered at the rendezvous daemons; shown by peer ID", p, claimed))
	}
	return p.String(), false
}

// accept pins nick to ai.ID in place of its old key: the old peer loses
// the nick, the new one is followed as the contact.
func (nm *names) accept(nick string, ai peer.AddrInfo) error {
	old, _, err := nm.n.db.contact(nick)
	if err != nil {
		return err
	}
	if err := nm.n.db.repin(nick, ai.ID, ai.Addrs, time.Now()); err != nil {
		return err
	}
	addAddrs(nm.n.h.Peerstore(), ai)
	nm.mu.Lock()
	if old.Peer != "" && nm.byPeer[old.Peer] == nick {
		delete(nm.byPeer, old.Peer)
	}
	delete(nm.claimers, nick)
	for k := range nm.warned {
		if strings.HasPrefix(k, nick+"/") {
			delete(nm.warned, k)
		}
	}
	delete(nm.cache, nick)
	nm.mu.Unlock()
	if err := nm.allow(ai.ID); err != nil {
		return err
	}
	nm.learn(ai.ID, nick)
	// Its streams named it by its peer ID when they started: end them, so
	// the next one is identified under the new pin.
	nm.n.dm.resetPeer(ai.ID)
	nm.n.peers.wantStream(ai.ID)
	return nil
}

// noteClaimer remembers the last peer that claimed pinned nick, for
// CheckKey (bounded like the warnings).
func (nm *names) noteClaimer(nick string, p peer.ID) {
	nm.mu.Lock()
	defer nm.mu.Unlock()
	if _, ok := nm.claimers[nick]; !ok && len(nm.claimers) >= maxWarned {
		clear(nm.claimers)
	}
	nm.claimers[nick] = p
}

func (nm *names) claimer(nick string) peer.ID {
	nm.mu.Lock()
	defer nm.mu.Unlock()
	return nm.claimers[nick]
}

// countClaim counts a nick claimed by p; it reports false past
// maxClaimsPerPeer distinct nicks.
func (nm *names) countClaim(p peer.ID, nick string) bool {
	nm.mu.Lock()
	defer nm.mu.Unlock()
	set := nm.claims[p]
	if set == nil {
		if len(nm.claims) >= maxClaimers {
			for k := range nm.claims {
				delete(nm.claims, k)
				break
			}
		}
		set = map[string]bool{}
		nm.claims[p] = set
	}
	if set[nick] {
		return true
	}
	if len(set) >= maxClaimsPerPeer {
		return false
	}
	set[nick] = true
	return true
}

// lookupNick asks every daemon who holds nick, reusing an answer younger
// than verifyCacheTTL and joining a look-up already under way.
func (nm *names) lookupNick(ctx context.Context, nick string) *lookup {
	if nm.n.rdv == nil {
		return &lookup{err: errors.New("no rendezvous daemon configured")}
	}
	nm.mu.Lock()
	if l, ok := nm.cache[nick]; ok && time.Since(l.at) < verifyCacheTTL {
		nm.mu.Unlock()
		return l
	}
	if f, ok := nm.pending[nick]; ok {
		nm.mu.Unlock()
		select {
		case <-f.done:
			return f.res
		case <-ctx.Done():
			return &lookup{err: ctx.Err()}
		}
	}
	f := &inflight{done: make(chan struct{})}
	nm.pending[nick] = f
	nm.mu.Unlock()

	// The look-up serves every caller waiting for it: bound it by the
	// node's life, not the first caller's context.
	vctx, cancel := context.WithTimeout(nm.n.ctx, verifyTimeout)
	f.res = nm.askDaemons(vctx, userNS(nick))
	cancel()

	nm.mu.Lock()
	delete(nm.pending, nick)
	if f.res.answered > 0 {
		if len(nm.cache) >= maxVerifyCache {
			for k := range nm.cache {
				delete(nm.cache, k)
				break
			}
		}
		nm.cache[nick] = f.res
	}
	nm.mu.Unlock()
	close(f.done)
	return f.res
}

// askDaemons discovers the name ns on every daemon separately: who is
// registered under it and who holds its lease.
func (nm *names) askDaemons(ctx context.Context, ns string) *lookup {
	servers := nm.n.rdv.Servers()
	type answer struct {
		info rendezvous.NameInfo
		err  error
	}
	answers := make([]answer, len(servers))
	var wg sync.WaitGroup
	for i, s := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			info, err := nm.n.rdv.DiscoverNameOn(ctx, s, ns, discoverPerServer)
			answers[i] = answer{info, err}
		}()
	}
	wg.Wait()
	l := &lookup{at: time.Now()}
	var errs []error
	authorities := 0
	for i, a := range answers {
		auth := nm.n.srv.authority(nm.n.h.Peerstore(), servers[i])
		if auth {
			authorities++
		}
		if a.err != nil {
			nm.n.log.Debug("verify at rendezvous", "server", servers[i], "ns", ns, "err", a.err)
			errs = append(errs, a.err)
			continue
		}
		if !auth {
			// A server that is just another chat node vouches for an
			// address at most; it is no authority on the name (its lease
			// included).
			for _, r := range a.info.Registrations {
				if r.Peer.ID != nm.n.h.ID() && r.Peer.ID != "" && !slices.ContainsFunc(l.vouched, func(ai peer.AddrInfo) bool { return ai.ID == r.Peer.ID }) {
					l.vouched = append(l.vouched, r.Peer)
				}
			}
			continue
		}
		l.answered++
		for _, r := range a.info.Registrations {
			l.addHolder(r.Peer, nm.n.h.ID())
		}
		// The lease holder counts like a registration (with no addresses):
		// a daemon whose lease names another peer than its registrations,
		// or than another daemon, is a conflict.
		l.addHolder(peer.AddrInfo{ID: a.info.Holder}, nm.n.h.ID())
	}
	if l.answered == 0 {
		l.err = errors.Join(errs...)
		if authorities == 0 {
			l.err = errNoAuthority
		}
	}
	return l
}

// addHolder adds ai to the holders (ourselves and the empty ID aside),
// merging the addresses of a peer already there.
func (l *lookup) addHolder(ai peer.AddrInfo, self peer.ID) {
	if ai.ID == self || ai.ID == "" {
		return
	}
	for i := range l.holders {
		if l.holders[i].ID == ai.ID {
			for _, a := range ai.Addrs {
				if !slices.ContainsFunc(l.holders[i].Addrs, a.Equal) {
					l.holders[i].Addrs = append(l.holders[i].Addrs, a)
				}
			}
			return
		}
	}
	l.holders = append(l.holders, ai)
}

func (nm *names) warnImpersonation(nick string, claimer, pinned peer.ID) {
	nm.noteClaimer(nick, claimer)
	nm.warn(nick, claimer, fmt.Sprintf("peer %s claims nick %q, which is pinned to %s; not accepted (messages to %q still go to %s only)", claimer, nick, pinned, nick, pinned))
}

func (nm *names) warnConflict(nick string, holders []peer.AddrInfo) {
	nm.warn(nick, holders[0].ID, fmt.Sprintf("the rendezvous daemons disagree on nick %q: %s and %s both hold it; neither is trusted", nick, holders[0].ID, holders[1].ID))
}

// warn emits an EventWarning once per (nick, peer).
func (nm *names) warn(nick string, p peer.ID, text string) {
	key := nick + "/" + p.String()
	nm.mu.Lock()
	seen := nm.warned[key]
	if !seen {
		if len(nm.warned) >= maxWarned {
			clear(nm.warned)
		}
		nm.warned[key] = true
	}
	nm.mu.Unlock()
	if seen {
		return
	}
	nm.n.log.Warn("warning", "text", text, "peer", p, "claimed_nick", nick)
	nm.n.ev.emit(EventWarning{Text: text, Nick: nick, Peer: p})
}

// watchContacts follows the user namespaces of the pinned contacts the user
// talks with.
func (nm *names) watchContacts() {
	contacts, err := nm.n.db.contacts()
	if err != nil {
		nm.n.log.Warn("load contacts", "err", err)
		return
	}
	for _, c := range contacts {
		if nm.hasTalked(c.Peer) {
			nm.watchContact(c.Nick)
		}
	}
}

// watchContact follows a pinned contact's user namespace (a bounded
// number of them), once the node has started.
func (nm *names) watchContact(nick string) {
	if nm.n.rdv == nil {
		return
	}
	nm.n.life.Lock()
	started := nm.n.life.started
	nm.n.life.Unlock()
	if !started {
		return
	}
	nm.mu.Lock()
	if _, ok := nm.watching[nick]; ok || len(nm.watching) >= maxContactWatch {
		nm.mu.Unlock()
		return
	}
	ctx, cancel := context.WithCancel(nm.n.ctx)
	nm.watching[nick] = cancel
	nm.mu.Unlock()
	nm.watch(ctx, userNS(nick), nick)
}

// watch consumes a rendezvous watch on ns until ctx ends. For a user
// namespace, nick is the pinned nick it belongs to.
func (nm *names) watch(ctx context.Context, ns, nick string) {
	nm.n.spawn(func() {
		ch, err := nm.n.rdv.Watch(ctx, ns)
		if err != nil {
			nm.n.log.Debug("watch", "ns", ns, "err", err)
			return
		}
		for ev := range ch {
			if ctx.Err() == nil {
				nm.onWatch(ns, nick, ev)
			}
		}
	})
}

func (nm *names) onWatch(ns, nick string, ev rendezvous.WatchEvent) {
	n := nm.n
	ai := ev.Registration.Peer
	p := ai.ID
	if p == n.h.ID() || p == "" {
		return
	}
	switch ev.Kind {
	case rendezvous.WatchRegistered:
		if nick != "" {
			c, ok, err := n.db.contact(nick)
			if err == nil && ok && c.Peer != p {
				nm.warnImpersonation(nick, p, c.Peer)
				return
			}
			if ok && len(ai.Addrs) > 0 {
				_ = n.db.setAddrs(nick, p, ai.Addrs)
			}
		}
		n.peers.registered(ns, ai)
	case rendezvous.WatchUnregistered:
		n.peers.unregistered(ns, p)
	}
}

// lookupAddrs refreshes p's addresses from the daemons (its user
// namespace if pinned, the joined rooms) and the DHT. It reports whether any were
// found.
func (nm *names) lookupAddrs(ctx context.Context, p peer.ID) bool {
	n := nm.n
	var nss []string
	if nick := nm.nickOf(p); nick != "" {
		nss = append(nss, userNS(nick))
	}
	nss = append(nss, n.roomNamespaces()...)
	if n.rdv != nil {
		for _, ns := range nss {
			regs, err := n.rdv.Discover(ctx, ns, 100)
			if err != nil {
				n.log.Debug("rendezvous look-up", "ns", ns, "err", err)
				continue
			}
			for _, r := range regs {
				if r.Peer.ID == p && len(r.Peer.Addrs) > 0 {
					addAddrs(n.h.Peerstore(), r.Peer)
					return true
				}
			}
		}
	}
	if n.cfg.DHT != nil {
		dctx, cancel := context.WithTimeout(ctx, resolveTimeout)
		defer cancel()
		ai, err := n.cfg.DHT.FindPeer(dctx, p)
		if err == nil && len(ai.Addrs) > 0 {
			addAddrs(n.h.Peerstore(), ai)
			return true
		}
	}
	return false
}

// Whois describes a nick or a peer ID: the peer, its known addresses,
// whether the nick is pinned or verified, presence and connection. A nick
// that is not pinned is looked up at the daemons without pinning it.
func (n *Node) Whois(ctx context.Context, nickOrPeerID string) (Whois, error) {
	w := Whois{Nick: nickOrPeerID}
	c, ok, err := n.db.contact(nickOrPeerID)
	if err != nil {
		return Whois{}, err
	}
	switch {
	case ok:
		w.Peer, w.Pinned, w.Verified = c.Peer, true, true
	case nickOrPeerID == n.cfg.Nick:
		w.Peer, w.Verified = n.h.ID(), true
	default:
		if p, err := peer.Decode(nickOrPeerID); err == nil {
			w.Peer = p
			w.Nick = n.names.nickOf(p)
			w.Pinned = w.Nick != ""
			w.Verified = w.Pinned
		} else {
			l := n.names.lookupNick(ctx, nickOrPeerID)
			ai, ok := l.holder()
			switch {
			case ok:
				w.Peer, w.Verified = ai.ID, true
				addAddrs(n.h.Peerstore(), ai)
			case len(l.holders) > 1:
				return Whois{}, fmt.Errorf("whois %q: the daemons disagree (%s, %s)", nickOrPeerID, l.holders[0].ID, l.holders[1].ID)
			case len(l.holders) == 0 && len(l.vouched) == 1:
				w.Peer = l.vouched[0].ID // unverified: Verified stays false
				addAddrs(n.h.Peerstore(), l.vouched[0])
			case l.answered == 0 && n.rdv != nil:
				return Whois{}, fmt.Errorf("whois %q: no daemon answered: %v", nickOrPeerID, l.err)
			default:
				return Whois{}, fmt.Errorf("whois %q: %w", nickOrPeerID, ErrUnknownNick)
			}
		}
	}
	if w.Peer == n.h.ID() {
		w.Addrs = n.Addrs()
		w.Online = true
		return w, nil
	}
	w.Addrs = n.h.Peerstore().Addrs(w.Peer)
	if len(w.Addrs) == 0 && ok {
		w.Addrs = c.Addrs
	}
	w.Online, _ = n.peers.status(w.Peer)
	w.Conn = connInfo(n.h.Network(), w.Peer)
	return w, nil
}

// Allow turns a peer (by peer ID or pinned nick) into a contact: its
// request, if any, becomes a message in the conversation (EventMessage),
// and its later messages are taken. EventAllowed follows.
func (n *Node) Allow(nickOrPeerID string) (peer.ID, error) {
	p, err := n.peerOf(nickOrPeerID)
	if err != nil {
		return "", fmt.Errorf("allow %q: %w", nickOrPeerID, err)
	}
	req, ok, err := n.names.setRelation(p, relAllowed)
	if err != nil {
		return "", fmt.Errorf("allow %q: %w", nickOrPeerID, err)
	}
	if ok {
		n.ev.emit(EventMessage{Message: req})
	}
	n.ev.emit(EventAllowed{Peer: p})
	n.peers.wantStream(p) // its held messages come again
	return p, nil
}

// Block drops a peer's request and refuses its streams from now on; its
// room messages are neither shown nor relayed (every room's validator
// ignores them, and it is kept out of the rooms' meshes). Persisted.
func (n *Node) Block(nickOrPeerID string) (peer.ID, error) {
	p, err := n.peerOf(nickOrPeerID)
	if err != nil {
		return "", fmt.Errorf("block %q: %w", nickOrPeerID, err)
	}
	if _, _, err := n.names.setRelation(p, relBlocked); err != nil {
		return "", fmt.Errorf("block %q: %w", nickOrPeerID, err)
	}
	n.dm.resetPeer(p)
	n.files.DropPeer(p, "blocked") // files.go
	n.ev.emit(EventBlocked{Peer: p})
	return p, nil
}

// Unblock lifts a block (by peer ID or pinned nick): the peer is a
// stranger again (its next message is a request unless it is pinned), its
// streams and room messages are taken again. The change is persisted;
// EventUnblocked follows.
func (n *Node) Unblock(nickOrPeerID string) (peer.ID, error) {
	p, err := n.peerOf(nickOrPeerID)
	if err != nil {
		return "", fmt.Errorf("unblock %q: %w", nickOrPeerID, err)
	}
	if !n.names.isBlocked(p) {
		return "", fmt.Errorf("unblock %q: not blocked", nickOrPeerID)
	}
	if _, _, err := n.names.setRelation(p, relNone); err != nil {
		return "", fmt.Errorf("unblock %q: %w", nickOrPeerID, err)
	}
	n.ev.emit(EventUnblocked{Peer: p})
	return p, nil
}

// Requests returns the strangers' pending requests, oldest first.
func (n *Node) Requests() ([]Message, error) { return n.db.requests() }

// peerOf resolves a pinned nick or a peer ID string, without look-ups.
func (n *Node) peerOf(nickOrPeerID string) (peer.ID, error) {
	if p, err := peer.Decode(nickOrPeerID); err == nil {
		return p, nil
	}
	c, ok, err := n.db.contact(nickOrPeerID)
	if err != nil {
		return "", err
	}
	if ok {
		return c.Peer, nil
	}
	return n.requesterClaiming(nickOrPeerID)
}

// requesterClaiming is the one stranger with a request waiting whose Hello
// claimed nick: what the user means by "/allow bob" when bob's nick could
// not be verified (a chat's embedded server is no authority). Only when
// no daemon that verifies nicks answers for it: a nick the daemons give to
// another peer is never taken from a stranger's claim. The user's
// decision, not a verification: the peer stays shown by its ID until its
// nick verifies. Several such strangers are an error; none is
// ErrUnknownNick.
func (n *Node) requesterClaiming(nick string) (peer.ID, error) {
	if l := n.names.lookupNick(n.ctx, nick); l.answered > 0 {
		// A daemon that verifies nicks answered: a claim it backed would
		// have made the peer a contact, so the nick is someone else's.
		return "", fmt.Errorf("%w (the daemons do not give nick %q to any stranger waiting: name one by its peer ID)", ErrUnknownNick, nick)
	}
	reqs, err := n.db.requests()
	if err != nil {
		return "", err
	}
	var found []peer.ID
	n.names.mu.Lock()
	for _, r := range reqs {
		if n.names.claims[r.Peer][nick] && !slices.Contains(found, r.Peer) {
			found = append(found, r.Peer)
		}
	}
	n.names.mu.Unlock()
	switch len(found) {
	case 0:
		return "", ErrUnknownNick
	case 1:
		return found[0], nil
	default:
		return "", fmt.Errorf("%d strangers with requests claim nick %q (%s, %s…): name one by its peer ID", len(found), nick, found[0], found[1])
	}
}
