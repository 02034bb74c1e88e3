package graftsync

import (
	"context"
	"database/sql"
	"strings"
	"sync"
	"sync/atomic"
)

// stmtCache prepares the write statements once per pool, so that a batch
// costs no parsing or planning. A checkpoint batch runs in the engine's
// transaction; database/sql then uses the statement prepared on that
// transaction's connection, preparing it there the first time. This needs
// the transaction to come from the pool the statement was prepared on
// (Config.DB is the engine's pool); when it does not, the cache notices and
// the mirror sends plain queries.
type stmtCache struct {
	mu    sync.Mutex
	stmts map[*sql.DB]map[string]*sql.Stmt
	off   atomic.Bool
}

func (c *stmtCache) get(ctx context.Context, db *sql.DB, text string) (*sql.Stmt, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st := c.stmts[db][text]; st != nil {
		return st, nil
	}
	st, err := db.PrepareContext(ctx, text)
	if err != nil {
		return nil, err
	}
	if c.stmts == nil {
		c.stmts = map[*sql.DB]map[string]*sql.Stmt{}
	}
	if c.stmts[db] == nil {
		c.stmts[db] = map[string]*sql.Stmt{}
	}
	c.stmts[db][text] = st
	return st, nil
}

// query runs text in q, through a statement prepared on db when q is a
// transaction of db.
func (c *stmtCache) query(ctx context.Context, db *sql.DB, q queryer, text string, args ...any) (*sql.Rows, error) {
	tx, ok := q.(*sql.Tx)
	if !ok || db == nil || c.off.Load() {
		return q.QueryContext(ctx, text, args...)
	}
	st, err := c.get(ctx, db, text)
	if err != nil {
		return q.QueryContext(ctx, text, args...)
	}
	rows, err := tx.StmtContext(ctx, st).QueryContext(ctx, args...)
	if err != nil && strings.Contains(err.Error(), "statement from different database") {
		c.off.Store(true)
		return q.QueryContext(ctx, text, args...)
	}
	return rows, err
}

func (c *stmtCache) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range c.stmts {
		for _, st := range m {
			_ = st.Close()
		}
	}
	c.stmts = nil
	return nil
}
