package rendezvous

import "context"

// Release gives up this host's name ns on every server: it stops keeping
// ns alive, removes the registration and ends the lease that binds the
// name to this host's key under a server's exclusive prefix (an UNREGISTER
// carrying release_name; see the package doc, "Names"), so that another
// key may claim it. It fails only if no server could be reached.
func (c *Client) Release(ctx context.Context, ns string) error {
	return c.unregisterAll(ctx, ns, true)
}
