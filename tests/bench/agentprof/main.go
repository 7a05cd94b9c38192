// Command agentprof runs the agent (agent/app.Run) in-process with a CPU
// profile, for profiling it under the load of tests/bench/agent.sh:
//
//	agentprof -cpuprofile cpu.prof [-memprofile mem.prof] -for 20s -- <agent flags>
//
// The profile covers the whole run; the agent stops after -for or on
// SIGINT/SIGTERM.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/nodelocaldns/nodelocaldns/agent/app"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "agentprof:", err)
		os.Exit(1)
	}
}

func run() error {
	fs := flag.NewFlagSet("agentprof", flag.ContinueOnError)
	prof := fs.String("cpuprofile", "cpu.prof", "write the CPU profile here")
	d := fs.Duration("for", 30*time.Second, "stop the agent after this long")
	memProf := fs.String("memprofile", "", "also write an allocation profile (every allocation) here")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return err
	}
	if *memProf != "" {
		runtime.MemProfileRate = 512
		defer writeHeap(*memProf)
	}
	f, err := os.Create(*prof)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := pprof.StartCPUProfile(f); err != nil {
		return err
	}
	defer pprof.StopCPUProfile()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *d)
	defer cancel()
	return app.Run(ctx, fs.Args())
}

// writeHeap writes the allocation profile; its alloc_space sample shows
// what the run allocated.
func writeHeap(path string) {
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "agentprof:", err)
		return
	}
	defer f.Close()
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		fmt.Fprintln(os.Stderr, "agentprof:", err)
	}
}
