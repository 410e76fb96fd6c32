package mailbox

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/libp2p/go-msgio"
	"github.com/stretchr/testify/require"
)

func FuzzDecodeRequest(f *testing.F) {
	f.Add((&request{op: OpDeposit, recipient: []byte("x"), box: []byte{1, 2}}).marshal())
	f.Add((&request{op: OpFetch, limit: 3}).marshal())
	f.Add((&request{op: OpDelete, ids: [][]byte{make([]byte, IDLen)}}).marshal())
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeRequest(b)
		if err != nil {
			return
		}
		// What decodes re-encodes to something that decodes the same.
		r2, err := decodeRequest(r.marshal())
		if err != nil {
			t.Fatalf("re-encoded request does not decode: %v", err)
		}
		if r.op != r2.op || !bytes.Equal(r.recipient, r2.recipient) || !bytes.Equal(r.box, r2.box) || len(r.ids) != len(r2.ids) {
			t.Fatalf("round trip changed the request")
		}
	})
}

func FuzzDecodeResponse(f *testing.F) {
	f.Add((&response{status: StatusOK, deposits: []Deposit{{ID: make([]byte, IDLen), Box: []byte{1}, StoredMs: 5}}, more: true}).marshal())
	f.Add((&response{status: StatusTooLarge, text: "no"}).marshal())
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeResponse(b)
		if err != nil {
			return
		}
		if _, err := decodeResponse(r.marshal()); err != nil {
			t.Fatalf("re-encoded response does not decode: %v", err)
		}
	})
}

// FuzzServerStream writes arbitrary bytes to a live server stream: the
// server answers or resets that stream, and keeps serving.
func FuzzServerStream(f *testing.F) {
	daemon, err := newFuzzHost()
	require.NoError(f, err)
	defer daemon.Close()
	l := DefaultLimits()
	l.RequestRate, l.RequestBurst = 1e9, 1<<30 // the fuzzer is one busy peer
	srv, err := New(daemon, WithDataDir(f.TempDir()), WithLimits(l))
	require.NoError(f, err)
	defer srv.Close()
	client, err := newFuzzHost()
	require.NoError(f, err)
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(f, client.Connect(ctx, addrInfo(daemon)))

	var seed bytes.Buffer
	_ = msgio.NewVarintWriter(&seed).WriteMsg((&request{op: OpFetch}).marshal())
	f.Add(seed.Bytes())
	seed.Reset()
	_ = msgio.NewVarintWriter(&seed).WriteMsg((&request{op: OpDeposit, recipient: []byte(client.ID()), box: append([]byte{1}, make([]byte, 60)...)}).marshal())
	f.Add(seed.Bytes())
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s, err := client.NewStream(sctx, daemon.ID(), ProtocolID)
		if err != nil {
			t.Fatalf("server stopped serving: %v", err)
		}
		_ = s.SetDeadline(time.Now().Add(10 * time.Second))
		_, _ = s.Write(b)
		_ = s.CloseWrite()
		_, _ = msgio.NewVarintReaderSize(s, MaxResponseSize).ReadMsg()
		s.Reset()
		// Keep the store from filling across iterations.
		if deps, _, err := NewClient(client, 0).Fetch(sctx, daemon.ID(), 0); err == nil && len(deps) > 0 {
			ids := make([][]byte, len(deps))
			for i, d := range deps {
				ids[i] = d.ID
			}
			if _, err := NewClient(client, 0).Delete(sctx, daemon.ID(), ids); err != nil {
				t.Fatalf("delete: %v", err)
			}
		}
	})
}
