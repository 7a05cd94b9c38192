package app

import (
	"context"
	"io"
	"log"
	"os"
)

// Main is the agent's entry point for its main package. It parses the
// flags once: -version and -plugins print and return; with -sysctls-only it
// applies the sysctls and returns (nil on success, so the init container
// exits 0); otherwise it runs the agent as Run does.
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
	return runOptions(ctx, opts)
}
