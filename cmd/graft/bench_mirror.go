package main

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/lib/pq"

	"github.com/graftdev/graft/engine"
	graftsync "github.com/graftdev/graft/sync"
)

// ---- -with mirror -----------------------------------------------------------

// mirrorExtra mirrors every benchmark workflow into a legacy-style
// operations table in same-database mode. The table lives in the benchmark's
// schema, so it goes with it; its rows are created before the run, as the
// legacy application would have them, and checked one by one at the end.
//
// The mirror must share the engine's pool (it prepares its statements
// there), and the benchmark creates that pool with the engine, after the
// interceptors are set. So the interceptor set here forwards checkpoints to
// the mirror that prepare creates, before any workflow starts. An
// application creates its pool first and passes it to both.
type mirrorExtra struct {
	engine.InterceptorBase

	o  benchOpts
	mr atomic.Pointer[graftsync.Mirror]
}

// mirrorDDL is a legacy operations table: the application's own columns and
// defaults, a version for its optimistic locking, and an index on status
// (the legacy API lists by status).
const mirrorDDL = `CREATE SCHEMA IF NOT EXISTS %[1]s;
CREATE TABLE %[1]s.operations (
	id         text PRIMARY KEY,
	kind       text NOT NULL DEFAULT 'bench',
	status     text NOT NULL DEFAULT 'todo',
	step       text,
	attempts   int NOT NULL DEFAULT 0,
	last_error text,
	updated_at timestamptz NOT NULL DEFAULT now(),
	version    bigint
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
		// The table's version column is the never-regress guard; without
		// it graft keeps the applied position in <schema>.mirror_state.
		Version: "version",
	}
}

func newMirrorExtra(o benchOpts) (*mirrorExtra, error) { return &mirrorExtra{o: o}, nil }

func (x *mirrorExtra) interceptor() engine.Interceptor { return x }

// Checkpoint forwards to the mirror.
func (x *mirrorExtra) Checkpoint(ctx context.Context, tx engine.CheckpointTx, events []*engine.CheckpointEvent) error {
	if mr := x.mr.Load(); mr != nil {
		return mr.Checkpoint(ctx, tx, events)
	}
	return nil
}

// FoldCheckpoint forwards to the mirror.
func (x *mirrorExtra) FoldCheckpoint(ctx context.Context, events []*engine.CheckpointEvent) (*engine.CheckpointFold, bool) {
	if mr := x.mr.Load(); mr != nil {
		return mr.FoldCheckpoint(ctx, events)
	}
	return nil, true
}

func (x *mirrorExtra) table() string { return pq.QuoteIdentifier(x.o.schema) + ".operations" }

// prepare creates the legacy table with the N rows the workflows will
// mirror into, and the mirror, which validates its mapping against the
// table as an application does at start-up.
func (x *mirrorExtra) prepare(ctx context.Context, env *benchEnv) error {
	db := env.e.DB()
	if _, err := db.ExecContext(ctx, fmt.Sprintf(mirrorDDL, pq.QuoteIdentifier(x.o.schema))); err != nil {
		return fmt.Errorf("bench: create legacy table: %w", err)
	}
	// The legacy rows are the set-up's, not the measured phase's: on one
	// connection, which reports its table counters as it goes idle after
	// pg_stat_force_next_flush, so -stats counts them before it begins.
	cn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer cn.Close()
	if _, err := cn.ExecContext(ctx, `INSERT INTO `+x.table()+` (id) SELECT 'bench-' || g FROM generate_series(0, $1 - 1) g`, x.o.n); err != nil {
		return err
	}
	// A legacy table in service has statistics; a fresh one would have
	// none until autovacuum came by.
	if _, err := cn.ExecContext(ctx, `ANALYZE `+x.table()); err != nil {
		return err
	}
	if _, err := cn.ExecContext(ctx, `SELECT pg_stat_force_next_flush()`); err != nil {
		return err
	}
	mr, err := graftsync.New(ctx, graftsync.Config{Mapping: benchMapping(x.o.schema + ".operations"), DB: db, Schema: x.o.schema})
	if err != nil {
		return err
	}
	// The relay delivers what the legacy table might refuse at first.
	if err := mr.Start(ctx, env.e.Client()); err != nil {
		return err
	}
	x.mr.Store(mr)
	return nil
}

func (x *mirrorExtra) headers(_ int, h engine.Headers) engine.Headers { return h }

// verify counts the rows that show the engine's final state: done, at the
// last step, after one attempt, with no error.
func (x *mirrorExtra) verify(ctx context.Context, env *benchEnv, n int) (string, error) {
	if mr := x.mr.Load(); mr != nil {
		defer mr.Close()
	}
	var ok int
	err := env.e.DB().QueryRowContext(ctx, `SELECT count(*) FROM `+x.table()+` o
		JOIN generate_series(0, $1 - 1) g ON o.id = 'bench-' || g
		WHERE o.status = 'done' AND o.step = 'noop' AND o.attempts = 1 AND o.last_error IS NULL AND o.version IS NOT NULL`, n).Scan(&ok)
	if err != nil {
		return "", fmt.Errorf("bench: verify mirror: %w", err)
	}
	return fmt.Sprintf(" mirror_rows_ok=%d", ok), nil
}
