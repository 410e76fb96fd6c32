package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/protocol"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/p2p-messaging/p2p-messaging/rendezvous"
	"github.com/p2p-messaging/p2p-messaging/rendezvous/pb"
)

// rvClient speaks /rendezvous/1.0.0 on one long-lived stream, as
// rendezvous.Client does: sequential requests, varint-delimited protobuf.
// To keep the load generator's own cost low (it shares the machine with
// the daemon) requests are encoded once and responses are checked with a
// zero-allocation scan (status, type, number of registrations) instead of
// a full decode; the server does all of its work either way.
type rvClient struct {
	lc       *liteConn
	s        network.MuxedStream
	br       *bufio.Reader
	buf      []byte
	ns       string // the client's own namespace ("nick")
	regFrame []byte
	// fresh are REGISTER frames each with a newly signed peer record
	// (increasing seq), used in turn by registerFresh.
	fresh     [][]byte
	nextFresh int
}

const benchTTL = 7200 // seconds

// benchPrefix is where the load clients register: one namespace each, like
// a chat nick, but outside the exclusive user prefix, whose new names cost
// a proof of work by design (a claim is not the hot path; a refresh is).
const benchPrefix = "p2p-messaging/bench/"

// nickNS is client i's namespace.
func nickNS(tag string, i int) string {
	return fmt.Sprintf("%sbench-%s-%d", benchPrefix, tag, i)
}

func wrapRVClient(lc *liteConn, s network.MuxedStream, ns string) *rvClient {
	return &rvClient{
		lc: lc, s: s, ns: ns,
		br:       bufio.NewReader(s),
		regFrame: frame(registerMsg(ns, lc.record)),
	}
}

// frame encodes m with its varint length prefix.
func frame(m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		panic(fmt.Sprintf("marshal %T: %v", m, err)) // our own messages always marshal
	}
	return append(binary.AppendUvarint(nil, uint64(len(b))), b...)
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

// roundTrip writes a request frame and reads the response frame into c.buf.
func (c *rvClient) roundTrip(req []byte) ([]byte, error) {
	if _, err := c.s.Write(req); err != nil {
		return nil, fmt.Errorf("write: %w", err)
	}
	n, err := binary.ReadUvarint(c.br)
	if err != nil {
		return nil, fmt.Errorf("read length: %w", err)
	}
	if n > rendezvous.MaxMessageSize {
		return nil, fmt.Errorf("response of %d bytes", n)
	}
	if uint64(cap(c.buf)) < n {
		c.buf = make([]byte, n)
	}
	c.buf = c.buf[:n]
	if _, err := io.ReadFull(c.br, c.buf); err != nil {
		return nil, fmt.Errorf("read response: %w", err)
	}
	return c.buf, nil
}

// register sends REGISTER for the client's namespace, with the same signed
// peer record each time (a refresh), and checks the answer.
func (c *rvClient) register() error { return c.registerFrame(c.regFrame) }

// registerFresh sends REGISTER with a signed peer record the server has not
// seen yet (pre-signed; they are reused in turn once all were sent).
func (c *rvClient) registerFresh() error {
	if len(c.fresh) == 0 {
		return c.register()
	}
	f := c.fresh[c.nextFresh%len(c.fresh)]
	c.nextFresh++
	return c.registerFrame(f)
}

// presign prepares n REGISTER frames with newly signed records.
func (c *rvClient) presign(n int) error {
	c.fresh = make([][]byte, 0, n)
	for range n {
		rec, err := signedRecord(c.lc.priv, c.lc.addrs)
		if err != nil {
			return err
		}
		c.fresh = append(c.fresh, frame(registerMsg(c.ns, rec)))
	}
	return nil
}

func (c *rvClient) registerFrame(req []byte) error {
	b, err := c.roundTrip(req)
	if err != nil {
		return fmt.Errorf("register: %w", err)
	}
	r, err := scanResponse(b)
	if err != nil {
		return fmt.Errorf("register: %w", err)
	}
	if r.typ != pb.Message_REGISTER_RESPONSE {
		return fmt.Errorf("register: unexpected %s", r.typ)
	}
	if r.status != pb.Message_OK {
		return &rendezvous.StatusError{Status: r.status, Text: r.text}
	}
	return nil
}

// discover sends a DISCOVER frame and returns how many registrations came
// back.
func (c *rvClient) discover(req []byte) (int, error) {
	b, err := c.roundTrip(req)
	if err != nil {
		return 0, fmt.Errorf("discover: %w", err)
	}
	r, err := scanResponse(b)
	if err != nil {
		return 0, fmt.Errorf("discover: %w", err)
	}
	if r.typ != pb.Message_DISCOVER_RESPONSE {
		return 0, fmt.Errorf("discover: unexpected %s", r.typ)
	}
	if r.status != pb.Message_OK {
		return 0, &rendezvous.StatusError{Status: r.status, Text: r.text}
	}
	return r.registrations, nil
}

// scanned is what scanResponse extracts from a response.
type scanned struct {
	typ           pb.Message_MessageType
	status        rendezvous.Status
	text          string // only filled for a non-OK status
	registrations int
}

// scanResponse reads the type, the status and the number of registrations
// of a REGISTER_RESPONSE or DISCOVER_RESPONSE without decoding the rest.
// Like a full decode, repeated occurrences of the embedded response merge:
// the last status wins and registrations add up.
func scanResponse(b []byte) (scanned, error) {
	var r scanned
	typSeen := false
	// First pass: the type (it may follow the body on the wire).
	if err := eachField(b, func(num protowire.Number, wt protowire.Type, v []byte, x uint64) error {
		if num == 1 && wt == protowire.VarintType {
			r.typ, typSeen = pb.Message_MessageType(x), true
		}
		return nil
	}); err != nil {
		return r, err
	}
	if !typSeen {
		return r, errors.New("response without a type")
	}
	// RegisterResponse (field 3): status=1, statusText=2.
	// DiscoverResponse (field 6): registrations=1, status=3, statusText=4.
	bodyField, statusField, textField := protowire.Number(3), protowire.Number(1), protowire.Number(2)
	if r.typ == pb.Message_DISCOVER_RESPONSE {
		bodyField, statusField, textField = 6, 3, 4
	}
	err := eachField(b, func(num protowire.Number, wt protowire.Type, body []byte, _ uint64) error {
		if num != bodyField || wt != protowire.BytesType {
			return nil
		}
		return eachField(body, func(num protowire.Number, wt protowire.Type, v []byte, x uint64) error {
			switch {
			case num == statusField && wt == protowire.VarintType:
				r.status = rendezvous.Status(x)
			case num == textField && wt == protowire.BytesType:
				r.text = string(v)
			case r.typ == pb.Message_DISCOVER_RESPONSE && num == 1 && wt == protowire.BytesType:
				r.registrations++
			}
			return nil
		})
	})
	if err != nil {
		return r, err
	}
	if r.status == pb.Message_OK {
		r.text = ""
	}
	return r, nil
}

// eachField calls f for every field of the protobuf message b, with the
// value of a bytes field or of a varint.
func eachField(b []byte, f func(num protowire.Number, wt protowire.Type, v []byte, x uint64) error) error {
	for len(b) > 0 {
		num, wt, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		var v []byte
		var x uint64
		switch wt {
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(b)
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, wt, b)
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if err := f(num, wt, v, x); err != nil {
			return err
		}
	}
	return nil
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

// closeAll closes every non-nil connection or client, 256 at a time.
func closeAll[T any, P interface {
	*T
	Close() error
}](conns []P) {
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
