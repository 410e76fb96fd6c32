package rendezvous

import (
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
)

// streamHeadroom is how many streams of one peer, beyond its watch cap, the
// resource manager must admit: the refused one that gets its status, and
// streams still being torn down while the client resubscribes.
const streamHeadroom = 16

// requestStreamsPerPeer is what a peer's request streams need beside its
// watches (a client keeps a few warm ones per server).
const requestStreamsPerPeer = 64

// SetResourceLimits raises, in a scaling limit config for a host's resource
// manager (as libp2p.SetDefaultServiceLimits does for go-libp2p's own
// services), the limits a server with lim needs: per peer, MaxWatchesPerPeer
// watch streams plus the refusal of one more and some headroom, beside its
// request streams, and the memory those watches reserve. Limits that are
// already higher stay. Without it, a per-peer watch cap above what the
// defaults allow (64 inbound streams per peer and protocol, plus a little
// per GiB of memory) is really the resource manager's, and the excess
// streams are reset without a status.
func SetResourceLimits(cfg *rcmgr.ScalingLimitConfig, lim Limits) {
	watches := lim.MaxWatchesPerPeer + streamHeadroom
	watchMem := int64(watches) * int64(watchMemory(&lim))
	raise := func(b rcmgr.BaseLimit, streams int, mem int64) rcmgr.BaseLimit {
		b.StreamsInbound = max(b.StreamsInbound, streams)
		b.StreamsOutbound = max(b.StreamsOutbound, streams)
		b.Streams = max(b.Streams, streams)
		b.Memory = max(b.Memory, mem)
		return b
	}
	base, inc := cfg.ProtocolPeerBaseLimit, cfg.ProtocolPeerLimitIncrease
	if l, ok := cfg.ProtocolPeerLimits[WatchProtocolID]; ok {
		base, inc = l.BaseLimit, l.BaseLimitIncrease
	}
	cfg.AddProtocolPeerLimit(WatchProtocolID, raise(base, watches, watchMem), inc)

	perPeer := watches + requestStreamsPerPeer
	perPeerMem := watchMem + int64(requestStreamsPerPeer)*(streamMemory+MaxMessageSize/16)
	base, inc = cfg.ServicePeerBaseLimit, cfg.ServicePeerLimitIncrease
	if l, ok := cfg.ServicePeerLimits[ServiceName]; ok {
		base, inc = l.BaseLimit, l.BaseLimitIncrease
	}
	cfg.AddServicePeerLimit(ServiceName, raise(base, perPeer, perPeerMem), inc)
	// Every stream of the peer counts in its peer scope too (identify,
	// other protocols).
	cfg.PeerBaseLimit = raise(cfg.PeerBaseLimit, perPeer+requestStreamsPerPeer, perPeerMem)
}
