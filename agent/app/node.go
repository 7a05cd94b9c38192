package app

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nodelocaldns/nodelocaldns/agent/clog"
	"github.com/nodelocaldns/nodelocaldns/agent/instance"
	"github.com/nodelocaldns/nodelocaldns/agent/iptables"
	"github.com/nodelocaldns/nodelocaldns/agent/netif"
	"github.com/nodelocaldns/nodelocaldns/agent/sysctl"
)

// Bounds of the node set-up: no step waits longer than these.
const (
	// xtablesWait is the `--wait` of every iptables command.
	xtablesWait = 5 // seconds
	// detectTimeout bounds each iptables-save run of the backend detection.
	detectTimeout = 5 * time.Second
	// handoverTimeout bounds asking a running instance for its sockets.
	handoverTimeout = 3 * time.Second
	// setupLockTimeout bounds the wait for the node lock at start.
	setupLockTimeout = 20 * time.Second
	// syncLockTimeout bounds the wait for the node lock in one sync.
	syncLockTimeout = 10 * time.Second
	// closeTimeout bounds the teardown run by Close after a failed start.
	closeTimeout = 10 * time.Second
)

// node is the agent's footprint on the node: the interface holding the
// local IPs, the iptables rules, the instance lock and the socket hand-over.
//
// Run calls, in order:
//  1. setupNode before opening any listener (instance registration, socket
//     hand-over from a running twin, interface, rules);
//  2. (*node).Inherited to reuse sockets handed over by a running twin;
//  3. (*node).Serving once the listeners are open and answering;
//  4. (*node).Teardown on shutdown, BEFORE the lame-duck period;
//  5. (*node).Close at the very end.
type node struct {
	opts   *Options
	logger clog.Logger // "node: [LEVEL] ..."
	ips    []net.IP
	errs   *prometheus.CounterVec
	reg    *instance.Registry
	rules  *iptables.Manager // nil with -setupiptables=false

	inherited map[string]*os.File

	// sysctls keeps -icmp-ratelimit; nil with the default -1.
	sysctls *sysctl.Ensurer
	// sysctlLogged is set once a sysctl failure was logged: a read-only
	// /proc/sys fails every sync, and is logged once but counted each time.
	sysctlLogged bool

	stopSync context.CancelFunc
	syncDone chan struct{}

	mu      sync.Mutex
	serving bool
	left    bool
}

// setupNode prepares the node before the agent serves: it registers this
// instance in the run directory, fetches the listening sockets of a running
// twin, and (under the node lock) ensures the interface and the rules, at
// once rather than after a first sync interval. Then a sync loop re-ensures
// both every -syncinterval.
func setupNode(ctx context.Context, opts *Options, reg prometheus.Registerer) (*node, error) {
	errs, err := iptables.NewSetupErrors(reg)
	if err != nil {
		return nil, fmt.Errorf("register setup metrics: %w", err)
	}
	n := &node{opts: opts, errs: errs, logger: clog.New(log.New(os.Stderr, "", log.LstdFlags), "node: ")}
	if opts.ICMPRateLimit != ICMPRateLimitKeep {
		if n.sysctls, err = sysctl.NewICMPRateLimit(sysctlRoot, opts.ICMPRateLimit); err != nil {
			return nil, err
		}
	}
	// The sysctls first: they need no lock (every instance writes the same
	// values) and must hold before the agent serves, so that a kill at any
	// later moment meets a node that answers ICMP at once.
	n.ensureSysctls(true)
	for _, ip := range opts.LocalIPs {
		n.ips = append(n.ips, net.IP(ip.AsSlice()))
	}
	if opts.SetupIPTables {
		v4, v6, chosen, err := iptables.NewRunners(opts.IPTablesBackend, xtablesWait, iptables.ExecSave(detectTimeout))
		if err != nil {
			return nil, err
		}
		n.logger.Infof("iptables backend %s (-iptables-backend=%s)", chosen, opts.IPTablesBackend)
		if err := checkNetRaw(chosen, opts.IPTablesBackend, hasCapability, n.logger.Infof); err != nil {
			return nil, err
		}
		n.rules, err = iptables.New(iptables.Config{
			IPs: n.ips, DNSPort: opts.DNSPort, HealthPort: opts.HealthPort, V4: v4, V6: v6, Errors: errs,
		})
		if err != nil {
			return nil, err
		}
	}
	if n.reg, err = instance.Register(opts.RunDir); err != nil {
		return nil, err
	}
	hctx, cancel := context.WithTimeout(ctx, handoverTimeout)
	socks, from, err := n.reg.FetchSockets(hctx)
	cancel()
	switch {
	case err != nil:
		n.logger.Infof("no socket hand-over, opening new sockets: %v", err)
	case from != "":
		n.logger.Infof("took over %d listening sockets from instance %s", len(socks), from)
	}
	n.inherited = socks

	lctx, cancel := context.WithTimeout(ctx, setupLockTimeout)
	err = n.reg.WithNodeLock(lctx, func() error { return n.ensure(true) })
	cancel()
	if err != nil {
		n.reg.Close()
		n.closeInherited(nil)
		return nil, err
	}
	n.logger.Infof("instance %s set up the node (%s mode, local IPs %v)", n.reg.ID(), opts.Mode, opts.LocalIPStrings())
	sctx, stop := context.WithCancel(context.Background())
	n.stopSync, n.syncDone = stop, make(chan struct{})
	go n.syncLoop(sctx)
	return n, nil
}

