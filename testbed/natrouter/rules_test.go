package main

import (
	"net"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
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
	for _, s := range []string{"cone", "symmetric", "relay-only"} {
		m, err := ParseMode(s)
		require.NoError(t, err)
		require.Equal(t, Mode(s), m)
	}
	_, err := ParseMode("full-cone")
	require.ErrorContains(t, err, "unknown mode")
}

func TestValidate(t *testing.T) {
	good := RuleConfig{Mode: ModeCone, WANIf: "eth1", LANIf: "lan0", LANNet: lanNet(t)}
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
		{ModeCone, false},
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
	for _, mode := range []Mode{ModeCone, ModeSymmetric, ModeRelayOnly} {
		t.Run(string(mode), func(t *testing.T) {
			rs, err := BuildRuleset(RuleConfig{Mode: mode, WANIf: "eth1", LANIf: "lan0", LANNet: lanNet(t), Relays: relays})
			require.NoError(t, err)
			fwd := chain(t, rs, "forward")
			require.Equal(t, nftables.ChainPolicyDrop, *fwd.Chain.Policy, "forward must default to drop")

			first := fwd.Rules[0]
			ct, ok := find[*expr.Ct](first)
			require.True(t, ok)
			require.Equal(t, expr.CtKeySTATE, ct.Key)
			require.Equal(t, expr.VerdictAccept, lastVerdict(t, first))

			var toWAN [][]expr.Any
			for _, r := range fwd.Rules[1:] {
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
	rs, err := BuildRuleset(RuleConfig{Mode: ModeCone, WANIf: "eth1", LANIf: "lan0", LANNet: lanNet(t)})
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
// expression must marshal, and the batch must create one table and 3 chains.
func TestInstallMarshals(t *testing.T) {
	for _, mode := range []Mode{ModeCone, ModeSymmetric, ModeRelayOnly} {
		t.Run(string(mode), func(t *testing.T) {
			rs, err := BuildRuleset(RuleConfig{Mode: mode, WANIf: "eth1", LANIf: "lan0", LANNet: lanNet(t),
				Relays: []net.IP{net.ParseIP("11.2.0.10")}})
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
			require.Equal(t, 2, counts[unix.NFT_MSG_NEWTABLE])
			require.Equal(t, 1, counts[unix.NFT_MSG_DELTABLE])
			require.Equal(t, 3, counts[unix.NFT_MSG_NEWCHAIN])
			rules := 0
			for _, cs := range rs.Chains {
				rules += len(cs.Rules)
			}
			require.Equal(t, rules, counts[unix.NFT_MSG_NEWRULE])
		})
	}
}
