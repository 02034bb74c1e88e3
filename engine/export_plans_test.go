package engine

import (
	"context"
	"fmt"
	"strings"
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
