// Package corefile parses the Corefile dialect the agent understands: the
// subset of CoreDNS plugins used by node-cache's official ConfigMap, with
// CoreDNS semantics and defaults. Anything else is refused with its line.
package corefile

import "time"

// Config is a parsed Corefile: one Server per server block, in file order.
type Config struct {
	Servers []Server
	// Imports are the files the Corefile imported, with a digest of their
	// contents, so that a change of one can be noticed.
	Imports map[string]string
}

// Server is one server block, e.g. `cluster.local:53 { ... }`.
type Server struct {
	// Zones are the block's zones as lower-case FQDNs ("cluster.local.", ".").
	Zones []string
	// Port is the block's port (the `:53` suffix, or the -dns.port default).
	Port int
	// Bind lists the addresses to listen on; empty means all addresses.
	Bind []string
	// Errors and Log enable the errors and log plugins.
	Errors bool
	Log    bool
	// Cache is nil when the block has no cache plugin.
	Cache *Cache
	// Forward is nil when the block has no forward plugin.
	Forward *Forward
	// NextForwards are the block's further forward plugins, in file
	// order: a query that Forward does not match (FROM, except), or whose
	// answer has one of Forward's `next` rcodes, goes on to them.
	NextForwards []*Forward
	// Health is the address of the health plugin ("" when absent),
	// HealthLameDuck its lameduck duration.
	Health         string
	HealthLameDuck time.Duration
	// Ready is the address of the ready plugin ("" when absent).
	Ready string
	// Prometheus is the address of the prometheus plugin ("" when absent).
	Prometheus string
	// Reload is the reload interval (0 when the plugin is absent),
	// ReloadJitter the random jitter added to it.
	Reload       time.Duration
	ReloadJitter time.Duration
	// Loop enables loop detection at start.
	Loop bool
	// ErrorRules are the errors plugin's consolidate rules;
	// ErrorStacktrace its stacktrace option.
	ErrorRules      []ErrorRule
	ErrorStacktrace bool
	// LogRules are the log plugin's rules, in order (Log is set with them).
	LogRules []LogRule
	// BufSize is the bufsize plugin's EDNS0 buffer size (0 when absent).
	BufSize int
	// Timeouts are the timeouts plugin's (nil when absent).
	Timeouts *Timeouts
	// Debug enables the debug plugin.
	Debug bool
	// Pprof is the pprof plugin's address ("" when absent),
	// PprofBlockRate its block profile rate (0: block profiling off).
	Pprof          string
	PprofBlockRate int
	// The answer-changing plugins (hosts.go, rewrite.go, template.go,
	// dns64.go, loadbalance.go); nil or empty when absent. The server runs
	// them in CoreDNS's plugin order, whatever their order in the block.
	Hosts       *Hosts
	Rewrite     []RewriteRule
	Templates   []Template
	DNS64       *DNS64
	LoadBalance *LoadBalance
	Whoami      bool
	// Line is the line of the block's key in the Corefile, for messages.
	Line int
	// Plugins names the block's plugins, in Corefile order (for
	// coredns_plugin_enabled).
	Plugins []string
}

// Cache is the cache plugin's configuration, with CoreDNS defaults filled in.
type Cache struct {
	SuccessCap    int           // default 9984
	SuccessTTL    time.Duration // max TTL of positive answers, default 3600s
	SuccessMinTTL time.Duration // min TTL of positive answers, default 5s
	DenialCap     int           // default 9984
	DenialTTL     time.Duration // max TTL of negative answers, default 1800s
	DenialMinTTL  time.Duration // default 5s
	// Prefetch is nil when prefetching is off.
	Prefetch *Prefetch
	// ServeStale is how long expired entries may still be served when the
	// upstreams fail; 0 means serve_stale is off.
	ServeStale time.Duration
	// ServeStaleVerify is serve_stale's "verify" refresh mode: ask the
	// upstream first and serve the stale entry only when that fails. The
	// default ("immediate") answers stale at once and refreshes behind.
	ServeStaleVerify bool
	// ServfailTTL is how long SERVFAIL answers are cached (servfail
	// option, default 5s, at most 5m; 0 disables).
	ServfailTTL time.Duration
	// Zones limits caching to these zones (lower-case FQDNs); it defaults to
	// the server block's zones.
	Zones []string
	// KeepTTL serves cached answers with the TTL they were stored with
	// (keepttl) instead of the remaining one.
	KeepTTL bool
	// DisableSuccess and DisableDenial are the zones whose positive or
	// negative (and SERVFAIL) answers are not cached (disable).
	DisableSuccess, DisableDenial []string
}

// ErrorRule is one `consolidate DURATION REGEXP [LEVEL]` of the errors
// plugin: errors matching Pattern are counted for Duration, then reported
// in one line at Level ("warning", "error", "info" or "debug").
type ErrorRule struct {
	Duration time.Duration
	Pattern  string
	Level    string
}

// LogRule is one name scope of the log plugin: queries in Name (a
// lower-case FQDN) are logged with Format when their answer's class
// ("success", "denial", "error") is in Classes; Classes nil means all.
type LogRule struct {
	Name    string
	Format  string
	Classes []string
}

// Timeouts are the timeouts plugin's TCP read, write and idle timeouts
// (0: the default).
type Timeouts struct {
	Read, Write, Idle time.Duration
}

// Prefetch configures prefetching of popular entries before they expire.
type Prefetch struct {
	Amount     int           // hits within Duration that make an entry popular (default 1)
	Duration   time.Duration // default 1m
	Percentage int           // prefetch when this much of the TTL is left (default 10)
}

// Forward is the forward plugin's configuration, with CoreDNS defaults.
type Forward struct {
	// From is the zone being forwarded, as a lower-case FQDN.
	From string
	// To are the upstreams as host:port (IPv6 in brackets). A
	// /etc/resolv.conf-style path has already been expanded to its nameservers.
	To            []string
	Except        []string
	ForceTCP      bool
	PreferUDP     bool
	MaxConcurrent int           // 0 = unlimited
	MaxFails      int           // default 2
	Expire        time.Duration // idle connection expiry, default 10s
	HealthCheck   time.Duration // health check interval, default 500ms; 0 disables
	// HealthCheckDomain is the name queried by health checks (default ".").
	HealthCheckDomain string
	// HealthCheckNoRec clears the RD bit of health check queries (no_rec).
	HealthCheckNoRec bool
	Policy           string // "random" (default), "round_robin" or "sequential"
	// TLS holds the entries of To written as tls:// (DNS over TLS), each
	// with its TLS server name: the one of tls://IP%NAME, else
	// tls_servername, else "" (the certificate must then hold the IP).
	TLS map[string]string
	// TLSCertPEM and TLSKeyPEM are the client certificate and key of the
	// tls option (nil without); TLSCAPEM the CA certificates that verify
	// the upstreams (nil: the system's).
	TLSCertPEM, TLSKeyPEM, TLSCAPEM []byte
	// MaxConnectAttempts caps the upstream attempts of one query (0: no
	// cap besides the timeout).
	MaxConnectAttempts int
	// MaxIdleConns caps the idle connections kept per upstream (0: no cap).
	MaxIdleConns int
	// Next lists rcodes that pass the query on to the next forward plugin
	// of the block (the next entry of Server.NextForwards).
	Next []int
	// Failover lists rcodes that make the query try the next upstream.
	Failover []int
	// FailFast answers SERVFAIL at once when every upstream is down
	// (failfast_all_unhealthy_upstreams) instead of trying one anyway.
	FailFast bool
}
