package app

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/nodelocaldns/nodelocaldns/webhook/inject"
	"github.com/nodelocaldns/nodelocaldns/webhook/status"
)

// StatusCommand is the subcommand name of RunStatus (webhook status ...).
const StatusCommand = "status"

// RunStatus is `webhook status`: it lists the live pods that the webhook
// configuration selects and would inject but that still use kube-dns, with
// the credentials of --kubeconfig (it needs to list namespaces and pods and
// read the MutatingWebhookConfiguration). args exclude the subcommand.
func RunStatus(ctx context.Context, args []string, out, errOut io.Writer) error {
	fs := flag.NewFlagSet("webhook status", flag.ContinueOnError)
	fs.SetOutput(errOut)
	kubeconfig := fs.String("kubeconfig", "", "Path to a kubeconfig. Empty: $KUBECONFIG, ~/.kube/config, then the in-cluster configuration.")
	configName := fs.String("webhook-config-name", "node-local-dns-webhook", "MutatingWebhookConfiguration whose selectors say which namespaces and pods the webhook sees.")
	defaults := NewOptions()
	hostNet := fs.Bool("inject-host-network", defaults.InjectHostNetwork, "As the webhook's flag.")
	nodeLabels := fs.String("no-agent-node-labels", defaults.NoAgentNodeLabels, "As the webhook's flag.")
	tolerations := fs.String("no-agent-tolerations", defaults.NoAgentTolerations, "As the webhook's flag.")
	fs.Usage = func() {
		fmt.Fprintf(errOut, "Usage: webhook status [flags]\n\nLists running pods that the webhook would inject but that still use kube-dns.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("status: unexpected arguments: %q", fs.Args())
	}
	labels, err := inject.ParseNodeLabels(*nodeLabels)
	if err != nil {
		return fmt.Errorf("--no-agent-node-labels: %w", err)
	}
	tols, err := inject.ParseTolerationKeys(*tolerations)
	if err != nil {
		return fmt.Errorf("--no-agent-tolerations: %w", err)
	}
	restCfg, err := restConfig(*kubeconfig)
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	r, err := status.Check(ctx, cs, status.Options{
		WebhookConfigName: strings.TrimSpace(*configName),
		InjectHostNetwork: *hostNet,
		NoAgent:           inject.NoAgentNodes{Labels: labels, TolerationKeys: tols},
	})
	if err != nil {
		return err
	}
	return r.Write(out, time.Now())
}
