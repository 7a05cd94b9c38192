package app

import (
	"fmt"
	"log"

	"github.com/nodelocaldns/nodelocaldns/agent/clog"
	"github.com/nodelocaldns/nodelocaldns/agent/sysctl"
)

// sysctlRoot is where the agent writes its sysctls; tests point it at a fake
// tree.
var sysctlRoot = sysctl.DefaultRoot

// ApplySysctls writes the sysctls of opts (-icmp-ratelimit) and logs what
// it changed; unlike the agent's own best-effort attempt, a failure is an
// error.
func ApplySysctls(opts *Options, logger *log.Logger) error {
	if opts.ICMPRateLimit == ICMPRateLimitKeep {
		return nil
	}
	res, err := sysctl.EnsureICMPRateLimit(sysctlRoot, opts.ICMPRateLimit)
	if err != nil {
		return fmt.Errorf("sysctls: %w", err)
	}
	l := clog.New(logger, "")
	if len(res.Changed) == 0 {
		l.Infof("sysctl: ICMP rate limits already %d ms", opts.ICMPRateLimit)
	} else {
		l.Infof("sysctl: %v", res.Changed)
	}
	return nil
}
