package app

import (
	"context"
	"os"

	"github.com/prometheus/client_golang/prometheus"
)

// node is the agent's footprint on the node: the interface holding the
// local IPs, the iptables rules, the instance lock and the socket hand-over.
// This file is a stub with no-op hooks; the NODE engineer owns it.
//
// Run calls, in order:
//  1. setupNode before opening any listener (interface, rules, lock);
//  2. (*node).Inherited to reuse sockets handed over by a running twin;
//  3. (*node).Serving once the listeners are open and answering;
//  4. (*node).Teardown on shutdown, BEFORE the lame-duck period;
//  5. (*node).Close at the very end.
type node struct{}

// setupNode prepares the node before the agent serves.
func setupNode(ctx context.Context, opts *Options, reg prometheus.Registerer) (*node, error) {
	return &node{}, nil
}

// Inherited returns listening sockets handed over by another instance
// (nil when there are none), keyed like server.Sockets.
func (n *node) Inherited() map[string]*os.File { return nil }

// Serving is called with the open listening sockets once the agent answers.
func (n *node) Serving(socks map[string]*os.File) {}

// Teardown stops intercepting (rules and addresses, unless another instance
// still runs or -skipteardown). It must return within ctx's deadline.
func (n *node) Teardown(ctx context.Context) error { return nil }

// Close releases what the node set-up holds (locks, sync loops).
func (n *node) Close() {}
