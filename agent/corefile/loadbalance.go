package corefile

import (
	"net/netip"

	"github.com/coredns/caddy/caddyfile"
)

// LoadBalance is the loadbalance plugin's configuration: the round_robin
// policy, with preferred subnets first.
type LoadBalance struct {
	// Prefer lists the subnets whose addresses are moved first, in order.
	Prefer []netip.Prefix
}

// parseLoadBalance parses `loadbalance [round_robin] { prefer CIDR... }`.
// The weighted policy is refused.
func parseLoadBalance(p *blockParser, d *caddyfile.Dispenser) error {
	lb := &LoadBalance{}
	args := d.RemainingArgs()
	if len(args) > 0 {
		switch args[0] {
		case "round_robin":
			if len(args) > 1 {
				return p.errf(d, "plugin \"loadbalance\": unknown property for round_robin: %q", args[1:])
			}
		case "weighted":
			return p.errf(d, "plugin \"loadbalance\": the weighted policy is not supported (round_robin and prefer are)")
		default:
			return p.errf(d, "plugin \"loadbalance\": unknown policy: %s", args[0])
		}
	}
	for d.NextBlock() {
		opt := d.Val()
		args, err := p.args(d, "loadbalance "+opt)
		if err != nil {
			return err
		}
		if opt != "prefer" {
			return p.errf(d, "unknown option %q of plugin \"loadbalance\"", opt)
		}
		for _, a := range args {
			pref, err := netip.ParsePrefix(a)
			if err != nil {
				return p.errf(d, "loadbalance prefer: invalid CIDR %q: %v", a, err)
			}
			lb.Prefer = append(lb.Prefer, pref.Masked())
		}
	}
	p.server.LoadBalance = lb
	return nil
}
