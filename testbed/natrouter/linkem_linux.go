//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// linkEmulator owns the NFQUEUE socket of the router's WAN link.
type linkEmulator struct {
	c       *netlink.Conn
	profile LinkProfile
}

// openLinkEmulator binds the link queue; it must run before the rules that
// queue packets are installed.
func openLinkEmulator(p LinkProfile) (*linkEmulator, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return nil, fmt.Errorf("nfqueue socket: %w", err)
	}
	_ = c.SetReadBuffer(8 << 20)
	_ = c.SetOption(netlink.NoENOBUFS, true)
	for _, body := range [][]byte{bindRequest(linkQueueNum), paramsRequest(linkQueueNum, linkQueueMax)} {
		_, err := c.Execute(netlink.Message{
			Header: netlink.Header{Type: netlink.HeaderType(queueMsgType(nfqnlMsgConfig)), Flags: netlink.Request | netlink.Acknowledge},
			Data:   body,
		})
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("nfqueue config: %w", err)
		}
	}
	return &linkEmulator{c: c, profile: p}, nil
}

// run holds and releases packets until ctx ends.
func (l *linkEmulator) run(ctx context.Context) error {
	arrivals := make(chan uint32, linkQueueMax)
	errc := make(chan error, 1)
	go func() {
		for {
			msgs, err := l.c.Receive()
			if err != nil {
				if ctx.Err() != nil {
					errc <- nil
					return
				}
				var op *netlink.OpError
				if errors.As(err, &op) && errors.Is(op.Err, unix.ENOBUFS) {
					continue
				}
				errc <- err
				return
			}
			for _, m := range msgs {
				if uint16(m.Header.Type) != queueMsgType(nfqnlMsgPacket) {
					continue
				}
				id, err := packetID(m.Data)
				if err != nil {
					fmt.Fprintln(os.Stderr, "natrouter: link:", err)
					continue
				}
				arrivals <- id
			}
		}
	}()
	s := newScheduler(l.profile, uint64(time.Now().UnixNano()))
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			l.c.Close()
			return nil
		case err := <-errc:
			return fmt.Errorf("nfqueue receive: %w", err)
		case id := <-arrivals:
			if s.arrive(time.Now(), id) {
				l.verdict(id, nfDrop)
			}
		case <-timer.C:
		}
		ids, next := s.due(time.Now())
		for _, id := range ids {
			l.verdict(id, nfAccept)
		}
		if !next.IsZero() {
			timer.Reset(time.Until(next))
		} else {
			timer.Reset(time.Hour)
		}
	}
}

func (l *linkEmulator) verdict(id, v uint32) {
	_, err := l.c.Send(netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(queueMsgType(nfqnlMsgVerdict)), Flags: netlink.Request},
		Data:   verdictMsg(linkQueueNum, id, v),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "natrouter: link verdict:", err)
	}
}
