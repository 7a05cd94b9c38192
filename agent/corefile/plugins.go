package corefile

import (
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/coredns/caddy/caddyfile"
)

// CoreDNS defaults of the supported plugins.
const (
	DefaultSuccessCap     = 9984
	DefaultSuccessTTL     = 3600 * time.Second
	DefaultDenialCap      = 9984
	DefaultDenialTTL      = 1800 * time.Second
	DefaultMinTTL         = 5 * time.Second
	DefaultServfailTTL    = 5 * time.Second
	MaxServfailTTL        = 5 * time.Minute
	DefaultPrefetchAmount = 1
	DefaultPrefetchWindow = time.Minute
	DefaultPrefetchPct    = 10
	DefaultServeStale     = time.Hour

	DefaultMaxFails    = 2
	DefaultExpire      = 10 * time.Second
	DefaultHealthCheck = 500 * time.Millisecond
	DefaultPolicy      = PolicyRandom

	DefaultHealthAddr     = ":8080"
	DefaultReadyAddr      = ":8181"
	DefaultPrometheusAddr = "localhost:9153"
	DefaultReload         = 30 * time.Second
	DefaultReloadJitter   = 15 * time.Second
	MinReload             = 2 * time.Second
	MinReloadJitter       = time.Second
)

// The forward plugin's policies (Forward.Policy).
const (
	PolicyRandom     = "random"
	PolicyRoundRobin = "round_robin"
	PolicySequential = "sequential"
)

func parseLoop(p *blockParser, d *caddyfile.Dispenser) error {
	if args := d.RemainingArgs(); len(args) > 0 {
		return p.wrongArgs(d, "loop", args)
	}
	if err := p.noBlock(d, "loop"); err != nil {
		return err
	}
	p.server.Loop = true
	return nil
}

// listenAddr parses the optional single address argument of health, ready
// and prometheus.
func (p *blockParser) listenAddr(d *caddyfile.Dispenser, plugin, def string) (string, error) {
	args := d.RemainingArgs()
	switch len(args) {
	case 0:
		return def, nil
	case 1:
		if err := checkListenAddr(args[0]); err != nil {
			return "", p.errf(d, "plugin %q: %v", plugin, err)
		}
		return args[0], nil
	default:
		return "", p.wrongArgs(d, plugin, args)
	}
}

func parseHealth(p *blockParser, d *caddyfile.Dispenser) error {
	addr, err := p.listenAddr(d, "health", DefaultHealthAddr)
	if err != nil {
		return err
	}
	p.server.Health = addr
	for d.NextBlock() {
		if d.Val() != "lameduck" {
			return p.errf(d, "unknown option %q of plugin \"health\"", d.Val())
		}
		args, err := p.args(d, "lameduck")
		if err != nil {
			return err
		}
		if len(args) != 1 {
			return p.wrongArgs(d, "health lameduck", args)
		}
		dur, err := time.ParseDuration(args[0])
		if err != nil || dur < 0 {
			return p.errf(d, "health lameduck %q: want a non-negative duration", args[0])
		}
		p.server.HealthLameDuck = dur
	}
	return nil
}

func parseReady(p *blockParser, d *caddyfile.Dispenser) error {
	addr, err := p.listenAddr(d, "ready", DefaultReadyAddr)
	if err != nil {
		return err
	}
	p.server.Ready = addr
	return p.noBlock(d, "ready")
}

func parsePrometheus(p *blockParser, d *caddyfile.Dispenser) error {
	addr, err := p.listenAddr(d, "prometheus", DefaultPrometheusAddr)
	if err != nil {
		return err
	}
	p.server.Prometheus = addr
	return p.noBlock(d, "prometheus")
}

