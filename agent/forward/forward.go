// Package forward sends the agent's cache misses to upstream DNS servers
// with the semantics of CoreDNS's forward plugin: persistent pipelined TCP
// connections (force_tcp) or UDP with a TCP retry on truncation, random
// source ports and IDs, anti-spoofing (answers whose ID or question do not
// match are dropped), coalescing of identical concurrent queries, timeouts,
// health checks with failover and the random/round_robin/sequential policies.
package forward

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nodelocaldns/nodelocaldns/agent/corefile"
)

// Defaults as in CoreDNS's forward plugin.
const (
	// DefaultTimeout bounds one Exchange over all upstreams tried.
	DefaultTimeout = 5 * time.Second
	// DefaultAttemptTimeout bounds the wait for one upstream's answer.
	DefaultAttemptTimeout = 2 * time.Second
	// DefaultHealthTimeout bounds one health-check probe.
	DefaultHealthTimeout = time.Second
	// DefaultUDPSize is the EDNS0 buffer size advertised to upstreams.
	DefaultUDPSize = 1232
)

// Errors returned by Exchange; the server answers SERVFAIL for ErrNoUpstream
// and REFUSED for ErrMaxConcurrent (as CoreDNS).
var (
	// ErrMaxConcurrent means max_concurrent queries are already in flight.
	ErrMaxConcurrent = errors.New("forward: max_concurrent queries in flight")
	// ErrNoUpstream means no upstream answered in time.
	ErrNoUpstream = errors.New("forward: no upstream answered")
	// ErrClosed means the Forwarder was closed.
	ErrClosed = errors.New("forward: forwarder closed")
)

// Options are the knobs of a Forwarder that the Corefile does not set.
// Zero values mean the defaults.
type Options struct {
	// Registerer receives the coredns_proxy_* and coredns_forward_* metrics;
	// nil registers none.
	Registerer prometheus.Registerer
	// Timeout bounds one Exchange (DefaultTimeout).
	Timeout time.Duration
	// AttemptTimeout bounds the wait for one upstream (DefaultAttemptTimeout).
	AttemptTimeout time.Duration
	// HealthTimeout bounds one health-check probe (DefaultHealthTimeout).
	HealthTimeout time.Duration
	// UDPSize is the EDNS0 buffer size sent upstream (DefaultUDPSize).
	UDPSize uint16
}

// forwardConfig is corefile.Forward with defaults applied.
type forwardConfig struct {
	from          string
	except        []string
	forceTCP      bool
	maxConcurrent int
	maxFails      int
	expire        time.Duration
	healthCheck   time.Duration
	policy        string
	// hcDomain and hcNoRec are the health check's name and RD bit
	// (health_check domain, no_rec).
	hcDomain string
	hcNoRec  bool
	// The options of failures: see corefile.Forward.
	maxConnectAttempts int
	maxIdleConns       int
	failover           []int
	failFast           bool
	next               []int
}

// Forwarder forwards queries for one zone to its upstreams.
type Forwarder struct {
	cfg       forwardConfig
	opts      Options
	upstreams []*upstream
	m         *metrics
	rr        atomic.Uint32

	mu    sync.Mutex
	calls map[callKey]*call

	stop   chan struct{}
	ctx    context.Context // canceled by Close
	cancel context.CancelFunc
	closed bool // under mu
	wg     sync.WaitGroup
}

// callKey identifies identical queries: lower-cased name, type, class and
// the DO, CD and RD bits (an RD=0 query must not share an RD=1 query's
// upstream answer, nor the reverse).
type callKey struct {
	name          string
	qtype, qclass uint16
	do, cd, rd    bool
	// opts are the query's EDNS0 options when they go upstream
	// (WithEDNS0Options), in wire format.
	opts string
}

// call is one upstream query shared by every identical concurrent Exchange.
type call struct {
	done    chan struct{}
	msg     *dns.Msg
	err     error
	waiters int // callers sharing the call; set under Forwarder.mu
}

