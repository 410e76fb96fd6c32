package transfer

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/stretchr/testify/require"
)

// fakeFile is what a hand-made sender offers: content in chunks of cs.
type fakeFile struct {
	content    []byte
	cs         int
	hashes     []byte
	file, list [hashLen]byte
}

func newFakeFile(size, cs int) fakeFile {
	f := fakeFile{content: make([]byte, size), cs: cs}
	_, _ = rand.Read(f.content)
	var err error
	f.hashes, f.file, err = hashChain(func() error { return nil }, bytes.NewReader(f.content), int64(size), cs, make([]byte, 4096), nil)
	if err != nil {
		panic(err)
	}
	f.list = sha256.Sum256(f.hashes)
	return f
}

func (f fakeFile) chunk(i int) []byte { return f.content[i*f.cs : min((i+1)*f.cs, len(f.content))] }

// fakeSender is a peer without a Service: it offers by hand and answers
// fetches through chunk, which writes what it likes for chunk i (the
// honest answer is writeChunk).
type fakeSender struct {
	h     host.Host
	file  fakeFile
	id    transferID
	chunk func(w io.Writer, i, attempt int) error
	mu    sync.Mutex
	tries map[int]int
}

func (fs *fakeSender) tried(i int) int {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.tries[i]
}

func writeChunk(w io.Writer, index uint32, data []byte) error {
	_, err := w.Write(append(encode(nil, chunkMsg{Index: index, Length: uint32(len(data))}), data...))
	return err
}

func newFakeSender(t *testing.T, size int, chunk func(f fakeFile, w io.Writer, i, attempt int) error) *fakeSender {
	fs := &fakeSender{h: newHost(t), file: newFakeFile(size, MinChunkSize), id: transferID{7, 7, 7}, tries: map[int]int{}}
	fs.chunk = func(w io.Writer, i, attempt int) error { return chunk(fs.file, w, i, attempt) }
	fs.h.SetStreamHandler(ProtocolID, func(st network.Stream) {
		defer st.Reset() // a fake: it never closes cleanly, the recipient decides
		br := bufio.NewReader(st)
		if _, err := readMessage(br); err != nil {
			return
		}
		hdr := encode(encode(nil, statusMsg{}), hashesMsg{Count: uint32(len(fs.file.hashes) / hashLen)})
		if _, err := st.Write(append(hdr, fs.file.hashes...)); err != nil {
			return
		}
		for {
			m, err := readMessage(br)
			if err != nil {
				return
			}
			w, ok := m.(wantMsg)
			if !ok {
				return
			}
			for i := int(w.Start); i < int(w.Start+w.Count); i++ {
				fs.mu.Lock()
				fs.tries[i]++
				n := fs.tries[i]
				fs.mu.Unlock()
				if err := fs.chunk(st, i, n); err != nil {
					return
				}
			}
		}
	})
	return fs
}

// offerTo offers the fake file to b and accepts it there.
func (fs *fakeSender) offerTo(t *testing.T, b *tsvc) string {
	t.Helper()
	connect(t, fs.h, b.h)
	st := rawStream(t, fs.h, b.h)
	_, err := st.Write(encode(nil, offerMsg{ID: fs.id, Size: int64(len(fs.file.content)), ChunkSize: fs.file.cs,
		FileHash: fs.file.file, ListHash: fs.file.list, Name: "data.bin", Nick: "mallory"}))
	require.NoError(t, err)
	require.Equal(t, StatusOK, readStatus(t, st).Code)
	ev := b.rec.wait(t, waitFor, isOffer).(OfferEvent)
	_, err = b.Accept(ev.ID, "")
	require.NoError(t, err)
	return ev.ID
}

func TestBadChunkIsDroppedAndAskedAgain(t *testing.T) {
	fs := newFakeSender(t, 4*MinChunkSize+100, func(f fakeFile, w io.Writer, i, attempt int) error {
		data := append([]byte(nil), f.chunk(i)...)
		if i == 2 && attempt == 1 {
			data[10] ^= 0xff // wrong hash, once
		}
		return writeChunk(w, uint32(i), data)
	})
	b := newSvc(t, newHost(t), "", "")
	id := fs.offerTo(t, b)
	done := b.rec.wait(t, waitFor, isDone(id, true)).(DoneEvent)
	requireFile(t, done.Path, fs.file.content)
	require.Equal(t, 2, fs.tried(2), "the bad chunk was asked for again")
	require.Equal(t, 1, fs.tried(1))
}

