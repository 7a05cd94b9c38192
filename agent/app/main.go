package app

import (
	"context"
	"log"
	"os"
)

// Main is the agent's entry point for its main package. It parses the
// flags once; with -sysctls-only it applies the sysctls and returns (nil on
// success, so the init container exits 0), otherwise it runs the agent as
// Run does.
func Main(ctx context.Context, args []string) error {
	opts, err := ParseFlags(args)
	if err != nil {
		return err
	}
	if !opts.SysctlsOnly {
		return runOptions(ctx, opts)
	}
	return ApplySysctls(opts, log.New(os.Stderr, "", log.LstdFlags))
}
