// Command webhookload measures the real webhook server under load: it starts
// the control plane of tests/kubeapi, runs the webhook on 127.0.0.1 with a
// test certificate, and sends AdmissionReviews over HTTPS
// keep-alive connections from a few concurrent workers, for a bounded count
// and time. It prints admissions/s and latency quantiles against the targets
// (>= 2,000 admissions/s, p99 < 5 ms).
//
//	go run ./tests/bench/webhookload [-requests 20000] [-duration 30s] [-workers 2] [-webhook auto|inprocess|PATH]
//
// By default the webhook is bin/webhook (as built by `make build`) in its own
// process, so that its CPU time per admission is measured apart from the load
// generator's; without bin/webhook it runs in-process.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodelocaldns/nodelocaldns/tests/kubeapi"
	"github.com/nodelocaldns/nodelocaldns/tests/testenv"
	"github.com/nodelocaldns/nodelocaldns/tests/webhook"
	"github.com/nodelocaldns/nodelocaldns/webhook/inject"
)

// Targets from the webhook issue.
const (
	targetRate = 2000.0
	targetP99  = 5 * time.Millisecond
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "webhookload:", err)
		os.Exit(1)
	}
}

// options are the command-line flags.
type options struct {
	requests int
	warmup   int
	duration time.Duration
	workers  int
	strict   bool
	profile  string
	webhook  string
}

func parseFlags(args []string) (*options, error) {
	fs := flag.NewFlagSet("webhookload", flag.ContinueOnError)
	o := &options{}
	fs.IntVar(&o.requests, "requests", 20000, "admissions to send in the measured run")
	fs.IntVar(&o.warmup, "warmup", 1000, "admissions sent first and not measured")
	fs.DurationVar(&o.duration, "duration", 30*time.Second, "upper bound on the measured run")
	fs.IntVar(&o.workers, "workers", 2, "concurrent workers, each on its own keep-alive connection (2 = one per core here)")
	fs.BoolVar(&o.strict, "strict", false, "exit non-zero when a target is missed")
	fs.StringVar(&o.webhook, "webhook", "auto", "webhook under test: \"inprocess\" (app.Run in this process), a path to the webhook binary (its own process), or \"auto\" (bin/webhook if built, else inprocess)")
	fs.StringVar(&o.profile, "cpuprofile", "", "write a CPU profile of the measured run (client and in-process webhook) to this file")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	switch {
	case fs.NArg() > 0:
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	case o.requests < 1 || o.requests > 1_000_000:
		return nil, fmt.Errorf("-requests %d: want 1..1000000", o.requests)
	case o.warmup < 0 || o.warmup > 100_000:
		return nil, fmt.Errorf("-warmup %d: want 0..100000", o.warmup)
	case o.duration <= 0 || o.duration > 10*time.Minute:
		return nil, fmt.Errorf("-duration %v: want (0, 10m]", o.duration)
	case o.workers < 1 || o.workers > 64:
		return nil, fmt.Errorf("-workers %d: want 1..64", o.workers)
	}
	return o, nil
}

