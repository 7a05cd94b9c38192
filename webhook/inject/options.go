package inject

import (
	"fmt"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Default resolver options given to injected pods unless flags or
// annotations say otherwise.
const (
	DefaultNdots    = 3
	DefaultTimeout  = 1
	DefaultAttempts = 2
)

// numericOptions are the resolv.conf options with an integer value, with the
// range glibc accepts (larger values are silently capped by glibc; we refuse
// them so the operator notices).
var numericOptions = map[string][2]int{
	"ndots":    {0, 15},
	"timeout":  {1, 30},
	"attempts": {1, 5},
}

// BaseOptions returns the cluster-wide options: ndots, timeout and attempts
// with the given values (after checking their ranges).
func BaseOptions(ndots, timeout, attempts int) ([]corev1.PodDNSConfigOption, error) {
	out := make([]corev1.PodDNSConfigOption, 0, 3)
	for _, o := range []struct {
		name  string
		value int
	}{{"ndots", ndots}, {"timeout", timeout}, {"attempts", attempts}} {
		v := strconv.Itoa(o.value)
		if err := checkOption(o.name, &v); err != nil {
			return nil, err
		}
		out = append(out, corev1.PodDNSConfigOption{Name: o.name, Value: &v})
	}
	return out, nil
}

// ParseOptions parses an options annotation: resolv.conf options separated by
// commas and/or spaces, each "name" or "name:value", for example
// "ndots:2, timeout:3, edns0". Names are letters, digits, '-' and '_';
// ndots (0-15), timeout (1-30) and attempts (1-5) need an integer value.
func ParseOptions(s string) ([]corev1.PodDNSConfigOption, error) {
	fields := strings.FieldsFunc(s, func(r rune) bool {
		return r == ',' || r == ' ' || r == '\t' || r == '\n' || r == '\r'
	})
	out := make([]corev1.PodDNSConfigOption, 0, len(fields))
	for _, f := range fields {
		name, value, hasValue := strings.Cut(f, ":")
		var v *string
		if hasValue {
			v = &value
		}
		if err := checkOption(name, v); err != nil {
			return nil, err
		}
		out = append(out, corev1.PodDNSConfigOption{Name: name, Value: v})
	}
	return out, nil
}

func checkOption(name string, value *string) error {
	if name == "" {
		return fmt.Errorf("option with an empty name")
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return fmt.Errorf("option %q: name may only contain letters, digits, '-' and '_'", name)
		}
	}
	limits, numeric := numericOptions[name]
	if !numeric {
		if value != nil && (*value == "" || strings.ContainsAny(*value, " \t\r\n,")) {
			return fmt.Errorf("option %q: value %q must be non-empty without spaces or commas", name, *value)
		}
		return nil
	}
	if value == nil {
		return fmt.Errorf("option %q needs a value", name)
	}
	n, err := strconv.Atoi(*value)
	if err != nil || n < limits[0] || n > limits[1] {
		return fmt.Errorf("option %q: value %q must be an integer from %d to %d", name, *value, limits[0], limits[1])
	}
	return nil
}

// mergeOptions merges layers of options by name: a later layer replaces the
// value of an option with the same name (keeping its position), new names
// are appended. Options without a value (such as edns0) are kept as they are.
func mergeOptions(layers ...[]corev1.PodDNSConfigOption) []corev1.PodDNSConfigOption {
	n := 0
	for _, l := range layers {
		n += len(l)
	}
	out := make([]corev1.PodDNSConfigOption, 0, n)
	for _, l := range layers {
		for _, o := range l {
			o = *o.DeepCopy()
			replaced := false
			for i := range out {
				if out[i].Name == o.Name {
					out[i] = o
					replaced = true
					break
				}
			}
			if !replaced {
				out = append(out, o)
			}
		}
	}
	return out
}
