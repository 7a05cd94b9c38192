// Package app is the agent's program: Run parses the node-cache compatible
// flags, renders and parses the Corefile, sets the node up, serves DNS,
// health and metrics, applies configuration changes without dropping
// queries, and shuts down in order on cancellation.
package app

import (
	"context"
	"errors"
	"fmt"
	"log"
	"maps"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/nodelocaldns/nodelocaldns/agent/cache"
	"github.com/nodelocaldns/nodelocaldns/agent/clog"
	"github.com/nodelocaldns/nodelocaldns/agent/corefile"
	"github.com/nodelocaldns/nodelocaldns/agent/forward"
	"github.com/nodelocaldns/nodelocaldns/agent/health"
	"github.com/nodelocaldns/nodelocaldns/agent/loop"
	"github.com/nodelocaldns/nodelocaldns/agent/pillar"
	"github.com/nodelocaldns/nodelocaldns/agent/server"
)

// Shutdown bounds: every step of the shutdown ends within these.
const (
	teardownTimeout = 10 * time.Second
	drainTimeout    = 5 * time.Second
)

// retiredGrace is how long a configuration that is replaced (or refused)
// keeps its forwarders and caches open after it leaves the server, so that
// queries in flight that still use them can finish.
const retiredGrace = 10 * time.Second

// Run runs the agent with the command-line args (without the program
// name) until ctx is done, then shuts down: node teardown first, then the
// lame-duck period (still answering), then the listeners close.
func Run(ctx context.Context, args []string) error {
	opts, err := ParseFlags(args)
	if err != nil {
		return err
	}
	return runOptions(ctx, opts)
}

// runOptions is Run with the flags already parsed.
func runOptions(ctx context.Context, opts *Options) error {
	logger := log.New(os.Stderr, "", log.LstdFlags)
	a := &agent{opts: opts, logger: logger, log: clog.New(logger, ""), reg: prometheus.NewRegistry()}
	a.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return a.run(ctx)
}

// agent is one running agent.
type agent struct {
	opts   *Options
	logger *log.Logger // also the query log's and errors plugin's
	log    clog.Logger // the agent's own lines, on logger
	reg    *prometheus.Registry

	srv          *server.Server
	mem          memoryPlan
	cacheMetrics *cache.Metrics
	loopMetrics  *loop.Metrics
	appMetrics   *appMetrics
	ready        atomic.Bool

	mu      sync.Mutex // serializes apply and guards current
	current *generation
	// socks are the open listening sockets. They change only under mu and
	// sockMu's write lock; a socket hand-over reads them under sockMu's
	// read lock, so none is closed while it is being sent.
	socks  server.Sockets
	sockMu sync.RWMutex
}

// generation is what one configuration built: its blocks and the
// forwarders and caches they own.
type generation struct {
	cfg        *corefile.Config
	text       string
	blocks     []*server.Block
	forwarders []*forward.Forwarder
	caches     []*cache.Cache
	// probes are the loop detection of the blocks with the loop plugin.
	probes []*loop.Probe
	// closers stop the plugins' background work (file reloads).
	closers []func()
}

