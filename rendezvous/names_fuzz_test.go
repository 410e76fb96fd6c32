package rendezvous

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"
	ma "github.com/multiformats/go-multiaddr"
	"google.golang.org/protobuf/proto"

	"github.com/p2p-messaging/p2p-messaging/rendezvous/pb"
)

// FuzzClaimDifficultyAsked: a client parses the server's status text;
// any text yields no difficulty or one in range.
func FuzzClaimDifficultyAsked(f *testing.F) {
	f.Add("claim-difficulty=19; see the doc")
	f.Add("claim-difficulty=999")
	f.Add("claim-difficulty=-1 claim-difficulty=3")
	f.Fuzz(func(t *testing.T, text string) {
		if d, ok := claimDifficultyAsked(text); ok && (d < 1 || d > MaxClaimDifficulty) {
			t.Fatalf("difficulty %d out of range from %q", d, text)
		}
	})
}

// FuzzDecodeLease: stored leases come back from disk; garbage is refused,
// never a panic, and what decodes re-encodes to the same bytes.
func FuzzDecodeLease(f *testing.F) {
	id, _ := peer.Decode("12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA")
	f.Add([]byte(ctUserPrefix+"a"), encodeLease(&lease{ns: "x", owner: id, expires: 42}))
	f.Add([]byte{}, []byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, k, v []byte) {
		l, err := decodeLease(k, v)
		if err != nil {
			return
		}
		if got := encodeLease(l); string(got) != string(v) {
			t.Fatalf("lease %x re-encodes as %x", v, got)
		}
	})
}

// FuzzRecordAddrs: the address check decodes the records of REGISTERs;
// any bytes give an error or addresses the policy judges without a panic.
func FuzzRecordAddrs(f *testing.F) {
	h := newUnmanagedHost(f)
	f.Cleanup(func() { h.Close() })
	f.Add(signedRecord(f, h))
	f.Add(recordWith(f, h, "/ip4/11.0.0.5/tcp/1/p2p/"+h.ID().String()+"/p2p-circuit", "/dns4/x/tcp/1"))
	f.Add([]byte{0x0a, 0x00})
	p := addrPolicy{
		self:     h.ID(),
		observed: []netip.Addr{netip.MustParseAddr("11.0.0.5")},
		ownIP:    func(netip.Addr) bool { return false },
		relayAt:  func(peer.ID, netip.Addr) bool { return false },
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		addrs, err := recordAddrs(b)
		if err != nil {
			return
		}
		_ = p.checkAddrs(addrs, DefaultMaxRecordAddrs)
	})
}

// FuzzNameRegister drives the name path of a live server (exclusive
// prefix, cheap proofs): REGISTERs of fuzzed names with fuzzed claim
// proofs and records listing fuzzed addresses, then an UNREGISTER that may
// release. The server never crashes, answers every REGISTER, and keeps
// serving another peer, whose name nobody else can take.
func FuzzNameRegister(f *testing.F) {
	var hosts []host.Host
	var srv *Server
	f.Cleanup(func() {
		if srv != nil {
			srv.Close()
		}
		for _, h := range hosts {
			h.Close()
		}
	})
	mk := func() host.Host {
		h := newUnmanagedHost(f)
		hosts = append(hosts, h)
		return h
	}
	sh, bad, good := mk(), mk(), mk()
	lim := testNameLimits()
	lim.RequestRate, lim.RequestBurst = 1e9, 1<<30
	lim.ClaimBurst, lim.ClaimInterval = 1<<30, time.Nanosecond
	lim.MaxNamesPerPeer = 1 << 20
	var err error
	srv, err = NewServer(sh, WithLimits(lim), WithExclusivePrefix(ctUserPrefix), WithDisconnectGrace(-1))
	if err != nil {
		f.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, h := range []host.Host{bad, good} {
		if err := h.Connect(ctx, sh.Peerstore().PeerInfo(sh.ID())); err != nil {
			f.Fatal(err)
		}
	}
	goodNS := ctUserPrefix + "good"
	gs := openRaw(f, good, sh.ID(), ProtocolID)
	if resp := gs.register(goodNS, signedRecord(f, good), 0); resp.GetStatus() != StatusOK {
		f.Fatalf("good peer refused: %v", resp)
	}
	gs.unregister(goodNS) // offline-like: only the lease holds the name

	f.Add("alice", []byte{1}, []byte("/ip4/127.0.0.1/tcp/1"), true)
	f.Add("good", []byte{}, []byte{}, false)
	f.Add("", make([]byte, 100), []byte{0x04, 127, 0, 0, 1}, false)
	f.Fuzz(func(t *testing.T, nick string, proof, addr []byte, release bool) {
		ns := ctUserPrefix + nick
		var addrs []ma.Multiaddr
		if a, err := ma.NewMultiaddrBytes(addr); err == nil {
			addrs = append(addrs, a)
		}
		env, err := record.Seal(peer.PeerRecordFromAddrInfo(peer.AddrInfo{ID: bad.ID(), Addrs: addrs}), bad.Peerstore().PrivKey(bad.ID()))
		if err != nil {
			t.Fatal(err)
		}
		rec, err := env.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if len(proof) == 0 {
			proof = testClaimProof(t, bad.ID(), ns)
		}
		rs := openRaw(t, bad, sh.ID(), ProtocolID)
		resp := rs.registerProof(ns, rec, proof)
		if resp.Status == nil {
			t.Fatal("no status")
		}
		if ns == goodNS && resp.GetStatus() == StatusOK {
			t.Fatal("the good peer's name was taken")
		}
		un := &pb.Message{Type: pb.Message_UNREGISTER.Enum(), Unregister: &pb.Message_Unregister{Ns: proto.String(ns)}}
		if release {
			un = releaseRequest(ns)
		}
		rs.send(un)
		rs.discover(ns, 0, nil)
		if owner, _, ok := srv.NameHolder(goodNS); !ok || owner != good.ID() {
			t.Fatal("the good peer lost its name")
		}
	})
}
