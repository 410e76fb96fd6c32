package transfer

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/stretchr/testify/require"
)

// FuzzDecode: the decoder never panics, and what it accepts encodes back
// to the same bytes.
func FuzzDecode(f *testing.F) {
	for _, m := range []any{
		offerMsg{ID: transferID{1}, Size: 1 << 20, ChunkSize: DefaultChunkSize, Name: "a.txt", Nick: "alice"},
		fetchMsg{ID: transferID{2}, Have: 5}, cancelMsg{ID: transferID{3}, Reason: "rejected"},
		statusMsg{Code: StatusBusy, Text: "busy"}, hashesMsg{Count: 3}, wantMsg{Start: 1, Count: 2},
		chunkMsg{Index: 4, Length: 100}, doneMsg{},
	} {
		b := encode(nil, m)
		f.Add(b)
	}
	f.Add([]byte{0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := readMessage(bufio.NewReader(bytes.NewReader(b)))
		if err != nil {
			return
		}
		enc := encode(nil, m)
		require.Equal(t, b[:len(enc)], enc)
	})
}

// FuzzServiceStream fuzzes a live service: whatever a peer writes on a
// stream of the protocol, the service answers or resets that stream, and
// keeps serving.
func FuzzServiceStream(f *testing.F) {
	ha, hb := newHost(f), newHost(f)
	connect(f, ha, hb)
	b := newSvc(f, hb, "", "")
	src, _ := randomFile(f, f.TempDir(), 3*MinChunkSize)
	a := newSvc(f, ha, "", "")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	info, err := a.Offer(ctx, hb.ID(), src, "alice")
	cancel()
	require.NoError(f, err)
	id, _ := parseID(info.ID)
	f.Add(encode(nil, fetchMsg{ID: id}))
	f.Add(append(encode(nil, fetchMsg{ID: id}), encode(encode(nil, wantMsg{Start: 0, Count: 3}), doneMsg{})...))
	f.Add(encode(nil, offerMsg{ID: transferID{5}, Size: 10, ChunkSize: MinChunkSize, Name: "../x"}))
	f.Add(encode(nil, cancelMsg{ID: id}))
	f.Add([]byte{0x05, 0x06, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		// Both directions: a fuzzed sender talking to b, a fuzzed
		// recipient talking to a (which has a real offer for hb).
		for _, target := range []struct {
			from, to *tsvc
		}{{a, b}, {b, a}} {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			st, err := target.from.h.NewStream(ctx, target.to.h.ID(), ProtocolID)
			cancel()
			require.NoError(t, err)
			_ = st.SetDeadline(time.Now().Add(2 * time.Second))
			_, _ = st.Write(data)
			_ = st.CloseWrite()
			_, _ = io.Copy(io.Discard, st)
			st.Reset()
		}
		// Still serving.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st, err := ha.NewStream(ctx, hb.ID(), ProtocolID)
		cancel()
		require.NoError(t, err)
		defer st.Reset()
		_ = st.SetDeadline(time.Now().Add(5 * time.Second))
		_, err = st.Write(encode(nil, fetchMsg{ID: transferID{0xee}}))
		require.NoError(t, err)
		require.Equal(t, StatusUnknown, readStatus(t, st).Code)
	})
}

// FuzzSenderResponse fuzzes what a sender answers to a FETCH: the
// recipient never panics, never saves a file that is not the offered one,
// and ends the attempt.
func FuzzSenderResponse(f *testing.F) {
	ff := newFakeFile(2*MinChunkSize+10, MinChunkSize)
	hm, hb := newHost(f), newHost(f)
	connect(f, hm, hb)
	var resp atomic.Pointer[[]byte]
	var served atomic.Int64
	hm.SetStreamHandler(ProtocolID, func(st network.Stream) {
		defer st.Reset()
		if served.Add(1) > 1 {
			return
		}
		if _, err := readMessage(bufio.NewReader(st)); err != nil {
			return
		}
		_ = st.SetDeadline(time.Now().Add(2 * time.Second))
		_, _ = st.Write(*resp.Load())
		_ = st.CloseWrite()
		_, _ = io.Copy(io.Discard, st)
	})
	good := encode(encode(nil, statusMsg{}), hashesMsg{Count: 3})
	good = append(good, ff.hashes...)
	for i := 0; i < 3; i++ {
		good = append(good, encode(nil, chunkMsg{Index: uint32(i), Length: uint32(len(ff.chunk(i)))})...)
		good = append(good, ff.chunk(i)...)
	}
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add(encode(nil, statusMsg{Code: StatusUnknown}))
	f.Fuzz(func(t *testing.T, data []byte) {
		resp.Store(&data)
		served.Store(0)
		down := t.TempDir()
		rec := newRecorder()
		s, err := New(hb, Config{StateDir: t.TempDir(), DownloadDir: down, Events: rec.add,
			Authorize: func(context.Context, peerID, string) (string, error) { return "m", nil },
			Limits:    Limits{StallTimeout: 100 * time.Millisecond, MaxStalls: 1, RetryMin: time.Millisecond, RetryMax: time.Millisecond}})
		require.NoError(t, err)
		defer s.Close()
		st := rawStream(t, hm, hb)
		_, err = st.Write(encode(nil, offerMsg{ID: transferID{1}, Size: int64(len(ff.content)), ChunkSize: ff.cs, FileHash: ff.file, ListHash: ff.list, Name: "f"}))
		require.NoError(t, err)
		require.Equal(t, StatusOK, readStatus(t, st).Code)
		ev := rec.wait(t, waitFor, isOffer).(OfferEvent)
		_, err = s.Accept(ev.ID, "")
		require.NoError(t, err)
		// The attempt ends: the transfer is done or failed, or a second
		// fetch came (the first attempt ended with a retryable error).
		require.Eventually(t, func() bool {
			return served.Load() > 1 || rec.count(func(e Event) bool {
				switch e.(type) {
				case DoneEvent, FailedEvent:
					return true
				}
				return false
			}) > 0
		}, waitFor, time.Millisecond)
		s.Close()
		if rec.count(isDone(ev.ID, true)) > 0 {
			got, err := os.ReadFile(down + "/f")
			require.NoError(t, err)
			require.Equal(t, ff.content, got, "only the offered content is ever saved")
		}
	})
}
