package gotemplate

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"text/template/parse"
	"unicode"
	"unicode/utf8"

	"github.com/miekg/dns"
)

// call runs a function.
func (s *state) call(dot any, name string, nodes []parse.Node, final any) (any, error) {
	switch name {
	case "and", "or":
		// Short-circuit, as text/template: the first false (and) or true
		// (or) argument, else the last.
		if len(nodes) == 0 && isMissing(final) {
			return nil, fmt.Errorf("wrong number of args for %s: want at least 1 got 0", name)
		}
		var v any
		for _, n := range nodes {
			var err error
			if v, err = s.arg(dot, n); err != nil {
				return nil, err
			}
			if truth(v) == (name == "or") {
				return v, nil
			}
		}
		if !isMissing(final) {
			v = final
		}
		return v, nil
	}
	vals, err := s.args(dot, nodes, final)
	if err != nil {
		return nil, err
	}
	want := func(n int) error {
		if len(vals) != n {
			return fmt.Errorf("wrong number of args for %s: want %d got %d", name, n, len(vals))
		}
		return nil
	}
	switch name {
	case "not":
		if err := want(1); err != nil {
			return nil, err
		}
		return !truth(vals[0]), nil
	case "len":
		if err := want(1); err != nil {
			return nil, err
		}
		switch v := vals[0].(type) {
		case string:
			return len(v), nil
		case []string:
			return len(v), nil
		case map[string]string:
			return len(v), nil
		case []dns.Question:
			return len(v), nil
		case []dns.RR:
			return len(v), nil
		}
		return nil, fmt.Errorf("len of type %T", vals[0])
	case "index":
		if len(vals) == 0 {
			return nil, errors.New("wrong number of args for index: want at least 1 got 0")
		}
		return index(vals[0], vals[1:])
	case "print":
		return fmt.Sprint(printArgs(vals)...), nil
	case "println":
		return fmt.Sprintln(printArgs(vals)...), nil
	case "printf":
		if len(vals) == 0 {
			return nil, errors.New("wrong number of args for printf: want at least 1 got 0")
		}
		f, ok := vals[0].(string)
		if !ok {
			return nil, fmt.Errorf("wrong type for value; expected string; got %T", vals[0])
		}
		return fmt.Sprintf(f, printArgs(vals[1:])...), nil
	case "parseInt":
		if err := want(3); err != nil {
			return nil, err
		}
		str, ok1 := vals[0].(string)
		base, ok2 := vals[1].(int)
		bits, ok3 := vals[2].(int)
		if !ok1 || !ok2 || !ok3 {
			return nil, fmt.Errorf("wrong argument types for parseInt: %T, %T, %T", vals[0], vals[1], vals[2])
		}
		return strconv.ParseUint(str, base, bits)
	case "eq", "ne", "lt", "le", "gt", "ge":
		return compare(name, vals)
	case "html":
		return htmlEscape(joinArgs(vals)), nil
	case "js":
		return jsEscape(joinArgs(vals)), nil
	case "urlquery":
		return url.QueryEscape(joinArgs(vals)), nil
	case "slice":
		if len(vals) == 0 {
			return nil, errors.New("wrong number of args for slice: want at least 1 got 0")
		}
		return slice(vals[0], vals[1:])
	}
	return nil, fmt.Errorf("function %q not defined", name)
}

func isMissing(v any) bool { _, ok := v.(missing); return ok }

// printArgs turns the data's values into what fmt prints as text/template
// does.
func printArgs(vals []any) []any {
	out := make([]any, len(vals))
	for i, v := range vals {
		switch v := v.(type) {
		case noValue:
			out[i] = "<no value>"
		default:
			out[i] = v
		}
	}
	return out
}

// printable is how an action prints a value.
func printable(v any) string {
	switch v := v.(type) {
	case nil, noValue:
		return "<no value>"
	case string:
		return v
	case dns.Question:
		// text/template prints an addressable value with its pointer's
		// String method.
		return v.String()
	}
	return fmt.Sprint(printArgs([]any{v})...)
}