// New returns a Forwarder for cfg. cfg.To must hold IP:port addresses.
func New(cfg corefile.Forward, opts Options) (*Forwarder, error) {
	if len(cfg.To) == 0 {
		return nil, errors.New("forward: no upstream addresses")
	}
	fc := forwardConfig{
		from:          dns.CanonicalName(cmp.Or(cfg.From, ".")),
		forceTCP:      cfg.ForceTCP,
		maxConcurrent: cfg.MaxConcurrent,
		maxFails:      cfg.MaxFails,
		expire:        cmp.Or(cfg.Expire, corefile.DefaultExpire),
		healthCheck:   cmp.Or(cfg.HealthCheck, corefile.DefaultHealthCheck),
		policy:        cmp.Or(cfg.Policy, corefile.DefaultPolicy),

		hcDomain:           dns.Fqdn(cmp.Or(cfg.HealthCheckDomain, ".")),
		hcNoRec:            cfg.HealthCheckNoRec,
		maxConnectAttempts: cfg.MaxConnectAttempts,
		maxIdleConns:       cfg.MaxIdleConns,
		failover:           cfg.Failover,
		failFast:           cfg.FailFast,
		next:               cfg.Next,
	}
	for _, e := range cfg.Except {
		fc.except = append(fc.except, dns.CanonicalName(e))
	}
	switch fc.policy {
	case corefile.PolicyRandom, corefile.PolicyRoundRobin, corefile.PolicySequential:
	default:
		return nil, fmt.Errorf("forward: unknown policy %q (want random, round_robin or sequential)", fc.policy)
	}
	if fc.maxConcurrent < 0 || fc.maxFails < 0 || fc.maxConnectAttempts < 0 || fc.maxIdleConns < 0 {
		return nil, fmt.Errorf("forward: negative max_concurrent (%d), max_fails (%d), max_connect_attempts (%d) or max_idle_conns (%d)",
			fc.maxConcurrent, fc.maxFails, fc.maxConnectAttempts, fc.maxIdleConns)
	}
	opts.Timeout = cmp.Or(opts.Timeout, DefaultTimeout)
	opts.AttemptTimeout = min(cmp.Or(opts.AttemptTimeout, DefaultAttemptTimeout), opts.Timeout)
	opts.HealthTimeout = cmp.Or(opts.HealthTimeout, DefaultHealthTimeout)
	opts.UDPSize = cmp.Or(opts.UDPSize, DefaultUDPSize)
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	tlsConfigs, err := tlsConfigs(cfg)
	if err != nil {
		return nil, err
	}
	f := &Forwarder{cfg: fc, opts: opts, m: m, calls: map[callKey]*call{}, stop: make(chan struct{})}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	for _, addr := range cfg.To {
		u, err := newUpstream(addr, &fc, m, tlsConfigs[addr])
		if err != nil {
			return nil, err
		}
		f.upstreams = append(f.upstreams, u)
	}
	f.wg.Add(1)
	go f.janitor()
	return f, nil
}

// Upstreams returns the upstream addresses in configuration order.
func (f *Forwarder) Upstreams() []string {
	out := make([]string, len(f.upstreams))
	for i, u := range f.upstreams {
		out[i] = u.addr
	}
	return out
}

// Match reports whether the forwarder handles name: it is in the FROM zone
// and not in an `except` zone.
func (f *Forwarder) Match(name string) bool {
	if !dns.IsSubDomain(f.cfg.from, name) {
		return false
	}
	for _, e := range f.cfg.except {
		if dns.IsSubDomain(e, name) {
			return false
		}
	}
	return true
}

