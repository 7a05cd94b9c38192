package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/nodelocaldns/nodelocaldns/tests/kubeapi"
	"github.com/nodelocaldns/nodelocaldns/tests/testenv"
)

// Node modes of Config.Node.
const (
	NodeAuto     = "auto"     // netns as root, loopback otherwise
	NodeNetns    = "netns"    // a node built from network namespaces (root)
	NodeLoopback = "loopback" // the agent on a loopback port (no root)
	NodeNone     = "none"     // no agent part
)

// Config selects what the demo runs.
type Config struct {
	// Kube runs the control plane, webhook and pod steps.
	Kube bool
	// Node is one of NodeAuto, NodeNetns, NodeLoopback, NodeNone.
	Node string
	// AfterStep, when set, is called after every step (a test seam, e.g. to
	// cancel the run half-way).
	AfterStep func(Result)
	// Out receives the demo's narration.
	Out io.Writer
}

// Status of a step in the summary.
const (
	Pass = "PASS"
	Fail = "FAIL"
	Skip = "SKIP"
)

// Result is one row of the summary.
type Result struct {
	Step   string
	Status string
	Shown  string
	Err    error
}

// Report is what a run did: the summary rows, and what it created (all of
// it removed by the time run returns).
type Report struct {
	Results []Result
	// WorkDir is the run's temporary directory.
	WorkDir string
	// Namespaces are the network namespaces the run created.
	Namespaces []string
	// PIDs are the processes the run started directly (the control plane's
	// are tests/kubeapi's).
	PIDs []int
}

// demo is one run: its temporary directory, the cleanups to run in reverse
// order, the results so far and what the steps hand each other.
type demo struct {
	cfg     Config
	ctx     context.Context
	out     io.Writer
	dir     string
	id      string
	n       int
	results []Result

	mu       sync.Mutex
	cleanups []cleanup

	// Filled by the steps.
	env       *kubeapi.Env
	cs        kubernetes.Interface
	rendered  []byte // `kustomize build manifests`
	webhook   *webhookProc
	podResolv string // resolv.conf of the injected plain pod
	podSource string // where podResolv came from
	// namespaces are the network namespaces created.
	namespaces []string
	// pids are the processes started (guarded by mu).
	pids []int
}

type cleanup struct {
	what string
	fn   func()
}

// run runs the demo and returns the summary rows; the error says which
// steps failed.
func run(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.Out == nil {
		cfg.Out = os.Stdout
	}
	switch cfg.Node {
	case "", NodeAuto:
		cfg.Node = NodeLoopback
		if os.Geteuid() == 0 {
			cfg.Node = NodeNetns
		}
	case NodeNetns, NodeLoopback, NodeNone:
	default:
		return nil, fmt.Errorf("node mode %q: want auto, netns, loopback or none", cfg.Node)
	}
	if cfg.Node == NodeNetns && os.Geteuid() != 0 {
		return nil, errors.New("node mode netns needs root (network namespaces, iptables)")
	}
	dir, err := os.MkdirTemp("", "nldemo-")
	if err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	d := &demo{cfg: cfg, ctx: ctx, out: cfg.Out, dir: dir, id: filepath.Base(dir)[len("nldemo-"):]}
	if len(d.id) > 6 {
		d.id = d.id[len(d.id)-6:]
	}
	d.onCleanup("remove "+dir, func() { _ = os.RemoveAll(dir) })
	defer d.cleanup()

	began := time.Now()
	d.printf("nodelocaldns demo (work directory %s)\n", dir)
	if cfg.Kube {
		ok := d.step("Control plane: etcd + kube-apiserver on 127.0.0.1", true, d.stepControlPlane)
		ok = d.step("Webhook: kube-dns Service, bin/webhook on 127.0.0.1, the project's MutatingWebhookConfiguration", ok, d.stepWebhook)
		ok = d.step("Pods: labelled namespace, plain / opted-out / hostNetwork pods, their resolv.conf", ok, d.stepPods)
		d.step("Webhook down: a new pod is created unchanged (failurePolicy Ignore)", ok, d.stepWebhookDown)
	}
	switch cfg.Node {
	case NodeNetns:
		d.netnsSteps()
	case NodeLoopback:
		d.loopbackSteps()
	}
	d.summary(time.Since(began))
	rep := &Report{Results: d.results, WorkDir: dir, Namespaces: d.namespaces, PIDs: d.pids}
	var failed []string
	for _, r := range d.results {
		if r.Status == Fail {
			failed = append(failed, r.Step)
		}
	}
	if ctx.Err() != nil {
		return rep, fmt.Errorf("interrupted: %w", ctx.Err())
	}
	if len(failed) > 0 {
		return rep, fmt.Errorf("%d step(s) failed: %s", len(failed), strings.Join(failed, "; "))
	}
	return rep, nil
}