// requireCutOff waits for the transfer to fail with a message containing
// want, and checks that nothing stays on disk.
func requireCutOff(t *testing.T, b *tsvc, id, want string) {
	t.Helper()
	f := b.rec.wait(t, waitFor, isFailed(id, true)).(FailedEvent)
	require.Contains(t, f.Err, want)
	require.Empty(t, dirFiles(t, b.down), "the partial file is removed")
	require.Empty(t, dirFiles(t, filepath.Join(b.dir, "in")), "the state is removed")
	require.Zero(t, b.rec.count(isDone(id, true)))
}

func TestSenderLyingAboutContentIsCutOff(t *testing.T) {
	fs := newFakeSender(t, 3*MinChunkSize, func(f fakeFile, w io.Writer, i, _ int) error {
		data := make([]byte, len(f.chunk(i))) // never the offered bytes
		return writeChunk(w, uint32(i), data)
	})
	b := newSvc(t, newHost(t), "", "", func(c *Config) { c.Limits.MaxBadChunks = 2 })
	id := fs.offerTo(t, b)
	requireCutOff(t, b, id, "fail their hash")
	require.LessOrEqual(t, fs.tried(0)+fs.tried(1)+fs.tried(2), 3, "cut off after MaxBadChunks+1 bad chunks")
}

func TestChunkOutOfRangeIsCutOff(t *testing.T) {
	fs := newFakeSender(t, 3*MinChunkSize, func(f fakeFile, w io.Writer, i, _ int) error {
		return writeChunk(w, uint32(i+1000), f.chunk(i)) // an offset beyond the file
	})
	b := newSvc(t, newHost(t), "", "")
	id := fs.offerTo(t, b)
	requireCutOff(t, b, id, "was asked for")
}

func TestMoreBytesThanOfferedIsCutOff(t *testing.T) {
	fs := newFakeSender(t, 2*MinChunkSize+10, func(f fakeFile, w io.Writer, i, _ int) error {
		return writeChunk(w, uint32(i), append(append([]byte(nil), f.chunk(i)...), 1, 2, 3))
	})
	b := newSvc(t, newHost(t), "", "")
	id := fs.offerTo(t, b)
	requireCutOff(t, b, id, "offered bytes")
}

func TestStalledSenderFails(t *testing.T) {
	fs := newFakeSender(t, 3*MinChunkSize, func(f fakeFile, w io.Writer, i, _ int) error {
		if i == 1 {
			// Half a chunk, then nothing: the stream stays open.
			_, err := w.Write(append(encode(nil, chunkMsg{Index: 1, Length: uint32(len(f.chunk(1)))}), f.chunk(1)[:100]...))
			if err == nil {
				// Wait, reading, until the recipient resets the stream.
				_, _ = io.Copy(io.Discard, w.(io.Reader))
			}
			return err
		}
		return writeChunk(w, uint32(i), f.chunk(i))
	})
	b := newSvc(t, newHost(t), "", "", func(c *Config) {
		c.Limits.StallTimeout = 150 * time.Millisecond
		c.Limits.MaxStalls = 2
	})
	id := fs.offerTo(t, b)
	requireCutOff(t, b, id, "stalled")
}

