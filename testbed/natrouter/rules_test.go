package main

import (
	"encoding/binary"
	"fmt"
	"net"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
	"github.com/mdlayher/netlink"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func lanNet(t *testing.T) *net.IPNet {
	t.Helper()
	_, n, err := net.ParseCIDR("192.168.1.0/24")
	require.NoError(t, err)
	return n
}

func chain(t *testing.T, rs *Ruleset, name string) ChainSpec {
	t.Helper()
	for _, c := range rs.Chains {
		if c.Chain.Name == name {
			return c
		}
	}
	t.Fatalf("no chain %q", name)
	return ChainSpec{}
}

func find[T expr.Any](rule []expr.Any) (T, bool) {
	for _, e := range rule {
		if v, ok := e.(T); ok {
			return v, true
		}
	}
	var zero T
	return zero, false
}

func lastVerdict(t *testing.T, rule []expr.Any) expr.VerdictKind {
	t.Helper()
	v, ok := rule[len(rule)-1].(*expr.Verdict)
	require.True(t, ok, "rule must end in a verdict")
	return v.Kind
}

func TestParseMode(t *testing.T) {
	for _, s := range []string{"full-cone", "port-restricted", "symmetric", "relay-only"} {
		m, err := ParseMode(s)
		require.NoError(t, err)
		require.Equal(t, Mode(s), m)
	}
	_, err := ParseMode("cone")
	require.ErrorContains(t, err, "unknown mode")
}

func TestValidate(t *testing.T) {
	good := RuleConfig{Mode: ModePortRestricted, WANIf: "eth1", LANIf: "lan0", LANNet: lanNet(t)}
	require.NoError(t, good.Validate())
	_, v6, _ := net.ParseCIDR("fd00::/64")
	cases := map[string]func(c *RuleConfig){
		"bad mode":         func(c *RuleConfig) { c.Mode = "x" },
		"no wan":           func(c *RuleConfig) { c.WANIf = "" },
		"same interfaces":  func(c *RuleConfig) { c.LANIf = c.WANIf },
		"long name":        func(c *RuleConfig) { c.WANIf = "a-very-long-interface-name" },
		"no lan net":       func(c *RuleConfig) { c.LANNet = nil },
		"ipv6 lan":         func(c *RuleConfig) { c.LANNet = v6 },
		"relay-only empty": func(c *RuleConfig) { c.Mode = ModeRelayOnly },
		"relay ipv6": func(c *RuleConfig) {
			c.Mode = ModeRelayOnly
			c.Relays = []net.IP{net.ParseIP("2001::1")}
		},
	}
	for name, mut := range cases {
		t.Run(name, func(t *testing.T) {
			c := good
			mut(&c)
			require.Error(t, c.Validate())
			_, err := BuildRuleset(c)
			require.Error(t, err)
		})
	}
}

func TestMasqueradeFlags(t *testing.T) {
	for _, tc := range []struct {
		mode          Mode
		randomizePort bool
	}{
		{ModePortRestricted, false},
		{ModeFullCone, false},
		{ModeSymmetric, true},
		{ModeRelayOnly, false},
	} {
		t.Run(string(tc.mode), func(t *testing.T) {
			rs, err := BuildRuleset(RuleConfig{Mode: tc.mode, WANIf: "eth1", LANIf: "lan0", LANNet: lanNet(t),
				Relays: []net.IP{net.ParseIP("11.2.0.10")}})
			require.NoError(t, err)
			post := chain(t, rs, "postrouting")
			require.Equal(t, nftables.ChainTypeNAT, post.Chain.Type)
			require.Equal(t, *nftables.ChainHookPostrouting, *post.Chain.Hooknum)
			require.Len(t, post.Rules, 1)
			m, ok := find[*expr.Masq](post.Rules[0])
			require.True(t, ok)
			require.Equal(t, tc.randomizePort, m.Random)
			require.Equal(t, tc.randomizePort, m.FullyRandom)
			require.False(t, m.Persistent)

			// Only LAN sources leaving through the WAN are translated.
			cmps := cmpsOf(post.Rules[0])
			require.Contains(t, cmps, string(ifname("eth1")))
			require.Contains(t, cmps, string(net.ParseIP("192.168.1.0").To4()))
		})
	}
}

func cmpsOf(rule []expr.Any) []string {
	var out []string
	for _, e := range rule {
		if c, ok := e.(*expr.Cmp); ok {
			out = append(out, string(c.Data))
		}
	}
	return out
}

func TestForwardChain(t *testing.T) {
	relays := []net.IP{net.ParseIP("11.2.0.10"), net.ParseIP("11.2.0.11")}
	for _, mode := range Modes {
		t.Run(string(mode), func(t *testing.T) {
			rs, err := BuildRuleset(RuleConfig{Mode: mode, WANIf: "eth1", LANIf: "lan0", LANNet: lanNet(t), Relays: relays})
			require.NoError(t, err)
			fwd := chain(t, rs, "forward")
			require.Equal(t, nftables.ChainPolicyDrop, *fwd.Chain.Policy, "forward must default to drop")

			rules := fwd.Rules
			if mode == ModeFullCone {
				rules = rules[2:] // the map updates come first (TestFullCone)
			}
			first := rules[0]
			ct, ok := find[*expr.Ct](first)
			require.True(t, ok)
			require.Equal(t, expr.CtKeySTATE, ct.Key)
			require.Equal(t, expr.VerdictAccept, lastVerdict(t, first))

			var toWAN [][]expr.Any
			for _, r := range rules[1:] {
				cmps := cmpsOf(r)
				if len(cmps) >= 2 && cmps[1] == string(ifname("eth1")) {
					toWAN = append(toWAN, r)
				}
			}
			if mode == ModeRelayOnly {
				require.Len(t, toWAN, len(relays))
				for i, r := range toWAN {
					p, ok := find[*expr.Payload](r)
					require.True(t, ok, "relay rule matches the destination")
					require.EqualValues(t, ipv4DaddrOffset, p.Offset)
					require.Contains(t, cmpsOf(r), string(relays[i].To4()))
				}
			} else {
				require.Len(t, toWAN, 1)
				_, hasPayload := find[*expr.Payload](toWAN[0])
				require.False(t, hasPayload, "cone and symmetric forward to any destination")
			}
			for _, r := range toWAN {
				require.Equal(t, expr.VerdictAccept, lastVerdict(t, r))
			}
		})
	}
}

func TestInputDropsUnsolicitedWAN(t *testing.T) {
	rs, err := BuildRuleset(RuleConfig{Mode: ModePortRestricted, WANIf: "eth1", LANIf: "lan0", LANNet: lanNet(t)})
	require.NoError(t, err)
	in := chain(t, rs, "input")
	require.Equal(t, *nftables.ChainHookInput, *in.Chain.Hooknum)
	require.Len(t, in.Rules, 2)
	// established/related from the WAN are accepted first ...
	_, ok := find[*expr.Ct](in.Rules[0])
	require.True(t, ok)
	require.Equal(t, expr.VerdictAccept, lastVerdict(t, in.Rules[0]))
	// ... everything else arriving on the WAN is dropped silently (no RST).
	require.Equal(t, []string{string(ifname("eth1"))}, cmpsOf(in.Rules[1]))
	require.Equal(t, expr.VerdictDrop, lastVerdict(t, in.Rules[1]))
	m, ok := find[*expr.Meta](in.Rules[1])
	require.True(t, ok)
	require.Equal(t, expr.MetaKeyIIFNAME, m.Key)
}

// TestInstallMarshals sends the rule set through a fake netlink socket: every
// expression must marshal, and the batch must create one table, its chains
// (3, +1 prerouting for full cone, +1 link chain) and the full-cone maps.
func TestInstallMarshals(t *testing.T) {
	for _, mode := range Modes {
		for _, link := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/link=%v", mode, link), func(t *testing.T) {
				rs, err := BuildRuleset(RuleConfig{Mode: mode, WANIf: "eth1", LANIf: "lan0", LANNet: lanNet(t),
					Relays: []net.IP{net.ParseIP("11.2.0.10")}, Link: link})
				require.NoError(t, err)
				counts := map[uint16]int{}
				c, err := nftables.New(nftables.WithTestDial(func(req []netlink.Message) ([]netlink.Message, error) {
					for _, m := range req {
						counts[uint16(m.Header.Type)&0xff]++
					}
					return req, nil
				}))
				require.NoError(t, err)
				require.NoError(t, rs.Install(c))
				chains, sets := 3, 0
				if mode == ModeFullCone {
					chains, sets = 4, 2
				}
				if link {
					chains++
				}
				require.Equal(t, 2, counts[unix.NFT_MSG_NEWTABLE])
				require.Equal(t, 1, counts[unix.NFT_MSG_DELTABLE])
				require.Equal(t, chains, counts[unix.NFT_MSG_NEWCHAIN])
				require.Equal(t, sets, counts[unix.NFT_MSG_NEWSET])
				rules := 0
				for _, cs := range rs.Chains {
					rules += len(cs.Rules)
				}
				require.Equal(t, rules, counts[unix.NFT_MSG_NEWRULE])
			})
		}
	}
}