// stepFunc runs one step and returns a one-line account of what it showed.
type stepFunc func(ctx context.Context) (string, error)

// step runs fn under a numbered heading when ready is true (else records a
// skip) and returns whether it passed.
func (d *demo) step(title string, ready bool, fn stepFunc) bool {
	d.n++
	name := fmt.Sprintf("%d. %s", d.n, title)
	d.printf("\n\033[1m=== Step %s\033[0m\n", name)
	if d.ctx.Err() != nil {
		d.printf("skipped: interrupted\n")
		d.results = append(d.results, Result{Step: name, Status: Skip, Shown: "interrupted"})
		return false
	}
	if !ready {
		d.printf("skipped: an earlier step it needs failed\n")
		d.results = append(d.results, Result{Step: name, Status: Skip, Shown: "needs an earlier step"})
		return false
	}
	began := time.Now()
	shown, err := fn(d.ctx)
	r := Result{Step: name, Status: Pass, Shown: shown, Err: err}
	if err != nil {
		r.Status = Fail
		d.printf("FAILED: %v\n", err)
	}
	d.printf("(%s in %v)\n", r.Status, time.Since(began).Round(time.Millisecond))
	d.results = append(d.results, r)
	if d.cfg.AfterStep != nil {
		d.cfg.AfterStep(r)
	}
	return err == nil
}

// skip records a step that does not apply to this run.
func (d *demo) skip(title, why string) {
	d.n++
	name := fmt.Sprintf("%d. %s", d.n, title)
	d.printf("\n\033[1m=== Step %s\033[0m\nskipped: %s\n", name, why)
	d.results = append(d.results, Result{Step: name, Status: Skip, Shown: why})
}

// summary prints the table of steps.
func (d *demo) summary(took time.Duration) {
	d.printf("\n\033[1m=== Summary (%v)\033[0m\n", took.Round(100*time.Millisecond))
	tw := tabwriter.NewWriter(d.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STEP\tRESULT\tWHAT WAS SHOWN")
	for _, r := range d.results {
		shown := r.Shown
		if r.Err != nil {
			shown = firstLine(r.Err.Error())
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Step, r.Status, shown)
	}
	_ = tw.Flush()
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 160 {
		s = s[:160] + "..."
	}
	return s
}

// onCleanup registers fn to run at the end (last registered runs first).
func (d *demo) onCleanup(what string, fn func()) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.cleanups = append(d.cleanups, cleanup{what, fn})
}

// cleanup runs the registered cleanups in reverse order, once.
func (d *demo) cleanup() {
	d.mu.Lock()
	cs := d.cleanups
	d.cleanups = nil
	d.mu.Unlock()
	if len(cs) == 0 {
		return
	}
	d.printf("\n\033[1m=== Cleanup\033[0m\n")
	for _, c := range slices.Backward(cs) {
		d.printf("- %s\n", c.what)
		c.fn()
	}
}

func (d *demo) printf(format string, args ...any) {
	fmt.Fprintf(d.out, format, args...)
}

// show prints a command the way a user would type it (none when cmd is
// empty), and its output.
func (d *demo) show(cmd string, output string) {
	if cmd != "" {
		d.printf("$ %s\n", cmd)
	}
	output = strings.TrimRight(output, "\n")
	if output == "" {
		return
	}
	for l := range strings.SplitSeq(output, "\n") {
		d.printf("    %s\n", l)
	}
}

// exec runs a command, prints it with its output and returns the output.
func (d *demo) exec(ctx context.Context, args ...string) (string, error) {
	out, err := runCmd(ctx, args...)
	d.show(shellJoin(args), out)
	return out, err
}

// shellJoin joins a command line for display, quoting empty arguments and
// arguments with spaces.
func shellJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\"'") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		q[i] = a
	}
	return strings.Join(q, " ")
}

// binary finds a tool: $envVar, bin/<name> of the repository, $PATH.
func binary(name, envVar string) (string, error) {
	p, err := testenv.LookBinary(name, envVar)
	if err != nil {
		return "", fmt.Errorf("%s not found (env %s, bin/, $PATH): run `make tools build` and tests/install-deps.sh", name, envVar)
	}
	return p, nil
}
