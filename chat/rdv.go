package chat

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/p2p-messaging/p2p-messaging/rendezvous"
)

func init() {
	newNameService = func(h host.Host, servers []peer.AddrInfo, log *slog.Logger) (nameService, error) {
		c, err := rendezvous.NewClient(h, servers, rendezvous.WithClientLogger(log))
		if err != nil {
			return nil, err
		}
		return rdvNames{c}, nil
	}
}

// rdvNames adapts rendezvous.Client to nameService.
type rdvNames struct{ c *rendezvous.Client }

func (r rdvNames) Register(ctx context.Context, ns string, ttl time.Duration) error {
	err := r.c.Register(ctx, ns, ttl)
	var se *rendezvous.StatusError
	if errors.As(err, &se) && se.Status == rendezvous.StatusNotAuthorized {
		return errors.Join(errNotAuthorized, err)
	}
	return err
}

func (r rdvNames) Unregister(ctx context.Context, ns string) error { return r.c.Unregister(ctx, ns) }

func (r rdvNames) Discover(ctx context.Context, ns string, limit int) ([]peer.AddrInfo, error) {
	regs, err := r.c.Discover(ctx, ns, limit)
	if err != nil {
		return nil, err
	}
	out := make([]peer.AddrInfo, 0, len(regs))
	for _, reg := range regs {
		out = append(out, reg.Peer)
	}
	return out, nil
}

func (r rdvNames) Watch(ctx context.Context, ns string) (<-chan watchEvent, error) {
	in, err := r.c.Watch(ctx, ns)
	if err != nil {
		return nil, err
	}
	out := make(chan watchEvent)
	go func() {
		defer close(out)
		for ev := range in {
			var k watchKind
			switch ev.Kind {
			case rendezvous.WatchRegistered:
				k = watchRegistered
			case rendezvous.WatchUnregistered:
				k = watchUnregistered
			default:
				k = watchSynced
			}
			select {
			case out <- watchEvent{kind: k, peer: ev.Registration.Peer}:
			case <-ctx.Done():
				// Drain so the client's merger can finish and close in.
				for range in {
				}
				return
			}
		}
	}()
	return out, nil
}

func (r rdvNames) Close() error { return r.c.Close() }
