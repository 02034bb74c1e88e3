package pgconn

import (
	"context"
	"database/sql/driver"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// A statement whose context can end costs a goroutine in lib/pq (it waits
// for the end to send a cancel request), started and woken for every
// statement: at one statement at a time, that hand-off costs more CPU than
// the statement. A WithDeadline context's end is not handed to lib/pq: the
// connection keeps its deadline itself, as the socket's, and does at that
// time what lib/pq does when a context ends (a cancel request; the backend
// terminated and the connection closed if the server does not answer it
// within CancelGrace). The context still ends at its deadline, for
// database/sql: a statement that waits for one of the pool's connections
// (every one held by statements to a stalled server) stops waiting then.
// While a call under it holds a connection, its Done is nil: the
// connection keeps the deadline then, and database/sql would otherwise
// start a goroutine to watch each query's Rows, as costly as lib/pq's.
// Once the connection is back in the pool, Done is the deadline's again,
// so the next call's wait for a connection is bounded too.

// deadlineKey is the context key of a WithDeadline deadline.
type deadlineKey struct{}

// deadlineCtx carries a deadline the connection keeps. Its Err and
// Deadline are those of a context ending at the deadline; so is Done while
// no call under it holds a connection (held), nil while one does. Under a
// parent that never ends (own), the context is its own: its Done channel
// is made only when asked for, and the end of every such context waiting
// for one of the pool's connections is kept by one timer of the package
// (alarm), not by one timer each; otherwise it wraps a
// context.WithDeadline.
type deadlineCtx struct {
	context.Context // own: the parent; otherwise the context.WithDeadline
	at              time.Time
	// held counts the connections a call under the context took and
	// database/sql has not put back yet (see conn.take).
	held atomic.Int32
	own  bool
	// mu guards done and err (own only).
	mu   sync.Mutex
	done chan struct{}
	err  error
	// waiting: in alarm.waiting (guarded by alarm.mu).
	waiting bool
}

// Done is the deadline's channel while no call under the context holds a
// connection, and nil while one does: database/sql then starts no
// goroutine to watch the query's Rows, nor ties a transaction begun under
// it to its end; the connection ends the call at the deadline (see
// WithDeadline). database/sql reads Done before it waits for a connection
// and again after the driver's call, with the connection held; so every
// call's wait for a connection is bounded, the first and the later ones
// (a statement written again after a failure, one prepared first), and
// none has its Rows watched. A call that waits for a connection while
// another under the same context holds one (a statement on the pool
// inside a transaction of it) waits without a bound: it takes a Sibling.
func (c *deadlineCtx) Done() <-chan struct{} {
	if c.held.Load() > 0 {
		return nil
	}
	if !c.own {
		return c.Context.Done()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.done == nil:
		c.done = make(chan struct{})
		if c.err != nil {
			close(c.done)
		} else {
			alarm.add(c)
		}
	case c.err == nil:
		// Asked for again after a hold took the context off the alarm
		// (a later call, its connection back in the pool): the alarm
		// ends it at the deadline again.
		alarm.add(c)
	}
	return c.done
}

func (c *deadlineCtx) Err() error {
	if !c.own {
		return c.Context.Err()
	}
	c.mu.Lock()
	err := c.err
	c.mu.Unlock()
	if err == nil && !time.Now().Before(c.at) {
		// Past the deadline before the alarm ended it (or with no
		// Done asked for, none will).
		c.end(context.DeadlineExceeded)
		return context.DeadlineExceeded
	}
	return err
}

func (c *deadlineCtx) Deadline() (time.Time, bool) {
	if !c.own {
		return c.Context.Deadline()
	}
	return c.at, true
}

// end ends an own context with err, unless it has ended.
func (c *deadlineCtx) end(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
		if c.done != nil {
			close(c.done)
		}
	}
	c.mu.Unlock()
	alarm.remove(c)
}

// hold records that a call under the context took a connection: Done is
// nil until database/sql puts it back (release), and the alarm need not
// end the context meanwhile.
func (c *deadlineCtx) hold() {
	c.held.Add(1)
	if c.own {
		alarm.remove(c)
	}
}

