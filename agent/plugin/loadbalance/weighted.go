package loadbalance

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// maxWeightFile bounds the weight file read.
const maxWeightFile = 16 << 20

// weights maps an owner name (as written in the file, with a final dot)
// to its addresses' weights (1-255).
type weights map[string]map[netip.Addr]uint8

// weighted is the weighted policy: the weight file, re-read when it
// changes, and the choice of the first address.
type weighted struct {
	path    string
	reload  time.Duration
	logger  *log.Logger
	domains atomic.Pointer[weights]
	sum     [sha256.Size]byte // of the file last read; reader only

	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
}

// newWeighted reads the weight file and starts re-reading it. As CoreDNS,
// a file that cannot be opened is an error only when it is never re-read.
func newWeighted(path string, reload time.Duration, logger *log.Logger) (*weighted, error) {
	w := &weighted{path: path, reload: reload, logger: logger, stop: make(chan struct{}), done: make(chan struct{})}
	w.domains.Store(&weights{})
	if err := w.update(); err != nil {
		if !os.IsNotExist(err) && !os.IsPermission(err) || reload == 0 {
			return nil, fmt.Errorf("loadbalance: %w", err)
		}
		logger.Printf("[WARNING] plugin/loadbalance: %v; will try again in %v", err, reload)
	}
	if reload == 0 {
		close(w.done)
		return w, nil
	}
	go func() {
		defer close(w.done)
		t := time.NewTicker(reload)
		defer t.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-t.C:
				if err := w.update(); err != nil {
					logger.Printf("[ERROR] plugin/loadbalance: %v", err)
				}
			}
		}
	}()
	return w, nil
}

// close stops re-reading the file.
func (w *weighted) close() {
	w.stopOnce.Do(func() { close(w.stop) })
	<-w.done
}

// update reads the file when its content changed.
func (w *weighted) update() error {
	f, err := os.Open(w.path)
	if err != nil {
		return err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxWeightFile+1))
	if err != nil {
		return fmt.Errorf("weight file %s: %w", w.path, err)
	}
	if len(b) > maxWeightFile {
		return fmt.Errorf("weight file %s is larger than %d bytes", w.path, maxWeightFile)
	}
	sum := sha256.Sum256(b)
	if sum == w.sum {
		return nil
	}
	w.sum = sum // a bad file is not read again until it changes
	d, err := parseWeights(bytes.NewReader(b), w.path)
	if err != nil {
		return err
	}
	w.domains.Store(&d)
	return nil
}

// parseWeights reads `NAME` lines followed by `ADDRESS WEIGHT` lines; #
// comments and blank lines are skipped.
func parseWeights(r io.Reader, file string) (weights, error) {
	d := weights{}
	name := ""
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		f := strings.Fields(line)
		switch len(f) {
		case 1:
			if _, err := netip.ParseAddr(f[0]); err == nil {
				return nil, fmt.Errorf("wrong domain name:%q in weight file %s (a missing weight value?)", f[0], file)
			}
			name = dns.Fqdn(f[0])
			if d[name] == nil {
				d[name] = map[netip.Addr]uint8{}
			}
		case 2:
			a, err := netip.ParseAddr(f[0])
			if err != nil {
				return nil, fmt.Errorf("wrong IP address:%q in weight file %s", f[0], file)
			}
			v, err := strconv.ParseUint(f[1], 10, 8)
			if err != nil || v == 0 {
				return nil, fmt.Errorf("wrong weight value:%q in weight file %s", f[1], file)
			}
			if name == "" {
				return nil, fmt.Errorf("missing domain name in weight file %s", file)
			}
			if _, dup := d[name][a.Unmap()]; !dup {
				d[name][a.Unmap()] = uint8(v) // the first weight of an address counts, as in CoreDNS
			}
		default:
			return nil, fmt.Errorf("could not parse weight line:%q in weight file %s", line, file)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("weight file %s: %w", file, err)
	}
	return d, nil
}

// reorder orders records as CoreDNS's weighted policy: CNAMEs, the rest,
// the addresses with one picked by weight first, then MX; unchanged
// without addresses.
func (w *weighted) reorder(in []dns.RR) []dns.RR {
	cname, addr, mx, rest := split(in)
	if len(addr) == 0 {
		return in
	}
	if i := w.pick(addr); i > 0 {
		addr[0], addr[i] = addr[i], addr[0]
	}
	out := make([]dns.RR, 0, len(in))
	return append(append(append(append(out, cname...), rest...), addr...), mx...)
}

// pick chooses an address with a probability proportional to its weight
// (1 when the file has none for it).
func (w *weighted) pick(addr []dns.RR) int {
	d := *w.domains.Load()
	type item struct {
		i int
		w uint
	}
	items := make([]item, len(addr))
	var sum uint
	for i, rr := range addr {
		items[i] = item{i, 1}
		if v, ok := d[rr.Header().Name][addrOf(rr)]; ok {
			items[i].w = uint(v)
		}
		sum += items[i].w
	}
	sort.SliceStable(items, func(a, b int) bool { return items[a].w > items[b].w })
	v := rand.UintN(sum)
	var acc uint
	for _, it := range items {
		acc += it.w
		if v < acc {
			return it.i
		}
	}
	return 0
}
