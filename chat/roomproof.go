package chat

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"google.golang.org/protobuf/encoding/protowire"
)

// This file is the membership proof of invite-only rooms. GossipSub tells
// every connected peer which topics a node is in, so a peer without the
// invite can learn a sealed room's topic and subscribe. It could not read
// or post (the seal), but it would sit in the mesh and be counted as a
// member. So in an invite-only room a peer counts (mesh, members,
// presence, history answers) only once it proved it holds the room's key:
//
// Protocol /p2p-messaging/room-proof/1.0.0, one exchange per stream. The
// asker A writes one frame (unsigned-varint length, protobuf fields
// 1 topic string, 2 nonce bytes(16)) and closes its side; the prover B
// answers one frame (field 3 mac bytes(32)):
//
//	mac = HMAC-SHA256(proof key, "p2p-messaging room proof" || topic || nonce || A || B)
//
// with A and B the connection's authenticated peer IDs, so an answer
// proves B to A only and cannot be replayed or relayed to anyone else. The
// proof key is derived from the invite's secret (HKDF, its own label). B
// answers only for invite-only rooms it is in, each peer at most
// proofRate a second (bursts of proofBurst); a request over 1 KiB, a
// wrong or missing answer, or an exchange over proofTimeout ends the
// stream, and the peer stays unproven.

// RoomProofProtocol is the membership proof protocol ID.
const RoomProofProtocol = protocol.ID("/p2p-messaging/room-proof/1.0.0")

const (
	proofTimeout  = 10 * time.Second
	proofNonceLen = 16
	maxProofFrame = 1 << 10
	proofRate     = 2.0
	proofBurst    = 10
	proofLabel    = "p2p-messaging room proof"

	proofFieldTopic protowire.Number = 1
	proofFieldNonce protowire.Number = 2
	proofFieldMAC   protowire.Number = 3
)

func proofMAC(key []byte, topic string, nonce []byte, asker, prover peer.ID) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(proofLabel))
	m.Write([]byte(topic))
	m.Write(nonce)
	m.Write([]byte(asker))
	m.Write([]byte(prover))
	return m.Sum(nil)
}

func (r *room) isProven(p peer.ID) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.proven[p]
}

// proofServer answers proof requests.
type proofServer struct {
	rs      *rooms
	buckets *peerLimits
}

func newProofServer(rs *rooms) *proofServer {
	ps := &proofServer{rs: rs, buckets: newPeerLimits(proofRate, proofBurst, maxHistoryPeers)}
	rs.n.h.SetStreamHandler(RoomProofProtocol, ps.handle)
	return ps
}

func (ps *proofServer) close() { ps.rs.n.h.RemoveStreamHandler(RoomProofProtocol) }

// decodeProof reads the fields of a proof frame.
func decodeProof(b []byte) (topic string, nonce, mac []byte, err error) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || typ != protowire.BytesType {
			return "", nil, nil, errBadHistory
		}
		b = b[n:]
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return "", nil, nil, errBadHistory
		}
		b = b[n:]
		switch num {
		case proofFieldTopic:
			topic = string(v)
		case proofFieldNonce:
			nonce = v
		case proofFieldMAC:
			mac = v
		}
	}
	return topic, nonce, mac, nil
}

func (ps *proofServer) handle(s network.Stream) {
	_ = s.SetDeadline(time.Now().Add(proofTimeout))
	p := s.Conn().RemotePeer()
	if ps.rs.n.names.isBlocked(p) || !ps.buckets.allow(p) {
		_ = s.Reset()
		return
	}
	b, err := readRequest(s, maxProofFrame)
	if err != nil {
		_ = s.Reset()
		return
	}
	topic, nonce, _, err := decodeProof(b)
	r := ps.rs.byTopicName(topic)
	if err != nil || len(nonce) != proofNonceLen || r == nil || !r.spec.private() {
		_ = s.Reset() // nothing to prove: not an invite-only room we are in
		return
	}
	mac := proofMAC(r.spec.proof, topic, nonce, p, ps.rs.n.h.ID())
	out := protowire.AppendTag(nil, proofFieldMAC, protowire.BytesType)
	_ = finish(s, protowire.AppendBytes(out, mac))
}

// prove asks p to prove it holds r's key.
func (rs *rooms) prove(ctx context.Context, r *room, p peer.ID) error {
	nonce := make([]byte, proofNonceLen)
	if _, err := rand.Read(nonce); err != nil {
		return err
	}
	req := protowire.AppendTag(nil, proofFieldTopic, protowire.BytesType)
	req = protowire.AppendString(req, r.spec.Topic)
	req = protowire.AppendTag(req, proofFieldNonce, protowire.BytesType)
	req = protowire.AppendBytes(req, nonce)
	b, err := rs.exchange(ctx, p, RoomProofProtocol, "room proof", proofTimeout, req, maxProofFrame)
	if err != nil {
		return err
	}
	_, _, mac, err := decodeProof(b)
	if err != nil || !hmac.Equal(mac, proofMAC(r.spec.proof, r.spec.Topic, nonce, rs.n.h.ID(), p)) {
		return fmt.Errorf("peer %s does not hold the room's key", p)
	}
	return nil
}

// proveLater asks p for its proof (once at a time) and, when it holds,
// takes it in as a member.
func (rs *rooms) proveLater(r *room, p peer.ID) {
	r.mu.Lock()
	if r.proving[p] || len(r.proving) >= maxRoomMembers {
		r.mu.Unlock()
		return
	}
	r.proving[p] = true
	r.mu.Unlock()
	rs.n.spawn(func() {
		err := rs.prove(r.ctx, r, p)
		r.mu.Lock()
		delete(r.proving, p)
		if err == nil && len(r.proven) < maxRoomMembers {
			r.proven[p] = true
		}
		r.mu.Unlock()
		if err != nil {
			rs.n.log.Debug("room proof", "room", r.spec.Name, "peer", p, "err", err)
			return
		}
		rs.memberJoined(r, p)
	})
}
