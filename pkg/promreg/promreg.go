// Package promreg registers Prometheus collectors on the explicit registry a
// component is given (never the global one), so that several instances of a
// component in one process (tests, reloads, several server blocks) share
// their series instead of failing.
package promreg

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Register registers c on reg and returns it. When a collector with the same
// description is already registered, it returns that one instead, so that
// every user counts into the same series. A nil reg leaves c unregistered.
// Any other failure (e.g. the same name with other labels) is an error that
// names the metric.
func Register[T prometheus.Collector](reg prometheus.Registerer, c T) (T, error) {
	if reg == nil {
		return c, nil
	}
	err := reg.Register(c)
	if err == nil {
		return c, nil
	}
	if are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); ok {
		if existing, ok := are.ExistingCollector.(T); ok {
			return existing, nil
		}
	}
	var zero T
	return zero, fmt.Errorf("register %s: %w", describe(c), err)
}

// describe returns the first description of c, for error messages.
func describe(c prometheus.Collector) string {
	ch := make(chan *prometheus.Desc, 64)
	go func() {
		c.Describe(ch)
		close(ch)
	}()
	var first string
	for d := range ch {
		if first == "" {
			first = d.String()
		}
	}
	return first
}

// TimeBuckets returns CoreDNS's plugin.TimeBuckets (250us doubling to about
// 8s), the buckets of its request duration histograms, so that dashboards
// built for CoreDNS read the agent's histograms the same way.
func TimeBuckets() []float64 { return prometheus.ExponentialBuckets(0.00025, 2, 16) }