func TestOfferFor10TBIsRefused(t *testing.T) {
	ha, hb := newHost(t), newHost(t)
	connect(t, ha, hb)
	b := newSvc(t, hb, "", "")
	for _, cs := range []int{MaxChunkSize, DefaultChunkSize} {
		st := rawStream(t, ha, hb)
		_, err := st.Write(encode(nil, offerMsg{ID: transferID{byte(cs >> 20)}, Size: 10_000_000_000_000, ChunkSize: cs, Name: "big", Nick: "mallory"}))
		require.NoError(t, err)
		require.Equal(t, StatusTooLarge, readStatus(t, st).Code)
	}
	// Within the size limit but with impossible geometry.
	st := rawStream(t, ha, hb)
	_, err := st.Write(encode(nil, offerMsg{ID: transferID{9}, Size: 1 << 30, ChunkSize: 1000, Name: "odd"}))
	require.NoError(t, err)
	require.Equal(t, StatusInvalid, readStatus(t, st).Code)
	require.Empty(t, b.List())
	require.Empty(t, dirFiles(t, b.down))
}

func TestFetchWithoutAcceptedOffer(t *testing.T) {
	ha, hb, hm := newHost(t), newHost(t), newHost(t)
	connect(t, ha, hb)
	connect(t, hm, ha)
	a := newSvc(t, ha, "", "")
	newSvc(t, hb, "", "")
	src, _ := randomFile(t, t.TempDir(), 100000)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := a.Offer(ctx, hb.ID(), src, "alice")
	require.NoError(t, err)
	id, _ := parseID(info.ID)

	// An unknown id, and the real id from a peer it was not offered to.
	for _, fid := range []transferID{{1, 2, 3}, id} {
		st := rawStream(t, hm, ha)
		_, err := st.Write(encode(nil, fetchMsg{ID: fid}))
		require.NoError(t, err)
		require.Equal(t, StatusUnknown, readStatus(t, st).Code)
	}
	// A stream that starts with something that is not a request is reset.
	st := rawStream(t, hm, ha)
	_, err = st.Write(encode(nil, wantMsg{Start: 0, Count: 1}))
	require.NoError(t, err)
	_, err = readMessage(bufio.NewReader(st))
	require.Error(t, err)
	// Garbage.
	st = rawStream(t, hm, ha)
	_, err = st.Write([]byte{0xff, 0xff, 0xff, 0xff, 0x0f})
	require.NoError(t, err)
	_, err = readMessage(bufio.NewReader(st))
	require.Error(t, err)
	require.Zero(t, a.BytesSent())
	require.Equal(t, StateOffered, a.List()[0].State, "the real offer is untouched")
}

func rawOffer(t *testing.T, from *tsvc, to *tsvc, id transferID) byte {
	t.Helper()
	st := rawStream(t, from.h, to.h)
	_, err := st.Write(encode(nil, offerMsg{ID: id, Size: 10, ChunkSize: MinChunkSize, Name: "x", Nick: "mallory"}))
	require.NoError(t, err)
	return readStatus(t, st).Code
}

func TestOfferAndWithdrawDoesNotGrowTheList(t *testing.T) {
	ha, hb := newHost(t), newHost(t)
	connect(t, ha, hb)
	a := &tsvc{h: ha}
	b := newSvc(t, hb, "", "", func(c *Config) { c.Limits.MaxPendingPerPeer = 2 })
	for i := 0; i < 20; i++ {
		id := transferID{byte(i), 0xaa}
		require.Equal(t, StatusOK, rawOffer(t, a, b, id), "offer %d", i)
		st := rawStream(t, ha, hb)
		_, err := st.Write(encode(nil, cancelMsg{ID: id, Reason: "never mind"}))
		require.NoError(t, err)
		require.Equal(t, StatusOK, readStatus(t, st).Code)
	}
	require.Empty(t, b.List(), "withdrawn offers are forgotten")
	require.Equal(t, 20, b.rec.count(func(e Event) bool { _, ok := e.(FailedEvent); return ok }))
}

func TestFinishedTransfersBounded(t *testing.T) {
	ha, hb := newHost(t), newHost(t)
	connect(t, ha, hb)
	a := &tsvc{h: ha}
	b := newSvc(t, hb, "", "")
	for i := 0; i < maxFinished+10; i++ {
		id := transferID{byte(i), 0xbb}
		require.Equal(t, StatusOK, rawOffer(t, a, b, id))
		_, err := b.Reject(hex.EncodeToString(id[:]))
		require.NoError(t, err)
	}
	require.Len(t, b.List(), maxFinished)
}
