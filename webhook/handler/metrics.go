package handler

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nodelocaldns/nodelocaldns/pkg/promreg"
	"github.com/nodelocaldns/nodelocaldns/webhook/inject"
)

// Decisions, the "decision" label of the metrics and audit annotation.
const (
	DecisionInjected = "injected"
	DecisionSkipped  = "skipped"
	DecisionError    = "error"
)

type metrics struct {
	admissions *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	bodyBytes  prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		admissions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "nodelocaldns",
			Subsystem: "webhook",
			Name:      "admissions_total",
			Help:      "Pod admission requests handled, by decision (injected, skipped, error) and reason.",
		}, []string{"decision", "reason"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "nodelocaldns",
			Subsystem: "webhook",
			Name:      "admission_duration_seconds",
			Help:      "Time spent deciding and building the patch for a pod admission request, by decision.",
			Buckets:   []float64{0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1},
		}, []string{"decision"}),
		bodyBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "nodelocaldns",
			Subsystem: "webhook",
			Name:      "request_body_bytes",
			Help:      "Bytes of admission request bodies held at this moment (bounded by the body budget).",
		}),
	}
	if reg == nil {
		return m, nil
	}
	defer m.initSeries()
	var err error
	if m.admissions, err = promreg.Register(reg, m.admissions); err != nil {
		return nil, err
	}
	if m.duration, err = promreg.Register(reg, m.duration); err != nil {
		return nil, err
	}
	if m.bodyBytes, err = promreg.Register(reg, m.bodyBytes); err != nil {
		return nil, err
	}
	return m, nil
}

// knownReasons are the reasons each decision can have; their series start at
// zero so that rates and alerts work before the first occurrence.
var knownReasons = map[string][]string{
	DecisionInjected: {inject.ReasonInjected},
	DecisionSkipped: {
		ReasonNotCreate, ReasonSubresource, ReasonNamespaceUnavailable,
		inject.ReasonAlreadyInjected, inject.ReasonOptOutLabel, inject.ReasonOptOutAnnotation, inject.ReasonWindows,
		inject.ReasonDNSPolicyDefault, inject.ReasonDNSPolicyNone, inject.ReasonDNSPolicyUnknown,
		inject.ReasonHostNetClusterFirst, inject.ReasonHostNetDisabled, inject.ReasonKubeDNSUnknown,
		inject.ReasonNoAgentNodeSelector, inject.ReasonNoAgentNodeAffinity, inject.ReasonNoAgentToleration,
		inject.ReasonNamespaceUnknown, inject.ReasonInvalidAnnotation, inject.ReasonInvalidPodDNSConfig, inject.ReasonInvalidResult,
	},
	DecisionError: {
		ReasonWrongKind, ReasonUndecodable, ReasonPanic, ReasonUndecodableReview,
		ReasonRequestTooLarge, ReasonBusy, ReasonReadError,
	},
}

func (m *metrics) initSeries() {
	for decision, reasons := range knownReasons {
		for _, r := range reasons {
			m.admissions.WithLabelValues(decision, r)
		}
	}
}
