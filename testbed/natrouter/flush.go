//go:build linux

package main

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// runFlush forgets every NAT mapping the router holds, so that one run of a
// scenario cannot help the next: it flushes the kernel's connection
// tracking (IPv4 and IPv6: masquerade mappings, the firewalls' established
// flows), empties the full-cone maps and the neighbour caches of the LAN
// interfaces, then lists what is left. It prints one line,
//
//	flushed conntrack=N fullcone=M neigh=K left=L
//
// where left counts the conntrack entries still there other than the
// router's own VXLAN underlay flows, and fails if L is not 0 or a full-cone
// map is not empty. The router must be idle (no peer running behind it):
// live flows would simply come back.
func runFlush(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("flush", flag.ContinueOnError)
	if err := fs.Parse(args); err != nil {
		return err
	}
	before, err := conntrackFlows()
	if err != nil {
		return err
	}
	if err := netlink.ConntrackTableFlush(netlink.ConntrackTable); err != nil {
		return fmt.Errorf("flush conntrack: %w", err)
	}
	// The flush request carries AF_INET; kernels that honour the family
	// keep the IPv6 entries, so those are deleted one by one.
	if _, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, unix.AF_INET6, matchAll{}); err != nil {
		return fmt.Errorf("delete IPv6 conntrack entries: %w", err)
	}
	fc, err := fullConeEntries(true)
	if err != nil {
		return err
	}
	neigh, err := flushNeighbours()
	if err != nil {
		return err
	}
	after, err := conntrackFlows()
	if err != nil {
		return err
	}
	left := 0
	for _, f := range after {
		if !isUnderlay(f) {
			left++
		}
	}
	fcLeft, err := fullConeEntries(false)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "flushed conntrack=%d fullcone=%d neigh=%d left=%d\n", len(before), fc, neigh, left+fcLeft)
	if left+fcLeft != 0 {
		return fmt.Errorf("after the flush %d conntrack entries and %d full-cone mappings are left", left, fcLeft)
	}
	return nil
}

type matchAll struct{}

func (matchAll) MatchConntrackFlow(*netlink.ConntrackFlow) bool { return true }

func conntrackFlows() ([]*netlink.ConntrackFlow, error) {
	var all []*netlink.ConntrackFlow
	for _, fam := range []netlink.InetFamily{unix.AF_INET, unix.AF_INET6} {
		fl, err := netlink.ConntrackTableList(netlink.ConntrackTable, fam)
		if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
			return nil, fmt.Errorf("list conntrack: %w", err)
		}
		all = append(all, fl...)
	}
	return all, nil
}

// isUnderlay: a VXLAN flow between the router and a peer's container on
// the Docker network (recreated by any frame on the LAN, e.g. a flood).
func isUnderlay(f *netlink.ConntrackFlow) bool {
	return f.Forward.Protocol == unix.IPPROTO_UDP && (f.Forward.DstPort == vxlanPort || f.Forward.SrcPort == vxlanPort)
}

// fullConeSets are the router's dynamic maps (full-cone mode only).
func fullConeSets(c *nftables.Conn) ([]*nftables.Set, error) {
	sets, err := c.GetSets(&nftables.Table{Name: TableName, Family: nftables.TableFamilyIPv4})
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, nil
		}
		return nil, fmt.Errorf("list nftables sets: %w", err)
	}
	return sets, nil
}

// fullConeEntries counts the entries of the full-cone maps and, with
// flush, empties them.
func fullConeEntries(flush bool) (int, error) {
	c, err := nftables.New()
	if err != nil {
		return 0, err
	}
	sets, err := fullConeSets(c)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, s := range sets {
		el, err := c.GetSetElements(s)
		if err != nil {
			return 0, fmt.Errorf("elements of %s: %w", s.Name, err)
		}
		n += len(el)
		if flush {
			c.FlushSet(s)
		}
	}
	if !flush {
		return n, nil
	}
	if err := c.Flush(); err != nil {
		return 0, fmt.Errorf("flush full-cone maps: %w", err)
	}
	return n, nil
}

// flushNeighbours forgets the LAN hosts' link-layer addresses: the next
// peer at the same IP has a new VXLAN interface (a new MAC).
func flushNeighbours() (int, error) {
	n := 0
	for _, name := range []string{lanIfName} {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return 0, fmt.Errorf("LAN interface: %w", err)
		}
		for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
			ns, err := netlink.NeighList(l.Attrs().Index, fam)
			if err != nil {
				return n, fmt.Errorf("neighbours of %s: %w", name, err)
			}
			for _, ne := range ns {
				if ne.State&(netlink.NUD_NOARP|netlink.NUD_PERMANENT) != 0 || ne.IP.IsLinkLocalMulticast() || ne.IP.IsMulticast() {
					continue
				}
				if err := netlink.NeighDel(&ne); err == nil {
					n++
				}
			}
		}
	}
	return n, nil
}
