package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/protocol"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
)

// The echo baselines speak length-prefixed frames (unsigned varint, like
// pbio): the client sends a request frame whose first 4 bytes give the size
// of the response frame it wants back; the server answers with a frame of
// that size. Request and response sizes are set to those of the rendezvous
// messages being compared, so the baseline moves the same bytes.

// EchoProtocolID is the libp2p echo baseline's protocol.
const EchoProtocolID protocol.ID = "/p2p-messaging/bench/echo/1.0.0"

const maxEchoFrame = 1 << 20

// serveEchoFrames answers request frames on rw until it fails or sees EOF.
func serveEchoFrames(rw io.ReadWriter) error {
	br := bufio.NewReader(rw)
	var req []byte
	var resp []byte
	for {
		n, err := binary.ReadUvarint(br)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if n < 4 || n > maxEchoFrame {
			return fmt.Errorf("bad frame size %d", n)
		}
		if cap(req) < int(n) {
			req = make([]byte, n)
		}
		req = req[:n]
		if _, err := io.ReadFull(br, req); err != nil {
			return err
		}
		want := int(binary.BigEndian.Uint32(req))
		if want > maxEchoFrame {
			return fmt.Errorf("bad response size %d", want)
		}
		resp = appendFrame(resp[:0], want)
		if _, err := rw.Write(resp); err != nil {
			return err
		}
	}
}

// appendFrame appends a varint-prefixed frame of size n (zero bytes) to b.
func appendFrame(b []byte, n int) []byte {
	b = binary.AppendUvarint(b, uint64(n))
	return append(b, make([]byte, n)...)
}

// echoRequest builds a request frame of reqSize bytes asking for respSize.
func echoRequest(reqSize, respSize int) []byte {
	if reqSize < 4 {
		reqSize = 4
	}
	b := appendFrame(nil, reqSize)
	off := len(b) - reqSize
	binary.BigEndian.PutUint32(b[off:], uint32(respSize))
	return b
}

// echoClient does request/response round trips on one long-lived stream.
type echoClient struct {
	rw   io.ReadWriter
	br   *bufio.Reader
	req  []byte
	resp []byte
}

func newEchoClient(rw io.ReadWriter, reqSize, respSize int) *echoClient {
	return &echoClient{rw: rw, br: bufio.NewReader(rw), req: echoRequest(reqSize, respSize)}
}

func (c *echoClient) do() error {
	if _, err := c.rw.Write(c.req); err != nil {
		return err
	}
	return c.readResp()
}

func (c *echoClient) readResp() error {
	n, err := binary.ReadUvarint(c.br)
	if err != nil {
		return err
	}
	if n > maxEchoFrame {
		return fmt.Errorf("bad frame size %d", n)
	}
	if cap(c.resp) < int(n) {
		c.resp = make([]byte, n)
	}
	_, err = io.ReadFull(c.br, c.resp[:n])
	return err
}

// tcpEchoServer is the plain TCP baseline: no encryption, no muxer.
type tcpEchoServer struct {
	ln net.Listener
}

func startTCPEcho() (*tcpEchoServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &tcpEchoServer{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = serveEchoFrames(c)
			}()
		}
	}()
	return s, nil
}

func (s *tcpEchoServer) Addr() string { return s.ln.Addr().String() }
func (s *tcpEchoServer) Close() error { return s.ln.Close() }

// newEchoHost is the libp2p baseline: a plain go-libp2p host (TCP, Noise,
// yamux, identify) with limits opened up for thousands of clients, serving
// EchoProtocolID. withQUIC adds a QUIC listener, as a chat node has.
func newEchoHost(withQUIC ...bool) (host.Host, error) {
	mgr, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(rcmgr.InfiniteLimits))
	if err != nil {
		return nil, err
	}
	listen := []string{"/ip4/127.0.0.1/tcp/0"}
	transports := []libp2p.Option{libp2p.Transport(tcp.NewTCPTransport)}
	if len(withQUIC) > 0 && withQUIC[0] {
		listen = append(listen, "/ip4/127.0.0.1/udp/0/quic-v1")
		transports = append(transports, libp2p.Transport(quic.NewTransport))
	}
	h, err := libp2p.New(
		libp2p.ListenAddrStrings(listen...),
		libp2p.ChainOptions(transports...),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.ResourceManager(mgr),
		libp2p.ConnectionManager(&connmgr.NullConnMgr{}),
		libp2p.DisableRelay(),
		libp2p.DisableMetrics(),
	)
	if err != nil {
		return nil, err
	}
	h.SetStreamHandler(EchoProtocolID, func(s network.Stream) {
		if err := serveEchoFrames(s); err != nil {
			s.Reset()
			return
		}
		s.Close()
	})
	return h, nil
}

type netDialer struct{ net.Dialer }

func (d *netDialer) dial(ctx context.Context, addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	defer cancel()
	return d.DialContext(ctx, "tcp", addr)
}