// truth is text/template's: false, 0, "", empty and nil values are false.
func truth(v any) bool {
	switch v := v.(type) {
	case nil, noValue, missing:
		return false
	case bool:
		return v
	case string:
		return v != ""
	case int:
		return v != 0
	case uint64:
		return v != 0
	case uint16:
		return v != 0
	case float64:
		return v != 0
	case []string:
		return len(v) > 0
	case map[string]string:
		return len(v) > 0
	case []dns.Question:
		return len(v) > 0
	case []dns.RR:
		return len(v) > 0
	case *dns.Msg:
		return v != nil
	case *dns.Question:
		return v != nil
	}
	return true
}

// toInt is an index as an int.
func toInt(v any) (int, error) {
	switch v := v.(type) {
	case int:
		return v, nil
	case uint64:
		if v > 1<<31 {
			return 0, fmt.Errorf("index out of range: %d", v)
		}
		return int(v), nil
	case uint16:
		return int(v), nil
	}
	return 0, fmt.Errorf("cannot index slice/array with type %T", v)
}

// index is text/template's index over the data's slices and maps.
func index(v any, idx []any) (any, error) {
	for _, i := range idx {
		switch c := v.(type) {
		case map[string]string:
			k, ok := i.(string)
			if !ok {
				return nil, fmt.Errorf("value has type %T; should be string", i)
			}
			v = c[k] // a missing key is the zero value
			continue
		}
		n, err := toInt(i)
		if err != nil {
			return nil, err
		}
		var l int
		switch c := v.(type) {
		case []string:
			l = len(c)
		case []dns.Question:
			l = len(c)
		case []dns.RR:
			l = len(c)
		case string:
			l = len(c)
		default:
			return nil, fmt.Errorf("can't index item of type %T", v)
		}
		if n < 0 || n >= l {
			return nil, fmt.Errorf("error calling index: index out of range: %d", n)
		}
		switch c := v.(type) {
		case []string:
			v = c[n]
		case []dns.Question:
			v = c[n]
		case []dns.RR:
			v = c[n]
		case string:
			v = c[n]
		}
	}
	return v, nil
}

// kind is a comparable value's basic kind.
func kind(v any) (k string, i int64, u uint64, f float64, s string, b bool, err error) {
	switch v := v.(type) {
	case int:
		return "int", int64(v), 0, 0, "", false, nil
	case uint64:
		return "uint", 0, v, 0, "", false, nil
	case uint16:
		return "uint", 0, uint64(v), 0, "", false, nil
	case uint8:
		return "uint", 0, uint64(v), 0, "", false, nil
	case float64:
		return "float", 0, 0, v, "", false, nil
	case string:
		return "string", 0, 0, 0, v, false, nil
	case bool:
		return "bool", 0, 0, 0, "", v, nil
	}
	return "", 0, 0, 0, "", false, fmt.Errorf("invalid type for comparison: %T", v)
}

// compare is text/template's eq, ne, lt, le, gt and ge on basic values.
func compare(op string, vals []any) (any, error) {
	if len(vals) < 2 || op != "eq" && len(vals) != 2 {
		return nil, fmt.Errorf("wrong number of args for %s: got %d", op, len(vals))
	}
	cmp := func(a, b any) (int, error) {
		ka, ia, ua, fa, sa, ba, err := kind(a)
		if err != nil {
			return 0, err
		}
		kb, ib, ub, fb, sb, bb, err := kind(b)
		if err != nil {
			return 0, err
		}
		if ka != kb {
			switch {
			case ka == "int" && kb == "uint":
				if ia < 0 {
					return -1, nil
				}
				ka, ua = "uint", uint64(ia)
			case ka == "uint" && kb == "int":
				if ib < 0 {
					return 1, nil
				}
				ub = uint64(ib) // compared as uint below (ka is "uint")
			default:
				return 0, errors.New("incompatible types for comparison")
			}
		}
		switch ka {
		case "int":
			return compareOrdered(ia, ib), nil
		case "uint":
			return compareOrdered(ua, ub), nil
		case "float":
			return compareOrdered(fa, fb), nil
		case "string":
			return strings.Compare(sa, sb), nil
		}
		if op != "eq" && op != "ne" {
			return 0, errors.New("invalid type for comparison")
		}
		if ba == bb {
			return 0, nil
		}
		return 1, nil
	}
	if op == "eq" {
		for _, b := range vals[1:] {
			c, err := cmp(vals[0], b)
			if err != nil {
				return nil, err
			}
			if c == 0 {
				return true, nil
			}
		}
		return false, nil
	}
	c, err := cmp(vals[0], vals[1])
	if err != nil {
		return nil, err
	}
	switch op {
	case "ne":
		return c != 0, nil
	case "lt":
		return c < 0, nil
	case "le":
		return c <= 0, nil
	case "gt":
		return c > 0, nil
	}
	return c >= 0, nil
}

