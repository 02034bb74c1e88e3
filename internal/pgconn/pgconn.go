package pgconn

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lib/pq"
)

const (
	// CancelGrace is how long a server has to answer a cancel request
	// before its connection is given up.
	CancelGrace = 2 * time.Second
	// DefaultConnectTimeout bounds opening a connection when the DSN sets
	// no connect_timeout.
	DefaultConnectTimeout = 10 * time.Second
	// KeepAliveIdle is how long a connection is silent before TCP
	// keep-alive probes start: a silent peer is declared gone after about
	// KeepAliveIdle + KeepAliveCount*KeepAliveInterval.
	KeepAliveIdle = 15 * time.Second
	// KeepAliveInterval is the time between keep-alive probes.
	KeepAliveInterval = 5 * time.Second
	// KeepAliveCount is how many unanswered probes end the connection.
	KeepAliveCount = 3
	// UserTimeout bounds (on Linux) how long sent data may stay
	// unacknowledged before the kernel drops the connection.
	UserTimeout = 30 * time.Second
)

// Dialer is a pq.Dialer with the keep-alive and user-timeout settings
// above; it is the one to give pq.NewDialListener.
type Dialer struct{}

func (Dialer) netDialer(timeout time.Duration) *net.Dialer {
	return &net.Dialer{
		Timeout: timeout,
		KeepAliveConfig: net.KeepAliveConfig{Enable: true,
			Idle: KeepAliveIdle, Interval: KeepAliveInterval, Count: KeepAliveCount},
		Control: control,
	}
}

// Dial implements pq.Dialer.
func (d Dialer) Dial(network, address string) (net.Conn, error) {
	return d.netDialer(0).Dial(network, address)
}

// DialTimeout implements pq.Dialer.
func (d Dialer) DialTimeout(network, address string, timeout time.Duration) (net.Conn, error) {
	return d.netDialer(timeout).Dial(network, address)
}

// DialContext implements pq.DialerContext.
func (d Dialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	return d.netDialer(0).DialContext(ctx, network, address)
}

// Connector is a driver.Connector for lib/pq whose connections are
// watched as the package describes. Open a pool with sql.OpenDB.
type Connector struct {
	cfg pq.Config
}

