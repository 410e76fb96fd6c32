package chat

import (
	"bytes"
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-varint"
	"github.com/stretchr/testify/require"
)

func pexHost(t *testing.T) host.Host {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay())
	require.NoError(t, err)
	t.Cleanup(func() { h.Close() })
	return h
}

func connect(t *testing.T, a, b host.Host) {
	t.Helper()
	require.NoError(t, a.Connect(context.Background(), peer.AddrInfo{ID: b.ID(), Addrs: b.Addrs()}))
}

// TestPexExchange: an answer carries signed records; a forged record (a
// record of one peer signed by another), an unknown kind and the asker
// itself are dropped; the per-peer rate resets the fourth request.
func TestPexExchange(t *testing.T) {
	srv, asker, other, forger := pexHost(t), pexHost(t), pexHost(t), pexHost(t)
	forged := ownRecord(forger) // valid, but of forger, claimed as other below
	entries := []PexEntry{
		{Kind: PexRendezvous, Envelope: ownRecord(other)},
		{Kind: PexKind(9), Envelope: ownRecord(forger)},
		{Kind: PexDHT, Envelope: ownRecord(asker)},
		{Kind: PexRelay, Envelope: append(bytes.Clone(forged[:len(forged)-1]), forged[len(forged)-1]^1)},
	}
	s := newPexService(srv, slog.New(slog.DiscardHandler), func() []PexEntry { return entries })
	defer s.close()
	connect(t, asker, srv)
	got, err := askPex(context.Background(), asker, srv.ID())
	require.NoError(t, err)
	require.Len(t, got, 1)
	require.Equal(t, other.ID(), got[0].Peer.ID)
	require.Equal(t, PexRendezvous, got[0].Kind)
	require.NotEmpty(t, got[0].Peer.Addrs)
	for range pexBurst - 1 {
		_, err := askPex(context.Background(), asker, srv.ID())
		require.NoError(t, err)
	}
	_, err = askPex(context.Background(), asker, srv.ID())
	require.Error(t, err, "over the per-peer rate: the stream is reset")
}

// TestPexRequestNotEmpty: an asker that writes anything is reset.
func TestPexRequestNotEmpty(t *testing.T) {
	srv, asker := pexHost(t), pexHost(t)
	s := newPexService(srv, slog.New(slog.DiscardHandler), func() []PexEntry { return nil })
	defer s.close()
	connect(t, asker, srv)
	str, err := asker.NewStream(context.Background(), srv.ID(), PexProtocolID)
	require.NoError(t, err)
	_, _ = str.Write([]byte("hello"))
	require.NoError(t, str.CloseWrite())
	_, err = readPexAnswer(str)
	require.Error(t, err)
	str.Reset()
}

// TestPexOversizedAnswer: a prefix above MaxPexAnswer is refused before
// the body is read, and so are too many entries.
func TestPexOversizedAnswer(t *testing.T) {
	_, err := readPexAnswer(bytes.NewReader(varint.ToUvarint(MaxPexAnswer + 1)))
	require.ErrorIs(t, err, errPex)
	srv, asker := pexHost(t), pexHost(t)
	srv.SetStreamHandler(PexProtocolID, func(s network.Stream) {
		_, _ = s.Write(varint.ToUvarint(1 << 30))
		s.Close()
	})
	connect(t, asker, srv)
	_, err = askPex(context.Background(), asker, srv.ID())
	require.ErrorIs(t, err, errPex)

	rec := ownRecord(srv)
	many := make([]PexEntry, MaxPexEntries+5)
	for i := range many {
		many[i] = PexEntry{Kind: PexDHT, Envelope: rec}
	}
	body := encodePexAnswer(many)
	raw, err := decodePexAnswer(body)
	require.NoError(t, err)
	require.Len(t, raw, MaxPexEntries, "the encoder writes at most MaxPexEntries")
	body = append(body, encodePexAnswer(many[:1])...)
	_, err = decodePexAnswer(body)
	require.ErrorIs(t, err, errPex, "the decoder refuses more")
}

