package health

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nodelocaldns/nodelocaldns/pkg/promreg"
)

// SelfCheckMetrics are the health plugin's metrics with CoreDNS's names:
// how long the agent's own /health takes to answer, and how often it does
// not.
type SelfCheckMetrics struct {
	duration prometheus.Histogram // coredns_health_request_duration_seconds
	failures prometheus.Counter   // coredns_health_request_failures_total
}

// NewSelfCheckMetrics registers the health metrics with reg, reusing ones
// registered there before.
func NewSelfCheckMetrics(reg prometheus.Registerer) (*SelfCheckMetrics, error) {
	m := &SelfCheckMetrics{
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "coredns", Subsystem: "health", Name: "request_duration_seconds",
			// CoreDNS's plugin.SlimTimeBuckets: 0.25 ms to 2.5 s.
			Buckets: prometheus.ExponentialBuckets(0.00025, 10, 5),
			Help:    "Histogram of the time (in seconds) each request took.",
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "coredns", Subsystem: "health", Name: "request_failures_total",
			Help: "The number of times the health check failed.",
		}),
	}
	var err error
	if m.duration, err = promreg.Register(reg, m.duration); err != nil {
		return nil, err
	}
	if m.failures, err = promreg.Register(reg, m.failures); err != nil {
		return nil, err
	}
	return m, nil
}

// SelfCheckInterval is how often SelfCheck asks /health, as CoreDNS.
const SelfCheckInterval = time.Second

// SelfCheck asks http://addr/health every SelfCheckInterval until ctx is
// done, as CoreDNS's health plugin does to export how fast it answers: a
// slow or failing answer shows an overloaded process. An address without
// a host (":8080") is asked on the loopback. The request is written by
// hand on a fresh connection: an http.Client costs about 1 MB of resident
// memory for one GET a second.
func (m *SelfCheckMetrics) SelfCheck(ctx context.Context, addr string) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	target := net.JoinHostPort(host, port)
	tick := time.NewTicker(SelfCheckInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		start := time.Now()
		err := get(ctx, target)
		if ctx.Err() != nil {
			return
		}
		m.duration.Observe(time.Since(start).Seconds())
		if err != nil {
			m.failures.Inc()
		}
	}
}

// selfCheckTimeout bounds one self check, as CoreDNS's client timeout.
const selfCheckTimeout = 3 * time.Second

// get sends GET /health to addr and reads the status line; any answer
// counts as success (CoreDNS counts only failed requests).
func get(ctx context.Context, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, selfCheckTimeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	deadline, _ := ctx.Deadline()
	if err := c.SetDeadline(deadline); err != nil {
		return err
	}
	if _, err := io.WriteString(c, "GET /health HTTP/1.1\r\nHost: "+addr+"\r\nConnection: close\r\n\r\n"); err != nil {
		return err
	}
	line, err := bufio.NewReaderSize(c, 64).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "HTTP/1.") {
		return fmt.Errorf("health self check: unexpected answer %q", line)
	}
	return nil
}
