package engine

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/lib/pq"
)

// SetEagerGraceForTest makes an eager start's insert wait up to d for the
// run's first records (eagerStartGrace), so a test's run surely reaches its
// first wait before the insert goes out, however loaded the machine.
func SetEagerGraceForTest(e *Engine, d time.Duration) { e.hooks.eagerGrace.Store(int64(d)) }

// ClaimPlansForTest returns the plans (EXPLAIN) of the worker's queries
// that find work, by name: the claim of due runs from one queue and from
// several (queues[:1] and queues), the claim of expired leases, and the
// next wake time of one queue and of several.
func ClaimPlansForTest(ctx context.Context, e *Engine, queues, types []string) (map[string]string, error) {
	s := e.store
	now, ttl := e.cfg.Clock.Now(), e.cfg.LeaseTTL
	plans := map[string]string{}
	explain := func(name, q string, args ...any) error {
		rows, err := s.db.QueryContext(ctx, "EXPLAIN "+q, args...)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		defer rows.Close()
		var b strings.Builder
		for rows.Next() {
			var line string
			if err := rows.Scan(&line); err != nil {
				return err
			}
			b.WriteString(line + "\n")
		}
		plans[name] = b.String()
		return rows.Err()
	}
	for _, c := range []struct {
		name string
		q    string
		args []any
	}{
		{"claim", s.claimSQL(s.claimDueSQL(1), ""), claimArgs("w", queues[:1], types, 100, now, ttl, pq.Array([]string{}))},
		{"claim-queues", s.claimSQL(s.claimDueSQL(len(queues)), ""), claimArgs("w", queues, types, 100, now, ttl, pq.Array([]string{}))},
		{"claim-expired", s.claimSQL(s.claimExpiredSQL(), claimExpiredLease), claimArgs("w", queues, types, 100, now, ttl, pq.Array([]string{}), expiredWindow(0))},
		{"claim-expired-within", s.claimSQL(s.claimExpiredSQL(), claimExpiredLease), claimArgs("w", queues, types, 100, now, ttl, pq.Array([]string{}), expiredWindow(10*time.Second))},
		{"next-wake", s.nextWakeSQL(1), []any{pq.Array(queues[:1]), pq.Array(types), "w"}},
		{"next-wake-queues", s.nextWakeSQL(len(queues)), []any{pq.Array(queues), pq.Array(types), "w"}},
	} {
		if err := explain(c.name, c.q, c.args...); err != nil {
			return nil, err
		}
	}
	return plans, nil
}

// ClaimExpiredForTest claims, as owner, up to n runs of queue whose leases
// expired within that long before now (0: whenever), and returns their IDs.
func ClaimExpiredForTest(ctx context.Context, e *Engine, owner, queue string, types []string, n int, within time.Duration) ([]string, error) {
	rows, _, _, err := e.store.claimExpired(ctx, owner, []string{queue}, types, n, e.cfg.Clock.Now(), e.cfg.LeaseTTL, []string{}, within)
	ids := make([]string, len(rows))
	for i, r := range rows {
		ids[i] = r.RunID
	}
	return ids, err
}

// ClaimDueForTest claims, as owner holding held, up to n due runs of
// queue, and returns their IDs and the status each row has afterwards.
func ClaimDueForTest(ctx context.Context, e *Engine, owner, queue string, types []string, n int, held []string) (map[string]Status, error) {
	rows, _, _, err := e.store.claimDue(ctx, owner, []string{queue}, types, n, e.cfg.Clock.Now(), e.cfg.LeaseTTL, held)
	out := map[string]Status{}
	for _, r := range rows {
		out[r.RunID] = r.Status
	}
	return out, err
}

// ClaimUpdatesForTest claims up to n runs of queue in a transaction, due
// runs or (expired) runs whose leases expired, and returns how many rows
// of runs it updated, and how many of those updates were heap-only (no new
// index entry), as PostgreSQL counted them.
func ClaimUpdatesForTest(ctx context.Context, e *Engine, owner, queue string, types []string, n int, expired bool) (updated, heapOnly int, err error) {
	tx, err := e.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, 0, err
	}
	defer func() { _ = tx.Rollback() }()
	s := e.store
	q, args := s.claimSQL(s.claimDueSQL(1), ""), claimArgs(owner, []string{queue}, types, n, e.cfg.Clock.Now(), e.cfg.LeaseTTL, pq.Array([]string{}))
	if expired {
		q, args = s.claimSQL(s.claimExpiredSQL(), claimExpiredLease), append(args, expiredWindow(0))
	}
	rows, err := tx.QueryContext(ctx, q, args...)
	if err != nil {
		return 0, 0, err
	}
	rows.Close()
	if err := tx.QueryRowContext(ctx, `SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables
		WHERE schemaname = $1 AND relname = 'runs'`, e.cfg.Schema).Scan(&updated, &heapOnly); err != nil {
		return 0, 0, err
	}
	return updated, heapOnly, tx.Commit()
}

// NextWakeForTest is the worker's look at the next wake time of queue.
func NextWakeForTest(ctx context.Context, e *Engine, owner, queue string, types []string) (time.Time, bool, error) {
	return e.store.nextWake(ctx, owner, []string{queue}, types)
}

// ExpiredLookWindowForTest is the window of a worker's look for expired
// leases that follows its previous look by the least time it waits
// between two (a quarter of LeaseTTL): the narrowest window it reads.
func ExpiredLookWindowForTest(e *Engine) time.Duration {
	return e.cfg.LeaseTTL/4 + expiredLookMargin
}
