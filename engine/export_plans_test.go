package engine

import (
	"context"
	"fmt"
	"strings"

	"github.com/lib/pq"
)

// HotPlansForTest returns the generic plans (EXPLAIN of the prepared
// statement, as a connection's plan cache keeps it after its first
// executions) of the commit path's single statements, by name:
// "steps_and_finish" and "steps_finish_and_starts".
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
	for name, q := range map[string]struct {
		sql    string
		params int
	}{
		"steps_and_finish":        {s.sql.stepsAndFinish, stepsAndFinishParams},
		"steps_finish_and_starts": {s.sql.stepsFinishAndStarts, stepsFinishAndStartsParams},
	} {
		if _, err := cn.ExecContext(ctx, `PREPARE graft_hot_plan AS `+q.sql); err != nil {
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

// ClaimExpiredPlanForTest runs the claim of up to n runs of queue whose
// leases expired on its generic plan (as a connection's plan cache keeps
// it), under EXPLAIN (ANALYZE, BUFFERS), in a transaction it rolls back,
// and returns the plan.
func ClaimExpiredPlanForTest(ctx context.Context, e *Engine, queue string, types []string, n int) (string, error) {
	s := e.store
	cn, err := s.db.Conn(ctx)
	if err != nil {
		return "", err
	}
	defer cn.Close()
	tx, err := cn.BeginTx(ctx, nil)
	if err != nil {
		return "", err
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, `SET LOCAL plan_cache_mode = force_generic_plan`); err != nil {
		return "", err
	}
	if _, err := tx.ExecContext(ctx, `PREPARE graft_claim_plan AS `+s.claimSQL(s.claimExpiredSQL(), claimExpiredLease)); err != nil {
		return "", err
	}
	// A prepared statement outlives the transaction: it goes with it.
	defer cn.ExecContext(context.Background(), `DEALLOCATE graft_claim_plan`) //nolint:errcheck // the connection is closed next
	args := []string{pq.QuoteLiteral("w"), pq.QuoteLiteral("{" + queue + "}"), pq.QuoteLiteral("{" + strings.Join(types, ",") + "}"),
		fmt.Sprint(n), "now()", pq.QuoteLiteral(ttlInterval(e.cfg.LeaseTTL)), "'{}'", pq.QuoteLiteral(expiredWindow(0))}
	rows, err := tx.QueryContext(ctx, `EXPLAIN (ANALYZE, BUFFERS) EXECUTE graft_claim_plan(`+strings.Join(args, ", ")+`)`)
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
