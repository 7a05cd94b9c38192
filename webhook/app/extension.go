package app

import (
	"context"
	"flag"

	"sigs.k8s.io/controller-runtime/pkg/manager"
)

// An Extension adds flags, validation and setup to Run from another file of
// this package (for example built-in certificate management). Such a file
// appends a constructor to extensions in an init function; NewOptions builds
// a fresh instance per Options, so several Runs in one process share no state.
type Extension interface {
	// AddFlags registers the extension's flags.
	AddFlags(fs *flag.FlagSet)
	// Validate checks the extension's flags once all flags are parsed.
	Validate(o *Options) error
	// Setup runs after the manager is created and before it starts. It may
	// append to o.TLSOpts, o.Runnables and o.ReadyChecks, or use mgr directly.
	Setup(ctx context.Context, o *Options, mgr manager.Manager) error
}

// extensions are the constructors of the registered extensions.
var extensions []func() Extension
