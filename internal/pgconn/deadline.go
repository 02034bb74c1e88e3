package pgconn

import (
	"context"
	"database/sql/driver"
	"errors"
	"time"
)

// A statement whose context can end costs a goroutine in lib/pq (it waits
// for the end to send a cancel request) and another in database/sql (to
// close the rows), each started and woken for every statement: at one
// statement at a time, those hand-offs cost more CPU than the statement.
// A context from WithDeadline has no end that anyone must watch for: the
// connection keeps its deadline itself, as the socket's, and does at that
// time what lib/pq does when a context ends (a cancel request; the backend
// terminated and the connection closed if the server does not answer it
// within CancelGrace).

// deadlineKey is the context key of a WithDeadline deadline.
type deadlineKey struct{}

// deadlineCtx carries a deadline the connection keeps; it is never done.
type deadlineCtx struct {
	context.Context
	at time.Time
}

func (c *deadlineCtx) Deadline() (time.Time, bool) { return c.at, true }

// Value gives the context itself for deadlineKey (see deadlineOf): a
// pointer is boxed without an allocation, a time.Time is not.
func (c *deadlineCtx) Value(key any) any {
	if key == (deadlineKey{}) {
		return c
	}
	return c.Context.Value(key)
}

// deadlineOf is ctx's WithDeadline deadline (zero: none).
func deadlineOf(ctx context.Context) time.Time {
	if c, ok := ctx.Value(deadlineKey{}).(*deadlineCtx); ok {
		return c.at
	}
	return time.Time{}
}

// WithDeadline returns a context whose statements on a Connector's
// connections stop waiting at t, kept by the connection: at t a cancel
// request goes to the server, and a server that has not answered it within
// CancelGrace has its backend terminated and the connection closed (the
// statement then fails with a connection error). The context is never
// done (Done is nil, and parent's end is not passed on): only use it on
// pools opened with a Connector (see Guards). The values of parent stay.
func WithDeadline(parent context.Context, t time.Time) context.Context {
	if parent != context.Background() {
		parent = context.WithoutCancel(parent)
	}
	return &deadlineCtx{Context: parent, at: t}
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
}

// arm sets the socket's deadline for a call with ctx.
func (c *conn) arm(ctx context.Context) {
	c.set(deadlineOf(ctx))
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
	c.arm(ctx)
	st, err := c.Conn.(driver.ConnPrepareContext).PrepareContext(ctx, q)
	if err != nil {
		return nil, err
	}
	return &stmt{Stmt: st, c: c}, nil
}

func (c *conn) Close() error {
	c.set(time.Time{})
	return c.Conn.Close()
}

func (c *conn) Begin() (driver.Tx, error) {
	return c.BeginTx(context.Background(), driver.TxOptions{})
}

// BeginTx keeps ctx's deadline for the transaction's COMMIT or ROLLBACK.
func (c *conn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	c.arm(ctx)
	t, err := c.Conn.(driver.ConnBeginTx).BeginTx(ctx, opts)
	if err != nil {
		return nil, err
	}
	return &tx{Tx: t, c: c, at: deadlineOf(ctx)}, nil
}

func (c *conn) QueryContext(ctx context.Context, q string, args []driver.NamedValue) (driver.Rows, error) {
	c.arm(ctx)
	return c.Conn.(driver.QueryerContext).QueryContext(ctx, q, args)
}

func (c *conn) ExecContext(ctx context.Context, q string, args []driver.NamedValue) (driver.Result, error) {
	c.arm(ctx)
	return c.Conn.(driver.ExecerContext).ExecContext(ctx, q, args)
}

func (c *conn) Ping(ctx context.Context) error {
	c.arm(ctx)
	return c.Conn.(driver.Pinger).Ping(ctx)
}

func (c *conn) ResetSession(ctx context.Context) error {
	return c.Conn.(driver.SessionResetter).ResetSession(ctx)
}

func (c *conn) IsValid() bool { return c.Conn.(driver.Validator).IsValid() }

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
	st.c.arm(ctx)
	return q.QueryContext(ctx, args)
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
	st.c.arm(ctx)
	return e.ExecContext(ctx, args)
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
