// Command checks runs the end-to-end checks of `make e2e` against the node
// `make e2e-up` started, and prints a summary table with figures. It runs
// inside the node's network namespace (tests/e2e/e2e.sh starts it with
// nsenter), so that it reaches the API server, the agent's metrics and the
// node's iptables rules directly; pods are driven with the real kubectl.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

// Status of a check in the summary.
const (
	Pass = "PASS"
	Fail = "FAIL"
	Skip = "SKIP"
)

// Result is one row of the summary.
type Result struct {
	Check   string
	Status  string
	Figures string
	Took    time.Duration
	Err     error
}

// check is one numbered check; run returns its figures.
type check struct {
	id   string
	name string
	run  func(ctx context.Context, e *env) (string, error)
}

func main() {
	fs := flag.NewFlagSet("checks", flag.ContinueOnError)
	envFile := fs.String("env", "bin/e2e/env", "the env file make e2e-up wrote")
	only := fs.String("only", "", "comma-separated check ids to run (default all)")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	e, err := loadEnv(*envFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "checks:", err)
		os.Exit(1)
	}
	results := run(ctx, e, selected(*only))
	printSummary(os.Stdout, results)
	for _, r := range results {
		if r.Status == Fail {
			os.Exit(1)
		}
	}
}

// all lists the checks in the order they run: those that remove the install
// (8) or replace it (7) come last.
func all() []check {
	return []check{
		{"1", "resolv.conf written by the kubelet", checkResolvConf},
		{"2", "lookups answered by the agent", checkLookups},
		{"4", "agent pod deleted / SIGKILLed", checkAgentRestart},
		{"3", "agent rolling update (maxSurge)", checkRollingUpdate},
		{"5", "webhook rollout while pods are created", checkWebhookRollout},
		{"6", "dnsperf agent vs kube-dns", checkDnsperf},
		{"8", "kubectl delete -k cleans the node", checkDelete},
		{"7", "interception mode", checkInterception},
	}
}

func selected(only string) map[string]bool {
	if only == "" {
		return nil
	}
	m := map[string]bool{}
	for id := range strings.SplitSeq(only, ",") {
		m[strings.TrimSpace(id)] = true
	}
	return m
}

func run(ctx context.Context, e *env, only map[string]bool) []Result {
	var results []Result
	for _, c := range all() {
		title := c.id + ". " + c.name
		if only != nil && !only[c.id] {
			continue
		}
		if ctx.Err() != nil {
			results = append(results, Result{Check: title, Status: Skip, Figures: "interrupted"})
			continue
		}
		fmt.Printf("=== check %s\n", title)
		start := time.Now()
		cctx, cancel := context.WithTimeout(ctx, 6*time.Minute)
		figures, err := c.run(cctx, e)
		cancel()
		r := Result{Check: title, Status: Pass, Figures: figures, Took: time.Since(start).Round(100 * time.Millisecond), Err: err}
		if err != nil {
			r.Status = Fail
			fmt.Printf("--- FAIL %s: %v\n", title, err)
		} else {
			fmt.Printf("--- PASS %s: %s\n", title, figures)
		}
		results = append(results, r)
	}
	return results
}

func printSummary(out *os.File, results []Result) {
	fmt.Fprintln(out, "\nSummary (make e2e):")
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CHECK\tSTATUS\tTIME\tFIGURES")
	for _, r := range results {
		fig := r.Figures
		if r.Err != nil {
			fig = firstLine(r.Err.Error())
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Check, r.Status, r.Took, fig)
	}
	tw.Flush()
}

func firstLine(s string) string {
	if before, _, ok := strings.Cut(s, "\n"); ok {
		return before
	}
	return s
}
