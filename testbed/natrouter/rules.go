package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
	"golang.org/x/sys/unix"
)

// Mode is the NAT behaviour a router simulates.
type Mode string

// The modes in RFC 4787 terms (mapping / filtering).
const (
	// ModeFullCone: endpoint-independent mapping and endpoint-independent
	// filtering. Linux conntrack keeps the source port for plain
	// masquerade; every LAN source port that went out is remembered in a
	// dynamic map (protocol, port -> LAN address) and any packet from
	// anywhere to that WAN port is forwarded to it.
	ModeFullCone Mode = "full-cone"
	// ModePortRestricted: endpoint-independent mapping (plain masquerade,
	// port kept), address-and-port-dependent filtering (only replies of a
	// flow the LAN opened come in): the most common home NAT.
	ModePortRestricted Mode = "port-restricted"
	// ModeSymmetric: address-and-port-dependent mapping, a fully random WAN
	// port for every new flow; hole punching must fail.
	ModeSymmetric Mode = "symmetric"
	// ModeRelayOnly forwards LAN traffic only to the relay addresses.
	ModeRelayOnly Mode = "relay-only"
)

// Modes lists every mode, for usage text and tests.
var Modes = []Mode{ModeFullCone, ModePortRestricted, ModeSymmetric, ModeRelayOnly}

// ParseMode validates a mode name.
func ParseMode(s string) (Mode, error) {
	for _, m := range Modes {
		if string(m) == s {
			return m, nil
		}
	}
	return "", fmt.Errorf("unknown mode %q (want full-cone, port-restricted, symmetric or relay-only)", s)
}

// Full-cone mapping: how long an outbound port stays open to anyone after
// the last packet the LAN sent from it.
const fullConeTimeout = 2 * time.Minute

// TableName is the nftables table the router owns.
const TableName = "natrouter"