// FuzzDecodePexAnswer: peer input never panics the decoder or the
// verification; what decodes re-encodes to something that decodes alike.
func FuzzDecodePexAnswer(f *testing.F) {
	h, err := libp2p.New(libp2p.NoListenAddrs)
	if err != nil {
		f.Fatal(err)
	}
	defer h.Close()
	f.Add(encodePexAnswer([]PexEntry{{Kind: PexRendezvous, Envelope: ownRecord(h)}}))
	f.Add([]byte{0x0a, 0x02, 0x08, 0x01})
	f.Add([]byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		raw, err := decodePexAnswer(b)
		if err != nil {
			return
		}
		if len(raw) > MaxPexEntries {
			t.Fatalf("%d entries", len(raw))
		}
		for _, e := range verifyPexEntries(raw, "") {
			if len(e.Peer.Addrs) > maxPexAddrs || len(e.Envelope) > MaxPexRecord {
				t.Fatalf("unbounded entry %+v", e)
			}
		}
		_, _ = readPexAnswer(bytes.NewReader(append(varint.ToUvarint(uint64(len(b))), b...)))
	})
}

// FuzzPexStream fuzzes the live handler: whatever the asker writes, the
// handler answers an empty request or resets the stream, and never
// panics; the answer an honest handler writes always decodes.
func FuzzPexStream(f *testing.F) {
	srv, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay())
	if err != nil {
		f.Fatal(err)
	}
	defer srv.Close()
	asker, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay())
	if err != nil {
		f.Fatal(err)
	}
	defer asker.Close()
	rec := ownRecord(srv)
	s := newPexService(srv, slog.New(slog.DiscardHandler), func() []PexEntry {
		return []PexEntry{{Kind: PexRendezvous, Envelope: rec}}
	})
	defer s.close()
	s.allowAll = true // the per-peer rate is TestPexExchange's
	if err := asker.Connect(context.Background(), peer.AddrInfo{ID: srv.ID(), Addrs: srv.Addrs()}); err != nil {
		f.Fatal(err)
	}
	f.Add([]byte{})
	f.Add([]byte{0})
	f.Add(varint.ToUvarint(1 << 40))
	f.Fuzz(func(t *testing.T, req []byte) {
		str, err := asker.NewStream(context.Background(), srv.ID(), PexProtocolID)
		if err != nil {
			t.Skip(err)
		}
		defer str.Reset()
		if len(req) > 0 {
			_, _ = str.Write(req)
		}
		_ = str.CloseWrite()
		raw, err := readPexAnswer(str)
		if len(req) == 0 && err != nil {
			t.Fatalf("empty request: %v", err)
		}
		if len(req) > 0 && err == nil {
			t.Fatalf("request %x answered", req)
		}
		if len(req) == 0 {
			if got := verifyPexEntries(raw, asker.ID()); len(got) != 1 || got[0].Peer.ID != srv.ID() {
				t.Fatalf("answer %+v", got)
			}
		}
	})
}

// TestPexSilentAsker: an asker that never closes its side holds a slot
// only until the request deadline, then its stream is reset.
func TestPexSilentAsker(t *testing.T) {
	srv, asker := pexHost(t), pexHost(t)
	s := newPexService(srv, slog.New(slog.DiscardHandler), func() []PexEntry { return nil })
	defer s.close()
	connect(t, asker, srv)
	str, err := asker.NewStream(context.Background(), srv.ID(), PexProtocolID)
	require.NoError(t, err)
	defer str.Reset()
	_, err = str.Write([]byte{}) // nothing, and no CloseWrite
	require.NoError(t, err)
	_, err = readPexAnswer(str) // returns once the handler resets at its deadline
	require.Error(t, err)
	require.Eventually(t, func() bool { return len(s.sem) == 0 }, 5*time.Second, 10*time.Millisecond, "the slot is free again")
}