// Full cone: every outbound TCP/UDP packet records its source port in a
// dynamic map before anything is accepted; inbound packets to a recorded
// port are DNATed to the LAN host and forwarded; other modes have neither.
func TestFullCone(t *testing.T) {
	rs, err := BuildRuleset(RuleConfig{Mode: ModeFullCone, WANIf: "eth1", LANIf: "lan0", LANNet: lanNet(t)})
	require.NoError(t, err)
	require.Len(t, rs.Sets, 2)
	for _, set := range rs.Sets {
		require.True(t, set.IsMap && set.Dynamic && set.HasTimeout)
		require.Equal(t, nftables.TypeInetService, set.KeyType)
		require.Equal(t, nftables.TypeIPAddr, set.DataType)
	}
	fwd := chain(t, rs, "forward")
	for i, name := range []string{"fc_tcp", "fc_udp"} {
		d, ok := find[*expr.Dynset](fwd.Rules[i])
		require.True(t, ok, "rule %d updates a map", i)
		require.Equal(t, name, d.SetName)
		require.EqualValues(t, dynsetOpUpdate, d.Operation)
		_, hasVerdict := find[*expr.Verdict](fwd.Rules[i])
		require.False(t, hasVerdict, "the update falls through to the accept rules")
		require.Equal(t, string(ifname("lan0")), cmpsOf(fwd.Rules[i])[0])
	}
	// The DNATed flows are accepted from the WAN.
	var dnatAccept bool
	for _, r := range fwd.Rules {
		if ct, ok := find[*expr.Ct](r); ok && ct.Key == expr.CtKeySTATUS {
			dnatAccept = lastVerdict(t, r) == expr.VerdictAccept && cmpsOf(r)[0] == string(ifname("eth1"))
		}
	}
	require.True(t, dnatAccept)
	pre := chain(t, rs, "prerouting")
	require.Equal(t, nftables.ChainTypeNAT, pre.Chain.Type)
	require.Len(t, pre.Rules, 2)
	for i, r := range pre.Rules {
		l, ok := find[*expr.Lookup](r)
		require.True(t, ok)
		require.Equal(t, rs.Sets[i].Name, l.SetName)
		require.True(t, l.IsDestRegSet)
		n, ok := find[*expr.NAT](r)
		require.True(t, ok)
		require.Equal(t, expr.NATTypeDestNAT, n.Type)
		p, ok := find[*expr.Payload](r)
		require.True(t, ok)
		require.EqualValues(t, 2, p.Offset, "looked up by destination port")
	}

	for _, mode := range []Mode{ModePortRestricted, ModeSymmetric, ModeRelayOnly} {
		rs, err := BuildRuleset(RuleConfig{Mode: mode, WANIf: "eth1", LANIf: "lan0", LANNet: lanNet(t), Relays: []net.IP{net.ParseIP("11.2.0.10")}})
		require.NoError(t, err)
		require.Empty(t, rs.Sets, mode)
		for _, cs := range rs.Chains {
			require.NotEqual(t, "prerouting", cs.Chain.Name, "%s filters by endpoint: no inbound mapping", mode)
		}
	}
}

