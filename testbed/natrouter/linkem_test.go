package main

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseLinkProfile(t *testing.T) {
	for in, want := range map[string]LinkProfile{
		"internet":     DefaultLinkProfile,
		"":             DefaultLinkProfile,
		"lan":          {},
		"off":          {},
		"25ms,5ms,1%":  {Delay: 25 * time.Millisecond, Jitter: 5 * time.Millisecond, Loss: 0.01},
		"100ms,0s,0":   {Delay: 100 * time.Millisecond},
		"5ms,5ms,2.5%": {Delay: 5 * time.Millisecond, Jitter: 5 * time.Millisecond, Loss: 0.025},
	} {
		got, err := ParseLinkProfile(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, bad := range []string{"fast", "25ms,5ms", "x,5ms,1%", "25ms,x,1%", "25ms,5ms,x", "-1ms,0s,0",
		"11s,0s,0", "5ms,6ms,0", "25ms,5ms,100%", "25ms,5ms,-1%", "25ms,5ms,NaN"} {
		_, err := ParseLinkProfile(bad)
		require.Error(t, err, bad)
	}
	require.True(t, LinkProfile{}.Off())
	require.False(t, DefaultLinkProfile.Off())
	require.Equal(t, "25ms±5ms/1%", DefaultLinkProfile.String())
}

// Holds stay within delay±jitter, the loss rate is what the profile says,
// and packets come out in release order, none before its time.
func TestScheduler(t *testing.T) {
	s := newScheduler(DefaultLinkProfile, 1)
	start := time.Unix(1000, 0)
	const n = 20000
	dropped := 0
	for i := range n {
		if s.arrive(start, uint32(i)) {
			dropped++
		}
	}
	rate := float64(dropped) / n
	require.InDelta(t, 0.01, rate, 0.004, "loss rate %.4f", rate)

	ids, next := s.due(start.Add(DefaultLinkProfile.Delay - DefaultLinkProfile.Jitter - time.Nanosecond))
	require.Empty(t, ids, "nothing leaves before delay-jitter")
	require.False(t, next.Before(start.Add(20*time.Millisecond)))
	ids, next = s.due(start.Add(DefaultLinkProfile.Delay))
	require.NotEmpty(t, ids)
	require.False(t, next.IsZero())
	rest, next := s.due(start.Add(DefaultLinkProfile.Delay + DefaultLinkProfile.Jitter))
	require.True(t, next.IsZero(), "everything left by delay+jitter")
	require.Equal(t, n-dropped, len(ids)+len(rest), "every packet not dropped is released once")
	seen := map[uint32]bool{}
	for _, id := range append(ids, rest...) {
		require.False(t, seen[id])
		seen[id] = true
	}

	// Without loss nothing is dropped; without jitter the hold is exact.
	p := LinkProfile{Delay: 10 * time.Millisecond}
	r := rand.New(rand.NewPCG(1, 2))
	for range 1000 {
		drop, hold := p.decide(r)
		require.False(t, drop)
		require.Equal(t, 10*time.Millisecond, hold)
	}
}

func packetMsg(id uint32) []byte {
	hdr := make([]byte, 7)
	binary.BigEndian.PutUint32(hdr, id)
	binary.BigEndian.PutUint16(hdr[4:], 0x0800)
	hdr[6] = 2 // NF_INET_FORWARD
	mark := make([]byte, 4)
	// Another attribute first, as the kernel may order them any way.
	return append(append(nfgenmsg(2, 0), attr(3, mark)...), attr(nfqaPacketHdr, hdr)...)
}

func TestPacketID(t *testing.T) {
	id, err := packetID(packetMsg(0xdeadbeef))
	require.NoError(t, err)
	require.EqualValues(t, 0xdeadbeef, id)

	for name, body := range map[string][]byte{
		"empty":            nil,
		"header only":      nfgenmsg(2, 0),
		"no packet hdr":    append(nfgenmsg(2, 0), attr(3, make([]byte, 4))...),
		"short hdr":        append(nfgenmsg(2, 0), attr(nfqaPacketHdr, []byte{1, 2, 3})...),
		"length too big":   append(nfgenmsg(2, 0), 0xff, 0x00, 0x01, 0x00, 1, 2, 3, 4),
		"length too small": append(nfgenmsg(2, 0), 0x02, 0x00, 0x01, 0x00),
	} {
		_, err := packetID(body)
		require.Error(t, err, name)
	}
}

// The messages we send have the layout the kernel expects.
func TestQueueRequests(t *testing.T) {
	b := bindRequest(7)
	require.Equal(t, []byte{0, 0, 0, 7}, b[:4])
	require.EqualValues(t, 8, binary.NativeEndian.Uint16(b[4:]))
	require.EqualValues(t, nfqaCfgCmd, binary.NativeEndian.Uint16(b[6:]))
	require.Equal(t, byte(nfqnlCfgCmdBind), b[8])

	p := paramsRequest(0, 100)
	require.EqualValues(t, 9, binary.NativeEndian.Uint16(p[4:]), "params: 4-byte range + 1-byte mode")
	require.Equal(t, byte(nfqnlCopyMeta), p[8+4])
	require.Len(t, p, 4+12+8)
	require.EqualValues(t, 100, binary.BigEndian.Uint32(p[4+12+4:]))

	v := verdictMsg(0, 42, nfAccept)
	require.Len(t, v, 4+12)
	require.EqualValues(t, nfqaVerdictHdr, binary.NativeEndian.Uint16(v[6:]))
	require.EqualValues(t, nfAccept, binary.BigEndian.Uint32(v[8:]))
	require.EqualValues(t, 42, binary.BigEndian.Uint32(v[12:]))
	require.Equal(t, uint16(3<<8|1), queueMsgType(nfqnlMsgVerdict))
}

// The kernel's messages are decoded without panics whatever they hold.
func FuzzPacketID(f *testing.F) {
	f.Add(packetMsg(1))
	f.Add(nfgenmsg(2, 0))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		id, err := packetID(b)
		if err == nil && len(b) < 4+4+7 {
			t.Fatalf("id %d from %d bytes", id, len(b))
		}
	})
}
