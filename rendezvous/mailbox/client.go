package mailbox

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-msgio"
)

// DefaultClientTimeout bounds one client request when the caller's
// context has no earlier deadline.
const DefaultClientTimeout = 15 * time.Second

// Client speaks ProtocolID to mailbox daemons from h.
type Client struct {
	h       host.Host
	timeout time.Duration
}

// NewClient returns a client on h; timeout <= 0 means
// DefaultClientTimeout.
func NewClient(h host.Host, timeout time.Duration) *Client {
	if timeout <= 0 {
		timeout = DefaultClientTimeout
	}
	return &Client{h: h, timeout: timeout}
}

// Deposit leaves box for recipient on daemon and returns the deposit's ID.
// A refusal is a *StatusError.
func (c *Client) Deposit(ctx context.Context, daemon, recipient peer.ID, box []byte) ([]byte, error) {
	resp, err := c.exchange(ctx, daemon, &request{op: OpDeposit, recipient: []byte(recipient), box: box})
	if err != nil {
		return nil, fmt.Errorf("deposit on %s: %w", daemon, err)
	}
	if len(resp.id) != IDLen {
		return nil, fmt.Errorf("deposit on %s: answer without a deposit ID", daemon)
	}
	return resp.id, nil
}

// Fetch returns up to limit (0: MaxFetch) of our deposits on daemon,
// oldest first, and whether more wait.
func (c *Client) Fetch(ctx context.Context, daemon peer.ID, limit int) ([]Deposit, bool, error) {
	return c.FetchAfter(ctx, daemon, nil, limit)
}

// FetchAfter is Fetch starting after the deposit ID after (nil: from the
// oldest), so a recipient can page past deposits it keeps for later.
func (c *Client) FetchAfter(ctx context.Context, daemon peer.ID, after []byte, limit int) ([]Deposit, bool, error) {
	if after != nil && len(after) != IDLen {
		return nil, false, fmt.Errorf("fetch from %s: cursor of %d bytes", daemon, len(after))
	}
	resp, err := c.exchange(ctx, daemon, &request{op: OpFetch, limit: uint64(max(limit, 0)), after: after})
	if err != nil {
		return nil, false, fmt.Errorf("fetch from %s: %w", daemon, err)
	}
	return resp.deposits, resp.more, nil
}

// Delete deletes our deposits ids (at most MaxFetch) on daemon and
// returns how many it deleted.
func (c *Client) Delete(ctx context.Context, daemon peer.ID, ids [][]byte) (int, error) {
	if len(ids) > MaxFetch {
		return 0, fmt.Errorf("delete on %s: %d IDs, at most %d", daemon, len(ids), MaxFetch)
	}
	resp, err := c.exchange(ctx, daemon, &request{op: OpDelete, ids: ids})
	if err != nil {
		return 0, fmt.Errorf("delete on %s: %w", daemon, err)
	}
	return int(resp.count), nil
}

// exchange runs one request on a new stream: a deadline, the caller's
// context tied to the stream, CloseWrite, then one size-capped response.
func (c *Client) exchange(ctx context.Context, daemon peer.ID, req *request) (*response, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	s, err := c.h.NewStream(ctx, daemon, ProtocolID)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { s.Reset() })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(dl)
	}
	ok := false
	defer func() {
		if ok {
			s.Close()
		} else {
			s.Reset()
		}
	}()
	if err := msgio.NewVarintWriter(s).WriteMsg(req.marshal()); err != nil {
		return nil, ctxErr(ctx, err)
	}
	if err := s.CloseWrite(); err != nil {
		return nil, ctxErr(ctx, err)
	}
	rd := msgio.NewVarintReaderSize(s, MaxResponseSize)
	msg, err := rd.ReadMsg()
	if err != nil {
		return nil, ctxErr(ctx, err)
	}
	resp, err := decodeResponse(msg)
	if err != nil {
		return nil, err
	}
	ok = true
	if resp.status != StatusOK {
		return nil, &StatusError{Status: resp.status, Text: resp.text}
	}
	return resp, nil
}

func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return errors.Join(ctx.Err(), err)
	}
	return err
}

// HandleNotices calls f with the daemon's peer ID for every push notice
// (a NotifyProtocolID stream) until the returned function is called. f
// must not block for long; the caller decides which daemons it trusts.
func HandleNotices(h host.Host, f func(daemon peer.ID)) (stop func()) {
	h.SetStreamHandler(NotifyProtocolID, func(s network.Stream) {
		_ = s.SetDeadline(time.Now().Add(notifyTimeout))
		var b [1]byte
		if _, err := s.Read(b[:]); err == nil {
			s.Reset() // a notice carries nothing
			return
		}
		s.Close()
		f(s.Conn().RemotePeer())
	})
	return func() { h.RemoveStreamHandler(NotifyProtocolID) }
}
