// Command webhook is the nodelocaldns mutating admission webhook: it gives
// pods in labelled namespaces the node-local DNS cache as first nameserver.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/nodelocaldns/nodelocaldns/webhook/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	run := func() error { return app.Run(ctx, os.Args[1:]) }
	if len(os.Args) > 1 && os.Args[1] == app.StatusCommand {
		run = func() error { return app.RunStatus(ctx, os.Args[2:], os.Stdout, os.Stderr) }
	}
	if err := run(); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintf(os.Stderr, "webhook: %v\n", err)
		stop()
		os.Exit(1)
	}
}