// release records that database/sql put back, or closed, a connection
// the context held.
func (c *deadlineCtx) release() { c.held.Add(-1) }

// alarm ends own deadline contexts whose Done was asked for while no call
// under them held a connection, at their deadlines, with one timer.
// At one commit at a time a context is added (database/sql asks for Done
// before it takes a free connection) and removed at once (the call reaches
// the connection); the timer, armed for the earliest deadline it was
// given, is set again only when it fires or for an earlier deadline, about
// once per deadline's length, instead of a timer made and stopped at every
// statement.
var alarm deadlineAlarm

type deadlineAlarm struct {
	mu      sync.Mutex
	waiting map[*deadlineCtx]struct{}
	timer   *time.Timer
	at      time.Time // when timer fires; zero: not armed
}

func (a *deadlineAlarm) add(c *deadlineCtx) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.waiting == nil {
		a.waiting = map[*deadlineCtx]struct{}{}
	}
	a.waiting[c], c.waiting = struct{}{}, true
	a.armLocked(c.at)
}

func (a *deadlineAlarm) remove(c *deadlineCtx) {
	a.mu.Lock()
	if c.waiting {
		delete(a.waiting, c)
		c.waiting = false
	}
	a.mu.Unlock()
}

// armLocked makes the timer fire by at.
func (a *deadlineAlarm) armLocked(at time.Time) {
	if !a.at.IsZero() && !at.Before(a.at) {
		return
	}
	a.at = at
	if a.timer == nil {
		a.timer = time.AfterFunc(time.Until(at), a.fire)
	} else {
		a.timer.Reset(time.Until(at))
	}
}

// fire ends the waiting contexts whose deadline has come and sets the
// timer for the next one.
func (a *deadlineAlarm) fire() {
	now := time.Now()
	var due []*deadlineCtx
	a.mu.Lock()
	a.at = time.Time{}
	for c := range a.waiting {
		if now.Before(c.at) {
			a.armLocked(c.at)
			continue
		}
		delete(a.waiting, c)
		c.waiting = false
		due = append(due, c)
	}
	a.mu.Unlock()
	for _, c := range due {
		c.end(context.DeadlineExceeded)
	}
}

// Value gives the context itself for deadlineKey (see deadlineOf): a
// pointer is boxed without an allocation, a time.Time is not.
func (c *deadlineCtx) Value(key any) any {
	if key == (deadlineKey{}) {
		return c
	}
	return c.Context.Value(key)
}

// deadlineOf is ctx's WithDeadline context (nil: none).
func deadlineOf(ctx context.Context) *deadlineCtx {
	c, _ := ctx.Value(deadlineKey{}).(*deadlineCtx)
	return c
}

// Unsent reports whether err, from a call on a Connector's pool under
// ctx, a WithDeadline context, says that the call sent nothing: its wait
// for one of the pool's connections ended at the deadline (or the
// deadline had passed before it). database/sql sees the deadline only
// while no call under ctx holds a connection (see Done), and lib/pq never
// does, so the context's error comes from that wait alone; the connection
// ends a call it sent with a cancellation (57014) or a connection error.
// For any other context (one derived from a WithDeadline context, whose
// end lib/pq watches) it reports false: it cannot tell.
func Unsent(ctx context.Context, err error) bool {
	_, ok := ctx.(*deadlineCtx)
	return ok && errors.Is(err, context.DeadlineExceeded)
}

