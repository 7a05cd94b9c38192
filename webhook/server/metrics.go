package server

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nodelocaldns/nodelocaldns/pkg/promreg"
)

type metrics struct {
	requests    *prometheus.CounterVec
	inFlight    prometheus.Gauge
	connections prometheus.Gauge
	refused     prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "nodelocaldns",
			Subsystem: "webhook",
			Name:      "http_requests_total",
			Help:      "HTTP requests to the webhook server, by path and status code.",
		}, []string{"path", "code"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "nodelocaldns",
			Subsystem: "webhook",
			Name:      "http_requests_in_flight",
			Help:      "HTTP requests the webhook server is handling.",
		}),
		connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "nodelocaldns",
			Subsystem: "webhook",
			Name:      "connections",
			Help:      "Open connections to the webhook server (at most --max-connections).",
		}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "nodelocaldns",
			Subsystem: "webhook",
			Name:      "connections_refused_total",
			Help:      "Connections to the webhook server closed at once because --max-connections were open.",
		}),
	}
	var err error
	if m.requests, err = promreg.Register(reg, m.requests); err != nil {
		return nil, err
	}
	if m.inFlight, err = promreg.Register(reg, m.inFlight); err != nil {
		return nil, err
	}
	if m.connections, err = promreg.Register(reg, m.connections); err != nil {
		return nil, err
	}
	if m.refused, err = promreg.Register(reg, m.refused); err != nil {
		return nil, err
	}
	return m, nil
}