// Inherited returns listening sockets handed over by another instance
// (nil when there are none), keyed like server.Sockets.
func (n *node) Inherited() map[string]*os.File { return n.inherited }

// alone reports whether no other instance is known to run on the node (one
// would share the listening sockets after a hand-over).
func (n *node) alone() bool {
	others, err := n.reg.Others()
	return err == nil && len(others) == 0
}

// Serving is called once the agent answers, with live: the function that
// returns the listening sockets open at the moment it is called and a done
// function; the sockets stay open until done is called (see
// instance.ServeHandover). From now on this instance hands the live set to
// any new instance that asks, so a reload that opened or closed listen
// addresses is reflected in later hand-overs. Handed-over sockets the server
// did not take are closed.
func (n *node) Serving(live func() (map[string]*os.File, func())) {
	socks, done := live()
	n.closeInherited(socks)
	done()
	n.mu.Lock()
	n.serving = true
	n.mu.Unlock()
	if err := n.reg.ServeHandover(live); err != nil {
		n.logger.Warningf("no socket hand-over for later instances: %v", err)
	}
}

// Teardown stops intercepting: unless another instance still runs or
// -skipteardown is set, the rules go first (so that, in interception mode,
// kube-proxy's DNAT to kube-dns applies again), then the interface and its
// addresses. It returns within ctx's deadline.
func (n *node) Teardown(ctx context.Context) error {
	return n.leave(ctx, "SIGTERM")
}

// Close releases what the node set-up holds. After a start that failed
// before serving, it also undoes the set-up (same rules as Teardown), so a
// failed start never leaves the node's DNS pointing at nothing.
func (n *node) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	if err := n.leave(ctx, "exit"); err != nil {
		n.logger.Errorf("%v", err)
	}
	n.closeInherited(nil)
}

func (n *node) leave(ctx context.Context, why string) error {
	n.mu.Lock()
	if n.left {
		n.mu.Unlock()
		return nil
	}
	n.left = true
	n.mu.Unlock()
	n.stopSyncLoop(ctx)
	last, err := n.reg.Leave(ctx, func() error {
		if n.opts.SkipTeardown {
			return nil
		}
		return n.teardown()
	})
	switch {
	case err != nil:
		return fmt.Errorf("teardown on %s: %w", why, err)
	case !last:
		n.logger.Infof("%s: another instance is running, leaving rules and addresses in place", why)
	case n.opts.SkipTeardown:
		n.logger.Infof("%s: last instance, -skipteardown: leaving rules and addresses in place", why)
	default:
		n.logger.Infof("%s: last instance, removed rules and interface %s", why, n.opts.InterfaceName)
	}
	return nil
}