func parseReload(p *blockParser, d *caddyfile.Dispenser) error {
	args := d.RemainingArgs()
	if len(args) > 2 {
		return p.wrongArgs(d, "reload", args)
	}
	interval, jitter := DefaultReload, DefaultReloadJitter
	if len(args) > 0 {
		dur, err := time.ParseDuration(args[0])
		if err != nil || dur < MinReload {
			return p.errf(d, "reload interval %q: want a duration of at least %s", args[0], MinReload)
		}
		interval = dur
	}
	if len(args) > 1 {
		dur, err := time.ParseDuration(args[1])
		if err != nil || dur < MinReloadJitter {
			return p.errf(d, "reload jitter %q: want a duration of at least %s", args[1], MinReloadJitter)
		}
		jitter = dur
	}
	// As CoreDNS: the jitter is at most half the interval.
	if jitter > interval/2 {
		jitter = interval / 2
	}
	p.server.Reload, p.server.ReloadJitter = interval, jitter
	return p.noBlock(d, "reload")
}

// parseCache parses `cache [TTL] [ZONES...]` and its block.
func parseCache(p *blockParser, d *caddyfile.Dispenser) error {
	c := &Cache{
		SuccessCap: DefaultSuccessCap, SuccessTTL: DefaultSuccessTTL, SuccessMinTTL: DefaultMinTTL,
		DenialCap: DefaultDenialCap, DenialTTL: DefaultDenialTTL, DenialMinTTL: DefaultMinTTL,
		ServfailTTL: DefaultServfailTTL,
	}
	args := d.RemainingArgs()
	if len(args) > 0 {
		if ttl, err := strconv.Atoi(args[0]); err == nil {
			if ttl <= 0 {
				return p.errf(d, "cache TTL can not be zero or negative: %d", ttl)
			}
			c.SuccessTTL = time.Duration(ttl) * time.Second
			c.DenialTTL = c.SuccessTTL
			args = args[1:]
		}
	}
	for _, z := range args {
		zones, err := expandZone(z)
		if err != nil {
			return p.errf(d, "plugin \"cache\": %v", err)
		}
		c.Zones = append(c.Zones, zones...)
	}
	if c.Zones == nil {
		c.Zones = append([]string(nil), p.server.Zones...)
	}
	for d.NextBlock() {
		opt := d.Val()
		args, err := p.args(d, "cache "+opt)
		if err != nil {
			return err
		}
		switch opt {
		case "success":
			err = p.cacheClass(d, opt, args, &c.SuccessCap, &c.SuccessTTL, &c.SuccessMinTTL)
		case "denial":
			err = p.cacheClass(d, opt, args, &c.DenialCap, &c.DenialTTL, &c.DenialMinTTL)
		case "prefetch":
			err = p.prefetch(d, args, c)
		case "serve_stale":
			err = p.serveStale(d, args, c)
		case "servfail":
			err = p.servfail(d, args, c)
		default:
			err = p.cacheMoreOption(d, opt, args, c)
		}
		if err != nil {
			return err
		}
	}
	// CoreDNS clamps to the minimum first and the maximum last, so the
	// maximum wins when MINTTL > TTL; store it that way.
	c.SuccessMinTTL = min(c.SuccessMinTTL, c.SuccessTTL)
	c.DenialMinTTL = min(c.DenialMinTTL, c.DenialTTL)
	p.server.Cache = c
	return nil
}

// cacheClass parses `success|denial CAPACITY [TTL [MINTTL]]`.
func (p *blockParser) cacheClass(d *caddyfile.Dispenser, opt string, args []string, capacity *int, ttl, minTTL *time.Duration) error {
	if len(args) == 0 || len(args) > 3 {
		return p.wrongArgs(d, "cache "+opt, args)
	}
	n, err := strconv.Atoi(args[0])
	if err != nil || n <= 0 {
		return p.errf(d, "cache %s capacity %q: want a positive number", opt, args[0])
	}
	*capacity = n
	if len(args) > 1 {
		t, err := strconv.Atoi(args[1])
		if err != nil || t <= 0 {
			return p.errf(d, "cache %s TTL %q: want a positive number of seconds", opt, args[1])
		}
		*ttl = time.Duration(t) * time.Second
	}
	if len(args) > 2 {
		t, err := strconv.Atoi(args[2])
		if err != nil || t < 0 {
			return p.errf(d, "cache %s min TTL %q: want a non-negative number of seconds", opt, args[2])
		}
		*minTTL = time.Duration(t) * time.Second
	}
	return nil
}

