package main

// Link emulation on the router's WAN side: every forwarded packet that
// enters or leaves through the WAN interface is queued to user space
// (NFQUEUE) and released after the profile's delay, or dropped with its loss
// probability. This stands in for netem, which the test bed's kernel lacks
// (CONFIG_NET_SCH_NETEM is not set on the CI machine's 6.18 kernel; its
// nftables and the xtables NFQUEUE target are built in). The kernel keeps
// each packet while we decide, so only the verdicts travel: META copy mode,
// no payload copied.

import (
	"container/heap"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"
)

// LinkProfile is what one direction of the WAN link adds to every packet.
type LinkProfile struct {
	Delay  time.Duration // one way, per direction (in and out)
	Jitter time.Duration // uniform in [-Jitter, +Jitter] around Delay
	Loss   float64       // probability in [0, 1] that a packet is dropped
}

// DefaultLinkProfile is an ordinary internet path: 25 ms each way, 5 ms
// jitter, 1 % loss.
var DefaultLinkProfile = LinkProfile{Delay: 25 * time.Millisecond, Jitter: 5 * time.Millisecond, Loss: 0.01}

// Off reports whether the profile changes nothing (no queueing needed).
func (p LinkProfile) Off() bool { return p.Delay == 0 && p.Jitter == 0 && p.Loss == 0 }

func (p LinkProfile) String() string {
	if p.Off() {
		return "lan"
	}
	return fmt.Sprintf("%s±%s/%s%%", p.Delay, p.Jitter, strconv.FormatFloat(p.Loss*100, 'f', -1, 64))
}

// ParseLinkProfile reads "internet" (the default profile), "lan" or "off"
// (nothing added), or "DELAY,JITTER,LOSS%" such as "25ms,5ms,1%".
func ParseLinkProfile(s string) (LinkProfile, error) {
	switch strings.TrimSpace(s) {
	case "internet", "":
		return DefaultLinkProfile, nil
	case "lan", "off":
		return LinkProfile{}, nil
	}
	f := strings.Split(s, ",")
	if len(f) != 3 {
		return LinkProfile{}, fmt.Errorf("link profile %q: want internet, lan or DELAY,JITTER,LOSS%%", s)
	}
	var p LinkProfile
	var err error
	if p.Delay, err = time.ParseDuration(strings.TrimSpace(f[0])); err != nil {
		return LinkProfile{}, fmt.Errorf("link delay: %w", err)
	}
	if p.Jitter, err = time.ParseDuration(strings.TrimSpace(f[1])); err != nil {
		return LinkProfile{}, fmt.Errorf("link jitter: %w", err)
	}
	loss, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(f[2]), "%"), 64)
	if err != nil {
		return LinkProfile{}, fmt.Errorf("link loss: %w", err)
	}
	p.Loss = loss / 100
	switch {
	case p.Delay < 0 || p.Delay > 10*time.Second:
		return LinkProfile{}, fmt.Errorf("link delay %s out of range [0, 10s]", p.Delay)
	case p.Jitter < 0 || p.Jitter > p.Delay:
		return LinkProfile{}, fmt.Errorf("link jitter %s out of range [0, delay]", p.Jitter)
	case !(p.Loss >= 0 && p.Loss < 1):
		return LinkProfile{}, fmt.Errorf("link loss %s%% out of range [0, 100)", f[2])
	}
	return p, nil
}

// decide returns whether a packet is dropped and, if not, how long it is held.
func (p LinkProfile) decide(r *rand.Rand) (drop bool, hold time.Duration) {
	if p.Loss > 0 && r.Float64() < p.Loss {
		return true, 0
	}
	hold = p.Delay
	if p.Jitter > 0 {
		hold += time.Duration(r.Int64N(int64(2*p.Jitter)+1)) - p.Jitter
	}
	return false, hold
}

// nfnetlink queue protocol (linux/netfilter/nfnetlink_queue.h).
const (
	nfnlSubsysQueue = 3
	nfqnlMsgPacket  = 0
	nfqnlMsgVerdict = 1
	nfqnlMsgConfig  = 2

	nfqaPacketHdr  = 1
	nfqaVerdictHdr = 2

	nfqaCfgCmd      = 1
	nfqaCfgParams   = 2
	nfqaCfgQueueMax = 3

	nfqnlCfgCmdBind = 1
	nfqnlCopyMeta   = 1

	nfDrop   = 0
	nfAccept = 1

	// linkQueueNum is the NFQUEUE number the router's link chain uses.
	linkQueueNum = 0
	// linkQueueMax bounds the packets the kernel holds for us; beyond it
	// the kernel drops (a full router buffer).
	linkQueueMax = 8192
)

