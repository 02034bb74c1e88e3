package pgconn

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The socket's reads and writes are made with raw system calls through
// the connection's syscall.RawConn: the socket is non-blocking, so a call
// never waits in the kernel (EAGAIN hands the wait to the network poller,
// as net.Conn does), and a raw call does not tell the Go scheduler it
// enters a system call. A counted one does, and the first after the
// process was idle wakes the runtime's monitor thread (sysmon) from its
// deep sleep, which then polls every 20 µs until the process is idle
// again: at one workflow at a time, each commit's write did, about 3.4
// futex wake-ups and 10 sleeps of that thread a workflow (perf
// sched:sched_waking and sched_switch, -n 2000 -c 1).

// rawIO is the state of a socket's raw reads and writes: the functions
// given to its RawConn are made once, so that a read or a write allocates
// nothing. lib/pq reads and writes a connection from one goroutine at a
// time.
type rawIO struct {
	rc           syscall.RawConn
	readFn       func(fd uintptr) bool
	writeFn      func(fd uintptr) bool
	rb, wb       []byte
	rn, wn       int
	rerrn, werrn syscall.Errno

	// Deferred writes: a write is kept (pend) and sent by the next read,
	// from inside the read's wait (see sockRead), or by Close.
	mu      sync.Mutex
	pend    []byte
	reading bool // a read is under way
	// flushing: the read under way sends pend first (mu held until it
	// has); left: it sent part of it and the rest waits for the socket.
	flushing, left bool
	// direct: a write came while a read was under way (lib/pq's COPY reads
	// and writes at once): writes go out at once from then on.
	direct bool
}

// deferMax bounds the bytes a connection keeps unsent; a write past it
// goes out at once.
const deferMax = 32 << 10

// rawSocket is the raw I/O of c when c is a plain socket, or nil.
func rawSocket(c net.Conn) *rawIO {
	switch c.(type) {
	case *net.TCPConn, *net.UnixConn:
	default:
		return nil
	}
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		return nil
	}
	r := &rawIO{rc: rc}
	r.readFn, r.writeFn = r.read, r.write
	return r
}

func (r *rawIO) read(fd uintptr) bool {
	if r.flushing {
		// The request goes out after the poller's readiness was reset
		// for this read, so its answer, which can only come after it,
		// wakes the wait: no read is tried before (it would find nothing).
		r.flushing = false
		r.wb, r.wn, r.werrn = r.pend, 0, 0
		if !r.write(fd) || r.werrn != 0 {
			r.left = true // the rest is written out of the read, mu held
			return true
		}
		r.wb, r.pend = nil, r.pend[:0]
		r.mu.Unlock()
		return false
	}
	for {
		n, _, e := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&r.rb[0])), uintptr(len(r.rb)))
		switch e {
		case 0:
			r.rn = int(n)
			return true
		case unix.EINTR:
		case unix.EAGAIN:
			return false
		default:
			r.rerrn = e
			return true
		}
	}
}

func (r *rawIO) write(fd uintptr) bool {
	for r.wn < len(r.wb) {
		// send with MSG_NOSIGNAL: a closed peer is EPIPE, not SIGPIPE.
		n, _, e := unix.RawSyscall6(unix.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&r.wb[r.wn])), uintptr(len(r.wb)-r.wn), unix.MSG_NOSIGNAL, 0, 0)
		switch e {
		case 0:
			r.wn += int(n)
		case unix.EINTR:
		case unix.EAGAIN:
			return false
		default:
			r.werrn = e
			return true
		}
	}
	return true
}

