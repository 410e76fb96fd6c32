package main

import (
	"errors"
	"fmt"
	"net"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Mode is the NAT behaviour a router simulates.
type Mode string

const (
	// ModeCone maps every flow from one LAN endpoint to the same WAN port
	// (Linux conntrack preserves the source port for plain masquerade), so
	// both sides of a hole punch can predict each other's mapping.
	ModeCone Mode = "cone"
	// ModeSymmetric picks a fully random WAN port for every new flow
	// (endpoint-dependent mapping): hole punching must fail.
	ModeSymmetric Mode = "symmetric"
	// ModeRelayOnly forwards LAN traffic only to the relay addresses.
	ModeRelayOnly Mode = "relay-only"
)

// ParseMode validates a mode name.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case ModeCone, ModeSymmetric, ModeRelayOnly:
		return m, nil
	}
	return "", fmt.Errorf("unknown mode %q (want cone, symmetric or relay-only)", s)
}

// TableName is the nftables table the router owns.
const TableName = "natrouter"

// RuleConfig is everything the rule set depends on.
type RuleConfig struct {
	Mode   Mode
	WANIf  string     // interface on the simulated internet
	LANIf  string     // interface facing the peers
	LANNet *net.IPNet // addresses that get translated
	Relays []net.IP   // relay-only: the only WAN destinations allowed
}

// Validate reports configuration mistakes before anything touches the kernel.
func (c RuleConfig) Validate() error {
	if _, err := ParseMode(string(c.Mode)); err != nil {
		return err
	}
	if c.WANIf == "" || c.LANIf == "" {
		return errors.New("wan and lan interfaces are required")
	}
	if len(c.WANIf) >= unix.IFNAMSIZ || len(c.LANIf) >= unix.IFNAMSIZ {
		return errors.New("interface name too long")
	}
	if c.WANIf == c.LANIf {
		return fmt.Errorf("wan and lan are the same interface %q", c.WANIf)
	}
	if c.LANNet == nil || c.LANNet.IP.To4() == nil {
		return errors.New("an IPv4 lan network is required")
	}
	if c.Mode == ModeRelayOnly && len(c.Relays) == 0 {
		return errors.New("relay-only mode needs at least one relay address")
	}
	for _, ip := range c.Relays {
		if ip.To4() == nil {
			return fmt.Errorf("relay address %s is not IPv4", ip)
		}
	}
	return nil
}

// ChainSpec is one base chain with its rules, in order.
type ChainSpec struct {
	Chain *nftables.Chain
	Rules [][]expr.Any
}

// Ruleset is the complete, kernel-independent description of the router's
// nftables state: one IPv4 table with a NAT chain and two filter chains.
type Ruleset struct {
	Table  *nftables.Table
	Chains []ChainSpec
}

// BuildRuleset constructs the rules for cfg:
//
//	postrouting (nat):  oifname WAN ip saddr LAN masquerade [random,fully-random]
//	forward (policy drop):
//	                    ct state established,related accept
//	                    iifname LAN oifname WAN [ip daddr RELAY] accept
//	                    iifname LAN oifname LAN accept
//	input (policy accept):
//	                    iifname WAN ct state established,related accept
//	                    iifname WAN drop
//
// The input drop is what real home routers do: an unsolicited packet to the
// WAN address (for example the first SYN of a simultaneous open arriving
// before our own SYN created the mapping) is dropped silently instead of
// being answered with a RST or ICMP error that would kill the hole punch.
func BuildRuleset(cfg RuleConfig) (*Ruleset, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	table := &nftables.Table{Name: TableName, Family: nftables.TableFamilyIPv4}
	drop := nftables.ChainPolicyDrop
	accept := nftables.ChainPolicyAccept

	post := &nftables.Chain{
		Name: "postrouting", Table: table, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource,
	}
	fwd := &nftables.Chain{
		Name: "forward", Table: table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &drop,
	}
	in := &nftables.Chain{
		Name: "input", Table: table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &accept,
	}

	masq := &expr.Masq{}
	if cfg.Mode == ModeSymmetric {
		masq.Random = true
		masq.FullyRandom = true
	}
	postRules := [][]expr.Any{
		concat(matchIf(expr.MetaKeyOIFNAME, cfg.WANIf), matchSaddr(cfg.LANNet), []expr.Any{masq}),
	}

	fwdRules := [][]expr.Any{
		concat(matchCtState(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), verdict(expr.VerdictAccept)),
	}
	lanToWAN := concat(matchIf(expr.MetaKeyIIFNAME, cfg.LANIf), matchIf(expr.MetaKeyOIFNAME, cfg.WANIf))
	if cfg.Mode == ModeRelayOnly {
		for _, ip := range cfg.Relays {
			fwdRules = append(fwdRules, concat(lanToWAN, matchDaddr(ip), verdict(expr.VerdictAccept)))
		}
	} else {
		fwdRules = append(fwdRules, concat(lanToWAN, verdict(expr.VerdictAccept)))
	}
	fwdRules = append(fwdRules, concat(
		matchIf(expr.MetaKeyIIFNAME, cfg.LANIf), matchIf(expr.MetaKeyOIFNAME, cfg.LANIf), verdict(expr.VerdictAccept)))

	inRules := [][]expr.Any{
		concat(matchIf(expr.MetaKeyIIFNAME, cfg.WANIf),
			matchCtState(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), verdict(expr.VerdictAccept)),
		concat(matchIf(expr.MetaKeyIIFNAME, cfg.WANIf), verdict(expr.VerdictDrop)),
	}

	return &Ruleset{
		Table: table,
		Chains: []ChainSpec{
			{Chain: post, Rules: postRules},
			{Chain: fwd, Rules: fwdRules},
			{Chain: in, Rules: inRules},
		},
	}, nil
}

// Install replaces any previous natrouter table with rs in one transaction.
func (rs *Ruleset) Install(c *nftables.Conn) error {
	// Adding then deleting makes the delete valid whether or not the table
	// existed, so a restarted router starts from a clean table.
	c.AddTable(rs.Table)
	c.DelTable(rs.Table)
	c.AddTable(rs.Table)
	for _, cs := range rs.Chains {
		c.AddChain(cs.Chain)
		for _, r := range cs.Rules {
			c.AddRule(&nftables.Rule{Table: rs.Table, Chain: cs.Chain, Exprs: r})
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("install nftables rules: %w", err)
	}
	return nil
}

func concat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func verdict(k expr.VerdictKind) []expr.Any { return []expr.Any{&expr.Verdict{Kind: k}} }

// ifname pads an interface name the way the kernel stores it (IFNAMSIZ bytes).
func ifname(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

func matchIf(key expr.MetaKey, name string) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(name)},
	}
}

func matchCtState(bits uint32) []expr.Any {
	// The kernel keeps ct state in host byte order.
	mask := binaryutil.NativeEndian.PutUint32(bits)
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
}

// IPv4 header offsets of the source and destination addresses.
const (
	ipv4SaddrOffset = 12
	ipv4DaddrOffset = 16
)

func matchSaddr(n *net.IPNet) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: ipv4SaddrOffset, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: []byte(net.IP(n.Mask).To4()), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(n.IP.Mask(n.Mask).To4())},
	}
}

func matchDaddr(ip net.IP) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: ipv4DaddrOffset, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(ip.To4())},
	}
}