func (a *agent) run(ctx context.Context) error {
	a.planMemory()
	popts := a.opts.PillarOptions()
	popts.OnChange = a.reload
	popts.OnError = func(err error) {
		a.log.Errorf("%v", err)
		var cerr *corefile.Error
		if errors.As(err, &cerr) && a.appMetrics != nil {
			a.appMetrics.reloadFailed.Inc() // a new Corefile refused
		}
	}
	if a.opts.ReloadWithSignal {
		// node-cache's -reloadwithsignal: changes are applied without the
		// reload plugin, checked every -syncinterval.
		popts.PollInterval = a.opts.SyncInterval
	}
	w, err := pillar.NewWatcher(popts)
	if err != nil {
		return err
	}
	cfg, text := w.Config()
	if len(cfg.Servers) == 0 {
		return fmt.Errorf("corefile %s: no server blocks", a.opts.Corefile)
	}
	if a.cacheMetrics, err = cache.NewMetrics(a.reg); err != nil {
		return err
	}
	if a.loopMetrics, err = loop.NewMetrics(a.reg); err != nil {
		return err
	}
	if a.appMetrics, err = newAppMetrics(a.reg); err != nil {
		return err
	}
	a.appMetrics.enabled(cfg)
	selfCheck, err := health.NewSelfCheckMetrics(a.reg)
	if err != nil {
		return err
	}
	gen, err := a.build(cfg, text)
	if err != nil {
		return err
	}
	n, err := setupNode(ctx, a.opts, a.reg)
	if err != nil {
		gen.close()
		return fmt.Errorf("node setup: %w", err)
	}
	defer n.Close()
	if a.srv, err = server.New(server.Options{Registerer: a.reg, Logger: a.logger, Budget: a.mem.Budget}); err != nil {
		gen.close()
		return err
	}
	if err := a.srv.SetBlocks(gen.blocks); err != nil {
		gen.close()
		return err
	}
	a.applyGlobal(cfg)
	a.current = gen
	a.socks, err = server.OpenSockets(server.Keys(cfg), n.Inherited())
	if err != nil {
		gen.close()
		return err
	}
	if err := a.srv.Serve(a.socks); err != nil {
		a.socks.Close()
		gen.close()
		return err
	}
	if err := loop.CheckAll(ctx, gen.probes); err != nil {
		a.loopMetrics.Count(err)
		a.abort(n)
		return err
	}
	web, err := health.Start(a.endpoints(cfg))
	if err != nil {
		a.abort(n)
		return err
	}
	a.ready.Store(true)
	n.Serving(a.liveSockets)
	if err := a.writePIDFile(); err != nil {
		a.log.Warningf("%v", err)
	}
	if !a.opts.Quiet {
		a.log.Infof("serving %v", server.Keys(cfg))
	}
	var wg sync.WaitGroup
	wctx, stopWatch := context.WithCancel(ctx)
	wg.Add(3) // releaser, watcher, reloadOnSignal
	go func() {
		defer wg.Done()
		newReleaser(a.srv.BudgetUse).run(wctx)
	}()
	go func() {
		defer wg.Done()
		if err := w.Run(wctx); err != nil {
			a.log.Errorf("config watcher: %v", err)
		}
	}()
	for _, addr := range healthAddrs(cfg) {
		wg.Go(func() {
			selfCheck.SelfCheck(wctx, addr)
		})
	}
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)
	go func() {
		defer wg.Done()
		a.reloadOnSignal(wctx, w, usr1)
	}()

	<-ctx.Done()
	stopWatch()
	wg.Wait()
	a.ready.Store(false)
	if a.opts.Mode == ModeInjection {
		return a.shutdownInjection(n, web)
	}
	a.log.Infof("shutting down: teardown, then %s lame duck", a.lameDuck(cfg))
	tctx, cancel := context.WithTimeout(context.Background(), teardownTimeout)
	if err := n.Teardown(tctx); err != nil {
		a.log.Errorf("teardown: %v", err)
	}
	cancel()
	time.Sleep(a.lameDuck(cfg))
	hctx, cancel := context.WithTimeout(context.Background(), time.Second)
	web.Close(hctx)
	cancel()
	return a.stopServing()
}

// reloadOnSignal checks the configuration for changes on every SIGUSR1
// until ctx is done: CoreDNS reloads its Corefile on that signal, and
// node-cache with -reloadwithsignal sends it to itself.
func (a *agent) reloadOnSignal(ctx context.Context, w *pillar.Watcher, sig <-chan os.Signal) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-sig:
			if _, err := w.Check(); err != nil {
				a.log.Errorf("reload on SIGUSR1: %v", err)
			}
		}
	}
}

// healthAddrs are the distinct addresses of cfg's health plugins.
func healthAddrs(cfg *corefile.Config) []string {
	var out []string
	for _, s := range cfg.Servers {
		if s.Health != "" && !slices.Contains(out, s.Health) {
			out = append(out, s.Health)
		}
	}
	return out
}