// sockRead reads into b, sending first what was written since the last
// read. lib/pq writes a request and then reads its answer: the read that
// follows a write at once finds nothing (EAGAIN) before it waits on the
// poller. Sent from inside the read, after the poller's readiness was
// reset, the request's answer is waited for without that read, one
// system call less a round trip.
func (g *guardedConn) sockRead(b []byte) (int, error) {
	r := g.raw
	if r == nil || len(b) == 0 {
		return g.Conn.Read(b)
	}
	r.mu.Lock()
	r.reading = true
	r.flushing = len(r.pend) > 0
	if !r.flushing {
		r.mu.Unlock()
	}
	defer func() {
		r.mu.Lock()
		r.reading = false
		r.mu.Unlock()
	}()
	r.rb, r.rn, r.rerrn = b, 0, 0
	err := r.rc.Read(r.readFn)
	if r.flushing || r.left {
		// The read ended before the pending request was sent (the
		// socket is closed), or sent part of it: what is left is sent
		// as a write is, then the read starts again.
		r.flushing = false
		if r.left && err == nil {
			err = r.finishSend(g)
		}
		r.left, r.wb, r.pend = false, nil, r.pend[:0]
		r.mu.Unlock()
		if err == nil {
			r.rn, r.rerrn = 0, 0
			err = r.rc.Read(r.readFn)
		}
	}
	n, errn := r.rn, r.rerrn
	r.rb = nil
	switch {
	case err != nil:
		return 0, err
	case errn != 0:
		return 0, g.opError("read", os.NewSyscallError("read", errn))
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// finishSend sends the rest of r.wb (r.wn of it sent) as a write does.
func (r *rawIO) finishSend(g *guardedConn) error {
	if r.werrn == 0 {
		if err := r.rc.Write(r.writeFn); err != nil {
			return err
		}
	}
	if r.werrn != 0 {
		return g.opError("write", os.NewSyscallError("write", r.werrn))
	}
	return nil
}

// sockWrite keeps b for the next read to send (sockRead), unless a read
// is under way, the connection is closed or too much is kept already:
// then what is kept and b are sent at once.
func (g *guardedConn) sockWrite(b []byte) (int, error) {
	r := g.raw
	if r == nil || len(b) == 0 {
		return g.Conn.Write(b)
	}
	r.mu.Lock()
	if r.reading {
		r.direct = true
	}
	if !r.direct && len(r.pend)+len(b) <= deferMax && !g.closed.Load() {
		r.pend = append(r.pend, b...)
		r.mu.Unlock()
		return len(b), nil
	}
	if len(r.pend) > 0 {
		// No read is under way (it would have taken pend): send it first.
		defer r.mu.Unlock()
		r.wb, r.wn, r.werrn = r.pend, 0, 0
		err := r.finishSend(g)
		r.wb, r.pend = nil, r.pend[:0]
		if err != nil {
			return 0, err
		}
	} else {
		r.mu.Unlock()
	}
	r.wb, r.wn, r.werrn = b, 0, 0
	err := r.rc.Write(r.writeFn)
	n, errn := r.wn, r.werrn
	r.wb = nil
	switch {
	case err != nil:
		return n, err
	case errn != 0:
		return n, g.opError("write", os.NewSyscallError("write", errn))
	}
	return n, nil
}

// flushPending sends what is kept unsent, before the socket is closed
// (lib/pq's Terminate message), once and without waiting: a close must not
// wait on the peer, nor on a read that is sending.
func (g *guardedConn) flushPending() {
	r := g.raw
	if r == nil || !r.mu.TryLock() {
		return
	}
	defer r.mu.Unlock()
	if len(r.pend) == 0 {
		return
	}
	_ = r.rc.Control(func(fd uintptr) {
		_, _, _ = unix.RawSyscall6(unix.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&r.pend[0])), uintptr(len(r.pend)), unix.MSG_NOSIGNAL|unix.MSG_DONTWAIT, 0, 0)
	})
	r.pend = r.pend[:0]
}

// opError wraps err as net.Conn's own reads and writes do.
func (g *guardedConn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: g.LocalAddr().Network(), Source: g.LocalAddr(), Addr: g.RemoteAddr(), Err: err}
}
