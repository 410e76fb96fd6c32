package chat

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/p2p-messaging/p2p-messaging/internal/atomicfile"
)

// A host started without explicit listen addresses listens again on the
// ports it had last time (kept in a small file beside its key), so that the
// addresses its peers kept on disk stay valid across a restart: a network
// whose servers are all gone is held together by exactly those. A port that
// is taken now is replaced by a random one.

// listenFileName keeps a host's last listen addresses, one per line.
const listenFileName = "listen"

// maxListenFile bounds what is read back; a few addresses are written.
const maxListenFile = 4 << 10

// reusableListenAddrs returns the addresses to listen on: want (default
// DefaultListenAddrs) where each address with port 0 takes the port it had
// last time (kept in path) if that port can be bound now. Without want, the
// addresses kept in path are used as they are.
func reusableListenAddrs(path string, want []multiaddr.Multiaddr, log *slog.Logger) []multiaddr.Multiaddr {
	var saved []multiaddr.Multiaddr
	if path != "" {
		saved = readListenFile(path, log)
	}
	if len(want) == 0 {
		for _, s := range DefaultListenAddrs {
			want = append(want, multiaddr.StringCast(s))
		}
	}
	out := make([]multiaddr.Multiaddr, 0, len(want))
	used := map[int]bool{}
	for _, w := range want {
		got := w
		for i, sv := range saved {
			if !used[i] && withPort0(sv).Equal(w) && !withPort0(sv).Equal(sv) {
				if free := freePortOr0(sv); !free.Equal(w) {
					got = free
					used[i] = true
				}
				break
			}
		}
		out = append(out, got)
	}
	return out
}

// withPort0 is a with its TCP or UDP port set to 0.
func withPort0(a multiaddr.Multiaddr) multiaddr.Multiaddr {
	for _, p := range []struct {
		code int
		name string
	}{{multiaddr.P_TCP, "tcp"}, {multiaddr.P_UDP, "udp"}} {
		if port, err := a.ValueForProtocol(p.code); err == nil {
			out, err := multiaddr.NewMultiaddr(strings.Replace(a.String(), "/"+p.name+"/"+port, "/"+p.name+"/0", 1))
			if err != nil {
				return a
			}
			return out
		}
	}
	return a
}

func readListenFile(path string, log *slog.Logger) []multiaddr.Multiaddr {
	f, err := os.Open(path)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			log.Debug("read listen file", "err", err)
		}
		return nil
	}
	defer f.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(io.LimitReader(f, maxListenFile)); err != nil {
		return nil
	}
	var out []multiaddr.Multiaddr
	sc := bufio.NewScanner(&buf)
	for sc.Scan() && len(out) < 8 {
		a, err := multiaddr.NewMultiaddr(strings.TrimSpace(sc.Text()))
		if err != nil {
			continue
		}
		if _, err := manet.ToNetAddr(a); err != nil && !isQUIC(a) {
			continue
		}
		out = append(out, a)
	}
	return out
}

func isQUIC(a multiaddr.Multiaddr) bool {
	_, err := a.ValueForProtocol(multiaddr.P_QUIC_V1)
	return err == nil
}

// freePortOr0 returns a if its TCP or UDP port can be bound now, else a
// with port 0. The probe is closed at once; a race with another process
// only costs the old port.
func freePortOr0(a multiaddr.Multiaddr) multiaddr.Multiaddr {
	first, _ := multiaddr.SplitFirst(a)
	if first == nil {
		return a
	}
	ipAddr := first.Value()
	var network, port string
	if p, err := a.ValueForProtocol(multiaddr.P_TCP); err == nil {
		network, port = "tcp", p
	} else if p, err := a.ValueForProtocol(multiaddr.P_UDP); err == nil {
		network, port = "udp", p
	} else {
		return a
	}
	if port == "0" {
		return a
	}
	hostPort := net.JoinHostPort(ipAddr, port)
	var err error
	if network == "tcp" {
		var l net.Listener
		if l, err = net.Listen("tcp", hostPort); err == nil {
			l.Close()
		}
	} else {
		var c net.PacketConn
		if c, err = net.ListenPacket("udp", hostPort); err == nil {
			c.Close()
		}
	}
	if err == nil {
		return a
	}
	return withPort0(a)
}

// saveListenAddrs writes h's listen addresses (with the ports the system
// chose) to path.
func saveListenAddrs(path string, h host.Host) error {
	var b strings.Builder
	for _, a := range h.Network().ListenAddresses() {
		b.WriteString(a.String())
		b.WriteByte('\n')
	}
	if err := atomicfile.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		return fmt.Errorf("save listen addresses: %w", err)
	}
	return nil
}

// newHostReusingPorts builds a host with opts, listening on listen with
// the ports kept in listenFile where listen asks for any port
// (reusableListenAddrs); it then records the ports it got there.
func newHostReusingPorts(opts []libp2p.Option, listen []multiaddr.Multiaddr, listenFile string, log *slog.Logger) (host.Host, error) {
	if listenFile != "" {
		listen = reusableListenAddrs(listenFile, listen, log)
	}
	h, err := libp2p.New(append(opts, libp2p.ListenAddrs(listen...))...)
	if err != nil {
		return nil, fmt.Errorf("create host: %w", err)
	}
	if listenFile != "" {
		if err := saveListenAddrs(listenFile, h); err != nil {
			log.Warn("cannot keep the listen ports for the next start", "err", err)
		}
	}
	return h, nil
}