// Exchange forwards req (exactly one question) and returns the upstream's
// answer with req's ID and question. Identical concurrent queries share one
// upstream query. The returned message is the caller's own copy.
func (f *Forwarder) Exchange(ctx context.Context, req *dns.Msg) (*dns.Msg, error) {
	if req == nil || len(req.Question) != 1 {
		return nil, errors.New("forward: query must have exactly one question")
	}
	select {
	case <-f.stop:
		return nil, ErrClosed
	default:
	}
	key := keyOf(req)
	if passOptions(ctx) {
		key.opts = optionsOf(req)
	}
	for {
		f.mu.Lock()
		if c, ok := f.calls[key]; ok {
			c.waiters++
			f.mu.Unlock()
			select {
			case <-c.done:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			if c.err != nil {
				if errors.Is(c.err, errLeaderGone) && ctx.Err() == nil {
					continue // the first caller gave up; ask again
				}
				return nil, c.err
			}
			return personalize(c.msg, req, true), nil
		}
		if f.cfg.maxConcurrent > 0 && len(f.calls) >= f.cfg.maxConcurrent {
			f.mu.Unlock()
			f.m.maxConcurrentRejects.Inc()
			return nil, ErrMaxConcurrent
		}
		// This caller leads: it asks upstream for everyone who joins.
		c := &call{done: make(chan struct{}), waiters: 1}
		f.calls[key] = c
		f.mu.Unlock()
		c.msg, c.err = f.resolve(ctx, f.upstreamQuery(req, key))
		f.mu.Lock()
		delete(f.calls, key)
		shared := c.waiters > 1
		f.mu.Unlock()
		close(c.done)
		if c.err != nil {
			return nil, c.err
		}
		return personalize(c.msg, req, shared), nil
	}
}

// Close stops health checks and closes the upstream connections.
func (f *Forwarder) Close() {
	f.mu.Lock()
	if !f.closed {
		f.closed = true
		close(f.stop)
		f.cancel()
		for _, u := range f.upstreams {
			u.tcp.close()
			u.udp.close()
		}
	}
	f.mu.Unlock()
	f.wg.Wait()
}

// spawn runs fn in a goroutine that Close waits for; it reports false (and
// does not run fn) once the Forwarder is closed.
func (f *Forwarder) spawn(fn func()) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	f.wg.Go(fn)
	return true
}

// Healthy reports, per upstream address, whether it is considered up.
func (f *Forwarder) Healthy() map[string]bool {
	out := make(map[string]bool, len(f.upstreams))
	for _, u := range f.upstreams {
		out[u.addr] = !u.down()
	}
	return out
}

func keyOf(req *dns.Msg) callKey {
	q := req.Question[0]
	k := callKey{name: lower(q.Name), qtype: q.Qtype, qclass: q.Qclass, cd: req.CheckingDisabled, rd: req.RecursionDesired}
	if opt := req.IsEdns0(); opt != nil {
		k.do = opt.Do()
	}
	return k
}

// lower is strings.ToLower for ASCII names, without an allocation when the
// name is already lower case (the usual case).
func lower(name string) string {
	for i := 0; i < len(name); i++ {
		if c := name[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(name)
		}
	}
	return name
}

// upstreamQuery builds the query sent upstream: the client's question and
// RD/CD flags, and an EDNS0 record of our own (buffer size, DO bit); client
// EDNS options (cookies, subnets) are not passed on.
func (f *Forwarder) upstreamQuery(req *dns.Msg, key callKey) *dns.Msg {
	q := new(dns.Msg)
	q.Opcode = dns.OpcodeQuery
	q.RecursionDesired = key.rd
	q.CheckingDisabled = key.cd
	q.AuthenticatedData = req.AuthenticatedData
	q.Question = []dns.Question{req.Question[0]}
	q.SetEdns0(f.opts.UDPSize, key.do)
	if key.opts != "" {
		q.IsEdns0().Option = req.IsEdns0().Option
	}
	return q
}

// personalize adapts the answer for one caller: the caller's ID and question
// (its case), and an OPT record only if the caller sent one. A shared
// answer is copied first; a lone caller gets the message itself.
func personalize(shared, req *dns.Msg, isShared bool) *dns.Msg {
	r := shared
	if isShared {
		r = shared.Copy()
	}
	r.Id = req.Id
	r.Question = []dns.Question{req.Question[0]}
	if req.IsEdns0() == nil {
		extra := r.Extra[:0]
		for _, rr := range r.Extra {
			if rr.Header().Rrtype != dns.TypeOPT {
				extra = append(extra, rr)
			}
		}
		r.Extra = extra
	}
	return r
}

// errLeaderGone marks a shared query that ended because the caller that
// led it gave up; the callers that joined it ask again.
var errLeaderGone = errors.New("forward: the caller gave up")

