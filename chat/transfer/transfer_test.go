package transfer

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const waitFor = 20 * time.Second

// offerAndAccept offers src from a to b and accepts it on b.
func offerAndAccept(t *testing.T, a, b *tsvc, src, name string) (Info, OfferEvent) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := a.offer(ctx, b.h.ID(), src, name, "alice")
	require.NoError(t, err)
	require.Equal(t, StateOffered, info.State)
	ev := b.rec.wait(t, waitFor, func(e Event) bool { o, ok := e.(OfferEvent); return ok && o.ID == info.ID }).(OfferEvent)
	require.Equal(t, a.h.ID(), ev.Peer)
	require.Equal(t, "alice", ev.From)
	require.Equal(t, info.Size, ev.Size)
	_, err = b.Accept(info.ID, "")
	require.NoError(t, err)
	return info, ev
}

func TestTransferRoundTrip(t *testing.T) {
	ha, hb := newHost(t), newHost(t)
	connect(t, ha, hb)
	a, b := newSvc(t, ha, "", ""), newSvc(t, hb, "", "")
	src, content := randomFile(t, t.TempDir(), 5*DefaultChunkSize+12345)

	info, offer := offerAndAccept(t, a, b, src, "")
	require.Equal(t, sum(content), offer.Hash)
	require.Equal(t, "src.bin", offer.Name)

	done := b.rec.wait(t, waitFor, isDone(info.ID, true)).(DoneEvent)
	a.rec.wait(t, waitFor, isDone(info.ID, false))
	require.Equal(t, filepath.Join(b.down, "src.bin"), done.Path)
	require.True(t, filepath.IsAbs(done.Path))
	require.Equal(t, sum(content), done.Hash)
	requireFile(t, done.Path, content)
	require.Equal(t, []string{"src.bin"}, dirFiles(t, b.down), "no partial file left")
	require.Empty(t, dirFiles(t, filepath.Join(a.dir, "out")), "sender state removed")
	require.Empty(t, dirFiles(t, filepath.Join(b.dir, "in")), "recipient state removed")
	require.EqualValues(t, len(content), a.BytesSent())

	// Progress went up to the size on both sides, and was rate-limited
	// to changes.
	b.rec.wait(t, waitFor, isProgressAtLeast(info.ID, true, int64(len(content))))
	a.rec.wait(t, waitFor, isProgressAtLeast(info.ID, false, int64(len(content))))
	for _, in := range b.List() {
		require.Equal(t, StateDone, in.State)
		require.Equal(t, int64(len(content)), in.Bytes)
	}
}

func TestTransferEmptyFileAndCollision(t *testing.T) {
	ha, hb := newHost(t), newHost(t)
	connect(t, ha, hb)
	a, b := newSvc(t, ha, "", ""), newSvc(t, hb, "", "")
	require.NoError(t, os.WriteFile(filepath.Join(b.down, "notes.txt"), []byte("mine"), 0o644))
	src := filepath.Join(t.TempDir(), "notes.txt")
	require.NoError(t, os.WriteFile(src, nil, 0o644))

	info, _ := offerAndAccept(t, a, b, src, "")
	done := b.rec.wait(t, waitFor, isDone(info.ID, true)).(DoneEvent)
	require.Equal(t, filepath.Join(b.down, "notes (1).txt"), done.Path)
	requireFile(t, done.Path, nil)
	requireFile(t, filepath.Join(b.down, "notes.txt"), []byte("mine"))
}

func TestTransferBothDirectionsAtOnce(t *testing.T) {
	ha, hb := newHost(t), newHost(t)
	connect(t, ha, hb)
	a, b := newSvc(t, ha, "", ""), newSvc(t, hb, "", "")
	srcA, ca := randomFile(t, t.TempDir(), 3*DefaultChunkSize+1)
	srcB, cb := randomFile(t, t.TempDir(), 2*DefaultChunkSize+7)
	i1, _ := offerAndAccept(t, a, b, srcA, "from-a.bin")
	i2, _ := offerAndAccept(t, b, a, srcB, "from-b.bin")
	d1 := b.rec.wait(t, waitFor, isDone(i1.ID, true)).(DoneEvent)
	d2 := a.rec.wait(t, waitFor, isDone(i2.ID, true)).(DoneEvent)
	requireFile(t, d1.Path, ca)
	requireFile(t, d2.Path, cb)
}

func TestRejectWritesNothing(t *testing.T) {
	ha, hb := newHost(t), newHost(t)
	connect(t, ha, hb)
	a, b := newSvc(t, ha, "", ""), newSvc(t, hb, "", "")
	src, _ := randomFile(t, t.TempDir(), 100000)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := a.Offer(ctx, hb.ID(), src, "alice")
	require.NoError(t, err)
	b.rec.wait(t, waitFor, isOffer)
	require.Empty(t, dirFiles(t, b.down), "nothing on disk before accepting")
	require.Len(t, dirFiles(t, filepath.Join(b.dir, "in")), 1, "only the offer's record, in the state dir")

	_, err = b.Reject(info.ID[:6]) // a unique prefix does
	require.NoError(t, err)
	f := a.rec.wait(t, waitFor, isFailed(info.ID, false)).(FailedEvent)
	require.Contains(t, f.Err, "rejected")
	require.Empty(t, dirFiles(t, b.down))
	require.Empty(t, dirFiles(t, filepath.Join(a.dir, "out")))
	require.Empty(t, dirFiles(t, filepath.Join(b.dir, "in")), "a rejected offer leaves no record")
	_, err = b.Accept(info.ID, "")
	require.ErrorIs(t, err, ErrNotPending)
	require.Zero(t, a.BytesSent())
}