// RuleConfig is everything the rule set depends on.
type RuleConfig struct {
	Mode   Mode
	WANIf  string     // interface on the simulated internet
	LANIf  string     // interface facing the peers
	LANNet *net.IPNet // addresses that get translated
	Relays []net.IP   // relay-only: the only WAN destinations allowed
	// Link queues every packet forwarded through the WAN interface to the
	// link emulator (NFQUEUE linkQueueNum), for delay and loss.
	Link bool
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
// nftables state: one IPv4 table with NAT and filter chains, and the
// full-cone maps when the mode has them.
type Ruleset struct {
	Table  *nftables.Table
	Sets   []*nftables.Set
	Chains []ChainSpec
}

// BuildRuleset constructs the rules for cfg:
//
//	postrouting (nat):  oifname WAN ip saddr LAN masquerade [random,fully-random]
//	forward (policy drop):
//	  full-cone:        iifname LAN oifname WAN meta l4proto tcp|udp update @fc_tcp|@fc_udp { th sport : ip saddr }
//	                    ct state established,related accept
//	  full-cone:        iifname WAN oifname LAN ct status dnat accept
//	                    iifname LAN oifname WAN [ip daddr RELAY] accept
//	                    iifname LAN oifname LAN accept
//	input (policy accept):
//	                    iifname WAN ct state established,related accept
//	                    iifname WAN drop
//	full-cone: prerouting (nat):
//	                    iifname WAN meta l4proto tcp|udp dnat to th dport map @fc_tcp|@fc_udp
//	link (forward, after the filter), when cfg.Link:
//	                    iifname WAN queue num 0
//	                    oifname WAN queue num 0
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

	link := &nftables.Chain{
		Name: "link", Table: table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityRef(*nftables.ChainPriorityFilter + 10), Policy: &accept,
	}

	masq := &expr.Masq{}
	if cfg.Mode == ModeSymmetric {
		masq.Random = true
		masq.FullyRandom = true
	}
	postRules := [][]expr.Any{
		concat(matchIf(expr.MetaKeyOIFNAME, cfg.WANIf), matchSaddr(cfg.LANNet), []expr.Any{masq}),
	}

	lanToWAN := concat(matchIf(expr.MetaKeyIIFNAME, cfg.LANIf), matchIf(expr.MetaKeyOIFNAME, cfg.WANIf))
	var fwdRules [][]expr.Any
	var sets []*nftables.Set
	var pre *nftables.Chain
	var preRules [][]expr.Any
	if cfg.Mode == ModeFullCone {
		// Every outbound packet (the first rules, before any accept)
		// refreshes its port's mapping.
		pre = &nftables.Chain{
			Name: "prerouting", Table: table, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest,
		}
		for _, proto := range []struct {
			name string
			num  byte
		}{{"fc_tcp", unix.IPPROTO_TCP}, {"fc_udp", unix.IPPROTO_UDP}} {
			set := &nftables.Set{
				Table: table, Name: proto.name, IsMap: true, Dynamic: true, HasTimeout: true, Timeout: fullConeTimeout,
				KeyType: nftables.TypeInetService, DataType: nftables.TypeIPAddr,
			}
			sets = append(sets, set)
			fwdRules = append(fwdRules, concat(lanToWAN, matchL4Proto(proto.num), []expr.Any{
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 2}, // source port
				&expr.Payload{DestRegister: 2, Base: expr.PayloadBaseNetworkHeader, Offset: ipv4SaddrOffset, Len: 4},
				&expr.Dynset{SrcRegKey: 1, SrcRegData: 2, SetName: set.Name, Operation: dynsetOpUpdate, Timeout: fullConeTimeout},
			}))
			preRules = append(preRules, concat(matchIf(expr.MetaKeyIIFNAME, cfg.WANIf), matchL4Proto(proto.num), []expr.Any{
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2}, // destination port
				&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: set.Name},
				&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1},
			}))
		}
	}
	fwdRules = append(fwdRules,
		concat(matchCtState(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), verdict(expr.VerdictAccept)))
	if cfg.Mode == ModeFullCone {
		// New flows from anywhere that the map sent to a LAN host.
		fwdRules = append(fwdRules, concat(matchIf(expr.MetaKeyIIFNAME, cfg.WANIf), matchIf(expr.MetaKeyOIFNAME, cfg.LANIf),
			matchCtStatus(ctStatusDstNAT), verdict(expr.VerdictAccept)))
	}
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

	rs := &Ruleset{
		Table: table,
		Sets:  sets,
		Chains: []ChainSpec{
			{Chain: post, Rules: postRules},
			{Chain: fwd, Rules: fwdRules},
			{Chain: in, Rules: inRules},
		},
	}
	if pre != nil {
		rs.Chains = append(rs.Chains, ChainSpec{Chain: pre, Rules: preRules})
	}
	if cfg.Link {
		rs.Chains = append(rs.Chains, ChainSpec{Chain: link, Rules: [][]expr.Any{
			concat(matchIf(expr.MetaKeyIIFNAME, cfg.WANIf), queue(linkQueueNum)),
			concat(matchIf(expr.MetaKeyOIFNAME, cfg.WANIf), queue(linkQueueNum)),
		}})
	}
	return rs, nil
}

// Install replaces any previous natrouter table with rs in one transaction.
func (rs *Ruleset) Install(c *nftables.Conn) error {
	// Adding then deleting makes the delete valid whether or not the table
	// existed, so a restarted router starts from a clean table.
	c.AddTable(rs.Table)
	c.DelTable(rs.Table)
	c.AddTable(rs.Table)
	for _, set := range rs.Sets {
		if err := c.AddSet(set, nil); err != nil {
			return fmt.Errorf("set %s: %w", set.Name, err)
		}
	}
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

const (
	dynsetOpUpdate = 1    // NFT_DYNSET_OP_UPDATE: add, or refresh the timeout
	ctStatusDstNAT = 0x20 // IPS_DST_NAT
)

func matchL4Proto(p byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}},
	}
}

func matchCtStatus(bits uint32) []expr.Any {
	mask := binaryutil.NativeEndian.PutUint32(bits)
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATUS},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
}

