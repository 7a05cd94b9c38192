package promreg

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func newCounter(labels ...string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: "test_events_total", Help: "Events."}, labels)
}

func TestRegister(t *testing.T) {
	for _, tc := range []struct {
		name    string
		first   *prometheus.CounterVec // registered before, if non-nil
		second  *prometheus.CounterVec
		wantErr string
		shared  bool // the second registration returns the first collector
	}{
		{name: "fresh", second: newCounter("kind")},
		{name: "identical collector shared", first: newCounter("kind"), second: newCounter("kind"), shared: true},
		{name: "same name other labels refused", first: newCounter("kind"), second: newCounter("other"), wantErr: "test_events_total"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			if tc.first != nil {
				if err := reg.Register(tc.first); err != nil {
					t.Fatal(err)
				}
			}
			got, err := Register(reg, tc.second)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one naming %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got.WithLabelValues("a").Inc()
			want := tc.second
			if tc.shared {
				want = tc.first
			}
			if v := testutil.ToFloat64(want.WithLabelValues("a")); v != 1 {
				t.Fatalf("increment through the returned collector reached %v, want 1 on the %s one", v, map[bool]string{true: "first", false: "second"}[tc.shared])
			}
		})
	}
}

func TestRegisterNilRegistry(t *testing.T) {
	c := newCounter("kind")
	got, err := Register[*prometheus.CounterVec](nil, c)
	if err != nil || got != c {
		t.Fatalf("Register(nil, c) = %p, %v; want c, nil", got, err)
	}
}
