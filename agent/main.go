// Command agent is the node-local DNS cache: a drop-in replacement for
// k8s-dns-node-cache. See agent/app for what it does.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/nodelocaldns/nodelocaldns/agent/app"
)

func main() {
	if os.Getenv("GOGC") == "" {
		// Cache hits allocate nothing; misses do. A tighter GC keeps the
		// resident set small (the agent runs on every node).
		debug.SetGCPercent(25)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := app.Main(ctx, os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stdout, err)
			return
		}
		fmt.Fprintln(os.Stderr, "agent:", err)
		stop()
		os.Exit(1)
	}
}
