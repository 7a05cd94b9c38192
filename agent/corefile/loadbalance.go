package corefile

import (
	"net/netip"
	"time"

	"github.com/coredns/caddy/caddyfile"
)

// DefaultWeightReload is how often the weighted policy's file is re-read.
const DefaultWeightReload = 30 * time.Second

// LoadBalance is the loadbalance plugin's configuration: round_robin, with
// preferred subnets first, or weighted.
type LoadBalance struct {
	// Prefer lists the subnets whose addresses are moved first, in order.
	Prefer []netip.Prefix
	// WeightFile is the weighted policy's file ("" for round_robin);
	// WeightReload how often it is re-read (0: never).
	WeightFile   string
	WeightReload time.Duration
}

// parseLoadBalance parses `loadbalance [round_robin] { prefer CIDR... }`
// or `loadbalance weighted FILE { reload DURATION }`.
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
			if len(args) != 2 {
				return p.errf(d, "plugin \"loadbalance\": weighted wants one weight file, got %q", args[1:])
			}
			lb.WeightFile, lb.WeightReload = args[1], DefaultWeightReload
			for d.NextBlock() {
				opt := d.Val()
				args, err := p.args(d, "loadbalance "+opt)
				if err != nil {
					return err
				}
				if opt != "reload" {
					return p.errf(d, "unknown option %q of plugin \"loadbalance\" weighted", opt)
				}
				if len(args) != 1 {
					return p.wrongArgs(d, "loadbalance reload", args)
				}
				dur, err := time.ParseDuration(args[0])
				if err != nil || dur < 0 {
					return p.errf(d, "loadbalance reload %q: want a non-negative duration", args[0])
				}
				lb.WeightReload = dur
			}
			p.server.LoadBalance = lb
			return nil
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