// shutdownInjection stops an agent in injection mode, where pods reach it
// only at its link-local address and have kube-dns as their next
// nameserver: it stops answering first (queries that arrive later are
// refused by the kernel with ICMP port unreachable, so resolvers move to
// kube-dns at once) and answers those in flight while the address still
// exists, then tears the node down. The other order (teardown, then a lame
// duck) answers from an address that is gone: those answers are lost, and a
// glibc client that got its A answer but not its AAAA one waits out a second
// timeout (2 s lookups on a real node, tests/e2e check 4).
func (a *agent) shutdownInjection(n *node, web *health.Server) error {
	a.log.Infof("shutting down: stop answering, then teardown (injection mode: no lame duck)")
	hctx, cancel := context.WithTimeout(context.Background(), time.Second)
	web.Close(hctx)
	cancel()
	if n.alone() {
		// New queries are refused at once, the queued ones still answered
		// (not with a twin: it shares the sockets).
		rctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if err := a.srv.RefuseNew(rctx); err != nil {
			a.log.Warningf("%v", err)
		}
		cancel()
	}
	err := a.stopServing()
	tctx, cancel := context.WithTimeout(context.Background(), teardownTimeout)
	if terr := n.Teardown(tctx); terr != nil {
		a.log.Errorf("teardown: %v", terr)
	}
	cancel()
	return err
}

// abort undoes a start that failed after the node was set up.
func (a *agent) abort(n *node) {
	tctx, cancel := context.WithTimeout(context.Background(), teardownTimeout)
	if err := n.Teardown(tctx); err != nil {
		a.log.Errorf("teardown: %v", err)
	}
	cancel()
	_ = a.stopServing()
}

// stopServing closes the listeners, waits (bounded) for in-flight queries
// and releases the configuration.
func (a *agent) stopServing() error {
	sctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	err := a.srv.Shutdown(sctx)
	cancel()
	a.sockMu.Lock()
	a.socks.Close()
	a.sockMu.Unlock()
	a.mu.Lock()
	if a.current != nil {
		a.current.close()
	}
	a.mu.Unlock()
	if a.opts.PIDFile != "" {
		_ = os.Remove(a.opts.PIDFile)
	}
	return err
}

// lameDuck is how long the agent keeps answering after teardown: the
// health plugin's lameduck when set, else -lameduck.
func (a *agent) lameDuck(cfg *corefile.Config) time.Duration {
	d := a.opts.LameDuck
	for _, s := range cfg.Servers {
		d = max(d, s.HealthLameDuck)
	}
	return min(d, MaxLameDuck)
}

// planMemory sizes the agent from -memory-limit (or the cgroup's limit)
// and sets the Go runtime's memory limit.
func (a *agent) planMemory() {
	limit := a.opts.MemoryLimit
	if a.opts.MemoryLimitFromCgroup {
		var err error
		if limit, err = cgroupMemoryLimit("/sys/fs/cgroup", "/proc/self/cgroup"); err != nil {
			a.log.Warningf("%v; sizing without a memory limit", err)
		}
	}
	a.mem = planMemory(limit)
	applyGoLimit(a.mem)
	if a.mem.Limit > 0 {
		a.log.Infof("memory limit %dMi: Go runtime limit %dMi, in-flight budget %dMi, caches %dMi", a.mem.Limit>>20, a.mem.GoLimit>>20, a.mem.Budget>>20, a.mem.CacheBytes>>20)
	}
}

// build creates the caches, forwarders and blocks of cfg. The caches share
// the memory plan's cache bytes equally.
func (a *agent) build(cfg *corefile.Config, text string) (*generation, error) {
	g := &generation{cfg: cfg, text: text}
	var cacheBytes int64
	if n := countCaches(cfg); n > 0 && a.mem.CacheBytes > 0 {
		cacheBytes = a.mem.CacheBytes / int64(n)
	}
	for _, s := range cfg.Servers {
		b := &server.Block{Zones: s.Zones, Port: s.Port, Bind: s.Bind, Errors: s.Errors, Log: s.Log}
		if err := a.pluginOptions(b, s); err != nil {
			g.close()
			return nil, err
		}
		plugins, err := a.plugins(s, g)
		if err != nil {
			g.close()
			return nil, fmt.Errorf("server block %v: %w", s.Zones, err)
		}
		b.Plugins = plugins
		if s.Cache != nil {
			b.Cache = cache.New(*s.Cache, cache.Options{Server: cacheServerLabel(s), Zones: s.Zones, Metrics: a.cacheMetrics, MaxBytes: cacheBytes})
			g.caches = append(g.caches, b.Cache)
		}
		if s.Forward != nil {
			f, err := forward.New(*s.Forward, a.forwardOptions(s))
			if err != nil {
				g.close()
				return nil, fmt.Errorf("server block %v: %w", s.Zones, err)
			}
			g.forwarders = append(g.forwarders, f)
			b.Forward = f
			b.Match = f.Match
			var chain *forward.Chain
			if len(s.NextForwards) > 0 {
				if chain, err = a.chain(g, f, s); err != nil {
					return nil, err
				}
				b.Forward, b.Match = chain, chain.Match
			}
			if s.Loop {
				p := loop.New(s.Zones[0], f)
				p.Chain = chain
				g.probes = append(g.probes, p)
				b.Forward = p
			}
		}
		g.blocks = append(g.blocks, b)
	}
	return g, nil
}