func queueMsgType(msg uint16) uint16 { return nfnlSubsysQueue<<8 | msg }

// nfgenmsg is the 4-byte header of every nfnetlink message.
func nfgenmsg(family uint8, resID uint16) []byte {
	b := []byte{family, 0, 0, 0}
	binary.BigEndian.PutUint16(b[2:], resID)
	return b
}

// attr encodes one netlink attribute (4-byte aligned).
func attr(typ uint16, data []byte) []byte {
	n := 4 + len(data)
	b := make([]byte, (n+3)&^3)
	binary.NativeEndian.PutUint16(b[0:], uint16(n))
	binary.NativeEndian.PutUint16(b[2:], typ)
	copy(b[4:], data)
	return b
}

// bindRequest binds this socket to the queue.
func bindRequest(queue uint16) []byte {
	return append(nfgenmsg(0, queue), attr(nfqaCfgCmd, []byte{nfqnlCfgCmdBind, 0, 0, 0})...)
}

// paramsRequest asks for metadata only and sets the queue length.
func paramsRequest(queue uint16, maxLen uint32) []byte {
	params := make([]byte, 5)
	binary.BigEndian.PutUint32(params, 0) // copy range: nothing
	params[4] = nfqnlCopyMeta
	ml := make([]byte, 4)
	binary.BigEndian.PutUint32(ml, maxLen)
	b := append(nfgenmsg(0, queue), attr(nfqaCfgParams, params)...)
	return append(b, attr(nfqaCfgQueueMax, ml)...)
}

// verdictMsg is the body of a verdict for packet id.
func verdictMsg(queue uint16, id uint32, verdict uint32) []byte {
	hdr := make([]byte, 8)
	binary.BigEndian.PutUint32(hdr[0:], verdict)
	binary.BigEndian.PutUint32(hdr[4:], id)
	return append(nfgenmsg(0, queue), attr(nfqaVerdictHdr, hdr)...)
}

var errNoPacketHdr = errors.New("nfqueue message without a packet header")

// packetID decodes the packet id from an NFQNL_MSG_PACKET body (nfgenmsg and
// attributes). It never panics on short or malformed input.
func packetID(body []byte) (uint32, error) {
	if len(body) < 4 {
		return 0, fmt.Errorf("nfqueue message of %d bytes: too short", len(body))
	}
	b := body[4:]
	for len(b) >= 4 {
		n := int(binary.NativeEndian.Uint16(b[0:]))
		typ := binary.NativeEndian.Uint16(b[2:]) &^ (1<<15 | 1<<14) // nested, byte-order flags
		if n < 4 || n > len(b) {
			return 0, fmt.Errorf("nfqueue attribute length %d of %d bytes left", n, len(b))
		}
		if typ == nfqaPacketHdr {
			if n < 4+7 {
				return 0, fmt.Errorf("nfqueue packet header of %d bytes", n-4)
			}
			return binary.BigEndian.Uint32(b[4:]), nil
		}
		adv := (n + 3) &^ 3
		if adv > len(b) {
			break
		}
		b = b[adv:]
	}
	return 0, errNoPacketHdr
}

// held is one packet waiting for its release.
type held struct {
	at time.Time
	id uint32
}

// holdQueue is a min-heap of packets by release time.
type holdQueue []held

func (q holdQueue) Len() int           { return len(q) }
func (q holdQueue) Less(i, j int) bool { return q[i].at.Before(q[j].at) }
func (q holdQueue) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *holdQueue) Push(x any)        { *q = append(*q, x.(held)) }
func (q *holdQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}

// scheduler turns arriving packet ids into verdicts: drops at once, accepts
// once each packet's hold time has passed, in release order.
type scheduler struct {
	profile LinkProfile
	rng     *rand.Rand
	q       holdQueue
}

func newScheduler(p LinkProfile, seed uint64) *scheduler {
	return &scheduler{profile: p, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

// arrive registers packet id at now; it returns true if it is dropped.
func (s *scheduler) arrive(now time.Time, id uint32) (dropped bool) {
	drop, hold := s.profile.decide(s.rng)
	if drop {
		return true
	}
	heap.Push(&s.q, held{at: now.Add(hold), id: id})
	return false
}

// due pops every packet released by now, and returns when the next is due
// (zero if none is held).
func (s *scheduler) due(now time.Time) (ids []uint32, next time.Time) {
	for len(s.q) > 0 && !s.q[0].at.After(now) {
		ids = append(ids, heap.Pop(&s.q).(held).id)
	}
	if len(s.q) > 0 {
		next = s.q[0].at
	}
	return ids, next
}
