package transfer

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// pauser blocks the recipient's run goroutine inside its first progress
// event past half of the file, so that the test can stop a side there.
type pauser struct {
	rec     *recorder
	half    int64
	reached chan struct{}
	release chan struct{}
	done    bool
}

func newPauser(rec *recorder, half int64) *pauser {
	return &pauser{rec: rec, half: half, reached: make(chan struct{}), release: make(chan struct{})}
}

func (p *pauser) events(ev Event) {
	p.rec.add(ev)
	if pe, ok := ev.(ProgressEvent); ok && pe.Incoming && pe.Bytes >= p.half && !p.done {
		p.done = true // only the run goroutine emits incoming progress
		close(p.reached)
		<-p.release
	}
}

func (s *Service) servingCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, v := range s.serving {
		n += v
	}
	return n
}

func TestResumeAfterRecipientRestart(t *testing.T) {
	ha, hb := newHost(t), newHost(t)
	connect(t, ha, hb)
	a := newSvc(t, ha, "", "")
	bState, bDown := t.TempDir(), t.TempDir()
	size := 24*DefaultChunkSize + 999
	src, content := randomFile(t, t.TempDir(), size)
	rec := newRecorder()
	p := newPauser(rec, int64(size/2))
	b := newSvc(t, hb, bState, bDown, func(c *Config) { c.Events = p.events })
	b.rec = rec
	info, _ := offerAndAccept(t, a, b, src, "")

	<-p.reached
	closed := make(chan struct{})
	go func() { b.Close(); close(closed) }()
	close(p.release)
	<-closed
	received1 := b.BytesReceived()
	require.Less(t, received1, int64(size))
	require.Eventually(t, func() bool { return a.servingCount() == 0 }, waitFor, 10*time.Millisecond)
	sentBefore := a.BytesSent()

	// The restarted recipient finds the transfer on disk and resumes.
	b2 := newSvc(t, hb, bState, bDown)
	done := b2.rec.wait(t, waitFor, isDone(info.ID, true)).(DoneEvent)
	a.rec.wait(t, waitFor, isDone(info.ID, false))
	requireFile(t, done.Path, content)
	resent := a.BytesSent() - sentBefore
	missing := int64(size) - received1
	t.Logf("received before the kill %d, sent after it %d, missing %d", received1, resent, missing)
	require.LessOrEqual(t, resent, missing+DefaultChunkSize, "at most one chunk sent again")
	require.Equal(t, resent, b2.BytesReceived())
}

func TestResumeAfterSenderRestart(t *testing.T) {
	ha, hb := newHost(t), newHost(t)
	connect(t, ha, hb)
	aState := t.TempDir()
	a := newSvc(t, ha, aState, "")
	size := 16*DefaultChunkSize + 5
	src, content := randomFile(t, t.TempDir(), size)
	rec := newRecorder()
	p := newPauser(rec, int64(size/2))
	b := newSvc(t, hb, "", "", func(c *Config) { c.Events = p.events })
	b.rec = rec
	info, _ := offerAndAccept(t, a, b, src, "")

	<-p.reached
	require.NoError(t, a.Close())
	close(p.release)
	recv1 := b.BytesReceived()

	a2 := newSvc(t, ha, aState, "")
	require.Len(t, a2.List(), 1, "the offer is loaded from disk")
	done := b.rec.wait(t, waitFor, isDone(info.ID, true)).(DoneEvent)
	a2.rec.wait(t, waitFor, isDone(info.ID, false))
	requireFile(t, done.Path, content)
	require.LessOrEqual(t, a2.BytesSent(), int64(size)-recv1+2*DefaultChunkSize)
}

func TestCloseKeepsStateAndOfferSurvivesOnSender(t *testing.T) {
	ha, hb := newHost(t), newHost(t)
	connect(t, ha, hb)
	aState := t.TempDir()
	a := newSvc(t, ha, aState, "")
	newSvc(t, hb, "", "")
	src, _ := randomFile(t, t.TempDir(), 1000)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := a.Offer(ctx, hb.ID(), src, "alice")
	require.NoError(t, err)
	require.NoError(t, a.Close())
	a2 := newSvc(t, ha, aState, "")
	got := a2.List()
	require.Len(t, got, 1)
	require.Equal(t, info.ID, got[0].ID)
	require.Equal(t, StateOffered, got[0].State)
}

func TestResumeAfterConnectionCut(t *testing.T) {
	ha, hb := newHost(t), newHost(t)
	connect(t, ha, hb)
	a := newSvc(t, ha, "", "")
	size := 8*DefaultChunkSize + 3
	src, content := randomFile(t, t.TempDir(), size)
	rec := newRecorder()
	p := newPauser(rec, int64(size/2))
	b := newSvc(t, hb, "", "", func(c *Config) { c.Events = p.events })
	b.rec = rec
	info, _ := offerAndAccept(t, a, b, src, "")

	<-p.reached
	// The network goes: every connection between them closes.
	require.NoError(t, ha.Network().ClosePeer(hb.ID()))
	require.NoError(t, hb.Network().ClosePeer(ha.ID()))
	close(p.release)
	// The recipient reconnects by itself (its peerstore knows the sender)
	// and fetches only the rest.
	done := b.rec.wait(t, waitFor, isDone(info.ID, true)).(DoneEvent)
	requireFile(t, done.Path, content)
	require.LessOrEqual(t, b.BytesReceived(), int64(size)+DefaultChunkSize)
}

func TestDropPeerEndsTransfers(t *testing.T) {
	ha, hb := newHost(t), newHost(t)
	connect(t, ha, hb)
	a := newSvc(t, ha, "", "")
	size := 8 * DefaultChunkSize
	src, _ := randomFile(t, t.TempDir(), size)
	rec := newRecorder()
	p := newPauser(rec, int64(size/2))
	b := newSvc(t, hb, "", "", func(c *Config) { c.Events = p.events })
	b.rec = rec
	info, _ := offerAndAccept(t, a, b, src, "")
	// A second offer still waiting for a decision.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pending, err := a.Offer(ctx, hb.ID(), src, "alice")
	require.NoError(t, err)
	<-p.reached
	go func() { b.DropPeer(ha.ID(), "blocked") }()
	close(p.release)
	b.rec.wait(t, waitFor, isFailed(info.ID, true))
	b.rec.wait(t, waitFor, isFailed(pending.ID, true))
	a.rec.wait(t, waitFor, isFailed(info.ID, false))
	require.Empty(t, dirFiles(t, b.down), "the partial file is gone")
	require.Eventually(t, func() bool { return len(dirFiles(t, filepath.Join(b.dir, "in"))) == 0 }, waitFor, 10*time.Millisecond)
}
