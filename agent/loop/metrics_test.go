package loop

import (
	"errors"
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestMetricsCount(t *testing.T) {
	loopErr := &Error{Zone: "cluster.local.", Query: "1.2.cluster.local. HINFO", Upstreams: []string{"127.0.0.1:53"}, Seen: 1}
	for _, tc := range []struct {
		name string
		err  error
		want float64
	}{
		{"loop", loopErr, 1},
		{"wrapped loop", fmt.Errorf("refused: %w", loopErr), 1},
		{"other error", errors.New("upstream down"), 0},
		{"no error", nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			m, err := NewMetrics(reg)
			if err != nil {
				t.Fatal(err)
			}
			m.Count(tc.err)
			if got := testutil.ToFloat64(m.detected.WithLabelValues("cluster.local.")); got != tc.want {
				t.Errorf("nodelocaldns_loop_detected_total{zone=cluster.local.} = %v, want %v", got, tc.want)
			}
		})
	}
	if _, err := NewMetrics(prometheus.NewRegistry()); err != nil {
		t.Errorf("a fresh registry: %v", err)
	}
	var nilMetrics *Metrics
	nilMetrics.Count(loopErr) // must not panic
}