// resolve tries the upstreams in policy order, skipping those marked down
// (unless all are), each at most once, within the overall timeout and the
// leading caller's context.
func (f *Forwarder) resolve(ctx context.Context, q *dns.Msg) (*dns.Msg, error) {
	deadline := time.Now().Add(f.opts.Timeout)
	callerDeadline, hasCallerDeadline := ctx.Deadline()
	if hasCallerDeadline && callerDeadline.Before(deadline) {
		deadline = callerDeadline
	}
	// gone reports the caller's end, also when a socket deadline set to the
	// caller's deadline fired a moment before the context's own timer.
	gone := func() error {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%w: %w", errLeaderGone, err)
		}
		if hasCallerDeadline && !time.Now().Before(callerDeadline) {
			return fmt.Errorf("%w: %w", errLeaderGone, context.DeadlineExceeded)
		}
		return nil
	}
	list := f.order()
	allDown := true
	for _, u := range list {
		if !u.down() {
			allDown = false
			break
		}
	}
	if allDown && len(list) > 0 && f.cfg.maxFails > 0 {
		// Health checking itself seems broken: try them anyway (as CoreDNS),
		// unless failfast_all_unhealthy_upstreams says to fail at once.
		f.m.healthcheckBroken.Inc()
		if f.cfg.failFast {
			return nil, fmt.Errorf("%w for %s %s: every upstream is down (failfast_all_unhealthy_upstreams)",
				ErrNoUpstream, q.Question[0].Name, dns.TypeToString[q.Question[0].Qtype])
		}
	}
	var errs []error
	var failedOver *dns.Msg // the last answer with a failover rcode
	attempts := 0
	for i, u := range list {
		if !allDown && u.down() {
			continue
		}
		if err := gone(); err != nil {
			return nil, err
		}
		if f.ctx.Err() != nil {
			return nil, ErrClosed
		}
		if !time.Now().Before(deadline) {
			break
		}
		attempt := time.Now().Add(f.opts.AttemptTimeout)
		if deadline.Before(attempt) {
			attempt = deadline
		}
		start := time.Now()
		u.requests.Inc()
		r, err := u.exchange(ctx, q, attempt)
		if err != nil {
			if gerr := gone(); gerr != nil {
				return nil, gerr
			}
		}
		if err == nil {
			rcode := rcodeName(r.Rcode)
			f.m.duration.WithLabelValues(proxyName, u.addr, rcode).Observe(time.Since(start).Seconds())
			if i < len(list)-1 && slices.Contains(f.cfg.failover, r.Rcode) {
				failedOver = r // failover: ask the next upstream
				continue
			}
			return r, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", u.addr, err))
		u.startHealthCheck(f.cfg.healthCheck, f.opts.HealthTimeout, f.stop, f.spawn)
		if attempts++; f.cfg.maxConnectAttempts > 0 && attempts >= f.cfg.maxConnectAttempts {
			errs = append(errs, fmt.Errorf("max_connect_attempts (%d) reached", f.cfg.maxConnectAttempts))
			break
		}
	}
	if failedOver != nil {
		// Every upstream was tried: the last answer stands (as CoreDNS).
		return failedOver, nil
	}
	if len(errs) == 0 {
		errs = append(errs, errTimeout)
	}
	return nil, fmt.Errorf("%w for %s %s: %w", ErrNoUpstream, q.Question[0].Name, dns.TypeToString[q.Question[0].Qtype], errors.Join(errs...))
}

func rcodeName(rcode int) string {
	if s, ok := dns.RcodeToString[rcode]; ok {
		return s
	}
	return strconv.Itoa(rcode)
}

// order returns the upstreams in the order the policy tries them.
func (f *Forwarder) order() []*upstream {
	n := len(f.upstreams)
	if n == 1 {
		return f.upstreams // read only
	}
	out := make([]*upstream, n)
	switch f.cfg.policy {
	case corefile.PolicySequential:
		copy(out, f.upstreams)
	case corefile.PolicyRoundRobin:
		start := int(f.rr.Add(1)-1) % n
		for i := range n {
			out[i] = f.upstreams[(start+i)%n]
		}
	default: // random
		for i, j := range rand.Perm(n) {
			out[i] = f.upstreams[j]
		}
	}
	return out
}

// janitor closes idle TCP connections after `expire`.
func (f *Forwarder) janitor() {
	defer f.wg.Done()
	t := time.NewTicker(max(f.cfg.expire/2, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-f.stop:
			return
		case <-t.C:
			for _, u := range f.upstreams {
				u.tcp.reap()
				u.udp.reap()
			}
		}
	}
}
