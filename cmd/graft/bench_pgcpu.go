package main

import (
	"context"
	"database/sql/driver"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/graftdev/graft/internal/cpustat"
	"github.com/graftdev/graft/internal/sqlobserve"
)

// The CPU time of the benchmark's PostgreSQL backends (-stats), read from
// /proc: with the Go process's CPU (go_cpu_us_per_wf) it tells what a
// workflow costs the machine, which a shared machine's load moves far less
// than it moves throughput or latency. It needs PostgreSQL on this machine
// and Linux; elsewhere the figure is left out.

// Connected records the backend of a new connection of the pool.
func (c *dbCounters) Connected(ctx context.Context, cn driver.Conn) {
	q, ok := cn.(driver.QueryerContext)
	if !ok {
		return
	}
	rows, err := q.QueryContext(ctx, `SELECT pg_backend_pid()`, nil)
	if err != nil {
		return
	}
	defer rows.Close()
	v := make([]driver.Value, 1)
	if rows.Next(v) != nil && rows.Next(v) != io.EOF {
		return
	}
	if pid, ok := v[0].(int64); ok {
		c.mu.Lock()
		c.pids = append(c.pids, int(pid))
		if c.conns == nil {
			c.conns = map[driver.Conn]*connCPU{}
		}
		// Kept open: each send re-reads it with one pread.
		st := &connCPU{pid: int(pid), sched: cpustat.OpenSched(int(pid))}
		c.conns[cn] = st
		c.mu.Unlock()
	}
}

// backendCPU sums the CPU time of the pool's backends that run on this
// machine; ok is false when none could be read.
func (c *dbCounters) backendCPU() (total time.Duration, ok bool) {
	c.mu.Lock()
	pids := append([]int(nil), c.pids...)
	c.mu.Unlock()
	for _, pid := range pids {
		if d, found := processCPUOf(pid); found {
			total, ok = total+d, true
		}
	}
	return total, ok
}

// processCPUOf reads a PostgreSQL process's user and system time from
// /proc (in clock ticks of 10 ms).
func processCPUOf(pid int) (time.Duration, bool) {
	dir := "/proc/" + strconv.Itoa(pid)
	comm, err := os.ReadFile(dir + "/comm")
	if err != nil || !strings.HasPrefix(string(comm), "postgres") {
		return 0, false
	}
	b, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return 0, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, false
	}
	// After the command: state, then fields 4.. ; utime and stime are
	// fields 14 and 15.
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, false
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return time.Duration(ut+st) * 10 * time.Millisecond, true
}

// connCPU is what a connection of the pool sent last and its backend's
// CPU time then (see Sending).
type connCPU struct {
	pid   int
	sched *cpustat.Sched // the backend's CPU time, or nil
	last  int64          // the backend's CPU time in ns when label was sent
	label string         // statementLabel, or BEGIN, COMMIT, ROLLBACK
}

// Sending adds the CPU the connection's backend used since the
// connection's previous send to what it sent then: a backend works for
// its connection only, and between a statement's send and the next one it
// runs that statement (a pooled connection's idle backend uses none). The
// statements' lines of -stats report it (pg_us_per_call). Each send costs
// a read of /proc, a few µs of this process's CPU.
func (c *dbCounters) Sending(cn driver.Conn, k statementKey, what sqlobserve.Sent) {
	c.mu.Lock()
	st := c.conns[cn]
	c.mu.Unlock()
	if st == nil {
		return
	}
	label := k.label
	switch what {
	case sqlobserve.SentBegin:
		label = "BEGIN"
	case sqlobserve.SentCommit:
		label = "COMMIT"
	case sqlobserve.SentRollback:
		label = "ROLLBACK"
	case sqlobserve.SentStatement:
	}
	ns := st.sched.NS()
	if ns < 0 {
		return
	}
	if st.label != "" {
		c.mu.Lock()
		if c.stmtCPU == nil {
			c.stmtCPU = map[string]int64{}
		}
		c.stmtCPU[st.label] += ns - st.last
		c.mu.Unlock()
	}
	st.last, st.label = ns, label
}
