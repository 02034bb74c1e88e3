package graftsync

import (
	"context"
	"database/sql"
	"strings"
	"sync"
	"sync/atomic"
)

// stmtCache holds the write statements prepared on a pool, so that a batch
// costs no parsing or planning. A checkpoint batch runs in the engine's
// transaction; database/sql then uses the statement prepared on that
// transaction's connection, preparing it there the first time, on that same
// connection. The statements are prepared when the Mirror is created:
// preparing one later would take a second connection from a pool whose
// connections may all be in transactions waiting for it. Using them needs
// the transaction to come from the pool they were prepared on (Config.DB is
// the engine's pool); when it does not, the cache notices and the mirror
// sends plain queries.
type stmtCache struct {
	mu    sync.Mutex
	stmts map[*sql.DB]map[string]*sql.Stmt
	off   atomic.Bool
}

// prepare prepares texts on db.
func (c *stmtCache) prepare(ctx context.Context, db *sql.DB, texts ...string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stmts == nil {
		c.stmts = map[*sql.DB]map[string]*sql.Stmt{}
	}
	if c.stmts[db] == nil {
		c.stmts[db] = map[string]*sql.Stmt{}
	}
	for _, text := range texts {
		if c.stmts[db][text] != nil {
			continue
		}
		st, err := db.PrepareContext(ctx, text)
		if err != nil {
			return err
		}
		c.stmts[db][text] = st
	}
	return nil
}

func (c *stmtCache) get(db *sql.DB, text string) *sql.Stmt {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stmts[db][text]
}

// query runs text in q, through a statement prepared on db when q is a
// transaction of db.
func (c *stmtCache) query(ctx context.Context, db *sql.DB, q queryer, text string, args ...any) (*sql.Rows, error) {
	tx, ok := q.(*sql.Tx)
	if !ok || db == nil || c.off.Load() {
		return q.QueryContext(ctx, text, args...)
	}
	st := c.get(db, text)
	if st == nil {
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
