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
	if err := app.Run(ctx, os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintf(os.Stderr, "webhook: %v\n", err)
		stop()
		os.Exit(1)
	}
}
