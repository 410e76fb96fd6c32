package rendezvous

import "github.com/libp2p/go-libp2p/core/peer"

// Room defaults (see the package doc, "Names").
const (
	// DefaultHolderShare is the share of MaxRegistrations that only peers
	// holding a name may fill.
	DefaultHolderShare = 0.2
	// DefaultHolderQuota is how many registrations (its names not
	// counted) one name holder may have in that share.
	DefaultHolderQuota = 16
)

// roomClass is who asks for room in the store, which decides the part of
// the total cap a new registration may use.
type roomClass uint8

const (
	// roomStranger: a peer holding no name; it shares what the holders'
	// share leaves.
	roomStranger roomClass = iota
	// roomHolder: a peer holding a name; beyond the strangers' part it
	// may fill the holders' share, up to HolderQuota registrations each.
	roomHolder
	// roomOwnName: the owner registering its own name; counted apart from
	// MaxRegistrations and bounded by the lease table (MaxNames).
	roomOwnName
)

// strangerCap is how many registrations (own names not counted) a peer
// holding no name may find and still register.
func strangerCap(lim *Limits) int {
	return lim.MaxRegistrations - int(float64(lim.MaxRegistrations)*lim.HolderShare)
}

// hasRoom reports whether a new registration of p (whose current ones
// are mine) fits the total cap for its class. Callers hold st.mu.
func (st *regStore) hasRoom(mine map[string]*regEntry, class roomClass, lim *Limits) bool {
	pool := st.count - st.own
	switch class {
	case roomOwnName:
		return st.own < lim.MaxNames
	case roomHolder:
		if pool >= lim.MaxRegistrations {
			return false
		}
		if pool < strangerCap(lim) {
			return true
		}
		n := 0
		for _, e := range mine {
			if !e.own {
				n++
			}
		}
		return n < lim.HolderQuota
	default:
		return pool < strangerCap(lim)
	}
}

// roomFor is the class of remote's REGISTER: exclusive means the name
// checks admitted remote as the name's owner.
func (s *Server) roomFor(remote peer.ID, exclusive bool, now int64) roomClass {
	switch {
	case exclusive:
		return roomOwnName
	case s.names.holds(remote, now):
		return roomHolder
	}
	return roomStranger
}

// markOwn flags the loaded entries for which own says so as names
// registered by their owners. It runs at start, before st is shared.
func (st *regStore) markOwn(loaded []*regEntry, own func(*regEntry) bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, e := range loaded {
		if !e.dead && !e.own && own(e) {
			e.own = true
			st.own++
		}
	}
}
