package certs

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nodelocaldns/nodelocaldns/pkg/promreg"
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
	if m.notAfter, err = promreg.Register(reg, m.notAfter); err != nil {
		return nil, err
	}
	if m.issued, err = promreg.Register(reg, m.issued); err != nil {
		return nil, err
	}
	if m.errors, err = promreg.Register(reg, m.errors); err != nil {
		return nil, err
	}
	return m, nil
}
