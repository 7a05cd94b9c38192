package cache

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// bigAnswer is an answer to name with n TXT records of 200 bytes.
func bigAnswer(name string, n int) *dns.Msg {
	var rrs []string
	for i := range n {
		rrs = append(rrs, fmt.Sprintf("%s 300 IN TXT \"%s%03d\"", name, strings.Repeat("x", 196), i))
	}
	return answer(name, dns.RcodeSuccess, rrs...)
}

// TestByteBound: entries stay within MaxBytes however many large answers
// are stored, and answers longer than MaxEntrySize are not stored.
func TestByteBound(t *testing.T) {
	const maxBytes = 256 << 10
	c := New(defaults(), Options{Now: newClock().now, MaxBytes: maxBytes, MaxEntrySize: 8 << 10})
	for i := range 1000 {
		name := fmt.Sprintf("n%d.example.", i)
		if err := c.Set(keyOf(t, name, dns.TypeA), bigAnswer(name, 20)); err != nil { // about 4.4 kB
			t.Fatalf("store %s: %v", name, err)
		}
		if b := c.Bytes(); b > maxBytes {
			t.Fatalf("after %d answers the entries hold %d bytes, bound %d", i+1, b, maxBytes)
		}
	}
	succ, _ := c.Len()
	if succ < 30 || succ > 60 {
		t.Fatalf("%d entries of about 4.4 kB in a 256 kB bound, want 30..60", succ)
	}
	if err := c.Set(keyOf(t, "huge.example.", dns.TypeA), bigAnswer("huge.example.", 60)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("a 12 kB answer with an 8 kB maximum entry: err %v, want ErrTooLarge", err)
	}
	// Replacing and deleting keeps the count exact.
	var sum int64
	for i := range c.tables {
		for j := range c.tables[i].shards {
			for _, e := range c.tables[i].shards[j].m {
				sum += e.cost()
			}
		}
	}
	if sum != c.Bytes() {
		t.Fatalf("Bytes() = %d, entries hold %d", c.Bytes(), sum)
	}
}