// cacheServerLabel is the server label of a block's cache metrics: its
// listen address as CoreDNS labels it, "dns://IP:port", or "dns://:port"
// without bind. A block bound to several addresses has one cache, counted
// under its first address (CoreDNS counts per address; docs/agent-config.md
// lists the difference).
func cacheServerLabel(s corefile.Server) string {
	host := ""
	if len(s.Bind) > 0 {
		host = s.Bind[0]
	}
	return "dns://" + net.JoinHostPort(host, strconv.Itoa(s.Port))
}

// countCaches counts the server blocks with a cache.
func countCaches(cfg *corefile.Config) int {
	n := 0
	for _, s := range cfg.Servers {
		if s.Cache != nil {
			n++
		}
	}
	return n
}

// chain builds the further forward plugins of s after first into a chain
// (forward's `next`); on error g is closed.
func (a *agent) chain(g *generation, first *forward.Forwarder, s corefile.Server) (*forward.Chain, error) {
	fs := []*forward.Forwarder{first}
	for _, nf := range s.NextForwards {
		f, err := forward.New(*nf, a.forwardOptions(s))
		if err != nil {
			g.close()
			return nil, fmt.Errorf("server block %v: %w", s.Zones, err)
		}
		g.forwarders = append(g.forwarders, f)
		fs = append(fs, f)
	}
	return forward.NewChain(fs...), nil
}

// close releases the forwarders and the caches' gauges.
func (g *generation) close() {
	for _, f := range g.forwarders {
		f.Close()
	}
	for _, c := range g.caches {
		c.Release()
	}
	for _, c := range g.closers {
		c()
	}
}

// endpoints groups the health, ready and prometheus addresses of cfg (and
// -metrics-listen-address) by address.
func (a *agent) endpoints(cfg *corefile.Config) map[string]health.Endpoints {
	eps := map[string]health.Endpoints{}
	put := func(addr string, mk func() health.Endpoints) {
		if addr == "" {
			return
		}
		if eps[addr] == nil {
			eps[addr] = health.Endpoints{}
		}
		for p, h := range mk() {
			if _, ok := eps[addr][p]; !ok {
				eps[addr][p] = h
			}
		}
	}
	metrics := func() health.Endpoints { return health.Endpoints{"/metrics": health.MetricsHandler(a.reg)} }
	for _, s := range cfg.Servers {
		put(s.Health, func() health.Endpoints {
			return health.Endpoints{"/health": health.HealthHandler(a.srv.Check)}
		})
		put(s.Ready, func() health.Endpoints {
			return health.Endpoints{"/ready": health.ReadyHandler(a.ready.Load)}
		})
		put(s.Prometheus, metrics)
		put(s.Pprof, pprofEndpoints)
	}
	put(a.opts.MetricsListenAddress, metrics)
	return eps
}

// reload is the pillar watcher's OnChange: apply, recorded in the reload
// and plugin metrics as CoreDNS's reload plugin does.
func (a *agent) reload(cfg *corefile.Config, text string) error {
	a.mu.Lock()
	var old string
	if a.current != nil {
		old = a.current.text
	}
	a.mu.Unlock()
	err := a.apply(cfg, text)
	if text != old {
		a.appMetrics.reloaded(text, old, err)
		if err == nil {
			a.appMetrics.enabled(cfg)
		}
	}
	return err
}

