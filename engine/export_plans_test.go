package engine

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/lib/pq"
)

// HotPlansForTest returns the generic plans (EXPLAIN of the prepared
// statement, as a connection's plan cache keeps it after its first
// executions) of the commit statement of every shape, by the shape's name
// (see CommitShapesForTest; "<shape>/values1" and "/values2" with each
// arm's rows as a VALUES list of one and of two rows), and of the claim
// of due runs, "claim_due" (one queue) and "claim_due_queues" (two).
func HotPlansForTest(ctx context.Context, e *Engine) (map[string]string, error) {
	s := e.store
	cn, err := s.db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	defer cn.Close()
	if _, err := cn.ExecContext(ctx, `SET plan_cache_mode = force_generic_plan`); err != nil {
		return nil, err
	}
	defer cn.ExecContext(context.Background(), `RESET plan_cache_mode`) //nolint:errcheck // the connection goes back to the pool either way
	plans := map[string]string{}
	type stmt struct {
		q      string
		params int
	}
	stmts := map[string]stmt{
		"claim_due":        {s.claimSQL(s.claimDueSQL(1), ""), 7},
		"claim_due_queues": {s.claimSQL(s.claimDueSQL(2), ""), 7},
	}
	for name, sh := range commitShapes() {
		stmts[name] = stmt{s.sql.commit[sh].q, s.sql.commit[sh].params}
		// The same shape with each arm's rows as a VALUES list (a batch
		// of a few ops), of one row and of the most.
		for _, rows := range []uint8{1, valuesRows} {
			c := s.commitFor(commitKey{sh: sh, steps: rows, fins: rows, news: rows, newSteps: rows})
			stmts[fmt.Sprintf("%s/values%d", name, rows)] = stmt{c.q, c.params}
		}
	}
	for name, q := range stmts {
		if _, err := cn.ExecContext(ctx, `PREPARE graft_hot_plan AS `+q.q); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		rows, err := cn.QueryContext(ctx, `EXPLAIN EXECUTE graft_hot_plan(`+strings.TrimSuffix(strings.Repeat("NULL,", q.params), ",")+`)`)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		var b strings.Builder
		for rows.Next() {
			var line string
			if err := rows.Scan(&line); err != nil {
				rows.Close()
				return nil, err
			}
			b.WriteString(line + "\n")
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
		if _, err := cn.ExecContext(ctx, `DEALLOCATE graft_hot_plan`); err != nil {
			return nil, err
		}
		plans[name] = b.String()
	}
	return plans, nil
}

// commitShapes returns the shapes a commit statement can have, by name:
// its parts joined by "+" (steps, fin, timers, news, new_steps).
func commitShapes() map[string]commitShape {
	parts := []struct {
		sh   commitShape
		name string
	}{{shapeSteps, "steps"}, {shapeFin, "fin"}, {shapeTimers, "timers"}, {shapeNews, "news"}, {shapeNewSteps, "new_steps"}}
	m := map[string]commitShape{}
	for sh := commitShape(1); sh <= shapeAll; sh++ {
		if sh&shapeTimers != 0 && sh&shapeFin == 0 || sh&shapeNewSteps != 0 && sh&shapeNews == 0 {
			continue // never used: their parts need fin, news
		}
		var name []string
		for _, p := range parts {
			if sh&p.sh != 0 {
				name = append(name, p.name)
			}
		}
		m[strings.Join(name, "+")] = sh
	}
	return m
}

// ClaimExpiredPlanForTest runs the claim of up to n runs of queue whose
// leases expired on its generic plan (as a connection's plan cache keeps
// it), under EXPLAIN (ANALYZE, BUFFERS), in a transaction it rolls back,
// and returns the plan and the buffers the claim fetched of each of the
// engine's own tables and indexes (by name, those it fetched any of).
// The plan's own buffer counts can also hold system catalog pages the
// backend reads while it runs the statement (a relation cache entry to
// rebuild), which the counts by relation leave out.
func ClaimExpiredPlanForTest(ctx context.Context, e *Engine, queue string, types []string, n int) (string, map[string]int64, error) {
	s := e.store
	return claimPlan(ctx, e, s.claimSQL(s.claimExpiredSQL(), claimExpiredLease), queue, types, n, pq.QuoteLiteral(expiredWindow(0)))
}

// ClaimDuePlanForTest is ClaimExpiredPlanForTest for the claim of due
// runs.
func ClaimDuePlanForTest(ctx context.Context, e *Engine, queue string, types []string, n int) (string, map[string]int64, error) {
	s := e.store
	return claimPlan(ctx, e, s.claimSQL(s.claimDueSQL(1), ""), queue, types, n)
}

// claimPlan is ClaimExpiredPlanForTest's and ClaimDuePlanForTest's run of
// the claim q, with extra (SQL literals) after claimArgs' arguments.
func claimPlan(ctx context.Context, e *Engine, q, queue string, types []string, n int, extra ...string) (string, map[string]int64, error) {
	s := e.store
	cn, err := s.db.Conn(ctx)
	if err != nil {
		return "", nil, err
	}
	defer cn.Close()
	tx, err := cn.BeginTx(ctx, nil)
	if err != nil {
		return "", nil, err
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, `SET LOCAL plan_cache_mode = force_generic_plan`); err != nil {
		return "", nil, err
	}
	if _, err := tx.ExecContext(ctx, `PREPARE graft_claim_plan AS `+q); err != nil {
		return "", nil, err
	}
	// A prepared statement outlives the transaction: it goes with it.
	defer cn.ExecContext(context.Background(), `DEALLOCATE graft_claim_plan`) //nolint:errcheck // the connection is closed next
	// A backend's counts of the buffers it fetched of each relation are
	// not flushed to the shared statistics inside a transaction, so the
	// difference across the statement is the statement's own.
	before, err := relationFetches(ctx, tx, e.Schema())
	if err != nil {
		return "", nil, err
	}
	args := append([]string{pq.QuoteLiteral("w"), pq.QuoteLiteral("{" + queue + "}"), pq.QuoteLiteral("{" + strings.Join(types, ",") + "}"),
		fmt.Sprint(n), "now()", pq.QuoteLiteral(ttlInterval(e.cfg.LeaseTTL)), "'{}'"}, extra...)
	plan, err := queryLines(ctx, tx, `EXPLAIN (ANALYZE, BUFFERS) EXECUTE graft_claim_plan(`+strings.Join(args, ", ")+`)`)
	if err != nil {
		return "", nil, err
	}
	after, err := relationFetches(ctx, tx, e.Schema())
	if err != nil {
		return "", nil, err
	}
	for name, k := range after {
		if k -= before[name]; k > 0 {
			after[name] = k
		} else {
			delete(after, name)
		}
	}
	return plan, after, nil
}

// relationFetches returns the buffers this backend fetched so far, not yet
// flushed to the shared statistics, of each table and index in schema.
func relationFetches(ctx context.Context, tx *sql.Tx, schema string) (map[string]int64, error) {
	rows, err := tx.QueryContext(ctx, `SELECT c.relname, pg_stat_get_xact_blocks_fetched(c.oid)
		FROM pg_class c JOIN pg_namespace ns ON ns.oid = c.relnamespace
		WHERE ns.nspname = $1 AND c.relkind IN ('r', 'i')`, schema)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var name string
		var k int64
		if err := rows.Scan(&name, &k); err != nil {
			return nil, err
		}
		out[name] = k
	}
	return out, rows.Err()
}

// queryLines runs q with args, whose rows are one text column, and
// returns them one a line.
func queryLines(ctx context.Context, tx *sql.Tx, q string, args ...any) (string, error) {
	rows, err := tx.QueryContext(ctx, q, args...)
	if err != nil {
		return "", err
	}
	defer rows.Close()
	var b strings.Builder
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			return "", err
		}
		b.WriteString(line + "\n")
	}
	return b.String(), rows.Err()
}

// CancelChildrenPlanForTest returns the plan (EXPLAIN ANALYZE, in a
// transaction rolled back) of the statement that requests cancellation of
// the open children of parentRunIDs, sent as a commit sends it: unprepared,
// so planned for these IDs.
func CancelChildrenPlanForTest(ctx context.Context, e *Engine, parentRunIDs []string) (string, error) {
	tx, err := e.db.BeginTx(ctx, nil)
	if err != nil {
		return "", err
	}
	defer tx.Rollback() //nolint:errcheck // nothing of it is kept
	return queryLines(ctx, tx, `EXPLAIN (ANALYZE, COSTS OFF) `+e.store.cancelChildrenSQL(),
		pq.Array(parentRunIDs), "parent closed", e.cfg.Clock.Now())
}