// NewConnector parses dsn (URL or key=value form, as lib/pq takes it).
func NewConnector(dsn string) (*Connector, error) {
	cfg, err := pq.NewConfig(dsn)
	if err != nil {
		return nil, err
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	return &Connector{cfg: cfg}, nil
}

// Driver is lib/pq's driver, as a Connector's pool reports it: Guards
// tells by it that the pool's connections keep WithDeadline deadlines.
type Driver struct{ pq.Driver }

// Driver implements driver.Connector.
func (c *Connector) Driver() driver.Driver { return &Driver{} }

// Connect implements driver.Connector. Each connection gets a dialer of
// its own: lib/pq dials through a connection's dialer for the connection
// itself and, later, for each cancel request of a query on it, which is
// how the connection learns that its caller gave up.
func (c *Connector) Connect(ctx context.Context) (driver.Conn, error) {
	d := &connDialer{cfg: c.cfg}
	pc, err := pq.NewConnectorConfig(c.cfg)
	if err != nil {
		return nil, err
	}
	pc.Dialer(d)
	pqc, err := pc.Connect(ctx)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	d.open = true
	main := d.main
	d.mu.Unlock()
	pid, err := backendPID(ctx, pqc)
	if err != nil {
		_ = pqc.Close()
		return nil, err
	}
	if main == nil {
		_ = pqc.Close()
		return nil, errors.New("pgconn: lib/pq connected without dialling")
	}
	main.pid.Store(pid)
	return &conn{Conn: pqc, g: main}, nil
}

// backendPID asks the server for the process serving conn, for
// terminating it if it stops answering.
func backendPID(ctx context.Context, conn driver.Conn) (int64, error) {
	q, ok := conn.(driver.QueryerContext)
	if !ok {
		return 0, errors.New("pgconn: the pq connection cannot run a query")
	}
	rows, err := q.QueryContext(ctx, "SELECT pg_backend_pid()", nil)
	if err != nil {
		return 0, fmt.Errorf("pgconn: read the backend's pid: %w", err)
	}
	defer rows.Close()
	v := make([]driver.Value, 1)
	if err := rows.Next(v); err != nil {
		return 0, fmt.Errorf("pgconn: read the backend's pid: %w", err)
	}
	pid, _ := v[0].(int64)
	return pid, nil
}

// connDialer is the dialer of one pq connection.
type connDialer struct {
	cfg  pq.Config
	mu   sync.Mutex
	open bool         // Connect returned: any further dial is a cancel request
	main *guardedConn // the connection's socket
}

func (d *connDialer) Dial(network, address string) (net.Conn, error) {
	return d.DialContext(context.Background(), network, address)
}

func (d *connDialer) DialTimeout(network, address string, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return d.DialContext(ctx, network, address)
}

func (d *connDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	d.mu.Lock()
	open, main := d.open, d.main
	d.mu.Unlock()
	if open {
		// A cancel request: the query on main has lost its caller.
		if main != nil {
			main.watch()
		}
		c, err := Dialer{}.DialContext(ctx, network, address)
		if err == nil {
			// lib/pq reads the cancel connection until the server closes
			// it; a stalled server must not hold that goroutine either.
			_ = c.SetDeadline(time.Now().Add(2 * CancelGrace))
		}
		return c, err
	}
	c, err := Dialer{}.DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	g := &guardedConn{Conn: c, cfg: d.cfg, raw: rawSocket(c)}
	d.mu.Lock()
	d.main = g // with several hosts, the last one dialled is the one kept
	d.mu.Unlock()
	return g, nil
}

// guardedConn is a connection's socket. Reads and writes go straight to the
// socket, on Linux as raw system calls (rawio_linux.go).
type guardedConn struct {
	net.Conn
	raw     *rawIO // the socket's raw reads and writes; nil: Conn's own
	cfg     pq.Config
	pid     atomic.Int64
	closed  atomic.Bool
	watched atomic.Bool
	// armed: a WithDeadline deadline is on the socket (see setDeadline).
	armed atomic.Bool
	// overdue: the deadline passed and a cancel request went out; the
	// server has until the socket's new deadline to answer it. Used only
	// by the goroutine running the statement.
	overdue bool
}

// setDeadline puts a WithDeadline deadline on the socket (zero: none).
func (g *guardedConn) setDeadline(at time.Time) {
	g.overdue = false
	g.armed.Store(!at.IsZero())
	_ = g.SetDeadline(at)
}

// Read is the socket's, except when a WithDeadline deadline passes: the
// server is asked to cancel the statement and has CancelGrace to answer,
// after which the connection is given up as for a cancel request it does
// not answer (see watch).
func (g *guardedConn) Read(b []byte) (int, error) {
	for {
		n, err := g.sockRead(b)
		if err == nil || !g.armed.Load() || !errors.Is(err, os.ErrDeadlineExceeded) {
			return n, err
		}
		if g.overdue {
			g.expire()
			return n, err
		}
		g.overdue = true
		_ = g.SetDeadline(time.Now().Add(CancelGrace))
		g.cancelStatement()
		if n > 0 {
			return n, nil
		}
	}
}

// Write is the socket's; a WithDeadline deadline that passes while the
// server does not take what is sent gives the connection up.
func (g *guardedConn) Write(b []byte) (int, error) {
	n, err := g.sockWrite(b)
	if err != nil && g.armed.Load() && errors.Is(err, os.ErrDeadlineExceeded) {
		g.expire()
	}
	return n, err
}

// cancelStatement asks the server, over a new connection, to cancel what
// the backend of g runs (best effort: an answer that does not come in time
// gives the connection up).
func (g *guardedConn) cancelStatement() {
	pid := g.pid.Load()
	if pid == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), CancelGrace)
	defer cancel()
	_ = signalBackend(ctx, g.cfg, "pg_cancel_backend", pid)
}

func (g *guardedConn) Close() error {
	g.closed.Store(true)
	return g.Conn.Close()
}

// watch gives the server CancelGrace to answer the cancellation of the
// query in flight (lib/pq closes the connection once it has the answer).
func (g *guardedConn) watch() {
	if g.watched.CompareAndSwap(false, true) {
		time.AfterFunc(CancelGrace, g.expire)
	}
}

// expire gives the connection up: the backend is terminated first, so
// that a statement it has not read yet is never run after its caller has
// moved on, then the socket is closed, which ends the blocked read.
func (g *guardedConn) expire() {
	if g.closed.Load() {
		return
	}
	if pid := g.pid.Load(); pid != 0 {
		ctx, cancel := context.WithTimeout(context.Background(), CancelGrace)
		_ = signalBackend(ctx, g.cfg, "pg_terminate_backend", pid)
		cancel()
	}
	_ = g.Close()
}

// signalBackend calls fn (pg_terminate_backend or pg_cancel_backend) for
// backend pid, over a new connection.
func signalBackend(ctx context.Context, cfg pq.Config, fn string, pid int64) error {
	cfg.ConnectTimeout = CancelGrace
	pc, err := pq.NewConnectorConfig(cfg)
	if err != nil {
		return err
	}
	pc.Dialer(Dialer{})
	conn, err := pc.Connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	q, ok := conn.(driver.QueryerContext)
	if !ok {
		return errors.New("pgconn: the pq connection cannot run a query")
	}
	rows, err := q.QueryContext(ctx, fmt.Sprintf("SELECT %s(%d)", fn, pid), nil)
	if err != nil {
		return err
	}
	defer rows.Close()
	if err := rows.Next(make([]driver.Value, 1)); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}
