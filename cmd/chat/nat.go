package main

import "github.com/p2p-messaging/p2p-messaging/chat"

// punchNote is what /peers adds to a peer's line when its last hole punch
// failed and the connection is not direct: ", no direct path: <reason>"
// (the reason is chat's one-phrase summary of the DCUtR outcome).
func punchNote(p chat.PeerStatus) string {
	if p.Punch == "" {
		return ""
	}
	return ", no direct path: " + p.Punch
}
