package engine

import (
	"context"
	"fmt"
	"hash/fnv"
	"time"
)

const (
	// purgeInterval is how often the retention loop looks for runs past
	// the retention period. Each round removes all it finds, so the loop
	// keeps pace with any rate of closing runs.
	purgeInterval = time.Minute
	// purgeBatch is how many runs one purge transaction removes (with
	// their steps, signals and heartbeat details): small enough that no
	// batch holds its locks for long.
	purgeBatch = 1000
	// purgeStatementTimeout bounds each statement of a purge batch, so a
	// stalled database leaves no query behind.
	purgeStatementTimeout = "60s"
)

// retentionLoop removes closed runs past the retention period.
func (e *Engine) retentionLoop() {
	if e.cfg.Retention < 0 {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-e.closed
		cancel()
	}()
	every := purgeInterval
	if d := e.cfg.purgeEvery; d > 0 {
		every = d
	}
	for {
		t := time.NewTimer(every)
		select {
		case <-e.closed:
			t.Stop()
			return
		case <-t.C:
		}
		n, err := e.purgeExpired(ctx, e.cfg.Clock.Now().Add(-e.cfg.Retention))
		if err != nil && ctx.Err() == nil {
			e.cfg.Logger.Warn("engine: purge of closed runs failed; retried next round", "purged", n, "err", err)
		}
		if h := e.hooks.purged.Load(); h != nil {
			(*h)(n, err)
		}
	}
}

// purgeExpired removes every run that closed before cutoff, in batches of
// purgeBatch runs, each in its own short transaction, until a batch comes
// back short. One process purges a schema at a time: a batch that finds
// another process's batch holding the purge lock ends the round, which
// that process carries on.
func (e *Engine) purgeExpired(ctx context.Context, cutoff time.Time) (int, error) {
	total := 0
	for {
		n, locked, err := e.purgeBatch(ctx, cutoff, purgeBatch, true)
		total += n
		if err != nil || !locked || n < purgeBatch {
			return total, err
		}
	}
}

// PurgeClosed deletes up to limit closed runs that closed before cutoff, with
// their steps, signals and heartbeat details, and returns how many it removed.
// The engine does this itself for runs past Config.Retention.
func (e *Engine) PurgeClosed(ctx context.Context, cutoff time.Time, limit int) (int, error) {
	if limit <= 0 {
		return 0, fmt.Errorf("engine: PurgeClosed: limit must be positive")
	}
	n, _, err := e.purgeBatch(ctx, cutoff, limit, false)
	return n, err
}

// purgeBatch removes up to limit runs closed before cutoff in one
// transaction. With exclusive, it first takes the schema's purge lock
// (transaction-scoped) and removes nothing when another process holds it.
// Rows another transaction has locked are skipped, never waited for.
func (e *Engine) purgeBatch(ctx context.Context, cutoff time.Time, limit int, exclusive bool) (n int, locked bool, err error) {
	s := e.store
	tx, err := e.db.BeginTxx(ctx, nil)
	if err != nil {
		return 0, false, fmt.Errorf("engine: purge: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `SET LOCAL statement_timeout = '`+purgeStatementTimeout+`'`); err != nil {
		return 0, false, fmt.Errorf("engine: purge: %w", err)
	}
	if exclusive {
		h := fnv.New64a()
		h.Write([]byte("graft-purge:" + e.cfg.Schema))
		if err := tx.QueryRowContext(ctx, `SELECT pg_try_advisory_xact_lock($1)`, int64(h.Sum64())).Scan(&locked); err != nil || !locked {
			return 0, false, err
		}
	}
	// runs_closed (migration 007) serves the oldest-first scan.
	err = tx.QueryRowContext(ctx, `WITH gone AS (
			DELETE FROM `+s.runs+` WHERE run_id IN (
				SELECT run_id FROM `+s.runs+` WHERE closed_at < $1 ORDER BY closed_at LIMIT $2 FOR UPDATE SKIP LOCKED)
			RETURNING run_id),
		st AS (DELETE FROM `+s.steps+` WHERE run_id IN (SELECT run_id FROM gone)),
		sg AS (DELETE FROM `+s.signals+` WHERE run_id IN (SELECT run_id FROM gone)),
		hb AS (DELETE FROM `+s.beats+` WHERE run_id IN (SELECT run_id FROM gone))
		SELECT count(*) FROM gone`, cutoff, limit).Scan(&n)
	if err != nil {
		return 0, locked, fmt.Errorf("engine: purge: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return 0, locked, fmt.Errorf("engine: purge: %w", err)
	}
	return n, true, nil
}
