package app

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"

	"github.com/nodelocaldns/nodelocaldns/agent/sysctl"
)

// sysctlRoot is where the agent writes its sysctls; tests point it at a fake
// tree.
var sysctlRoot = sysctl.DefaultRoot

// Main is the agent's entry point for its main package: -version and
// -plugins print and return; with -sysctls-only it applies the sysctls and
// returns (nil on success, so the init container exits 0); otherwise it
// runs the agent (Run).
func Main(ctx context.Context, args []string) error { return mainTo(ctx, args, os.Stdout) }

// mainTo is Main writing -version and -plugins to stdout.
func mainTo(ctx context.Context, args []string, stdout io.Writer) error {
	opts, err := ParseFlags(args)
	if err != nil {
		return err
	}
	switch {
	case opts.ShowVersion:
		_, err := io.WriteString(stdout, VersionString())
		return err
	case opts.ShowPlugins:
		_, err := io.WriteString(stdout, PluginsString())
		return err
	case opts.SysctlsOnly:
		return ApplySysctls(opts, log.New(os.Stderr, "", log.LstdFlags))
	}
	return Run(ctx, args)
}

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
	if len(res.Changed) == 0 {
		logger.Printf("[INFO] sysctl: ICMP rate limits already %d ms", opts.ICMPRateLimit)
	} else {
		logger.Printf("[INFO] sysctl: %v", res.Changed)
	}
	return nil
}
