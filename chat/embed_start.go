package chat

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/record"
	circuitproto "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/proto"
	"github.com/multiformats/go-multiaddr"

	"github.com/p2p-messaging/p2p-messaging/internal/atomicfile"
	"github.com/p2p-messaging/p2p-messaging/rendezvous"
)

// This file decides, when a chat opens, which servers it uses: it connects
// to the peers it was given and those it kept on disk, tells daemons from
// other chats' embedded services by connecting (identify), asks every chat
// among them which servers it knows (peer exchange, pex.go), and starts its
// own embedded server (embed.go) when no daemon is reachable, or always with
// Serve. What it learnt is kept in DataDir/PeersFileName for the next start.
//
// Trust: only a daemon the user configured (a flag, the environment, the
// local addrs file) is an authority on names. Every other server (another
// chat's embedded service, one this chat runs, one learnt by peer exchange
// or from disk) is used to register, to find addresses and presence, but
// what it answers about a nick stays unverified (names.go).

// PeersFileName keeps the servers and peers a chat learnt (JSON, bounded).
const PeersFileName = "peers.json"

// Bounds of what the start-up uses and keeps.
const (
	maxServers       = 8  // rendezvous servers one chat uses
	maxKeptPeers     = 64 // entries in PeersFileName
	maxBootstrapDial = 16 // peers dialled at start
	bootstrapTimeout = 5 * time.Second
	maxPeersFile     = 1 << 20
	recordWait       = time.Second // for identify's record of a peer just reached
)

// EmbedMode says when a chat runs its embedded server.
type EmbedMode int

const (
	// EmbedOff, the zero value, skips the whole start-up: the node uses
	// Config.Rendezvous as given, as daemons (a library caller's choice).
	EmbedOff EmbedMode = iota
	// EmbedAuto runs the start-up and the embedded server when no
	// configured daemon is reachable at start (what cmd/chat does).
	EmbedAuto
	// EmbedServe always runs it, with a circuit relay v2 and the DHT in
	// server mode, for other peers (-serve).
	EmbedServe
	// EmbedNever runs the start-up (peer exchange, kept peers) but never
	// the embedded server.
	EmbedNever
)

// ServeConfig is the part of Config about servers and the embedded one.
type ServeConfig struct {
	Mode EmbedMode
	// Sources says, for each entry of Config.Rendezvous in order, where
	// the user gave it ("flag", "addrs file"); missing entries are
	// "configured". Every one of them counts as configured.
	Sources []string
	// AddrFile is the local addrs file: written with the embedded server's
	// addresses when it runs and no reachable server holds the file.
	AddrFile string
	// AddrFileHolders are the servers read from AddrFile (if any); when
	// none of them is reachable the file is taken over.
	AddrFileHolders []peer.ID
	// ListenAddrs of the embedded server (default: its last ports).
	ListenAddrs []multiaddr.Multiaddr
}

// ServerKind is what a server is, as this chat found out by connecting.
type ServerKind string

const (
	ServerDaemon ServerKind = "daemon" // a rendezvous daemon
	ServerChat   ServerKind = "chat"   // another chat's embedded service
	ServerSelf   ServerKind = "self"   // this chat's embedded service
	ServerRelay  ServerKind = "relay"  // a relay without rendezvous
)

// ServerInfo describes one server the node uses.
type ServerInfo struct {
	Peer  peer.ID
	Addrs []multiaddr.Multiaddr
	Kind  ServerKind
	// Source is how the chat learnt it: "flag", "addrs file", "embedded",
	// "peer exchange via <peer>", "kept on disk".
	Source string
	// Authority: a configured daemon, whose answers verify nicks.
	Authority bool
	// Relay: it serves circuit relay v2.
	Relay bool
	// Reachable: connected now.
	Reachable bool
}

// candidate is a peer the start-up dials.
type candidate struct {
	info       peer.AddrInfo
	source     string
	configured bool
	kind       PexKind // what it was said to be (0: just a peer)
	rec        []byte  // its signed record, when peer exchange gave one
}

// serverSet is the node's view of its servers, fixed at start.
type serverSet struct {
	mu      sync.Mutex
	servers []ServerInfo
	peers   []keptPeer // the peers to keep on disk
	file    string     // PeersFileName
	// addrFile is polled for servers that appear (embed_learn.go).
	addrFile string
}

