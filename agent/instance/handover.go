package instance

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// maxHandoverFDs is how many descriptors one handover carries; the kernel
// allows at most 253 (SCM_MAX_FD) per message.
const maxHandoverFDs = 250

// request is what a new instance sends to ask for the listening sockets.
const request = "SOCKETS"

// handoverServer answers socket requests on <dir>/<id>.sock.
type handoverServer struct {
	ln   *net.UnixListener
	wg   sync.WaitGroup
	once sync.Once
}

// ServeHandover listens on this instance's unix socket in the run directory
// and gives every requester duplicates of the sockets returned by get (keyed
// like server.Sockets: "udp/IP:port", "tcp/IP:port"). The descriptors travel
// with SCM_RIGHTS, so both processes then share the very same kernel sockets:
// nothing queued on them is lost when one process goes away.
//
// get is called for every request, so a requester receives the sockets open
// at that moment. The files it returns must stay open until its done
// function (when not nil) is called, once they are sent or the hand-over
// failed: a caller that closes sockets (a reload) holds a lock that get
// takes and done releases.
func (r *Registry) ServeHandover(get func() (socks map[string]*os.File, done func())) error {
	path := filepath.Join(r.dir, r.id+sockSuffix)
	os.Remove(path)
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return fmt.Errorf("instance: listen on %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(true)
	h := &handoverServer{ln: ln}
	r.hand = h
	h.wg.Go(func() {
		for {
			c, err := ln.AcceptUnix()
			if err != nil {
				return
			}
			h.wg.Go(func() {
				defer c.Close()
				_ = serveOne(c, get)
			})
		}
	})
	return nil
}

// StopHandover closes the handover listener and waits for running handovers.
func (r *Registry) StopHandover() {
	if r.hand == nil {
		return
	}
	r.hand.once.Do(func() {
		r.hand.ln.Close()
		r.hand.wg.Wait()
	})
}

func serveOne(c *net.UnixConn, get func() (map[string]*os.File, func())) error {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil {
		return err
	}
	if string(buf[:n]) != request {
		return fmt.Errorf("instance: unknown handover request %q", buf[:n])
	}
	socks, done := get()
	if done != nil {
		defer done()
	}
	keys := make([]string, 0, len(socks))
	for k := range socks {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if len(keys) > maxHandoverFDs {
		keys = keys[:maxHandoverFDs]
	}
	fds := make([]int, 0, len(keys))
	for _, k := range keys {
		fd, err := rawFD(socks[k])
		if err != nil {
			return err
		}
		fds = append(fds, fd)
	}
	payload := []byte(strings.Join(keys, "\n"))
	if len(payload) == 0 {
		payload = []byte{'\n'} // a packet must carry at least one byte
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	_, _, err = c.WriteMsgUnix(payload, oob, nil)
	// Keep the files (and thus the descriptors) alive until sent.
	for _, k := range keys {
		runtime.KeepAlive(socks[k])
	}
	return err
}

// rawFD returns f's descriptor without f.Fd(), which would switch the shared
// socket to blocking mode for every process holding it.
func rawFD(f *os.File) (int, error) {
	if f == nil {
		return -1, errors.New("instance: nil socket file")
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return -1, fmt.Errorf("instance: %s: %w", f.Name(), err)
	}
	fd := -1
	if err := rc.Control(func(u uintptr) { fd = int(u) }); err != nil {
		return -1, fmt.Errorf("instance: %s: %w", f.Name(), err)
	}
	return fd, nil
}

// FetchSockets asks the live instances, one after the other, for their
// listening sockets and returns the first answer, with the ID of the
// instance that gave it. No live instance (or none answering before ctx is
// done) is not an error: the map is empty and the caller opens new sockets.
func (r *Registry) FetchSockets(ctx context.Context) (map[string]*os.File, string, error) {
	others, err := r.Others()
	if err != nil {
		return nil, "", err
	}
	var errs []error
	for _, id := range others {
		socks, err := fetch(ctx, filepath.Join(r.dir, id+sockSuffix))
		if err == nil {
			return socks, id, nil
		}
		errs = append(errs, fmt.Errorf("from %s: %w", id, err))
	}
	if len(errs) > 0 {
		return map[string]*os.File{}, "", fmt.Errorf("instance: no socket handover: %w", errors.Join(errs...))
	}
	return map[string]*os.File{}, "", nil
}

func fetch(ctx context.Context, path string) (map[string]*os.File, error) {
	d := net.Dialer{}
	conn, err := d.DialContext(ctx, "unixpacket", path)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	c := conn.(*net.UnixConn)
	deadline := time.Now().Add(5 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = c.SetDeadline(deadline)
	if _, err := c.Write([]byte(request)); err != nil {
		return nil, err
	}
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(maxHandoverFDs*4))
	n, oobn, flags, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, err
	}
	fds, err := parseRights(oob[:oobn])
	if err != nil {
		return nil, err
	}
	if flags&(unix.MSG_CTRUNC|unix.MSG_TRUNC) != 0 {
		closeAll(fds)
		return nil, errors.New("handover message truncated")
	}
	var keys []string
	if s := strings.TrimSpace(string(buf[:n])); s != "" {
		keys = strings.Split(s, "\n")
	}
	if len(keys) != len(fds) {
		closeAll(fds)
		return nil, fmt.Errorf("handover carried %d names for %d descriptors", len(keys), len(fds))
	}
	out := make(map[string]*os.File, len(keys))
	for i, k := range keys {
		unix.CloseOnExec(fds[i])
		out[k] = os.NewFile(uintptr(fds[i]), k)
	}
	return out, nil
}

func parseRights(oob []byte) ([]int, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("parse control message: %w", err)
	}
	var fds []int
	for i := range msgs {
		got, err := unix.ParseUnixRights(&msgs[i])
		if err != nil {
			closeAll(fds)
			return nil, fmt.Errorf("parse SCM_RIGHTS: %w", err)
		}
		fds = append(fds, got...)
	}
	return fds, nil
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}