// WithDeadline returns a context that ends at t (or when parent ends) and
// whose statements on a Connector's connections are bounded by the
// connection itself: at t a cancel request goes to the server, and a
// server that has not answered it within CancelGrace has its backend
// terminated and the connection closed (the statement then fails with a
// connection error). lib/pq is not given the context's end to watch, so a
// statement costs no goroutine of lib/pq's; database/sql does see it, so
// each call's wait for one of the pool's connections ends at t with the
// context's error. What a call sent, the connection alone ends (see Done):
// database/sql neither watches the Rows of a query nor rolls back a
// transaction begun under it when it ends. On a pool opened without a
// Connector (see Guards), it is a context.WithDeadline.
func WithDeadline(parent context.Context, t time.Time) (context.Context, context.CancelFunc) {
	if parent.Done() == nil {
		if pt, ok := parent.Deadline(); !ok || !pt.Before(t) {
			c := &deadlineCtx{Context: parent, at: t, own: true}
			return c, func() { c.end(context.Canceled) }
		}
	}
	ctx, cancel := context.WithDeadline(parent, t)
	at, _ := ctx.Deadline() // parent's, when that comes first
	return &deadlineCtx{Context: ctx, at: at}, cancel
}

// Sibling returns a context with the deadline of ctx, a WithDeadline
// context (and its parent), for a call on the pool made while a call under
// ctx holds one of its connections (a statement prepared on the pool
// inside a transaction begun under ctx): under ctx itself, that call's
// wait for a connection would have no bound (see deadlineCtx.Done). ctx's
// cancel does not end it. Any other context is returned as it is.
func Sibling(ctx context.Context) context.Context {
	if d, ok := ctx.(*deadlineCtx); ok {
		return &deadlineCtx{Context: d.Context, at: d.at, own: d.own}
	}
	return ctx
}

// Guards reports whether d, a pool's driver (sql.DB.Driver), is a
// Connector's: its connections keep WithDeadline deadlines.
func Guards(d driver.Driver) bool {
	_, ok := d.(*Driver)
	return ok
}

// conn is a lib/pq connection that keeps WithDeadline deadlines on its
// socket. Every call that reaches the server sets the socket's deadline
// from its context (none when the context has no WithDeadline), so a
// deadline set for one statement never applies to a later one.
type conn struct {
	driver.Conn // lib/pq's; also its transaction (Begin returns it)
	g           *guardedConn
	// holder is the WithDeadline context whose call took the connection
	// from the pool (nil: none): its Done is nil until database/sql puts
	// the connection back (IsValid) or closes it. database/sql calls the
	// connection's methods under its lock of the connection.
	holder *deadlineCtx
}

// arm sets the socket's deadline for a call with ctx and returns the
// context to give lib/pq: for a WithDeadline context, one that never ends,
// since the socket keeps its deadline (see WithDeadline); a context that
// wraps one keeps its own end, which lib/pq watches as usual.
func (c *conn) arm(ctx context.Context) context.Context {
	if d, ok := ctx.(*deadlineCtx); ok {
		c.take(d)
		c.set(d.at)
		return context.Background()
	}
	if d := deadlineOf(ctx); d != nil {
		c.take(d)
		c.set(d.at)
		return ctx
	}
	c.set(time.Time{})
	return ctx
}

// take counts the connection as held under d, the context of its first
// call since it left the pool (the later ones, in its transaction or on
// its Rows, hold it for that one).
func (c *conn) take(d *deadlineCtx) {
	if c.holder == nil {
		c.holder = d
		d.hold()
	}
}

// putBack ends the hold of the context that took the connection: its
// calls' waits for a connection are bounded again (see deadlineCtx.Done).
func (c *conn) putBack() {
	if d := c.holder; d != nil {
		c.holder = nil
		d.release()
	}
}

// set puts deadline at (zero: none) on the socket, unless it has none and
// at is none.
func (c *conn) set(at time.Time) {
	if at.IsZero() && !c.g.armed.Load() {
		return
	}
	c.g.setDeadline(at)
}

func (c *conn) Prepare(q string) (driver.Stmt, error) {
	return c.PrepareContext(context.Background(), q)
}

func (c *conn) PrepareContext(ctx context.Context, q string) (driver.Stmt, error) {
	st, err := c.Conn.(driver.ConnPrepareContext).PrepareContext(c.arm(ctx), q)
	if err != nil {
		return nil, err
	}
	return &stmt{Stmt: st, c: c}, nil
}

func (c *conn) Close() error {
	c.putBack()
	c.set(time.Time{})
	return c.Conn.Close()
}

