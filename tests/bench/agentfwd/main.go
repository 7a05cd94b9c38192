// Command agentfwd measures agent/forward alone against a real upstream
// (e.g. the NSD started by tests/bench/agent.sh): unique names from many
// concurrent callers, so every query is an upstream query. It separates the
// forwarder's miss throughput from the rest of the agent.
//
//	go run ./tests/bench/agentfwd -addr 127.0.0.1:53 -zone miss.default.svc.cluster.local -tcp -n 200000 -c 500
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/miekg/dns"

	"github.com/nodelocaldns/nodelocaldns/agent/corefile"
	"github.com/nodelocaldns/nodelocaldns/agent/forward"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "agentfwd:", err)
		os.Exit(1)
	}
}

func run() error {
	addr := flag.String("addr", "", "upstream IP:port (required; loopback only)")
	zone := flag.String("zone", "miss.default.svc.cluster.local", "zone whose wildcard answers the unique names")
	tcp := flag.Bool("tcp", true, "force_tcp (pipelined TCP), else UDP")
	n := flag.Int("n", 100000, "queries in all")
	c := flag.Int("c", 500, "concurrent callers")
	d := flag.Duration("d", 20*time.Second, "stop after this long at the latest")
	prof := flag.String("cpuprofile", "", "write a CPU profile here")
	flag.Parse()
	if *prof != "" {
		pf, err := os.Create(*prof)
		if err != nil {
			return err
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if *addr == "" {
		return fmt.Errorf("-addr is required")
	}
	f, err := forward.New(corefile.Forward{From: ".", To: []string{*addr}, ForceTCP: *tcp, MaxFails: 2}, forward.Options{})
	if err != nil {
		return err
	}
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), *d)
	defer cancel()
	var next, ok, failed atomic.Int64
	var wg sync.WaitGroup
	cpu0 := cpuTime()
	start := time.Now()
	for range *c {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := next.Add(1)
				if i > int64(*n) {
					return
				}
				m := new(dns.Msg)
				m.SetQuestion("f"+strconv.FormatInt(i, 10)+"-"+strconv.FormatInt(start.UnixNano(), 36)+"."+dns.Fqdn(*zone), dns.TypeA)
				if _, err := f.Exchange(ctx, m); err != nil {
					failed.Add(1)
					continue
				}
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	cpu := cpuTime() - cpu0
	answered := float64(max(ok.Load(), 1))
	fmt.Printf("forward to %s (tcp=%v): %d answers, %d failures in %v: %.0f QPS, %.1f us CPU per query (this process, callers included)\n",
		*addr, *tcp, ok.Load(), failed.Load(), el.Round(time.Millisecond), float64(ok.Load())/el.Seconds(),
		cpu.Seconds()*1e6/answered)
	return nil
}

// cpuTime returns the user+system CPU time of this process.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
