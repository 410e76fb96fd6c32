package conformance

import (
	"crypto/sha256"
	"encoding/binary"
	"regexp"
	"strconv"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/p2p-messaging/p2p-messaging/rendezvous/pb"
)

// The name-claim extension as the rendezvous package doc states it: a
// REGISTER of a new name under the exclusive prefix is refused with
// E_NOT_AUTHORIZED and "claim-difficulty=N" in the status text until it
// carries claim_proof (Register field 100), a nonce such that
// SHA-256("p2p-messaging name claim" || peer ID bytes || 0x00 || ns ||
// nonce) has at least N leading zero bits.

var claimDifficultyRE = regexp.MustCompile(`claim-difficulty=([0-9]{1,2})\b`)

// claimDifficulty returns the difficulty a refusal asks for.
func claimDifficulty(resp *pb.Message_RegisterResponse) (int, bool) {
	if resp.GetStatus() != pb.Message_E_NOT_AUTHORIZED {
		return 0, false
	}
	m := claimDifficultyRE.FindStringSubmatch(resp.GetStatusText())
	if m == nil {
		return 0, false
	}
	d, err := strconv.Atoi(m[1])
	return d, err == nil && d <= 32
}

// claimProof searches a nonce (8 bytes, counting up) for a claim of ns by id.
func claimProof(t testing.TB, id peer.ID, ns string, bits int) []byte {
	t.Helper()
	prefix := append([]byte("p2p-messaging name claim"), []byte(id)...)
	prefix = append(append(prefix, 0), ns...)
	for n := uint64(0); n < 1<<40; n++ {
		nonce := binary.BigEndian.AppendUint64(nil, n)
		sum := sha256.Sum256(append(prefix[:len(prefix):len(prefix)], nonce...))
		if zeroBits(sum[:]) >= bits {
			return nonce
		}
	}
	require.FailNow(t, "no claim proof found")
	return nil
}

func zeroBits(b []byte) int {
	n := 0
	for _, x := range b {
		for i := 7; i >= 0; i-- {
			if x>>i&1 != 0 {
				return n
			}
			n++
		}
	}
	return n
}

// A new user name needs the claim proof; with it the name is claimed, and
// the holder's refresh needs none.
func TestNameClaimNeedsProof(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, t.TempDir(), fastFlags...)
	c := newClient(t)
	const ns = "p2p-messaging/user/prover"
	r := regReq{ns: proto.String(ns), ttl: proto.Uint64(hour), record: c.record()}
	resp := c.registerReq(d, r)
	requireStatus(t, pb.Message_E_NOT_AUTHORIZED, resp.GetStatus(), resp.GetStatusText(), "a new name without claim_proof")
	bits, ok := claimDifficulty(resp)
	require.True(t, ok, "the refusal names the difficulty: %q", resp.GetStatusText())
	r.proof = claimProof(t, c.id(), ns+"-other", bits)
	if zeroBitsOf(c.id(), ns, r.proof) < bits {
		resp = c.registerReq(d, r)
		requireStatus(t, pb.Message_E_NOT_AUTHORIZED, resp.GetStatus(), resp.GetStatusText(), "a proof for another name")
	}
	r.proof = claimProof(t, c.id(), ns, bits)
	resp = c.registerReq(d, r)
	requireStatus(t, pb.Message_OK, resp.GetStatus(), resp.GetStatusText(), "a new name with its claim proof")
	r.proof = nil
	resp = c.registerReq(d, r)
	requireStatus(t, pb.Message_OK, resp.GetStatus(), resp.GetStatusText(), "the holder refreshing without a proof")
}

func zeroBitsOf(id peer.ID, ns string, nonce []byte) int {
	b := append([]byte("p2p-messaging name claim"), []byte(id)...)
	b = append(append(append(b, 0), ns...), nonce...)
	sum := sha256.Sum256(b)
	return zeroBits(sum[:])
}

// A name's lease survives a restart of the daemon: the holder only
// unregistered, then the daemon restarted; another key is still refused,
// the holder takes the name back.
func TestNameLeaseSurvivesRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	d := startDaemon(t, dir, fastFlags...)
	const ns = "p2p-messaging/user/restarted"
	holder, other := newClient(t), newClient(t)
	holder.mustRegister(d, ns, hour)
	rs := holder.stream(d)
	rs.send(unregMsg(ns))
	rs.send(discMsg(discReq{ns: proto.String(ns)}))
	require.Empty(t, rs.recvDiscoverResponse().GetRegistrations())
	d.stop(t)

	d2 := startDaemon(t, dir, fastFlags...)
	resp := other.register(d2, ns, hour)
	requireStatus(t, pb.Message_E_NOT_AUTHORIZED, resp.GetStatus(), resp.GetStatusText(), "another key after the restart")
	require.Contains(t, resp.GetStatusText(), "held by another key until")
	resp = holder.register(d2, ns, hour)
	requireStatus(t, pb.Message_OK, resp.GetStatus(), resp.GetStatusText(), "the holder after the restart")
}