// The link chain queues every packet crossing the WAN interface, in both
// directions, after the filter has accepted it; without Link there is none.
func TestLinkChain(t *testing.T) {
	rs, err := BuildRuleset(RuleConfig{Mode: ModePortRestricted, WANIf: "eth1", LANIf: "lan0", LANNet: lanNet(t), Link: true})
	require.NoError(t, err)
	link := chain(t, rs, "link")
	require.Equal(t, *nftables.ChainHookForward, *link.Chain.Hooknum)
	require.Greater(t, *link.Chain.Priority, *nftables.ChainPriorityFilter, "after the forward filter")
	require.Len(t, link.Rules, 2)
	keys := map[expr.MetaKey]bool{}
	for _, r := range link.Rules {
		m, ok := find[*expr.Meta](r)
		require.True(t, ok)
		keys[m.Key] = true
		require.Equal(t, []string{string(ifname("eth1"))}, cmpsOf(r))
		tg, ok := find[*expr.Target](r)
		require.True(t, ok)
		require.Equal(t, "NFQUEUE", tg.Name)
		info := *tg.Info.(*xt.Unknown)
		require.Len(t, info, 6)
		require.EqualValues(t, linkQueueNum, binary.NativeEndian.Uint16(info))
		require.Zero(t, binary.NativeEndian.Uint16(info[4:]), "no bypass: without the emulator packets drop")
	}
	require.Equal(t, map[expr.MetaKey]bool{expr.MetaKeyIIFNAME: true, expr.MetaKeyOIFNAME: true}, keys)

	rs, err = BuildRuleset(RuleConfig{Mode: ModePortRestricted, WANIf: "eth1", LANIf: "lan0", LANNet: lanNet(t)})
	require.NoError(t, err)
	for _, cs := range rs.Chains {
		require.NotEqual(t, "link", cs.Chain.Name)
	}
}

