package rendezvous

import (
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	"github.com/stretchr/testify/require"
)

// A server that accepts the protocol and never answers: the caller's ctx
// must bound the read, not only the stream opening.
func TestClientContextBoundsRead(t *testing.T) {
	silent := ctHost(t, nil, "")
	handlerDone := make(chan struct{}, 16)
	testDone := make(chan struct{})
	defer close(testDone)
	for _, pid := range []protocol.ID{ProtocolID, WatchProtocolID} {
		silent.SetStreamHandler(pid, func(s network.Stream) {
			defer s.Reset()
			var b [1]byte
			if _, err := io.ReadFull(s, b[:]); err == nil {
				handlerDone <- struct{}{}
			}
			io.Copy(io.Discard, s)
			<-testDone
		})
	}
	alice := ctHost(t, nil, "")
	c, err := NewClient(alice, []peer.AddrInfo{{ID: silent.ID(), Addrs: silent.Addrs()}})
	require.NoError(t, err)
	defer c.Close()

	for _, call := range []struct {
		name string
		do   func(ctx context.Context) error
	}{
		{"discover", func(ctx context.Context) error {
			_, _, err := c.DiscoverOn(ctx, silent.ID(), "room", 0, nil)
			return err
		}},
		{"register", func(ctx context.Context) error { _, err := c.RegisterOn(ctx, silent.ID(), "room", 0); return err }},
		{"unregister", func(ctx context.Context) error { return c.UnregisterOn(ctx, silent.ID(), "room") }},
		{"register-kept", func(ctx context.Context) error { return c.Register(ctx, "room", 0) }},
	} {
		t.Run(call.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			start := time.Now()
			err := call.do(ctx)
			require.ErrorIs(t, err, context.DeadlineExceeded)
			require.Less(t, time.Since(start), 5*time.Second)
		})
	}

	drain := func() {
		for {
			select {
			case <-handlerDone:
			default:
				return
			}
		}
	}
	// A watch on a server that never answers ends with its ctx.
	drain()
	wctx, wcancel := context.WithCancel(context.Background())
	events, err := c.Watch(wctx, "room")
	require.NoError(t, err)
	<-handlerDone
	wcancel()
	for range events {
	}

	// Explicit cancellation too, from another goroutine.
	drain()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, _, err := c.DiscoverOn(ctx, silent.ID(), "room", 0, nil)
		errc <- err
	}()
	<-handlerDone // the request reached the server...
	cancel()      // ...which will never answer
	select {
	case err := <-errc:
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(5 * time.Second):
		t.Fatal("cancel did not unblock the read")
	}
}

// Many concurrent calls share the warm streams safely.
func TestClientConcurrentCalls(t *testing.T) {
	srv := ctStartServer(t, nil, "")
	alice := ctHost(t, nil, "")
	ca := ctClient(t, alice, []*ctServer{srv})
	ctx := ctCtx(t)
	require.NoError(t, ca.Register(ctx, "room", time.Hour))

	const workers, calls = 8, 20
	errc := make(chan error, workers)
	for w := range workers {
		go func() {
			for i := range calls {
				if i%5 == 0 {
					if _, err := ca.RegisterOn(ctx, srv.h.ID(), fmt.Sprintf("w%d", w), time.Hour); err != nil {
						errc <- err
						return
					}
				}
				regs, err := ca.Discover(ctx, "room", 0)
				if err != nil {
					errc <- err
					return
				}
				if len(regs) != 1 {
					errc <- fmt.Errorf("got %d registrations", len(regs))
					return
				}
			}
			errc <- nil
		}()
	}
	for range workers {
		require.NoError(t, <-errc)
	}
	sc := ca.srv[srv.h.ID()]
	sc.mu.Lock()
	idle := len(sc.idle)
	sc.mu.Unlock()
	require.LessOrEqual(t, idle, maxIdleStreams)
	require.Positive(t, idle, "streams are kept warm")
}

// BenchmarkClientDiscoverWarm measures one DISCOVER round trip on a warm
// stream over loopback TCP (one registration in the namespace).
func BenchmarkClientDiscoverWarm(b *testing.B) {
	key, _, err := crypto.GenerateEd25519Key(nil)
	require.NoError(b, err)
	sh, err := libp2p.New(libp2p.NoTransports, libp2p.Transport(tcp.NewTCPTransport),
		libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay(), libp2p.DisableMetrics(), libp2p.Identity(key))
	require.NoError(b, err)
	defer sh.Close()
	lim := DefaultLimits()
	lim.RequestRate, lim.RequestBurst = 1e9, 1<<30 // measure the path, not the rate limit
	srv, err := NewServer(sh, WithLimits(lim))
	require.NoError(b, err)
	defer srv.Close()
	ch, err := libp2p.New(libp2p.NoTransports, libp2p.Transport(tcp.NewTCPTransport),
		libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay(), libp2p.DisableMetrics())
	require.NoError(b, err)
	defer ch.Close()
	c, err := NewClient(ch, []peer.AddrInfo{{ID: sh.ID(), Addrs: sh.Addrs()}})
	require.NoError(b, err)
	defer c.Close()
	ctx := context.Background()
	_, err = c.RegisterOn(ctx, sh.ID(), "room", 0)
	require.NoError(b, err)
	b.ResetTimer()
	for b.Loop() {
		regs, _, err := c.DiscoverOn(ctx, sh.ID(), "room", 0, nil)
		if err != nil || len(regs) != 1 {
			b.Fatal(err, len(regs))
		}
	}
}

// Unregister is an error only when the request cannot be written: a server
// that is unreachable fails it, a server that resets after reading does not.
func TestClientUnregisterUnreachable(t *testing.T) {
	gone := ctHost(t, nil, "")
	info := peer.AddrInfo{ID: gone.ID(), Addrs: gone.Addrs()}
	require.NoError(t, gone.Close())
	alice := ctHost(t, nil, "")
	c, err := NewClient(alice, []peer.AddrInfo{info}, WithRequestTimeout(time.Second, time.Second))
	require.NoError(t, err)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.Error(t, c.Unregister(ctx, "room"))
	require.Error(t, c.UnregisterOn(ctx, gone.ID(), "room"))
}
