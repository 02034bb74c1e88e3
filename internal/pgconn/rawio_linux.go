package pgconn

import (
	"io"
	"net"
	"os"
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
}

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

func (g *guardedConn) sockRead(b []byte) (int, error) {
	r := g.raw
	if r == nil || len(b) == 0 {
		return g.Conn.Read(b)
	}
	r.rb, r.rn, r.rerrn = b, 0, 0
	err := r.rc.Read(r.readFn)
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

func (g *guardedConn) sockWrite(b []byte) (int, error) {
	r := g.raw
	if r == nil || len(b) == 0 {
		return g.Conn.Write(b)
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

// opError wraps err as net.Conn's own reads and writes do.
func (g *guardedConn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: g.LocalAddr().Network(), Source: g.LocalAddr(), Addr: g.RemoteAddr(), Err: err}
}
