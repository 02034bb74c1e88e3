package engine

import (
	"context"
	"database/sql"
	"sync"
	"sync/atomic"

	"github.com/graftdev/graft/internal/pgconn"
)

// hotQuery runs q, a statement of the commit path, prepared (see hotStmt).
func (s *store) hotQuery(ctx context.Context, tx dbtx, q string, args ...any) (*sql.Rows, error) {
	h, ok := s.hot.Load(q)
	if !ok {
		h, _ = s.hot.LoadOrStore(q, &hotStmt{q: q})
	}
	return h.(*hotStmt).query(ctx, s, tx, args...)
}

// closeHot releases the prepared statements.
func (s *store) closeHot() {
	s.hot.Range(func(_, h any) bool {
		h.(*hotStmt).close()
		return true
	})
}

// hotStmt is a statement of the commit path, prepared on each connection of
// the pool that runs it. Sent unprepared, PostgreSQL parses, analyses and
// plans the statement (a few CTEs over unnested arrays) on every commit,
// which takes several times as long as executing it for a small batch;
// prepared, a connection keeps a plan for it (a generic one after five
// executions), and a commit stays one Bind/Execute round trip.
//
// A generic plan is made for the tables as they are when it is made, and
// kept until they are analysed again. Its probes by key (see
// unnestCols.sql) hold for a table never analysed, but a table analysed
// while it held a few pages gets plans that scan it (reading a few pages
// costs less, in PostgreSQL's model, than one probe), which it would keep
// as it grows until autovacuum analyses it again; so the statement is
// prepared anew after 64 executions, then after 8 times as many each time
// (512, 4,096, ...): its plans follow the tables' growth in a few
// generations. Earlier generations are closed with the engine.
type hotStmt struct {
	q   string
	cur atomic.Pointer[stmtGen]
	mu  sync.Mutex // held while preparing; guards old
	old []*sql.Stmt
}

// stmtGen is one preparation of a hotStmt.
type stmtGen struct {
	st *sql.Stmt
	// uses counts executions; at renewAt the statement is prepared anew.
	uses, renewAt int64
}

// firstRenewal and renewalFactor set when a hot statement is prepared anew.
const (
	firstRenewal  = 64
	renewalFactor = 8
)

// query runs the statement on tx: the store's pool (prepared on whichever
// connection it takes, the first time on each) or a transaction of it
// (prepared on its connection if need be); a transaction of another pool,
// or anything else, runs it unprepared.
func (h *hotStmt) query(ctx context.Context, s *store, tx dbtx, args ...any) (*sql.Rows, error) {
	t, inTx := tx.(*sql.Tx)
	if !inTx && tx != dbtx(s.db) {
		return tx.QueryContext(ctx, h.q, args...)
	}
	st, err := h.prepare(ctx, s.db.DB)
	if err != nil {
		return nil, err
	}
	if inTx {
		rows, err := t.StmtContext(ctx, st).QueryContext(ctx, args...)
		if err != nil && err.Error() == errStmtOtherDB {
			// A caller's transaction (a Client Tx call) of a pool other
			// than the engine's: the statement goes unprepared.
			return t.QueryContext(ctx, h.q, args...)
		}
		return rows, err
	}
	return st.QueryContext(ctx, args...)
}

// errStmtOtherDB is database/sql's error for a statement prepared on one
// pool and run in a transaction of another (Tx.StmtContext), which it
// reports before sending anything.
const errStmtOtherDB = "sql: Tx.Stmt: statement from different database used"

func (h *hotStmt) prepare(ctx context.Context, db *sql.DB) (*sql.Stmt, error) {
	if g := h.cur.Load(); g != nil && atomic.AddInt64(&g.uses, 1) <= g.renewAt {
		return g.st, nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	g := h.cur.Load()
	if g != nil && atomic.LoadInt64(&g.uses) <= g.renewAt {
		return g.st, nil // prepared anew meanwhile
	}
	renewAt := int64(firstRenewal)
	if g != nil {
		renewAt = g.renewAt * renewalFactor
	}
	// Inside a transaction, the preparation takes a second connection of
	// the pool: its wait for one is bounded by ctx's deadline only under a
	// context of its own (see pgconn.Sibling).
	st, err := db.PrepareContext(pgconn.Sibling(ctx), h.q)
	if err != nil {
		if g != nil {
			return g.st, nil // the previous generation still works
		}
		return nil, err
	}
	if g != nil {
		// Another goroutine may be running it: closed with the engine.
		h.old = append(h.old, g.st)
	}
	h.cur.Store(&stmtGen{st: st, uses: 1, renewAt: renewAt})
	return st, nil
}

// close releases every generation of the statement on the connections
// that prepared it.
func (h *hotStmt) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if g := h.cur.Swap(nil); g != nil {
		_ = g.st.Close()
	}
	for _, st := range h.old {
		_ = st.Close()
	}
	h.old = nil
}
