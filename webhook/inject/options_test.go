package inject

import (
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestParseOptions(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      string
		want    []corev1.PodDNSConfigOption
		wantErr string
	}{
		{name: "empty", in: "", want: []corev1.PodDNSConfigOption{}},
		{name: "commas and spaces", in: "ndots:2, timeout:3 edns0,,", want: []corev1.PodDNSConfigOption{opt("ndots", "2"), opt("timeout", "3"), opt("edns0")}},
		{name: "free form value", in: "foo:bar", want: []corev1.PodDNSConfigOption{opt("foo", "bar")}},
		{name: "ndots too big", in: "ndots:16", wantErr: "0 to 15"},
		{name: "ndots negative", in: "ndots:-1", wantErr: "0 to 15"},
		{name: "timeout zero", in: "timeout:0", wantErr: "1 to 30"},
		{name: "attempts not a number", in: "attempts:two", wantErr: "attempts"},
		{name: "numeric option without value", in: "ndots", wantErr: "needs a value"},
		{name: "empty value", in: "foo:", wantErr: "non-empty"},
		{name: "empty name", in: ":3", wantErr: "empty name"},
		{name: "bad name", in: "nd$ts:3", wantErr: "letters"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseOptions(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want it to mention %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestBaseOptions(t *testing.T) {
	for _, tc := range []struct {
		name                     string
		ndots, timeout, attempts int
		wantErr                  string
	}{
		{name: "defaults", ndots: 3, timeout: 1, attempts: 2},
		{name: "bounds", ndots: 0, timeout: 30, attempts: 5},
		{name: "ndots", ndots: 16, timeout: 1, attempts: 1, wantErr: "ndots"},
		{name: "timeout", ndots: 1, timeout: 0, attempts: 1, wantErr: "timeout"},
		{name: "attempts", ndots: 1, timeout: 1, attempts: 6, wantErr: "attempts"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := BaseOptions(tc.ndots, tc.timeout, tc.attempts)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want it to mention %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || len(got) != 3 || *got[0].Value == "" {
				t.Fatalf("got %+v, %v", got, err)
			}
		})
	}
}

func TestMergeOptions(t *testing.T) {
	got := mergeOptions(
		[]corev1.PodDNSConfigOption{opt("ndots", "3"), opt("timeout", "1")},
		[]corev1.PodDNSConfigOption{opt("edns0"), opt("ndots", "2")},
		[]corev1.PodDNSConfigOption{opt("timeout"), opt("rotate")},
	)
	want := []corev1.PodDNSConfigOption{opt("ndots", "2"), opt("timeout"), opt("edns0"), opt("rotate")}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}