// apply swaps in a new configuration (the pillar watcher's OnChange). New
// listen addresses are opened; the handler table is replaced atomically,
// so no query is dropped. Then, as CoreDNS's loop plugin at every
// (re)start of a server block, the loop probes of the new blocks are sent:
// a loop refuses the new configuration (the old blocks and listen addresses
// are put back, the loop is counted) without stopping the agent. Only then
// are listen addresses the new configuration no longer has closed. An error
// leaves the old configuration in force; the watcher logs it.
func (a *agent) apply(cfg *corefile.Config, text string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.current != nil && a.current.text == text && !corefile.ImportsChanged(a.current.cfg) {
		return nil
	}
	if len(cfg.Servers) == 0 {
		return errors.New("no server blocks")
	}
	gen, err := a.build(cfg, text)
	if err != nil {
		return err
	}
	var missing []string
	for _, k := range server.Keys(cfg) {
		if _, ok := a.socks[k]; !ok {
			missing = append(missing, k)
		}
	}
	var opened []string
	if len(missing) > 0 {
		socks, err := server.OpenSockets(missing, nil)
		if err != nil {
			gen.close()
			return err
		}
		if err := a.srv.Serve(socks); err != nil {
			a.srv.Release(slices.Collect(maps.Keys(socks)))
			socks.Close()
			gen.close()
			return err
		}
		a.sockMu.Lock()
		for k, f := range socks {
			a.socks[k] = f
			opened = append(opened, k)
		}
		a.sockMu.Unlock()
	}
	if err := a.srv.SetBlocks(gen.blocks); err != nil {
		a.closeSockets(opened)
		gen.close()
		return err
	}
	if err := loop.CheckAll(context.Background(), gen.probes); err != nil {
		if a.current != nil {
			if rerr := a.srv.SetBlocks(a.current.blocks); rerr != nil {
				// The old blocks were in force a moment ago; this cannot
				// fail, but say so if it does.
				err = errors.Join(err, fmt.Errorf("restore the old configuration: %w", rerr))
			}
		}
		a.closeSockets(opened)
		// Queries in flight may still use the refused forwarders.
		time.AfterFunc(retiredGrace, gen.close)
		a.loopMetrics.Count(err)
		return fmt.Errorf("refused, the old configuration stays in force: %w", err)
	}
	a.releaseUnused(cfg)
	a.applyGlobal(cfg)
	old := a.current
	a.current = gen
	if old != nil {
		// Queries in flight may still use the old forwarders: close them
		// once those have had time to finish.
		time.AfterFunc(retiredGrace, old.close)
	}
	a.log.Infof("reloaded configuration")
	return nil
}

// releaseUnused stops serving and closes the sockets of listen addresses
// that cfg no longer has.
func (a *agent) releaseUnused(cfg *corefile.Config) {
	want := map[string]bool{}
	for _, k := range server.Keys(cfg) {
		want[k] = true
	}
	var gone []string
	for k := range a.socks {
		if !want[strings.SplitN(k, "#", 2)[0]] {
			gone = append(gone, k)
		}
	}
	if len(gone) == 0 {
		return
	}
	a.closeSockets(gone)
	a.log.Infof("stopped listening on %v", gone)
}

// closeSockets stops serving the sockets with these keys and closes them.
// It runs under mu; the write lock on sockMu waits for hand-overs in
// progress.
func (a *agent) closeSockets(keys []string) {
	if len(keys) == 0 {
		return
	}
	sort.Strings(keys)
	a.srv.Release(keys)
	a.sockMu.Lock()
	defer a.sockMu.Unlock()
	for _, k := range keys {
		if f, ok := a.socks[k]; ok {
			f.Close()
			delete(a.socks, k)
		}
	}
}

// liveSockets returns the listening sockets open now (a copy of the set)
// for a socket hand-over; they stay open until done is called.
func (a *agent) liveSockets() (socks map[string]*os.File, done func()) {
	a.sockMu.RLock()
	socks = make(map[string]*os.File, len(a.socks))
	maps.Copy(socks, a.socks)
	return socks, a.sockMu.RUnlock
}

// writePIDFile writes the process ID to -pidfile atomically: it is
// written to a temporary file beside it, then renamed into place, so a
// reader never sees the file empty or half written.
func (a *agent) writePIDFile() error {
	if a.opts.PIDFile == "" {
		return nil
	}
	if err := writeFileAtomic(a.opts.PIDFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return fmt.Errorf("write pidfile: %w", err)
	}
	return nil
}

// writeFileAtomic replaces path with data (mode perm): a temporary file in
// path's directory renamed over it. On error nothing is left behind.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(data)
	err = errors.Join(err, tmp.Chmod(perm), tmp.Close())
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
	}
	return err
}
