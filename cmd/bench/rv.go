package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-msgio/pbio"
	"google.golang.org/protobuf/proto"

	"github.com/p2p-messaging/p2p-messaging/rendezvous"
	"github.com/p2p-messaging/p2p-messaging/rendezvous/pb"
)

// rvClient speaks /rendezvous/1.0.0 on one long-lived stream, as
// rendezvous.Client does: sequential requests, varint-delimited protobuf.
type rvClient struct {
	lc  *liteConn
	s   network.MuxedStream
	r   pbio.ReadCloser
	w   pbio.WriteCloser
	ns  string // the client's own namespace ("nick")
	reg *pb.Message
	msg pb.Message // response, reused
}

const benchTTL = 7200 // seconds

// nickNS is client i's namespace: one holder each, under the exclusive
// user prefix, like a chat nick.
func nickNS(tag string, i int) string {
	return fmt.Sprintf("%sbench-%s-%d", rendezvous.UserNamespacePrefix, tag, i)
}

func wrapRVClient(lc *liteConn, s network.MuxedStream, ns string) *rvClient {
	c := &rvClient{
		lc: lc, s: s, ns: ns,
		r: pbio.NewDelimitedReader(s, rendezvous.MaxMessageSize),
		w: pbio.NewDelimitedWriter(s),
	}
	c.reg = registerMsg(ns, lc.record)
	return c
}

func registerMsg(ns string, rec []byte) *pb.Message {
	return &pb.Message{
		Type: pb.Message_REGISTER.Enum(),
		Register: &pb.Message_Register{
			Ns:               proto.String(ns),
			SignedPeerRecord: rec,
			Ttl:              proto.Uint64(benchTTL),
		},
	}
}

func discoverMsg(ns string, limit uint64) *pb.Message {
	return &pb.Message{
		Type:     pb.Message_DISCOVER.Enum(),
		Discover: &pb.Message_Discover{Ns: proto.String(ns), Limit: proto.Uint64(limit)},
	}
}

// register sends REGISTER for the client's namespace and checks the answer.
func (c *rvClient) register() error {
	if err := c.w.WriteMsg(c.reg); err != nil {
		return fmt.Errorf("write register: %w", err)
	}
	c.msg.Reset()
	if err := c.r.ReadMsg(&c.msg); err != nil {
		return fmt.Errorf("read register response: %w", err)
	}
	rr := c.msg.GetRegisterResponse()
	if c.msg.GetType() != pb.Message_REGISTER_RESPONSE || rr == nil {
		return fmt.Errorf("register: unexpected %s", c.msg.GetType())
	}
	if rr.GetStatus() != pb.Message_OK {
		return &rendezvous.StatusError{Status: rr.GetStatus(), Text: rr.GetStatusText()}
	}
	return nil
}

// discover sends DISCOVER and returns how many registrations came back.
func (c *rvClient) discover(m *pb.Message) (int, error) {
	if err := c.w.WriteMsg(m); err != nil {
		return 0, fmt.Errorf("write discover: %w", err)
	}
	c.msg.Reset()
	if err := c.r.ReadMsg(&c.msg); err != nil {
		return 0, fmt.Errorf("read discover response: %w", err)
	}
	dr := c.msg.GetDiscoverResponse()
	if c.msg.GetType() != pb.Message_DISCOVER_RESPONSE || dr == nil {
		return 0, fmt.Errorf("discover: unexpected %s", c.msg.GetType())
	}
	if dr.GetStatus() != pb.Message_OK {
		return 0, &rendezvous.StatusError{Status: dr.GetStatus(), Text: dr.GetStatusText()}
	}
	return len(dr.Registrations), nil
}

func (c *rvClient) Close() error {
	c.s.Reset()
	return c.lc.Close()
}

// connectLite opens n lightweight connections with fresh identities to srv,
// at most par handshakes at a time. If proto is set, each also opens one
// stream on it (returned as streams[i]). progress, if not nil, is called
// after each connection.
func connectLite(ctx context.Context, srv *server, n, par, recordAddrs int, proto protocol.ID) ([]*liteConn, []network.MuxedStream, error) {
	conns := make([]*liteConn, n)
	streams := make([]network.MuxedStream, n)
	var firstErr atomic.Pointer[error]
	var next atomic.Int64
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if par > n {
		par = n
	}
	for range par {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				err := func() error {
					priv, err := newIdentity()
					if err != nil {
						return err
					}
					lc, err := dialLite(ctx, srv.HostPort, srv.ID, priv, recordAddrs)
					if err != nil {
						return err
					}
					conns[i] = lc
					if proto != "" {
						if streams[i], err = lc.openStream(ctx, proto); err != nil {
							return err
						}
					}
					return nil
				}()
				if err != nil {
					err = fmt.Errorf("client %d: %w", i, err)
					firstErr.CompareAndSwap(nil, &err)
					cancel()
					return
				}
			}
		}()
	}
	wg.Wait()
	if e := firstErr.Load(); e != nil {
		closeAll(conns)
		return nil, nil, *e
	}
	return conns, streams, nil
}

// closeAll closes every non-nil connection, in parallel.
func closeAll(conns []*liteConn) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 256)
	for _, c := range conns {
		if c == nil {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			c.Close()
			<-sem
		}()
	}
	wg.Wait()
}