// authority reports whether server p's answers verify nicks: a configured
// daemon. A configured server that was down at the start is taken for a
// daemon until identify says otherwise (ps: an embedded server's agent), so
// a stale addrs file of a chat's service never makes that service an
// authority when it comes back.
func (s *serverSet) authority(ps peerstore.Peerstore, p peer.ID) bool {
	if s == nil {
		return true // no start-up ran (New on a caller's host): trust as configured
	}
	s.mu.Lock()
	auth := false
	for _, sv := range s.servers {
		if sv.Peer == p {
			auth = sv.Authority
		}
	}
	s.mu.Unlock()
	if auth {
		if a, err := ps.Get(p, "AgentVersion"); err == nil && a == EmbeddedAgent {
			return false
		}
	}
	return auth
}

// Servers lists the rendezvous servers and relays the node uses, how it
// learnt each, and whether it is connected to it now.
func (n *Node) Servers() []ServerInfo {
	if n.srv == nil {
		var out []ServerInfo
		for _, ai := range n.cfg.Rendezvous {
			out = append(out, ServerInfo{Peer: ai.ID, Addrs: ai.Addrs, Kind: ServerDaemon, Source: "configured", Authority: true,
				Reachable: n.h.Network().Connectedness(ai.ID) == network.Connected})
		}
		return out
	}
	n.srv.mu.Lock()
	out := slices.Clone(n.srv.servers)
	n.srv.mu.Unlock()
	for i := range out {
		if out[i].Kind == ServerDaemon {
			// Down at the start and taken for a daemon: identify knows better now.
			if a, err := n.h.Peerstore().Get(out[i].Peer, "AgentVersion"); err == nil && a == EmbeddedAgent {
				out[i].Kind, out[i].Authority = ServerChat, false
			}
		}
		out[i].Reachable = out[i].Kind == ServerSelf || n.h.Network().Connectedness(out[i].Peer) == network.Connected
		if known := n.h.Peerstore().Addrs(out[i].Peer); len(known) > 0 {
			out[i].Addrs = known
		}
	}
	return out
}

// keptPeer is one entry of PeersFileName.
type keptPeer struct {
	Kind   PexKind `json:"kind"`
	Source string  `json:"source"`
	Record []byte  `json:"record"` // signed peer record (envelope)
}

// loadKeptPeers reads PeersFileName; records that do not verify are
// dropped.
func loadKeptPeers(path string, self peer.ID) []PexEntry {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxPeersFile))
	if err != nil {
		return nil
	}
	var kept []keptPeer
	if json.Unmarshal(b, &kept) != nil {
		return nil
	}
	if len(kept) > maxKeptPeers {
		kept = kept[:maxKeptPeers]
	}
	raw := make([]rawPexEntry, 0, len(kept))
	for _, k := range kept {
		kind := k.Kind
		if kind == 0 {
			kind = PexDHT // a plain peer: dialled, asked, never a server by itself
		}
		raw = append(raw, rawPexEntry{kind: uint64(kind), record: k.Record})
	}
	return verifyPexEntries(raw, self)
}

func saveKeptPeers(path string, kept []keptPeer) error {
	if len(kept) > maxKeptPeers {
		kept = kept[:maxKeptPeers]
	}
	b, err := json.Marshal(kept)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, b, 0o600)
}

// signedRecord returns p's signed peer record, marshalled, as identify
// delivered it (recordBook) or as the peerstore holds it, or nil.
func signedRecord(h host.Host, book *recordBook, p peer.ID) []byte {
	if b := book.get(p); b != nil {
		return b
	}
	cab, ok := peerstore.GetCertifiedAddrBook(h.Peerstore())
	if !ok {
		return nil
	}
	env := cab.GetPeerRecord(p)
	if env == nil {
		return nil
	}
	b, err := env.Marshal()
	if err != nil || len(b) > MaxPexRecord {
		return nil
	}
	return b
}

// ownRecord is h's own signed peer record, marshalled.
func ownRecord(h host.Host) []byte {
	if b := signedRecord(h, nil, h.ID()); b != nil {
		return b
	}
	key := h.Peerstore().PrivKey(h.ID())
	if key == nil {
		return nil
	}
	env, err := record.Seal(peer.PeerRecordFromAddrInfo(peer.AddrInfo{ID: h.ID(), Addrs: h.Addrs()}), key)
	if err != nil {
		return nil
	}
	b, err := env.Marshal()
	if err != nil {
		return nil
	}
	return b
}