// prefetch parses `prefetch AMOUNT [DURATION [PERCENTAGE%]]`; AMOUNT 0
// turns prefetching off, as in CoreDNS.
func (p *blockParser) prefetch(d *caddyfile.Dispenser, args []string, c *Cache) error {
	if len(args) == 0 || len(args) > 3 {
		return p.wrongArgs(d, "cache prefetch", args)
	}
	amount, err := strconv.Atoi(args[0])
	if err != nil || amount < 0 {
		return p.errf(d, "cache prefetch amount %q: want a non-negative number", args[0])
	}
	pf := &Prefetch{Amount: amount, Duration: DefaultPrefetchWindow, Percentage: DefaultPrefetchPct}
	if len(args) > 1 {
		dur, err := time.ParseDuration(args[1])
		if err != nil || dur <= 0 {
			return p.errf(d, "cache prefetch duration %q: want a positive duration", args[1])
		}
		pf.Duration = dur
	}
	if len(args) > 2 {
		num, ok := strings.CutSuffix(args[2], "%")
		if !ok {
			return p.errf(d, "cache prefetch percentage %q: last character should be %%", args[2])
		}
		pct, err := strconv.Atoi(num)
		if err != nil || pct < 10 || pct > 90 {
			return p.errf(d, "cache prefetch percentage %q: should fall in range [10, 90]", args[2])
		}
		pf.Percentage = pct
	}
	c.Prefetch = pf
	if amount == 0 {
		c.Prefetch = nil
	}
	return nil
}

// serveStale parses `serve_stale [DURATION [immediate|verify]]`.
func (p *blockParser) serveStale(d *caddyfile.Dispenser, args []string, c *Cache) error {
	if len(args) > 2 {
		return p.wrongArgs(d, "cache serve_stale", args)
	}
	c.ServeStale, c.ServeStaleVerify = DefaultServeStale, false
	if len(args) > 0 {
		dur, err := time.ParseDuration(args[0])
		if err != nil || dur < 0 {
			return p.errf(d, "cache serve_stale duration %q: want a non-negative duration", args[0])
		}
		c.ServeStale = dur
	}
	if len(args) > 1 {
		switch mode := strings.ToLower(args[1]); mode {
		case "immediate":
		case "verify":
			c.ServeStaleVerify = true
		default:
			return p.errf(d, "cache serve_stale refresh mode %q: want immediate or verify", args[1])
		}
	}
	return nil
}

// servfail parses `servfail DURATION` (at most 5m, RFC 2308).
func (p *blockParser) servfail(d *caddyfile.Dispenser, args []string, c *Cache) error {
	if len(args) != 1 {
		return p.wrongArgs(d, "cache servfail", args)
	}
	dur, err := time.ParseDuration(args[0])
	if err != nil || dur < 0 || dur > MaxServfailTTL {
		return p.errf(d, "cache servfail %q: want a duration between 0 and %s", args[0], MaxServfailTTL)
	}
	c.ServfailTTL = dur
	return nil
}

// parseForward parses `forward FROM TO...` and its block.
func parseForward(p *blockParser, d *caddyfile.Dispenser) error {
	args := d.RemainingArgs()
	if len(args) < 2 {
		return p.errf(d, "plugin \"forward\": want FROM and at least one TO, got %q", args)
	}
	fromZones, err := expandZone(args[0])
	if err != nil {
		return p.errf(d, "plugin \"forward\": FROM: %v", err)
	}
	from := fromZones[0] // as CoreDNS: a CIDR that expands to several zones forwards the first

	to, tlsNames, err := parseUpstreams(args[1:], p.opts.ReadFile)
	if err != nil {
		return p.errf(d, "plugin \"forward\": %v", err)
	}
	f := &Forward{
		From: from, To: to, TLS: tlsNames,
		MaxFails: DefaultMaxFails, Expire: DefaultExpire, HealthCheck: DefaultHealthCheck,
		HealthCheckDomain: ".", Policy: DefaultPolicy,
	}
	line := d.Line()
	var tlsServerName string
	for d.NextBlock() {
		if err := p.forwardOption(d, f, &tlsServerName); err != nil {
			return err
		}
	}
	if err := applyTLSServerName(f, tlsServerName); err != nil {
		return &Error{File: p.opts.Filename, Line: line, Msg: "plugin \"forward\": " + err.Error()}
	}
	if p.server.Forward == nil {
		p.server.Forward = f
	} else {
		p.server.NextForwards = append(p.server.NextForwards, f)
	}
	return nil
}