// The IPv6 side translates nothing: replies and ICMPv6 come in, the LAN
// goes out, anything else from the WAN is dropped (forwarded or not); the
// rule set marshals with and without the link chain.
func TestRuleset6(t *testing.T) {
	_, err := BuildRuleset6(Rule6Config{WANIf: "eth1", LANIf: "eth1"})
	require.Error(t, err)
	_, err = BuildRuleset6(Rule6Config{WANIf: "a-very-long-interface-name", LANIf: "lan0"})
	require.Error(t, err)
	for _, link := range []bool{false, true} {
		rs, err := BuildRuleset6(Rule6Config{WANIf: "eth1", LANIf: "lan0", Link: link})
		require.NoError(t, err)
		require.Equal(t, nftables.TableFamilyIPv6, rs.Table.Family)
		require.Empty(t, rs.Sets)
		for _, cs := range rs.Chains {
			require.NotEqual(t, nftables.ChainTypeNAT, cs.Chain.Type, "no NAT on IPv6")
		}
		fwd := chain(t, rs, "forward")
		require.Equal(t, nftables.ChainPolicyDrop, *fwd.Chain.Policy)
		_, ok := find[*expr.Ct](fwd.Rules[0])
		require.True(t, ok, "replies first")
		for _, r := range fwd.Rules {
			cmps := cmpsOf(r)
			require.False(t, len(cmps) > 0 && cmps[0] == string(ifname("eth1")), "nothing from the WAN is accepted by interface alone")
		}
		in := chain(t, rs, "input")
		last := in.Rules[len(in.Rules)-1]
		require.Equal(t, expr.VerdictDrop, lastVerdict(t, last))
		counts := map[uint16]int{}
		c, err := nftables.New(nftables.WithTestDial(func(req []netlink.Message) ([]netlink.Message, error) {
			for _, m := range req {
				counts[uint16(m.Header.Type)&0xff]++
			}
			return req, nil
		}))
		require.NoError(t, err)
		require.NoError(t, rs.Install(c))
		chains := 2
		if link {
			chains++
			require.Len(t, chain(t, rs, "link").Rules, 2)
		}
		require.Equal(t, chains, counts[unix.NFT_MSG_NEWCHAIN])
	}
}
