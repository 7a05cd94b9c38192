// Package netif owns the network interface that holds the agent's local IPs
// (169.254.20.10, and the kube-dns ClusterIP in interception mode).
//
// The link is a `dummy` when the kernel has that type. Some kernels are built
// without it; then a bridge without ports is used instead: its /32 and /128
// addresses get local routes whether the link is up or not, which is all the
// agent needs (it only has to make the addresses local to the node).
//
// Every function is idempotent: an existing link and existing addresses are
// adopted, so a restart after SIGKILL finds what the killed process left and
// neither fails nor duplicates anything.
package netif

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Link types used for the interface.
const (
	KindDummy  = "dummy"
	KindBridge = "bridge"
)

// Result tells what Ensure found and changed.
type Result struct {
	// Kind is the link type in use ("dummy" or "bridge").
	Kind string
	// Created is true when the link did not exist and was added.
	Created bool
	// Fallback is true when the dummy type was refused by the kernel and a
	// bridge was created instead.
	Fallback bool
	// Added lists the addresses that were missing and have been added.
	Added []net.IP
	// Removed lists the addresses that were not wanted and, with prune,
	// have been removed.
	Removed []net.IP
}

// Ensure makes sure the link called name exists and holds every IP in ips as a
// host address (/32 or /128). Addresses that are already there are kept.
// With prune, other addresses on the link (an older configuration's) are
// removed; without, they are left alone (a twin instance may use them).
func Ensure(name string, ips []net.IP, prune bool) (Result, error) {
	var res Result
	if err := validName(name); err != nil {
		return res, err
	}
	link, err := netlink.LinkByName(name)
	if err != nil {
		if !isNotFound(err) {
			return res, fmt.Errorf("netif: look up link %q: %w", name, err)
		}
		link, res.Fallback, err = create(name)
		if err != nil {
			return res, err
		}
		res.Created = true
	}
	res.Kind = link.Type()
	have, err := addrs(link)
	if err != nil {
		return res, err
	}
	want := make(map[string]bool, len(ips))
	for _, ip := range ips {
		want[ip.String()] = true
		if have[ip.String()] != nil {
			continue
		}
		if err := netlink.AddrReplace(link, hostAddr(ip)); err != nil {
			return res, fmt.Errorf("netif: add %s to %q: %w", ip, name, err)
		}
		res.Added = append(res.Added, ip)
	}
	if !prune {
		return res, nil
	}
	for s, a := range have {
		if want[s] {
			continue
		}
		if err := netlink.AddrDel(link, a); err != nil {
			return res, fmt.Errorf("netif: remove stale %s from %q: %w", s, name, err)
		}
		res.Removed = append(res.Removed, a.IP)
	}
	return res, nil
}

// Remove deletes the link called name and with it every address it holds. A
// link that does not exist is not an error.
func Remove(name string) error {
	if err := validName(name); err != nil {
		return err
	}
	link, err := netlink.LinkByName(name)
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return fmt.Errorf("netif: look up link %q: %w", name, err)
	}
	if err := netlink.LinkDel(link); err != nil && !isNotFound(err) {
		return fmt.Errorf("netif: delete link %q: %w", name, err)
	}
	return nil
}

// Addresses returns the IPs held by the link called name; nil (and no error)
// when the link does not exist.
func Addresses(name string) ([]net.IP, error) {
	link, err := netlink.LinkByName(name)
	if err != nil {
		if isNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("netif: look up link %q: %w", name, err)
	}
	list, err := netlink.AddrList(link, netlink.FAMILY_ALL)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return nil, fmt.Errorf("netif: list addresses of %q: %w", name, err)
	}
	out := make([]net.IP, 0, len(list))
	for _, a := range list {
		if a.IP.IsLinkLocalUnicast() && a.IP.To4() == nil {
			continue // the kernel's own fe80:: address
		}
		out = append(out, a.IP)
	}
	return out, nil
}

// create adds the link, as a dummy if the kernel supports it, else as a
// bridge without ports.
func create(name string) (netlink.Link, bool, error) {
	attrs := netlink.NewLinkAttrs()
	attrs.Name = name
	dummyErr := netlink.LinkAdd(&netlink.Dummy{LinkAttrs: attrs})
	fallback := false
	if dummyErr != nil {
		if errors.Is(dummyErr, unix.EEXIST) {
			// Raced with another instance: adopt its link below.
		} else {
			if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: attrs}); err != nil && !errors.Is(err, unix.EEXIST) {
				return nil, false, fmt.Errorf("netif: add link %q: dummy: %w; bridge: %w", name, dummyErr, err)
			}
			fallback = true
		}
	}
	link, err := netlink.LinkByName(name)
	if err != nil {
		return nil, false, fmt.Errorf("netif: look up new link %q: %w", name, err)
	}
	return link, fallback, nil
}

// addrs returns the link's addresses by IP, except the kernel's own IPv6
// link-local one.
func addrs(link netlink.Link) (map[string]*netlink.Addr, error) {
	list, err := netlink.AddrList(link, netlink.FAMILY_ALL)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return nil, fmt.Errorf("netif: list addresses of %q: %w", link.Attrs().Name, err)
	}
	have := make(map[string]*netlink.Addr, len(list))
	for i := range list {
		a := &list[i]
		if a.IP.IsLinkLocalUnicast() && a.IP.To4() == nil {
			continue
		}
		have[a.IP.String()] = a
	}
	return have, nil
}

// hostAddr is ip as a /32 or /128; IPv6 addresses skip duplicate address
// detection so they are usable (bindable) at once, even on a link that is
// down.
func hostAddr(ip net.IP) *netlink.Addr {
	if v4 := ip.To4(); v4 != nil {
		return &netlink.Addr{IPNet: &net.IPNet{IP: v4, Mask: net.CIDRMask(32, 32)}}
	}
	return &netlink.Addr{IPNet: &net.IPNet{IP: ip, Mask: net.CIDRMask(128, 128)}, Flags: unix.IFA_F_NODAD}
}

func validName(name string) error {
	if name == "" || len(name) >= unix.IFNAMSIZ {
		return fmt.Errorf("netif: invalid interface name %q (1 to %d characters)", name, unix.IFNAMSIZ-1)
	}
	return nil
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV)
}