func (p *blockParser) forwardOption(d *caddyfile.Dispenser, f *Forward, tlsServerName *string) error {
	opt := d.Val()
	args, err := p.args(d, "forward "+opt)
	if err != nil {
		return err
	}
	one := func() (string, error) {
		if len(args) != 1 {
			return "", p.wrongArgs(d, "forward "+opt, args)
		}
		return args[0], nil
	}
	switch opt {
	case "force_tcp", "prefer_udp":
		if len(args) != 0 {
			return p.wrongArgs(d, "forward "+opt, args)
		}
		if opt == "force_tcp" {
			f.ForceTCP = true
		} else {
			f.PreferUDP = true
		}
	case "except":
		if len(args) == 0 {
			return p.wrongArgs(d, "forward except", args)
		}
		for _, z := range args {
			zones, err := expandZone(z)
			if err != nil {
				return p.errf(d, "forward except: %v", err)
			}
			f.Except = append(f.Except, zones...)
		}
	case "max_fails":
		v, err := one()
		if err != nil {
			return err
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return p.errf(d, "forward max_fails %q: want a non-negative number", v)
		}
		f.MaxFails = int(n)
	case "max_concurrent":
		v, err := one()
		if err != nil {
			return err
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return p.errf(d, "forward max_concurrent %q: want a non-negative number", v)
		}
		f.MaxConcurrent = n
	case "expire":
		v, err := one()
		if err != nil {
			return err
		}
		dur, err := time.ParseDuration(v)
		if err != nil || dur < 0 {
			return p.errf(d, "forward expire %q: want a non-negative duration", v)
		}
		f.Expire = dur
	case "health_check":
		return p.healthCheck(d, args, f)
	case "policy":
		v, err := one()
		if err != nil {
			return err
		}
		switch v {
		case PolicyRandom, PolicyRoundRobin, PolicySequential:
			f.Policy = v
		default:
			return p.errf(d, "forward policy %q: want random, round_robin or sequential", v)
		}
	default:
		return p.forwardMoreOption(d, opt, args, f, tlsServerName)
	}
	return nil
}

// healthCheck parses `health_check DURATION [no_rec] [domain NAME]`.
func (p *blockParser) healthCheck(d *caddyfile.Dispenser, args []string, f *Forward) error {
	if len(args) == 0 {
		return p.wrongArgs(d, "forward health_check", args)
	}
	dur, err := time.ParseDuration(args[0])
	if err != nil || dur < 0 {
		return p.errf(d, "forward health_check %q: want a non-negative duration", args[0])
	}
	f.HealthCheck = dur
	for i := 1; i < len(args); i++ {
		switch args[i] {
		case "no_rec":
			f.HealthCheckNoRec = true
		case "domain":
			if i+1 >= len(args) {
				return p.errf(d, "forward health_check domain: missing name")
			}
			i++
			zone, err := normalizeZone(args[i])
			if err != nil {
				return p.errf(d, "forward health_check domain: %v", err)
			}
			f.HealthCheckDomain = zone
		default:
			return p.errf(d, "unknown option %q of forward health_check", args[i])
		}
	}
	return nil
}

// Addrs returns the host:port addresses the server listens on: one per bind
// address, or ":port" (all addresses) without bind.
func (s *Server) Addrs() []string {
	port := strconv.Itoa(s.Port)
	if len(s.Bind) == 0 {
		return []string{":" + port}
	}
	out := make([]string, len(s.Bind))
	for i, b := range s.Bind {
		out[i] = net.JoinHostPort(b, port)
	}
	return out
}
