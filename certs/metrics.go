package certs

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics of the certificate manager.
type metrics struct {
	notAfter *prometheus.GaugeVec
	issued   *prometheus.CounterVec
	errors   prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		notAfter: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "nodelocaldns",
			Subsystem: "webhook_certificate",
			Name:      "not_after_timestamp_seconds",
			Help:      "Expiry of the certificates the webhook serves with and trusts, by certificate (ca, serving).",
		}, []string{"certificate"}),
		issued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "nodelocaldns",
			Subsystem: "webhook_certificate",
			Name:      "issued_total",
			Help:      "Certificates issued and stored by this replica, by certificate (ca, serving).",
		}, []string{"certificate"}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "nodelocaldns",
			Subsystem: "webhook_certificate",
			Name:      "errors_total",
			Help:      "Failed passes of the built-in certificate manager.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	if m.notAfter, err = register(reg, m.notAfter); err != nil {
		return nil, err
	}
	if m.issued, err = register(reg, m.issued); err != nil {
		return nil, err
	}
	if m.errors, err = register(reg, m.errors); err != nil {
		return nil, err
	}
	return m, nil
}

// register registers c, or returns the collector registered before under the
// same name (the webhook may start several times in one process).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	if err == nil {
		return c, nil
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, fmt.Errorf("certs: register metrics: %w", err)
}
