package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/core/record"
	"github.com/libp2p/go-libp2p/core/sec"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	tptu "github.com/libp2p/go-libp2p/p2p/net/upgrader"
	"github.com/libp2p/go-libp2p/p2p/protocol/identify"
	idpb "github.com/libp2p/go-libp2p/p2p/protocol/identify/pb"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	"github.com/libp2p/go-msgio/pbio"
	"github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
	mss "github.com/multiformats/go-multistream"
	"google.golang.org/protobuf/proto"
)

// liteConn is a libp2p client connection without a host: TCP, multistream
// select, Noise (with yamux negotiated inside the handshake), yamux. It is
// byte-for-byte what a go-libp2p host sends when it dials over TCP, but costs
// a few goroutines instead of a whole host, so one process can hold ten
// thousand distinct identities.
//
// It answers identify (so the server learns its key, addresses and signed
// peer record like it would from a real peer) and rejects every other
// inbound stream with multistream "na".
type liteConn struct {
	priv   crypto.PrivKey
	id     peer.ID
	server peer.ID
	addrs  []multiaddr.Multiaddr
	record []byte // marshalled signed envelope holding our peer record

	tcp  net.Conn
	mux  network.MuxedConn
	wg   sync.WaitGroup
	once sync.Once
}

const handshakeTimeout = 15 * time.Second

// newIdentity returns a fresh Ed25519 key.
func newIdentity() (crypto.PrivKey, error) {
	priv, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return priv, nil
}

// fakeAddrs are the addresses a client puts in its peer record: loopback,
// TCP and QUIC over IPv4 and IPv6, as a dual-stack chat peer would.
func fakeAddrs(port int, n int) []multiaddr.Multiaddr {
	all := []string{
		fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port),
		fmt.Sprintf("/ip4/127.0.0.1/udp/%d/quic-v1", port),
		fmt.Sprintf("/ip6/::1/tcp/%d", port),
		fmt.Sprintf("/ip6/::1/udp/%d/quic-v1", port),
	}
	if n > len(all) {
		n = len(all)
	}
	out := make([]multiaddr.Multiaddr, 0, n)
	for _, s := range all[:n] {
		out = append(out, multiaddr.StringCast(s))
	}
	return out
}

// signedRecord seals a peer record for priv and addrs.
func signedRecord(priv crypto.PrivKey, addrs []multiaddr.Multiaddr) ([]byte, error) {
	id, err := peer.IDFromPrivateKey(priv)
	if err != nil {
		return nil, err
	}
	rec := peer.PeerRecordFromAddrInfo(peer.AddrInfo{ID: id, Addrs: addrs})
	env, err := record.Seal(rec, priv)
	if err != nil {
		return nil, fmt.Errorf("seal peer record: %w", err)
	}
	b, err := env.Marshal()
	if err != nil {
		return nil, fmt.Errorf("marshal envelope: %w", err)
	}
	return b, nil
}

// dialLite connects to server (a TCP address and its peer ID) as priv.
// recordAddrs is how many addresses go into the signed peer record.
func dialLite(ctx context.Context, hostport string, server peer.ID, priv crypto.PrivKey, recordAddrs int) (*liteConn, error) {
	id, err := peer.IDFromPrivateKey(priv)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	defer cancel()
	var d net.Dialer
	tcp, err := d.DialContext(ctx, "tcp", hostport)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", hostport, err)
	}
	c := &liteConn{priv: priv, id: id, server: server, tcp: tcp}
	fail := func(err error) (*liteConn, error) {
		tcp.Close()
		return nil, err
	}
	port := tcp.LocalAddr().(*net.TCPAddr).Port
	c.addrs = fakeAddrs(port, recordAddrs)
	if c.record, err = signedRecord(priv, c.addrs); err != nil {
		return fail(err)
	}

	dl, _ := ctx.Deadline()
	if err := tcp.SetDeadline(dl); err != nil {
		return fail(err)
	}
	stop := context.AfterFunc(ctx, func() { tcp.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := mss.SelectProtoOrFail(protocol.ID(noise.ID), tcp); err != nil {
		return fail(fmt.Errorf("select noise: %w", err))
	}
	nt, err := noise.New(noise.ID, priv, []tptu.StreamMuxer{{ID: yamux.ID, Muxer: yamux.DefaultTransport}})
	if err != nil {
		return fail(err)
	}
	var sconn sec.SecureConn
	if sconn, err = nt.SecureOutbound(ctx, tcp, server); err != nil {
		return fail(fmt.Errorf("noise handshake: %w", err))
	}
	if sconn.ConnState().StreamMultiplexer != yamux.ID {
		if err := mss.SelectProtoOrFail(protocol.ID(yamux.ID), sconn); err != nil {
			return fail(fmt.Errorf("select yamux: %w", err))
		}
	}
	if err := tcp.SetDeadline(time.Time{}); err != nil {
		return fail(err)
	}
	if c.mux, err = yamux.DefaultTransport.NewConn(sconn, false, nil); err != nil {
		return fail(fmt.Errorf("yamux: %w", err))
	}
	c.wg.Add(1)
	go c.acceptLoop()
	return c, nil
}

func (c *liteConn) acceptLoop() {
	defer c.wg.Done()
	for {
		s, err := c.mux.AcceptStream()
		if err != nil {
			return
		}
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.handleInbound(s)
		}()
	}
}

// handleInbound answers identify and says "na" to anything else.
func (c *liteConn) handleInbound(s network.MuxedStream) {
	_ = s.SetDeadline(time.Now().Add(handshakeTimeout))
	m := mss.NewMultistreamMuxer[protocol.ID]()
	m.AddHandler(identify.ID, nil)
	p, _, err := m.Negotiate(s)
	if err != nil || p != identify.ID {
		s.Reset()
		return
	}
	pub, err := crypto.MarshalPublicKey(c.priv.GetPublic())
	if err != nil {
		s.Reset()
		return
	}
	msg := &idpb.Identify{
		ProtocolVersion:  proto.String("ipfs/0.1.0"),
		AgentVersion:     proto.String("p2p-messaging-bench"),
		PublicKey:        pub,
		Protocols:        []string{string(identify.ID)},
		SignedPeerRecord: c.record,
	}
	for _, a := range c.addrs {
		msg.ListenAddrs = append(msg.ListenAddrs, a.Bytes())
	}
	if obs, err := manet.FromNetAddr(c.tcp.RemoteAddr()); err == nil {
		msg.ObservedAddr = obs.Bytes()
	}
	if err := pbio.NewDelimitedWriter(s).WriteMsg(msg); err != nil {
		s.Reset()
		return
	}
	s.Close()
}

// openStream opens a stream and selects proto on it.
func (c *liteConn) openStream(ctx context.Context, proto protocol.ID) (network.MuxedStream, error) {
	s, err := c.mux.OpenStream(ctx)
	if err != nil {
		return nil, fmt.Errorf("open stream: %w", err)
	}
	_ = s.SetDeadline(time.Now().Add(handshakeTimeout))
	stop := context.AfterFunc(ctx, func() { s.Reset() })
	defer stop()
	if err := mss.SelectProtoOrFail(proto, s); err != nil {
		s.Reset()
		return nil, fmt.Errorf("select %s: %w", proto, err)
	}
	_ = s.SetDeadline(time.Time{})
	return s, nil
}

// Close tears the connection down and waits for its goroutines.
func (c *liteConn) Close() error {
	var err error
	c.once.Do(func() {
		err = c.mux.Close()
		c.tcp.Close()
		c.wg.Wait()
	})
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}
