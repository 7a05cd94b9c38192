package promreg

import (
	"math"
	"testing"
)

// CoreDNS's plugin.TimeBuckets: 16 buckets from 250us, each twice the last.
func TestTimeBuckets(t *testing.T) {
	b := TimeBuckets()
	if len(b) != 16 {
		t.Fatalf("%d buckets, want 16: %v", len(b), b)
	}
	for i, v := range b {
		if want := 0.00025 * math.Pow(2, float64(i)); math.Abs(v-want) > 1e-12 {
			t.Errorf("bucket %d = %v, want %v", i, v, want)
		}
	}
	b[0] = 42
	if TimeBuckets()[0] != 0.00025 {
		t.Error("TimeBuckets returns a shared slice: a caller's change leaks to the next")
	}
}