func (c *conn) Begin() (driver.Tx, error) {
	return c.BeginTx(context.Background(), driver.TxOptions{})
}

// BeginTx keeps ctx's deadline for the transaction's COMMIT or ROLLBACK.
func (c *conn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	t, err := c.Conn.(driver.ConnBeginTx).BeginTx(c.arm(ctx), opts)
	if err != nil {
		return nil, err
	}
	var at time.Time
	if d := deadlineOf(ctx); d != nil {
		at = d.at
	}
	return &tx{Tx: t, c: c, at: at}, nil
}

func (c *conn) QueryContext(ctx context.Context, q string, args []driver.NamedValue) (driver.Rows, error) {
	return c.Conn.(driver.QueryerContext).QueryContext(c.arm(ctx), q, args)
}

func (c *conn) ExecContext(ctx context.Context, q string, args []driver.NamedValue) (driver.Result, error) {
	return c.Conn.(driver.ExecerContext).ExecContext(c.arm(ctx), q, args)
}

func (c *conn) Ping(ctx context.Context) error {
	return c.Conn.(driver.Pinger).Ping(c.arm(ctx))
}

func (c *conn) ResetSession(ctx context.Context) error {
	return c.Conn.(driver.SessionResetter).ResetSession(ctx)
}

// IsValid is called by database/sql as it puts the connection back in the
// pool (unless it closes it for a fault).
func (c *conn) IsValid() bool {
	c.putBack()
	return c.Conn.(driver.Validator).IsValid()
}

func (c *conn) CheckNamedValue(nv *driver.NamedValue) error {
	return c.Conn.(driver.NamedValueChecker).CheckNamedValue(nv)
}

// tx is a transaction of a conn: COMMIT and ROLLBACK keep the deadline
// the transaction began with, or take CancelGrace when less is left (or
// none): the transaction ends on the connection rather than with it.
type tx struct {
	driver.Tx
	c  *conn
	at time.Time
}

func (t *tx) end() {
	at := t.at
	if least := time.Now().Add(CancelGrace); !at.IsZero() && at.Before(least) {
		at = least
	}
	t.c.set(at)
}

func (t *tx) Commit() error {
	t.end()
	return t.Tx.Commit()
}

func (t *tx) Rollback() error {
	t.end()
	return t.Tx.Rollback()
}

// stmt is a prepared statement of a conn.
type stmt struct {
	driver.Stmt
	c *conn
}

func (st *stmt) Close() error {
	st.c.set(time.Time{})
	return st.Stmt.Close()
}

func (st *stmt) Exec(args []driver.Value) (driver.Result, error) {
	st.c.set(time.Time{})
	return st.Stmt.Exec(args) //nolint:staticcheck // a statement without ExecContext (lib/pq's COPY)
}

func (st *stmt) Query(args []driver.Value) (driver.Rows, error) {
	st.c.set(time.Time{})
	return st.Stmt.Query(args) //nolint:staticcheck // a statement without QueryContext (lib/pq's COPY)
}

func (st *stmt) QueryContext(ctx context.Context, args []driver.NamedValue) (driver.Rows, error) {
	q, ok := st.Stmt.(driver.StmtQueryContext)
	if !ok {
		v, err := values(args)
		if err != nil {
			return nil, err
		}
		return st.Query(v)
	}
	return q.QueryContext(st.c.arm(ctx), args)
}

func (st *stmt) ExecContext(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	e, ok := st.Stmt.(driver.StmtExecContext)
	if !ok {
		v, err := values(args)
		if err != nil {
			return nil, err
		}
		return st.Exec(v)
	}
	return e.ExecContext(st.c.arm(ctx), args)
}

// values is args without names, for a statement that takes no context.
func values(args []driver.NamedValue) ([]driver.Value, error) {
	v := make([]driver.Value, len(args))
	for i, a := range args {
		if a.Name != "" {
			return nil, errors.New("pgconn: lib/pq does not support named parameters")
		}
		v[i] = a.Value
	}
	return v, nil
}
