package sqlobserve

import (
	"context"
	"database/sql/driver"
)

// Observer is told what a Connector's connections send, before they send
// it. Its methods are called from every connection of a pool at once.
//
// K is what the observer keeps of a statement's text: Key works it out
// once for a prepared statement, not again at each of its executions (a
// commit's statement is several kilobytes of text).
type Observer[K any] interface {
	// Key is what Statement and Prepare are given for the statement whose
	// text is query.
	Key(query string) K
	// Statement is told of an execution of a statement, prepared or not;
	// inTx says whether it runs inside a transaction the connection began.
	Statement(k K, inTx bool)
	// Prepare is told of a statement's preparation (a round trip of its
	// own, which executes nothing).
	Prepare(k K)
	// Begin is told of a transaction's BEGIN.
	Begin()
	// End is told of a transaction's COMMIT (commit) or ROLLBACK.
	End(commit bool)
	// Connected is told of each new connection, before anything else is
	// sent on it; statements it sends on conn itself are not observed.
	Connected(ctx context.Context, conn driver.Conn)
}

// ConnObserver is what an Observer also implements to be told which
// connection sends each statement, BEGIN, COMMIT and ROLLBACK, just
// before the Observer's own method: the connection Connected was given.
// An observer that reads what the connection's backend did between two of
// its sends (its CPU) learns what each cost.
type ConnObserver[K any] interface {
	Sending(cn driver.Conn, k K, what Sent)
}

// Sent is what a connection sends (ConnObserver).
type Sent int

// What a connection sends; k is the zero K for all but SentStatement.
const (
	SentStatement Sent = iota
	SentBegin
	SentCommit
	SentRollback
)

// Base does nothing for every method of an Observer but Key: embed it in
// an observer to implement only the methods it cares about.
type Base[K any] struct{}

// Statement does nothing.
func (Base[K]) Statement(K, bool) {}

// Prepare does nothing.
func (Base[K]) Prepare(K) {}

// Begin does nothing.
func (Base[K]) Begin() {}

// End does nothing.
func (Base[K]) End(bool) {}

// Connected does nothing.
func (Base[K]) Connected(context.Context, driver.Conn) {}

// NewConnector returns a connector whose connections are base's, observed
// by o. Its Driver is base's, so what a pool learns from its driver (as
// pgconn.Guards does) stays true.
func NewConnector[K any](base driver.Connector, o Observer[K]) driver.Connector {
	return &connector[K]{base: base, o: o}
}

type connector[K any] struct {
	base driver.Connector
	o    Observer[K]
}

func (k *connector[K]) Connect(ctx context.Context) (driver.Conn, error) {
	cn, err := k.base.Connect(ctx)
	if err != nil {
		return nil, err
	}
	k.o.Connected(ctx, cn)
	return &conn[K]{Conn: cn, o: k.o}, nil
}

func (k *connector[K]) Driver() driver.Driver { return k.base.Driver() }

// conn is an observed connection. database/sql uses a connection from one
// goroutine at a time, so inTx needs no lock.
type conn[K any] struct {
	driver.Conn
	o    Observer[K]
	inTx bool
}

// sending tells a ConnObserver what the connection sends next.
func (cn *conn[K]) sending(k K, what Sent) {
	if s, ok := cn.o.(ConnObserver[K]); ok {
		s.Sending(cn.Conn, k, what)
	}
}

// statement tells the observer of an execution of the statement q.
func (cn *conn[K]) statement(q string) {
	k := cn.o.Key(q)
	cn.sending(k, SentStatement)
	cn.o.Statement(k, cn.inTx)
}

func (cn *conn[K]) QueryContext(ctx context.Context, q string, args []driver.NamedValue) (driver.Rows, error) {
	cn.statement(q)
	return cn.Conn.(driver.QueryerContext).QueryContext(ctx, q, args)
}

func (cn *conn[K]) ExecContext(ctx context.Context, q string, args []driver.NamedValue) (driver.Result, error) {
	cn.statement(q)
	return cn.Conn.(driver.ExecerContext).ExecContext(ctx, q, args)
}

func (cn *conn[K]) PrepareContext(ctx context.Context, q string) (driver.Stmt, error) {
	k := cn.o.Key(q)
	cn.o.Prepare(k)
	st, err := cn.Conn.(driver.ConnPrepareContext).PrepareContext(ctx, q)
	if err != nil {
		return nil, err
	}
	return &stmt[K]{Stmt: st, cn: cn, k: k}, nil
}

func (cn *conn[K]) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	var zero K
	cn.sending(zero, SentBegin)
	cn.o.Begin()
	t, err := cn.Conn.(driver.ConnBeginTx).BeginTx(ctx, opts)
	if err != nil {
		return nil, err
	}
	cn.inTx = true
	return &tx[K]{Tx: t, cn: cn}, nil
}

func (cn *conn[K]) Ping(ctx context.Context) error { return cn.Conn.(driver.Pinger).Ping(ctx) }

func (cn *conn[K]) ResetSession(ctx context.Context) error {
	return cn.Conn.(driver.SessionResetter).ResetSession(ctx)
}

func (cn *conn[K]) IsValid() bool { return cn.Conn.(driver.Validator).IsValid() }

func (cn *conn[K]) CheckNamedValue(nv *driver.NamedValue) error {
	return cn.Conn.(driver.NamedValueChecker).CheckNamedValue(nv)
}

// stmt is a prepared statement of a conn, with what the observer keeps of
// its text.
type stmt[K any] struct {
	driver.Stmt
	cn *conn[K]
	k  K
}

func (st *stmt[K]) QueryContext(ctx context.Context, args []driver.NamedValue) (driver.Rows, error) {
	st.cn.sending(st.k, SentStatement)
	st.cn.o.Statement(st.k, st.cn.inTx)
	return st.Stmt.(driver.StmtQueryContext).QueryContext(ctx, args)
}

func (st *stmt[K]) ExecContext(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	st.cn.sending(st.k, SentStatement)
	st.cn.o.Statement(st.k, st.cn.inTx)
	return st.Stmt.(driver.StmtExecContext).ExecContext(ctx, args)
}

// tx is a transaction of a conn.
type tx[K any] struct {
	driver.Tx
	cn *conn[K]
}

func (t *tx[K]) Commit() error {
	var zero K
	t.cn.sending(zero, SentCommit)
	t.cn.o.End(true)
	t.cn.inTx = false
	return t.Tx.Commit()
}

func (t *tx[K]) Rollback() error {
	var zero K
	t.cn.sending(zero, SentRollback)
	t.cn.o.End(false)
	t.cn.inTx = false
	return t.Tx.Rollback()
}
