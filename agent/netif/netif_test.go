package netif

import (
	"net"
	"sort"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/nodelocaldns/nodelocaldns/tests/netns"
	"github.com/nodelocaldns/nodelocaldns/tests/testenv"
)

// inFreshNetns runs fn on an OS thread moved into a new, empty network
// namespace. The thread is never unlocked, so the Go runtime discards it
// afterwards and the namespace disappears with it.
func inFreshNetns(t *testing.T, fn func()) {
	t.Helper()
	testenv.RequireRoot(t)
	if err := netns.RunInFresh(fn); err != nil {
		t.Fatal(err)
	}
}

func sorted(ips []net.IP) []string {
	out := make([]string, 0, len(ips))
	for _, ip := range ips {
		out = append(out, ip.String())
	}
	sort.Strings(out)
	return out
}

func TestEnsureAdoptRemove(t *testing.T) {
	for _, tc := range []struct {
		name string
		ips  []net.IP
		want []string
	}{
		{name: "ipv4 link-local", ips: []net.IP{net.ParseIP("169.254.20.10")}, want: []string{"169.254.20.10"}},
		{name: "interception two ipv4", ips: []net.IP{net.ParseIP("169.254.20.10"), net.ParseIP("10.96.0.10")}, want: []string{"10.96.0.10", "169.254.20.10"}},
		{name: "dual stack", ips: []net.IP{net.ParseIP("169.254.20.10"), net.ParseIP("fd00::10")}, want: []string{"169.254.20.10", "fd00::10"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inFreshNetns(t, func() {
				res, err := Ensure("nodelocaldns", tc.ips, true)
				if err != nil {
					t.Errorf("first Ensure: %v", err)
					return
				}
				if !res.Created || len(res.Added) != len(tc.ips) {
					t.Errorf("first Ensure = %+v, want created with %d addresses", res, len(tc.ips))
				}
				if res.Kind != KindDummy && res.Kind != KindBridge {
					t.Errorf("kind %q, want dummy or bridge", res.Kind)
				}
				if got := mustAddrs(t, "nodelocaldns"); !equal(got, tc.want) {
					t.Errorf("addresses %v, want %v", got, tc.want)
				}
				// Second call adopts: nothing created, nothing added.
				res, err = Ensure("nodelocaldns", tc.ips, true)
				if err != nil || res.Created || len(res.Added) != 0 {
					t.Errorf("second Ensure = %+v, %v; want adoption without changes", res, err)
				}
				// An address removed by hand comes back.
				link := tc.ips[0]
				if err := delAddr("nodelocaldns", link); err != nil {
					t.Errorf("remove address by hand: %v", err)
				}
				res, err = Ensure("nodelocaldns", tc.ips, true)
				if err != nil || len(res.Added) != 1 || !res.Added[0].Equal(link) {
					t.Errorf("Ensure after manual removal = %+v, %v; want %s re-added", res, err, link)
				}
				// An address of another configuration stays without prune
				// (a twin may use it) and goes with prune.
				stale := net.ParseIP("169.254.99.99")
				if _, err := Ensure("nodelocaldns", append([]net.IP{stale}, tc.ips...), true); err != nil {
					t.Errorf("Ensure with an extra address: %v", err)
				}
				if res, err := Ensure("nodelocaldns", tc.ips, false); err != nil || len(res.Removed) != 0 {
					t.Errorf("Ensure without prune = %+v, %v; want nothing removed", res, err)
				}
				if res, err := Ensure("nodelocaldns", tc.ips, true); err != nil || len(res.Removed) != 1 || !res.Removed[0].Equal(stale) {
					t.Errorf("Ensure with prune = %+v, %v; want %s removed", res, err, stale)
				}
				if got := mustAddrs(t, "nodelocaldns"); !equal(got, tc.want) {
					t.Errorf("addresses after prune %v, want %v", got, tc.want)
				}
				// The address is local: a socket can bind it.
				for _, ip := range tc.ips {
					c, err := net.ListenPacket("udp", net.JoinHostPort(ip.String(), "0"))
					if err != nil {
						t.Errorf("bind %s: %v", ip, err)
						continue
					}
					c.Close()
				}
				if err := Remove("nodelocaldns"); err != nil {
					t.Errorf("Remove: %v", err)
				}
				if got := mustAddrs(t, "nodelocaldns"); len(got) != 0 {
					t.Errorf("addresses after Remove: %v", got)
				}
				if err := Remove("nodelocaldns"); err != nil {
					t.Errorf("second Remove must be a no-op: %v", err)
				}
			})
		})
	}
}

func TestBadName(t *testing.T) {
	for _, tc := range []struct {
		name, link string
	}{
		{name: "empty", link: ""},
		{name: "too long", link: "a-very-long-interface-name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Ensure(tc.link, nil, true); err == nil {
				t.Errorf("Ensure(%q) succeeded, want an error", tc.link)
			}
			if err := Remove(tc.link); err == nil {
				t.Errorf("Remove(%q) succeeded, want an error", tc.link)
			}
		})
	}
}

func mustAddrs(t *testing.T, name string) []string {
	t.Helper()
	ips, err := Addresses(name)
	if err != nil {
		t.Errorf("Addresses: %v", err)
	}
	return sorted(ips)
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func delAddr(name string, ip net.IP) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return err
	}
	return netlink.AddrDel(link, hostAddr(ip))
}
