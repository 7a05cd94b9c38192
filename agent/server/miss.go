package server

import (
	"net/netip"
	"sync"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// job is one query for the miss path: a miss, a query the hit path does
// not handle, or a prefetch.
type job struct {
	pkt      []byte
	out      *replyWriter // nil for a prefetch
	name     unix.RawSockaddrInet6
	namelen  uint32
	listener netip.AddrPort
	v6       bool
	start    time.Time
	prefetch *route
	// client is who the budget charged cost to.
	client netip.Addr
	cost   int64
	// buf holds pkt when it fits.
	buf [512]byte
}

// jobs recycles the miss path's jobs (one per miss).
var jobs = sync.Pool{New: func() any { return new(job) }}

// release returns j to the pool.
func (j *job) release() {
	*j = job{pkt: j.buf[:0]}
	jobs.Put(j)
}

// enqueue hands a copy of pkt to the miss path; when MaxInflight queries
// are already there, or the client's limit or the memory budget refuses it,
// it is dropped (the client retries, as with any overloaded server).
func (s *Server) enqueue(pkt []byte, out *replyWriter, name *unix.RawSockaddrInet6, namelen uint32, listener netip.AddrPort, v6 bool, start time.Time) {
	j := jobs.Get().(*job)
	j.pkt = append(j.buf[:0], pkt...)
	j.out, j.name, j.namelen, j.listener, j.v6, j.start = out, *name, namelen, listener, v6, start
	j.client = sockaddrToAddrPort(name, namelen).Addr()
	if !s.spawn(j) {
		j.release()
	}
}

// prefetch starts a refresh of the cached answer to pkt, charged to the
// agent itself (the zero client).
func (s *Server) prefetch(pkt []byte, rt *route) {
	s.spawn(&job{pkt: append([]byte(nil), pkt...), prefetch: rt, start: time.Now()})
}

// A miss worker waits workerIdle for another job before it exits, so that
// an idle agent holds no workers, and at most maxIdleWorkers wait: a burst
// of misses leaves few grown stacks behind (each holds 8-32 KiB).
const (
	workerIdle     = 10 * time.Second
	maxIdleWorkers = 16
)

// spawn hands j to an idle miss worker, or to a new one, when a slot is
// free. Workers outlive their job: a goroutine per miss paid for growing
// its stack on every query (miekg/dns packing runs deep; 15% of the CPU
// under a miss flood), a worker grows it once. Every job gets a worker of
// its own, so a query never waits behind another's upstream. spawn reports
// false when j was refused (the caller still owns it).
func (s *Server) spawn(j *job) bool {
	select {
	case <-s.quit: // shut down
		return false
	case s.slots <- struct{}{}:
	default:
		s.limits.refuse(reasonInflight)
		return false
	}
	if reason := s.budget.admit(j.client, missCost, true, false, 0); reason != "" {
		<-s.slots
		s.limits.refuse(reason)
		return false
	}
	j.cost = missCost
	s.inflight.Add(1)
	for {
		n := s.idle.Load()
		if n == 0 {
			s.workers.Add(1)
			go s.worker(j)
			return true
		}
		if s.idle.CompareAndSwap(n, n-1) { // claimed an idle worker
			s.jobs <- j // never blocks: slots bound the queued jobs
			return true
		}
	}
}

// worker runs j, then waits for more jobs until it has been idle for
// workerIdle or the server shuts down. s.idle counts the waiting workers
// that no spawn has claimed yet: a worker leaves only by un-counting
// itself, so a claimed job always finds a worker.
func (s *Server) worker(j *job) {
	defer s.workers.Done()
	t := time.NewTimer(workerIdle)
	defer t.Stop()
	for ok := true; ok; j, ok = s.await(t) {
		s.run(j)
		s.budget.release(j.client, j.cost, true, false)
		j.release()
		<-s.slots
		s.inflight.Done()
		if s.idle.Load() >= maxIdleWorkers {
			return
		}
	}
}

// await waits as an idle worker for the next job; false means exit.
func (s *Server) await(t *time.Timer) (*job, bool) {
	s.idle.Add(1)
	t.Reset(workerIdle)
	select {
	case j := <-s.jobs:
		return j, true
	case <-s.quit:
		return nil, false
	case <-t.C:
	}
	for {
		n := s.idle.Load()
		if n == 0 { // claimed meanwhile: its job is coming
			select {
			case j := <-s.jobs:
				return j, true
			case <-s.quit:
				return nil, false
			}
		}
		if s.idle.CompareAndSwap(n, n-1) {
			return nil, false
		}
	}
}

// run answers one job.
func (s *Server) run(j *job) {
	if j.prefetch != nil {
		s.refresh(j)
		return
	}
	zones := s.table.Load().zonesFor(j.listener)
	resp := s.answer(s.ctx, j.pkt, zones, false, j.v6, j.start, sockaddrToAddrPort(&j.name, j.namelen))
	if len(resp) > missCost/answerWeight {
		s.budget.charge(j.client, answerWeight*int64(len(resp)))
		j.cost += answerWeight * int64(len(resp))
	}
	if resp != nil {
		j.out.send(resp, &j.name, j.namelen)
	}
}

// refresh re-asks the upstream for a popular entry about to expire.
func (s *Server) refresh(j *job) {
	req := new(dns.Msg)
	if err := req.Unpack(j.pkt); err != nil || len(req.Question) != 1 {
		return
	}
	b := j.prefetch.block
	if b.Plugins != nil {
		s.refreshPlugins(j.prefetch, req)
		return
	}
	if b.Forward == nil || b.Cache == nil {
		return
	}
	resp, err := s.exchange(s.ctx, b, req)
	if err != nil {
		return
	}
	b.Cache.Prefetched()
	_ = b.Cache.Set(msgKey(req), resp)
}
