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
	// roomOther: any other registration. A peer holding no name shares
	// what the holders' share leaves; a peer holding one (st.holds) may
	// also fill the holders' share, up to HolderQuota registrations each.
	roomOther roomClass = iota
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
// are mine) fits the total cap for its class. Whether p holds a name is
// asked (st.holds) only once the strangers' part is full. Callers hold
// st.mu.
func (st *regStore) hasRoom(p peer.ID, mine map[string]*regEntry, class roomClass, lim *Limits) bool {
	pool := st.count - st.own
	switch {
	case class == roomOwnName:
		return st.own < lim.MaxNames
	case pool < strangerCap(lim):
		return true
	case pool >= lim.MaxRegistrations || st.holds == nil || !st.holds(p):
		return false
	}
	n := 0
	for _, e := range mine {
		if !e.own {
			n++
		}
	}
	return n < lim.HolderQuota
}

// roomFor is the class of a REGISTER: exclusive means the name checks
// admitted the registrant as the name's owner.
func roomFor(exclusive bool) roomClass {
	if exclusive {
		return roomOwnName
	}
	return roomOther
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