func run(ctx context.Context, args []string, out io.Writer) error {
	o, err := parseFlags(args)
	if err != nil {
		return err
	}
	fmt.Fprintln(out, "webhookload: starting etcd + kube-apiserver on loopback")
	env, err := kubeapi.Start(ctx, kubeapi.Options{})
	if err != nil {
		return err
	}
	defer env.Stop()
	const namespace = "load"
	if err := prepareCluster(ctx, env, namespace); err != nil {
		return err
	}
	bin := webhookBinary(o.webhook)
	srv, err := webhook.StartServer(ctx, webhook.ServerOptions{Kubeconfig: env.KubeconfigPath, Binary: bin})
	if err != nil {
		return err
	}
	defer func() { _ = srv.Stop() }()
	mode := "in-process (app.Run)"
	if bin != "" {
		mode = "process " + bin
	}
	fmt.Fprintf(out, "webhookload: webhook %s at %s; %d workers, %d warm-up + %d admissions (at most %v)\n",
		mode, srv.URL, o.workers, o.warmup, o.requests, o.duration)

	client := srv.Client(o.workers)
	cfg := loadConfig{URL: srv.URL, Client: client, Workers: o.workers, Namespace: namespace, Duration: o.duration}
	if o.warmup > 0 {
		cfg.Requests = o.warmup
		res, err := runLoad(ctx, cfg)
		if err != nil {
			return err
		}
		if res.Errors > 0 {
			return fmt.Errorf("warm-up: %d errors, first: %w", res.Errors, res.FirstErr)
		}
	}
	cfg.Requests = o.requests
	if o.profile != "" {
		f, err := os.Create(o.profile)
		if err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
	}
	serverCPU0, cpuErr := srv.CPUTime()
	res, err := runLoad(ctx, cfg)
	if o.profile != "" {
		pprof.StopCPUProfile()
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "webhookload: %s\n", res)
	who := "load generator"
	if bin == "" {
		who = "load generator and in-process webhook together"
	}
	fmt.Fprintf(out, "webhookload: %s CPU %v per admission\n", who, res.CPUPerAdmission().Round(time.Microsecond))
	if serverCPU1, err := srv.CPUTime(); cpuErr == nil && err == nil && res.Sent > 0 {
		per := (serverCPU1 - serverCPU0) / time.Duration(res.Sent)
		if per > 0 {
			fmt.Fprintf(out, "webhookload: webhook process CPU %v per admission: about %.0f admissions/s per fully used core\n",
				per.Round(time.Microsecond), float64(time.Second)/float64(per))
		}
	}
	fmt.Fprintf(out, "webhookload: load average during the run %s\n", loadAverage())
	if res.Errors > 0 {
		return fmt.Errorf("%d of %d admissions failed, first: %w", res.Errors, res.Sent, res.FirstErr)
	}
	verdict := verdict(res)
	fmt.Fprintf(out, "webhookload: target >= %.0f admissions/s and p99 < %v: %s\n", targetRate, targetP99, verdict)
	if o.strict && verdict != "met" {
		return fmt.Errorf("target missed")
	}
	return nil
}

// webhookBinary resolves the -webhook flag to a binary path ("" = in-process).
func webhookBinary(flagValue string) string {
	switch flagValue {
	case "inprocess":
		return ""
	case "auto":
		p := filepath.Join(testenv.RepoRoot(), "bin", "webhook")
		if _, err := os.Stat(p); err == nil {
			return p
		}
		return ""
	default:
		return flagValue
	}
}

// loadAverage returns the 1-minute load average, to judge how much of the
// machine the run had.
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	if f := strings.Fields(string(data)); len(f) > 0 {
		return f[0] + " (1 min)"
	}
	return "unknown"
}

// verdict compares a result with the targets.
func verdict(r result) string {
	var missed []string
	if r.Rate() < targetRate {
		missed = append(missed, fmt.Sprintf("rate %.0f/s", r.Rate()))
	}
	if p99 := r.Quantile(0.99); p99 >= targetP99 {
		missed = append(missed, fmt.Sprintf("p99 %v", p99.Round(time.Microsecond)))
	}
	if len(missed) == 0 {
		return "met"
	}
	return fmt.Sprintf("MISSED (%v)", missed)
}

// prepareCluster creates the kube-dns Service and a labelled namespace.
func prepareCluster(ctx context.Context, env *kubeapi.Env, namespace string) error {
	cs, err := env.Clientset()
	if err != nil {
		return err
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-dns", Namespace: "kube-system"},
		Spec: corev1.ServiceSpec{
			ClusterIP: "10.96.0.10",
			Ports:     []corev1.ServicePort{{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}},
		},
	}
	if _, err := cs.CoreV1().Services("kube-system").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create kube-dns Service: %w", err)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name:   namespace,
		Labels: map[string]string{inject.SelectorLabel: inject.EnabledValue},
	}}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create namespace: %w", err)
	}
	return nil
}