func compareOrdered[T int64 | uint64 | float64](a, b T) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// joinArgs is text/template's argument text for html, js and urlquery: a
// lone string as it is, anything else as fmt prints it.
func joinArgs(vals []any) string {
	if len(vals) == 1 {
		if s, ok := vals[0].(string); ok {
			return s
		}
	}
	return fmt.Sprint(printArgs(vals)...)
}

// htmlEscape escapes the five HTML specials and NUL as text/template does.
func htmlEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case 0:
			b.WriteString("\uFFFD")
		case '"':
			b.WriteString("&#34;")
		case '\'':
			b.WriteString("&#39;")
		case '&':
			b.WriteString("&amp;")
		case '<':
			b.WriteString("&lt;")
		case '>':
			b.WriteString("&gt;")
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// jsEscape escapes text for JavaScript as text/template does: quotes,
// backslash, <, >, & and = escaped, control characters and unprintable
// runes as \uXXXX.
func jsEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '\\':
				b.WriteString(`\\`)
			case c == '\'':
				b.WriteString(`\'`)
			case c == '"':
				b.WriteString(`\"`)
			case c == '<':
				b.WriteString(`\u003C`)
			case c == '>':
				b.WriteString(`\u003E`)
			case c == '&':
				b.WriteString(`\u0026`)
			case c == '=':
				b.WriteString(`\u003D`)
			case c < ' ':
				fmt.Fprintf(&b, `\u00%02X`, c)
			default:
				b.WriteByte(c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if unicode.IsPrint(r) {
			b.WriteString(s[i : i+size])
		} else {
			fmt.Fprintf(&b, `\u%04X`, r)
		}
		i += size
	}
	return b.String()
}

// slice is text/template's slice on strings and the data's slices.
func slice(v any, idx []any) (any, error) {
	if len(idx) > 3 {
		return nil, fmt.Errorf("too many slice indexes: %d", len(idx))
	}
	var n int
	switch c := v.(type) {
	case string:
		if len(idx) == 3 {
			return nil, errors.New("cannot 3-index slice a string")
		}
		n = len(c)
	case []string:
		n = len(c)
	case []dns.Question:
		n = len(c)
	case []dns.RR:
		n = len(c)
	default:
		return nil, fmt.Errorf("can't slice item of type %T", v)
	}
	capacity := n
	if c, ok := v.([]string); ok {
		capacity = cap(c)
	}
	if c, ok := v.([]dns.Question); ok {
		capacity = cap(c)
	}
	if c, ok := v.([]dns.RR); ok {
		capacity = cap(c)
	}
	x := [3]int{0, n, capacity}
	for i, a := range idx {
		k, err := toInt(a)
		if err != nil {
			return nil, err
		}
		if k < 0 || k > capacity {
			return nil, fmt.Errorf("index out of range: %d", k)
		}
		x[i] = k
	}
	if x[0] > x[1] {
		return nil, fmt.Errorf("invalid slice index: %d > %d", x[0], x[1])
	}
	if len(idx) == 3 && x[1] > x[2] {
		return nil, fmt.Errorf("invalid slice index: %d > %d", x[1], x[2])
	}
	switch c := v.(type) {
	case string:
		return c[x[0]:x[1]], nil
	case []string:
		return c[x[0]:x[1]:x[2]], nil
	case []dns.Question:
		return c[x[0]:x[1]:x[2]], nil
	case []dns.RR:
		return c[x[0]:x[1]:x[2]], nil
	}
	return nil, fmt.Errorf("can't slice item of type %T", v)
}