// ensure brings the interface and the rules to the wanted state. At start
// (first) an interface that cannot be set up is fatal; in the sync loop
// every failure is counted and retried at the next sync. Addresses and rules
// of other configurations are pruned only while no other instance lives: a
// twin being upgraded may run with another -localip, and the two must not
// delete each other's set every sync. It runs under the node lock.
func (n *node) ensure(first bool) error {
	var errs []error
	others, err := n.reg.Others()
	if err != nil {
		errs = append(errs, err)
	}
	prune := err == nil && len(others) == 0
	if !first {
		n.ensureSysctls(false)
	}
	if n.opts.SetupInterface {
		res, err := netif.Ensure(n.opts.InterfaceName, n.ips, prune)
		switch {
		case err != nil:
			n.errs.WithLabelValues("interfaceadd").Inc()
			if first {
				return fmt.Errorf("set up interface %s: %w", n.opts.InterfaceName, err)
			}
			errs = append(errs, err)
		case res.Fallback:
			n.logger.Infof("interface %s: the kernel has no dummy link type, created a bridge without ports instead", n.opts.InterfaceName)
		case res.Created:
			n.logger.Infof("interface %s (%s) created", n.opts.InterfaceName, res.Kind)
		case first:
			n.logger.Infof("interface %s (%s) adopted", n.opts.InterfaceName, res.Kind)
		}
		if err == nil && len(res.Added) > 0 && !res.Created {
			n.logger.Infof("interface %s: added back %v", n.opts.InterfaceName, res.Added)
		}
		if err == nil && len(res.Removed) > 0 {
			n.logger.Infof("interface %s: removed addresses no longer configured %v", n.opts.InterfaceName, res.Removed)
		}
	}
	if n.rules != nil {
		ch, err := n.rules.Ensure(prune)
		switch {
		case err != nil && first:
			// Counted already; the sync loop retries. Serving without the
			// rules still works where the filter policy accepts.
			n.logger.Errorf("iptables at start (retried every %s): %v", n.opts.SyncInterval, err)
		case err != nil:
			errs = append(errs, err)
		}
		if ch.Inserted > 0 || ch.Deleted > 0 || first {
			n.logger.Infof("iptables: %d rules in place, %d inserted, %d duplicate or stale deleted", len(n.rules.Rules()), ch.Inserted, ch.Deleted)
		}
	}
	return errors.Join(errs...)
}

// ensureSysctls applies -icmp-ratelimit (nothing with the default -1). A
// failure (a read-only /proc/sys in a container without privileges) is
// counted as errortype "sysctl" every time and logged once; it is never
// fatal: the agent serves as well, only the fallback after a kill is slower.
// In the sync loop a value someone changed back is set again and logged.
func (n *node) ensureSysctls(first bool) {
	if n.sysctls == nil {
		return
	}
	res, err := n.sysctls.Ensure()
	if err != nil {
		n.errs.WithLabelValues("sysctl").Inc()
		if !n.sysctlLogged {
			n.sysctlLogged = true
			n.logger.Warningf("-icmp-ratelimit=%d not applied (fallback to kube-dns after a kill will be slow; set it from a privileged init container with -sysctls-only): %v", n.opts.ICMPRateLimit, err)
		}
	}
	switch {
	case len(res.Changed) > 0 && first:
		n.logger.Infof("sysctl: %v", res.Changed)
	case len(res.Changed) > 0:
		n.logger.Infof("sysctl: set again after a change by someone else: %v", res.Changed)
	case first && err == nil:
		n.logger.Infof("sysctl: ICMP rate limits already %d ms", n.opts.ICMPRateLimit)
	}
}

// teardown removes the rules, then the interface.
func (n *node) teardown() error {
	var errs []error
	if n.rules != nil {
		if _, err := n.rules.Remove(); err != nil {
			errs = append(errs, err)
		}
	}
	if n.opts.SetupInterface {
		if err := netif.Remove(n.opts.InterfaceName); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// syncLoop re-ensures interface and rules every -syncinterval.
func (n *node) syncLoop(ctx context.Context) {
	defer close(n.syncDone)
	t := time.NewTicker(n.opts.SyncInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		lctx, cancel := context.WithTimeout(ctx, min(syncLockTimeout, n.opts.SyncInterval))
		err := n.reg.WithNodeLock(lctx, func() error { return n.ensure(false) })
		cancel()
		if err != nil && ctx.Err() == nil {
			n.logger.Errorf("sync: %v", err)
		}
	}
}

func (n *node) stopSyncLoop(ctx context.Context) {
	if n.stopSync == nil {
		return
	}
	n.stopSync()
	select {
	case <-n.syncDone:
	case <-ctx.Done():
	}
}

// closeInherited closes handed-over sockets that are not in keep (those
// belong to the server now) and forgets all of them.
func (n *node) closeInherited(keep map[string]*os.File) {
	for k, f := range n.inherited {
		if keep[k] != f {
			f.Close()
		}
	}
	n.inherited = nil
}
