package main

import (
	"context"
	"fmt"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/graftdev/graft/engine"
	graftsync "github.com/graftdev/graft/sync"
)

// ---- -with mirror -----------------------------------------------------------

// mirrorExtra mirrors every benchmark workflow into a legacy-style
// operations table in same-database mode. The table lives in the benchmark's
// schema, so it goes with it; its rows are created before the run, as the
// legacy application would have them, and checked one by one at the end.
type mirrorExtra struct {
	db     *sqlx.DB
	mr     *graftsync.Mirror
	table  string
	schema string
	n      int
}

// mirrorDDL is a legacy operations table: the application's own columns and
// defaults, and an index on status (the legacy API lists by status).
const mirrorDDL = `CREATE SCHEMA IF NOT EXISTS %[1]s;
CREATE TABLE %[1]s.operations (
	id         text PRIMARY KEY,
	kind       text NOT NULL DEFAULT 'bench',
	status     text NOT NULL DEFAULT 'todo',
	step       text,
	attempts   int NOT NULL DEFAULT 0,
	last_error text,
	updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON %[1]s.operations (status);`

// benchMapping is what a team would declare for that table.
func benchMapping(table string) graftsync.Mapping {
	return graftsync.Mapping{
		Table: table,
		Key:   graftsync.Key{Column: "id"},
		Status: &graftsync.StatusColumn{Column: "status", Values: map[graftsync.State]string{
			graftsync.StatePending: "todo", graftsync.StateRunning: "doing", graftsync.StateWaiting: "waiting",
			graftsync.StateCompleted: "done", graftsync.StateFailed: "error", graftsync.StateCancelled: "cancelled",
			graftsync.StateNeedsOperator: "problem"}},
		Step:       &graftsync.StepColumn{Column: "step", Labels: map[string]string{"bench.noop": "noop"}},
		Error:      &graftsync.ErrorColumn{Column: "last_error"},
		Attempts:   "attempts",
		UpdatedAt:  "updated_at",
		MissingRow: graftsync.MissingSkip,
	}
}

// newMirrorExtra creates the legacy table and validates the mapping against
// it, as an application does at start-up, before the engine exists.
func newMirrorExtra(o benchOpts) (*mirrorExtra, error) {
	db, err := openDB(4)
	if err != nil {
		return nil, err
	}
	x := &mirrorExtra{db: db, schema: o.schema, table: o.schema + ".operations", n: o.n}
	if _, err := db.Exec(fmt.Sprintf(mirrorDDL, pq.QuoteIdentifier(o.schema))); err != nil {
		db.Close()
		return nil, fmt.Errorf("bench: create legacy table: %w", err)
	}
	x.mr, err = graftsync.New(context.Background(), graftsync.Config{Mapping: benchMapping(x.table), DB: db, Schema: o.schema})
	if err != nil {
		db.Close()
		return nil, err
	}
	return x, nil
}

func (x *mirrorExtra) interceptor() engine.Interceptor { return x.mr }

// prepare creates the N legacy rows the workflows will mirror into.
func (x *mirrorExtra) prepare(ctx context.Context, _ *benchEnv) error {
	_, err := x.db.ExecContext(ctx, `INSERT INTO `+pq.QuoteIdentifier(x.schema)+`.operations (id)
		SELECT 'bench-' || g FROM generate_series(0, $1 - 1) g`, x.n)
	return err
}

func (x *mirrorExtra) headers(int, engine.Headers) {}

// verify counts the rows that show the engine's final state: done, at the
// last step, after one attempt, with no error.
func (x *mirrorExtra) verify(ctx context.Context, _ *benchEnv, n int) (string, error) {
	defer x.db.Close()
	defer x.mr.Close()
	var ok int
	err := x.db.QueryRowContext(ctx, `SELECT count(*) FROM `+pq.QuoteIdentifier(x.schema)+`.operations
		WHERE id = ANY(SELECT 'bench-' || g FROM generate_series(0, $1 - 1) g)
		  AND status = 'done' AND step = 'noop' AND attempts = 1 AND last_error IS NULL`, n).Scan(&ok)
	if err != nil {
		return "", fmt.Errorf("bench: verify mirror: %w", err)
	}
	return fmt.Sprintf(" mirror_rows_ok=%d", ok), nil
}