func TestOfferRefusedByAuthorize(t *testing.T) {
	ha, hb := newHost(t), newHost(t)
	connect(t, ha, hb)
	a := newSvc(t, ha, "", "")
	b := newSvc(t, hb, "", "", func(c *Config) {
		c.Authorize = func(context.Context, peerID, string) (string, error) { return "", errStranger }
	})
	src, _ := randomFile(t, t.TempDir(), 1000)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := a.Offer(ctx, hb.ID(), src, "mallory")
	var se *StatusError
	require.ErrorAs(t, err, &se)
	require.Equal(t, StatusRefused, se.Code)
	require.Contains(t, err.Error(), "stranger")
	require.Empty(t, b.List())
	require.Empty(t, dirFiles(t, filepath.Join(a.dir, "out")), "a refused offer leaves no state")
}

func TestMaliciousNameLandsInsideDownloadDir(t *testing.T) {
	ha, hb := newHost(t), newHost(t)
	connect(t, ha, hb)
	a, b := newSvc(t, ha, "", ""), newSvc(t, hb, "", "")
	src, content := randomFile(t, t.TempDir(), 70000)
	info, offer := offerAndAccept(t, a, b, src, "../../.ssh/authorized_keys")
	require.Equal(t, "authorized_keys", offer.Name)
	done := b.rec.wait(t, waitFor, isDone(info.ID, true)).(DoneEvent)
	require.Equal(t, filepath.Join(b.down, "authorized_keys"), done.Path)
	requireFile(t, done.Path, content)
	require.Equal(t, []string{"authorized_keys"}, dirFiles(t, b.down))
}

func TestPendingOffersBoundedPerPeer(t *testing.T) {
	ha, hb := newHost(t), newHost(t)
	connect(t, ha, hb)
	a := newSvc(t, ha, "", "")
	newSvc(t, hb, "", "", func(c *Config) { c.Limits.MaxPendingPerPeer = 2 })
	src, _ := randomFile(t, t.TempDir(), 1000)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := 0; i < 2; i++ {
		_, err := a.Offer(ctx, hb.ID(), src, "alice")
		require.NoError(t, err)
	}
	_, err := a.Offer(ctx, hb.ID(), src, "alice")
	var se *StatusError
	require.ErrorAs(t, err, &se)
	require.Equal(t, StatusBusy, se.Code)
}

func TestAcceptChecksFreeSpace(t *testing.T) {
	down := t.TempDir()
	free, known, err := freeSpace(down)
	require.NoError(t, err)
	if !known {
		t.Skip("no free-space information on this platform")
	}
	size := int64(free) + 1<<30
	if size > MaxFileSize {
		t.Skipf("%d bytes free: more than the largest offer", free)
	}
	ha, hb := newHost(t), newHost(t)
	connect(t, ha, hb)
	b := newSvc(t, hb, "", down)
	// A raw offer: the sender need not have such a file.
	cs := chunkSizeFor(size)
	st := rawStream(t, ha, hb)
	_, err = st.Write(encode(nil, offerMsg{ID: transferID{1}, Size: size, ChunkSize: cs, Name: "huge.iso", Nick: "mallory"}))
	require.NoError(t, err)
	require.Equal(t, StatusOK, readStatus(t, st).Code)
	ev := b.rec.wait(t, waitFor, isOffer).(OfferEvent)
	_, err = b.Accept(ev.ID, "")
	require.ErrorIs(t, err, ErrNoSpace)
	require.Empty(t, dirFiles(t, down), "nothing written")
	require.Equal(t, StateOffered, b.List()[0].State, "the offer still waits: another dir may do")
}

func TestSanitizeName(t *testing.T) {
	for in, want := range map[string]string{
		"../../.ssh/authorized_keys": "authorized_keys",
		`..\..\windows\system32`:     "system32",
		"report.pdf":                 "report.pdf",
		".bashrc":                    "bashrc",
		"...":                        "file",
		"..":                         "file",
		"":                           "file",
		"/":                          "file",
		"a\x00b\nc\x1b[31m.txt":      "abc[31m.txt",
		"photo\u202egpj.exe":         "photogpj.exe",
		"evil\u200b.txt":             "evil.txt",
		"CON.txt":                    "_CON.txt",
		"name. ":                     "name",
		"a<b>c:d\"e|f?g*h":           "a_b_c_d_e_f_g_h",
		"tab\tname":                  "tabname",
		"bad\xffutf8":                "badutf8",
		"Grüße.txt":                  "Grüße.txt",
	} {
		require.Equal(t, want, SanitizeName(in), "SanitizeName(%q)", in)
	}
	long := strings.Repeat("é", 300) + ".tar.gz"
	got := SanitizeName(long)
	require.LessOrEqual(t, len(got), maxSavedNameLen)
	require.True(t, strings.HasSuffix(got, ".gz"))
}