// classify names what p is from what identify told h.
func classify(h host.Host, p peer.ID) (kind ServerKind, relay, isServer, speaksPex bool) {
	ps := h.Peerstore()
	protos, _ := ps.SupportsProtocols(p, rendezvous.ProtocolID, circuitproto.ProtoIDv2Hop, PexProtocolID)
	for _, pr := range protos {
		switch pr {
		case rendezvous.ProtocolID:
			isServer = true
		case circuitproto.ProtoIDv2Hop:
			relay = true
		case PexProtocolID:
			speaksPex = true
		}
	}
	agent, _ := ps.Get(p, "AgentVersion")
	a, _ := agent.(string)
	switch {
	case isServer && a == EmbeddedAgent:
		kind = ServerChat
	case isServer:
		kind = ServerDaemon
	case relay:
		kind, isServer = ServerRelay, true
	}
	return kind, relay, isServer, speaksPex
}

// connectAll dials the candidates concurrently (bounded), each within
// bootstrapTimeout, and returns those reached.
func connectAll(ctx context.Context, h host.Host, cands []candidate, log *slog.Logger) []candidate {
	var (
		mu      sync.Mutex
		reached []candidate
		wg      sync.WaitGroup
		sem     = make(chan struct{}, maxBootstrapDial)
	)
	for _, c := range cands {
		if c.info.ID == h.ID() {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			cctx, cancel := context.WithTimeout(ctx, bootstrapTimeout)
			defer cancel()
			if err := h.Connect(network.WithForceDirectDial(cctx, "bootstrap"), c.info); err != nil {
				// One sentence for the user comes later; the raw error is for the log.
				log.Debug("bootstrap peer unreachable", "peer", c.info.ID, "source", c.source, "err", err)
				return
			}
			mu.Lock()
			reached = append(reached, c)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return reached
}

// startup is the result of bootstrap.
type startup struct {
	servers  []ServerInfo
	rdv      []peer.AddrInfo // the rendezvous servers for the client
	embedded *Embedded
	kept     []keptPeer
	daemons  int // reachable configured daemons
	note     string

	peersFile, addrFile string
}

// bootstrap runs the start-up on the chat host h: dial, classify, exchange,
// embed. dataDir holds PeersFileName and the embedded server's directory.
func bootstrap(ctx context.Context, h host.Host, book *recordBook, hc HostConfig, cfg Config, log *slog.Logger) (*startup, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	sc := cfg.Serve
	var cands []candidate
	for i, ai := range cfg.Rendezvous {
		src := "configured"
		if i < len(sc.Sources) && sc.Sources[i] != "" {
			src = sc.Sources[i]
		}
		cands = append(cands, candidate{info: ai, source: src, configured: true})
	}
	peersFile := filepath.Join(cfg.DataDir, PeersFileName)
	keptAs := map[peer.ID]PexKind{}
	oldKept := loadKeptPeers(peersFile, h.ID())
	for _, e := range oldKept {
		keptAs[e.Peer.ID] = e.Kind
		if slices.ContainsFunc(cands, func(c candidate) bool { return c.info.ID == e.Peer.ID }) {
			continue
		}
		h.Peerstore().AddAddrs(e.Peer.ID, e.Peer.Addrs, peerstore.TempAddrTTL)
		cands = append(cands, candidate{info: e.Peer, source: "kept on disk", kind: e.Kind})
	}
	reached := connectAll(ctx, h, cands, log)

	st := &startup{peersFile: peersFile, addrFile: sc.AddrFile}
	addServer := func(ai peer.AddrInfo, kind ServerKind, relay bool, source string, authority bool) {
		if slices.ContainsFunc(st.servers, func(s ServerInfo) bool { return s.Peer == ai.ID }) {
			return
		}
		st.servers = append(st.servers, ServerInfo{Peer: ai.ID, Addrs: ai.Addrs, Kind: kind, Source: source, Authority: authority, Relay: relay})
	}
	keep := func(kind PexKind, source string, p peer.ID, rec []byte) {
		if len(st.kept) >= maxKeptPeers {
			return
		}
		if rec == nil {
			// Connected just now: identify may still be delivering it.
			wctx, cancel := context.WithTimeout(ctx, recordWait)
			rec = book.wait(wctx, p)
			cancel()
		}
		if rec != nil {
			st.kept = append(st.kept, keptPeer{Kind: kind, Source: source, Record: rec})
		}
	}
	reachedSet := map[peer.ID]bool{}
	var askers []peer.ID
	for _, c := range reached {
		reachedSet[c.info.ID] = true
		kind, relay, isServer, pex := classify(h, c.info.ID)
		if isServer {
			auth := c.configured && kind == ServerDaemon
			if auth {
				st.daemons++
			}
			addServer(peer.AddrInfo{ID: c.info.ID, Addrs: h.Peerstore().Addrs(c.info.ID)}, kind, relay, c.source, auth)
			pk := PexRendezvous
			if kind == ServerRelay {
				pk = PexRelay
			}
			keep(pk, c.source, c.info.ID, nil)
		} else {
			keep(0, c.source, c.info.ID, nil)
		}
		if pex {
			askers = append(askers, c.info.ID)
		}
	}
	// Configured daemons that are down now stay: the rendezvous client
	// keeps trying them and uses them when they return.
	for _, c := range cands {
		// One known as a plain peer (a chat) last time is no daemon.
		if c.configured && !reachedSet[c.info.ID] && keptAs[c.info.ID] != PexDHT {
			addServer(c.info, ServerDaemon, false, c.source, true)
		}
	}

	// Peer exchange with every chat reached: their servers, relays and DHT
	// servers, one round.
	var learnt []PexEntry
	var via []peer.ID
	for _, p := range askers {
		entries, err := askPex(ctx, h, p)
		if err != nil {
			log.Debug("peer exchange failed", "peer", p, "err", err)
			continue
		}
		for _, e := range entries {
			if reachedSet[e.Peer.ID] || slices.ContainsFunc(learnt, func(x PexEntry) bool { return x.Peer.ID == e.Peer.ID }) {
				continue
			}
			learnt = append(learnt, e)
			via = append(via, p)
		}
	}
	var more []candidate
	for i, e := range learnt {
		if len(more) >= maxBootstrapDial {
			break
		}
		h.Peerstore().AddAddrs(e.Peer.ID, e.Peer.Addrs, peerstore.TempAddrTTL)
		more = append(more, candidate{info: e.Peer, source: "peer exchange via " + via[i].String(), kind: e.Kind, rec: e.Envelope})
	}
	for _, c := range connectAll(ctx, h, more, log) {
		kind, relay, isServer, _ := classify(h, c.info.ID)
		if isServer {
			// Learnt, never configured: not an authority, whatever it claims.
			if kind == ServerDaemon {
				kind = ServerChat
				if a, _ := h.Peerstore().Get(c.info.ID, "AgentVersion"); a == DaemonAgent {
					kind = ServerDaemon
				}
			}
			addServer(peer.AddrInfo{ID: c.info.ID, Addrs: h.Peerstore().Addrs(c.info.ID)}, kind, relay, c.source, false)
			keep(PexRendezvous, c.source, c.info.ID, c.rec)
		} else {
			keep(PexDHT, c.source, c.info.ID, c.rec)
		}
	}

	// The embedded server.
	embed := sc.Mode == EmbedServe || (sc.Mode == EmbedAuto && st.daemons == 0)
	if embed {
		addrFile := sc.AddrFile
		for _, p := range sc.AddrFileHolders {
			if reachedSet[p] {
				addrFile = "" // a live server holds it
			}
		}
		var boot []peer.AddrInfo
		for _, s := range st.servers {
			boot = append(boot, peer.AddrInfo{ID: s.Peer, Addrs: h.Peerstore().Addrs(s.Peer)})
		}
		listen := sc.ListenAddrs
		if len(listen) == 0 {
			// Where the chat listens, on ports of its own.
			for _, a := range hc.ListenAddrs {
				listen = append(listen, withPort0(a))
			}
		}
		e, err := StartEmbedded(ctx, EmbedConfig{
			Dir:          filepath.Join(cfg.DataDir, EmbedDirName),
			ListenAddrs:  listen,
			Bootstrap:    boot,
			Relay:        sc.Mode == EmbedServe,
			Reachability: hc.Reachability,
			AddrFile:     addrFile,
			Logger:       log,
		})
		if err != nil {
			return nil, err
		}
		st.embedded = e
		info := e.Info()
		h.Peerstore().AddAddrs(info.ID, loopbackFirst(info.Addrs), peerstore.PermanentAddrTTL)
		st.servers = append([]ServerInfo{{Peer: info.ID, Addrs: info.Addrs, Kind: ServerSelf, Source: "embedded", Relay: e.Relay}}, st.servers...)
		if st.daemons == 0 {
			st.note = "no rendezvous daemon reachable: serving rendezvous from this chat"
		}
	}
	if len(st.servers) > maxServers {
		st.servers = st.servers[:maxServers]
	}
	for _, s := range st.servers {
		if s.Kind != ServerRelay {
			st.rdv = append(st.rdv, peer.AddrInfo{ID: s.Peer, Addrs: h.Peerstore().Addrs(s.Peer)})
		}
	}
	// Peers kept before that are down now stay (after those reached), so
	// they are tried again later (embed_learn.go) and at the next start.
	for _, e := range oldKept {
		if len(st.kept) >= maxKeptPeers {
			break
		}
		if !reachedSet[e.Peer.ID] && !slices.ContainsFunc(st.kept, func(k keptPeer) bool { return recordPeer(k.Record) == e.Peer.ID }) {
			st.kept = append(st.kept, keptPeer{Kind: e.Kind, Source: "kept on disk", Record: e.Envelope})
		}
	}
	if err := saveKeptPeers(peersFile, st.kept); err != nil {
		log.Warn("cannot keep the peers for the next start", "err", err)
	}
	return st, nil
}

// recordPeer is the peer a signed record names, or "".
func recordPeer(rec []byte) peer.ID {
	if e := verifyPexEntries([]rawPexEntry{{kind: uint64(PexDHT), record: rec}}, ""); len(e) == 1 {
		return e[0].Peer.ID
	}
	return ""
}

// loopbackFirst is what a host in the same process dials best.
func loopbackFirst(addrs []multiaddr.Multiaddr) []multiaddr.Multiaddr {
	out := slices.Clone(addrs)
	slices.SortStableFunc(out, func(a, b multiaddr.Multiaddr) int {
		la, lb := isLoopback(a), isLoopback(b)
		switch {
		case la && !lb:
			return -1
		case lb && !la:
			return 1
		}
		return 0
	})
	return out
}

func isLoopback(a multiaddr.Multiaddr) bool {
	for _, p := range []int{multiaddr.P_IP4, multiaddr.P_IP6} {
		if v, err := a.ValueForProtocol(p); err == nil {
			return v == "127.0.0.1" || v == "::1"
		}
	}
	return false
}

// pexKnown is what this node tells others: the servers it uses (its own
// embedded one included) and the DHT servers in its routing table, each
// with the signed record its peerstore holds.
func (n *Node) pexKnown() []PexEntry {
	var out []PexEntry
	add := func(kind PexKind, p peer.ID, rec []byte) {
		if len(out) >= MaxPexEntries || rec == nil || p == n.h.ID() {
			return
		}
		if slices.ContainsFunc(out, func(e PexEntry) bool { return e.Peer.ID == p }) {
			return
		}
		out = append(out, PexEntry{Kind: kind, Peer: peer.AddrInfo{ID: p}, Envelope: rec})
	}
	if n.embedded != nil {
		add(PexRendezvous, n.embedded.Host.ID(), ownRecord(n.embedded.Host))
	}
	for _, s := range n.Servers() {
		kind := PexRendezvous
		if s.Kind == ServerRelay {
			kind = PexRelay
		}
		if s.Kind != ServerSelf {
			add(kind, s.Peer, signedRecord(n.h, n.records, s.Peer))
		}
	}
	if n.cfg.DHT != nil {
		for _, p := range n.cfg.DHT.RoutingTable().ListPeers() {
			add(PexDHT, p, signedRecord(n.h, n.records, p))
		}
	}
	return out
}

// useStartup records what Open's start-up found (before Start).
func (n *Node) useStartup(st *startup, book *recordBook) {
	n.records = book
	n.srv = &serverSet{servers: st.servers, peers: st.kept, file: st.peersFile, addrFile: st.addrFile}
	n.learn = newLearner(n)
	n.embedded = st.embedded
	n.startNote = st.note
}
