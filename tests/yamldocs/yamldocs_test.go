package yamldocs

import (
	"slices"
	"testing"
)

func TestSplit(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []string
	}{
		{"one", "a: 1\n", []string{"a: 1\n"}},
		{"two", "a: 1\n---\nb: 2\n", []string{"a: 1\n", "b: 2\n"}},
		// A leading separator stays on the first document (as kubectl's
		// reader gives it; YAML decoders accept it).
		{"leading separator and empty documents", "---\na: 1\n---\n\n---\nb: 2\n---\n", []string{"---\na: 1\n", "b: 2\n"}},
		// Text that merely starts with dashes is not a separator.
		{"dashes inside a block scalar", "a: |\n  x\n  ---y\nb: 2\n", []string{"a: |\n  x\n  ---y\nb: 2\n"}},
		{"separator with a comment", "a: 1\n--- # next\nb: 2\n", []string{"a: 1\n", "b: 2\n"}},
		{"empty", "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			docs, err := Split([]byte(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, d := range docs {
				got = append(got, string(d))
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("Split(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}
