package server

import (
	"runtime"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// replyWriter sends the miss path's answers on one UDP socket. Answers
// are combined: a worker queues its answer and, unless another worker is
// already sending, lets the workers that are ready run first (they queue
// theirs and return), then sends the whole queue with one sendmmsg. Answers
// to misses come in bursts (one read from the cluster DNS's TCP connection
// holds many), and one sendto each was a quarter of the CPU under a miss
// flood.
type replyWriter struct {
	rc syscall.RawConn

	mu       sync.Mutex
	queue    []reply
	spare    []reply
	flushing bool

	// Used by the flushing worker only.
	msgs  []mmsghdr
	iovs  []unix.Iovec
	sent  int
	write func(fd uintptr) bool
}

// reply is one answer and its client's address as recvmmsg gave it.
type reply struct {
	buf     []byte
	name    unix.RawSockaddrInet6
	namelen uint32
}

func newReplyWriter(rc syscall.RawConn) *replyWriter {
	w := &replyWriter{rc: rc}
	w.write = w.doWrite
	return w
}

// send queues buf for the client and sends the queue unless another
// worker is sending it already (that worker sends this answer too).
func (w *replyWriter) send(buf []byte, name *unix.RawSockaddrInet6, namelen uint32) {
	w.mu.Lock()
	w.queue = append(w.queue, reply{buf: buf, name: *name, namelen: namelen})
	if w.flushing {
		w.mu.Unlock()
		return
	}
	w.flushing = true
	w.mu.Unlock()
	runtime.Gosched()
	w.mu.Lock()
	for len(w.queue) > 0 {
		batch := w.queue
		w.queue = w.spare[:0]
		w.mu.Unlock()
		w.flush(batch)
		clear(batch) // drop the answers' buffers
		w.mu.Lock()
		w.spare = batch[:0]
	}
	w.flushing = false
	w.mu.Unlock()
}

// flush sends batch with as few sendmmsg calls as it takes.
func (w *replyWriter) flush(batch []reply) {
	if cap(w.msgs) < len(batch) {
		w.msgs = make([]mmsghdr, len(batch))
		w.iovs = make([]unix.Iovec, len(batch))
	}
	w.msgs, w.iovs = w.msgs[:len(batch)], w.iovs[:len(batch)]
	for i := range batch {
		r := &batch[i]
		w.iovs[i].Base = unsafe.SliceData(r.buf)
		w.iovs[i].SetLen(len(r.buf))
		h := &w.msgs[i].hdr
		*h = unix.Msghdr{Name: (*byte)(unsafe.Pointer(&r.name)), Namelen: r.namelen, Iov: &w.iovs[i]}
		h.SetIovlen(1)
	}
	w.sent = 0
	_ = w.rc.Write(w.write) // fails only when the socket is closed
	runtime.KeepAlive(batch)
}

// doWrite sends the unsent messages; false means "wait until writable".
func (w *replyWriter) doWrite(fd uintptr) bool { return sendBatch(fd, w.msgs, &w.sent) }
