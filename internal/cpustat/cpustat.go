// Package cpustat reads CPU time for graft's measurements: this process's
// (getrusage, on Unix) and another process's, such as a PostgreSQL
// backend's on the same machine (/proc/<pid>/schedstat, on Linux). On a
// shared machine CPU time moves less than wall-clock figures: it tells
// what one side of a run costs, apart from the other side and from other
// tenants. Where a figure cannot be read it is 0 (Process, Children) or
// -1 (SchedNS).
package cpustat

import (
	"io"
	"os"
	"strconv"
)

// SchedNS is the CPU time in nanoseconds process pid has used so far (the
// first field of /proc/<pid>/schedstat), or -1 when it cannot be read (no
// such process, not Linux).
func SchedNS(pid int) int64 {
	s := OpenSched(pid)
	defer s.Close()
	return s.NS()
}

// Sched reads one process's CPU time again and again: the file stays open
// and is read from offset 0 with one pread, which /proc answers afresh
// (opening, stat-ing, reading and closing it at every read cost nine
// system calls and a few allocations). A nil *Sched reads -1.
type Sched struct {
	f   *os.File
	buf [64]byte
}

// OpenSched opens process pid's schedstat; nil when it cannot.
func OpenSched(pid int) *Sched {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/schedstat")
	if err != nil {
		return nil
	}
	return &Sched{f: f}
}

// NS is the process's CPU time in nanoseconds, or -1.
func (s *Sched) NS() int64 {
	if s == nil {
		return -1
	}
	n, err := s.f.ReadAt(s.buf[:], 0)
	if n == 0 || (err != nil && err != io.EOF) {
		return -1
	}
	var v int64
	i := 0
	for ; i < n && s.buf[i] >= '0' && s.buf[i] <= '9'; i++ {
		v = v*10 + int64(s.buf[i]-'0')
	}
	if i == 0 {
		return -1
	}
	return v
}

// Close closes the file.
func (s *Sched) Close() error {
	if s == nil {
		return nil
	}
	return s.f.Close()
}
