package server

import (
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nodelocaldns/nodelocaldns/pkg/promreg"
)

// Defaults of the per-client limits and of the memory budget (see Options).
const (
	// DefaultMaxClientInflight bounds the queries of one client (source
	// address) on the miss path at once, UDP and TCP together.
	DefaultMaxClientInflight = 512
	// DefaultMaxClientConns bounds the TCP connections of one client per
	// listener.
	DefaultMaxClientConns = 64
	// DefaultBudget is the memory budget of in-flight work when
	// Options.Budget is 0.
	DefaultBudget = 32 << 20

	// missCost is what one query on the miss path is charged: its job, the
	// worker's stack, the unpacked query and answer.
	missCost = 16 << 10
	// connCost is what one TCP connection is charged: its goroutine's
	// stack and buffers.
	connCost = 16 << 10
	// answerWeight charges a large answer several times its packed size
	// (unpacked records, the packed copy, the cache entry).
	answerWeight = 4
	// heavyShare: once half of the budget is spent, a client holding a
	// heavyShare-th of what is left or more is refused.
	heavyShare = 16
)

// Reasons of a refusal (the reason label of
// nodelocaldns_server_refused_total).
const (
	reasonInflight       = "inflight"        // MaxInflight queries on the miss path
	reasonClientInflight = "client_inflight" // the client's MaxClientInflight
	reasonMemory         = "memory"          // the memory budget is spent
	reasonHeavy          = "memory_heavy"    // the budget is under pressure and the client uses more than its share
	reasonConns          = "conns"           // MaxTCPConns on the listener
	reasonClientConns    = "client_conns"    // the client's MaxClientConns
	reasonQuerySize      = "query_size"      // a TCP query longer than the agent reads
	numReasons           = 7
)

var reasonNames = [numReasons]string{reasonInflight, reasonClientInflight, reasonMemory, reasonHeavy, reasonConns, reasonClientConns, reasonQuerySize}

// limitMetrics count what the limits refused and show the budget.
type limitMetrics struct {
	refused *prometheus.CounterVec
	byName  map[string]prometheus.Counter
}

func newLimitMetrics(reg prometheus.Registerer, b *budget) (*limitMetrics, error) {
	m := &limitMetrics{
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "nodelocaldns", Subsystem: "server", Name: "refused_total",
			Help: "Queries and TCP connections refused by a limit, by reason (inflight, client_inflight, memory, memory_heavy, conns, client_conns, query_size).",
		}, []string{"reason"}),
		byName: map[string]prometheus.Counter{},
	}
	var err error
	if m.refused, err = promreg.Register(reg, m.refused); err != nil {
		return nil, err
	}
	for _, r := range reasonNames {
		m.byName[r] = m.refused.WithLabelValues(r)
	}
	if reg != nil {
		used := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "nodelocaldns", Subsystem: "server", Name: "budget_used_bytes",
			Help: "Bytes of the memory budget charged to in-flight work (queries on the miss path, TCP connections, large answers).",
		}, func() float64 { return float64(b.used.Load()) })
		limit := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "nodelocaldns", Subsystem: "server", Name: "budget_bytes",
			Help: "The memory budget of in-flight work.",
		}, func() float64 { return float64(b.limit) })
		if _, err := promreg.Register(reg, used); err != nil {
			return nil, err
		}
		if _, err := promreg.Register(reg, limit); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// refuse counts one refusal.
func (m *limitMetrics) refuse(reason string) { m.byName[reason].Inc() }

// budget is the memory budget of in-flight work, charged per client. Once
// it is more than half spent, a client is refused when what it holds is a
// heavyShare-th of what is left or more: as the budget fills, the heaviest
// clients are shed first, then lighter ones, while clients holding little
// (a pod with a query or two in flight) are served until it is all spent.
// Many attackers sharing the load stop near half of the budget, which
// leaves the other half to everyone else.
type budget struct {
	limit     int64
	maxClient int // in-flight queries per client

	used atomic.Int64
	// peak is the highest used since the last takePeak.
	peak atomic.Int64

	mu sync.Mutex
	// clients holds values, not pointers: a client's first query allocates
	// nothing.
	clients map[netip.Addr]clientUse
}

// clientUse is what one client holds.
type clientUse struct {
	bytes    int64
	inflight int
	conns    int
}

func newBudget(limit int64, maxClient int) *budget {
	return &budget{limit: limit, maxClient: maxClient, clients: map[netip.Addr]clientUse{}}
}

// admit decides whether client may add cost bytes of work: "" when it may
// (and the cost is charged), else the reason of the refusal. query counts
// the work as a query on the miss path, conn as a TCP connection (at most
// maxConns per client).
func (b *budget) admit(client netip.Addr, cost int64, query, conn bool, maxConns int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	u := b.clients[client]
	used := b.used.Load()
	switch {
	case query && u.inflight >= b.maxClient:
		return reasonClientInflight
	case conn && u.conns >= maxConns:
		return reasonClientConns
	case used+cost > b.limit:
		return reasonMemory
	case used > b.limit/2 && u.bytes*heavyShare >= b.limit-used:
		return reasonHeavy
	}
	if query {
		u.inflight++
	}
	if conn {
		u.conns++
	}
	u.bytes += cost
	b.clients[client] = u
	b.add(cost)
	return ""
}

// charge adds cost bytes to what client holds without asking (the answer
// is there already); it makes the client heavier for the next admit.
func (b *budget) charge(client netip.Addr, cost int64) {
	b.mu.Lock()
	if u, ok := b.clients[client]; ok {
		u.bytes += cost
		b.clients[client] = u
		b.add(cost)
	}
	b.mu.Unlock()
}

// release gives back what admit and charge took.
func (b *budget) release(client netip.Addr, cost int64, query, conn bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	u, ok := b.clients[client]
	if !ok {
		return
	}
	if query {
		u.inflight--
	}
	if conn {
		u.conns--
	}
	u.bytes -= cost
	b.used.Add(-cost)
	if u.inflight <= 0 && u.conns <= 0 {
		b.used.Add(-u.bytes) // nothing should be left; never leak budget
		delete(b.clients, client)
		return
	}
	b.clients[client] = u
}

func (b *budget) add(cost int64) {
	n := b.used.Add(cost)
	for {
		p := b.peak.Load()
		if n <= p || b.peak.CompareAndSwap(p, n) {
			return
		}
	}
}

// takePeak returns the highest use since the last call and restarts it
// from the current use.
func (b *budget) takePeak() int64 { return b.peak.Swap(b.used.Load()) }