// queue hands the packet to user space through the xtables NFQUEUE target
// (revision 3: queue number, queues in total, flags); the kernel has no
// native nft queue expression (CONFIG_NFT_QUEUE is not set). Without a
// listener the packet is dropped, so a dead emulator fails loudly.
func queue(num uint16) []expr.Any {
	info := make([]byte, 6)
	binary.NativeEndian.PutUint16(info[0:], num)
	binary.NativeEndian.PutUint16(info[2:], 1)
	x := xt.Unknown(info)
	return []expr.Any{&expr.Target{Name: "NFQUEUE", Rev: 3, Info: &x}}
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

// TableName6 is the IPv6 table the router owns.
const TableName6 = "natrouter6"

// Rule6Config is the router's IPv6 side: no NAT, a stateful firewall.
type Rule6Config struct {
	WANIf, LANIf string
	Link         bool // queue WAN packets to the link emulator, as for IPv4
}

// BuildRuleset6 is the usual IPv6 home router: addresses are global, nothing
// is translated; the LAN may open flows outward and their replies come in,
// anything unsolicited from the WAN is dropped silently (so a hole punch is
// still needed: the first packet of each side opens the way for the
// other's). ICMPv6 passes, for neighbour discovery and path MTU.
//
//	forward (policy drop):
//	                    ct state established,related accept
//	                    meta l4proto icmpv6 accept
//	                    iifname LAN oifname WAN accept
//	                    iifname LAN oifname LAN accept
//	input (policy accept):
//	                    iifname WAN ct state established,related accept
//	                    iifname WAN meta l4proto icmpv6 accept
//	                    iifname WAN drop
//	link (forward, after the filter), when cfg.Link: as for IPv4
func BuildRuleset6(cfg Rule6Config) (*Ruleset, error) {
	if cfg.WANIf == "" || cfg.LANIf == "" || cfg.WANIf == cfg.LANIf {
		return nil, errors.New("distinct wan and lan interfaces are required")
	}
	if len(cfg.WANIf) >= unix.IFNAMSIZ || len(cfg.LANIf) >= unix.IFNAMSIZ {
		return nil, errors.New("interface name too long")
	}
	table := &nftables.Table{Name: TableName6, Family: nftables.TableFamilyIPv6}
	drop := nftables.ChainPolicyDrop
	accept := nftables.ChainPolicyAccept
	fwd := &nftables.Chain{
		Name: "forward", Table: table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &drop,
	}
	in := &nftables.Chain{
		Name: "input", Table: table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &accept,
	}
	established := matchCtState(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED)
	rs := &Ruleset{Table: table, Chains: []ChainSpec{
		{Chain: fwd, Rules: [][]expr.Any{
			concat(established, verdict(expr.VerdictAccept)),
			concat(matchL4Proto(unix.IPPROTO_ICMPV6), verdict(expr.VerdictAccept)),
			concat(matchIf(expr.MetaKeyIIFNAME, cfg.LANIf), matchIf(expr.MetaKeyOIFNAME, cfg.WANIf), verdict(expr.VerdictAccept)),
			concat(matchIf(expr.MetaKeyIIFNAME, cfg.LANIf), matchIf(expr.MetaKeyOIFNAME, cfg.LANIf), verdict(expr.VerdictAccept)),
		}},
		{Chain: in, Rules: [][]expr.Any{
			concat(matchIf(expr.MetaKeyIIFNAME, cfg.WANIf), established, verdict(expr.VerdictAccept)),
			concat(matchIf(expr.MetaKeyIIFNAME, cfg.WANIf), matchL4Proto(unix.IPPROTO_ICMPV6), verdict(expr.VerdictAccept)),
			concat(matchIf(expr.MetaKeyIIFNAME, cfg.WANIf), verdict(expr.VerdictDrop)),
		}},
	}}
	if cfg.Link {
		link := &nftables.Chain{
			Name: "link", Table: table, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityRef(*nftables.ChainPriorityFilter + 10), Policy: &accept,
		}
		rs.Chains = append(rs.Chains, ChainSpec{Chain: link, Rules: [][]expr.Any{
			concat(matchIf(expr.MetaKeyIIFNAME, cfg.WANIf), queue(linkQueueNum)),
			concat(matchIf(expr.MetaKeyOIFNAME, cfg.WANIf), queue(linkQueueNum)),
		}})
	}
	return rs, nil
}
