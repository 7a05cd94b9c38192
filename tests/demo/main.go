// Command demo is `make demo`: a local end-to-end run of nodelocaldns. It
// starts a real etcd + kube-apiserver, the webhook and the project's
// MutatingWebhookConfiguration, creates pods and shows their DNS settings;
// as root it then builds a node out of network namespaces, runs the agent
// there, resolves from a pod, kills the agent to show the fallback to
// kube-dns, restarts it and tears it down. Without root the agent runs on a
// loopback port instead. Everything it starts or creates is removed at the
// end, also on Ctrl-C.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	node := fs.String("node", NodeAuto, "agent part: auto (netns as root, else loopback), netns, loopback or none")
	kube := fs.Bool("kube", true, "run the control plane, webhook and pod steps")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	_, err := run(ctx, Config{Kube: *kube, Node: *node, Out: os.Stdout})
	if err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		stop()
		os.Exit(1)
	}
}
