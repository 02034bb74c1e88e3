package api

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
)

// A bulk job's progress (done, failed, skipped; the pace) is counted in
// bulk_progress by the statements that take its items out of 'pending', in
// their transactions, so that it always agrees with the items and reading
// it costs a few rows (migration 004). Each worker of a batch adds to a
// shard of its own (bulkShard); the job's creation and its end add to
// shard 0.
//
// The pace runs from the start of the first transaction that did or failed
// an item (first_at, its items' at) to the end of the last one (last_at,
// the time its statement recorded them), so that a chunk's items, which
// share their transaction's start, do not count as done before they were.

// withProgress turns update, an UPDATE of one job's bulk_items that takes
// items out of 'pending' and ends in "RETURNING <item>.state, <item>.at",
// into a statement that also adds them to the job's progress: parameters
// $job and $shard (numbers) are the job's ID and the shard.
func (s *Server) withProgress(update string, job, shard int) string {
	return `WITH u AS (` + update + `)
	INSERT INTO ` + s.schema + `.bulk_progress AS p (job_id, shard, done, failed, skipped, first_at, last_at)
	SELECT $` + strconv.Itoa(job) + `, $` + strconv.Itoa(shard) + `::int, count(*) FILTER (WHERE state = 'done'),
		count(*) FILTER (WHERE state = 'failed'), count(*) FILTER (WHERE state = 'skipped'),
		min(at) FILTER (WHERE state IN ('done', 'failed')),
		CASE WHEN count(*) FILTER (WHERE state IN ('done', 'failed')) > 0 THEN clock_timestamp() END
	FROM u
	ON CONFLICT (job_id, shard) DO UPDATE SET done = p.done + excluded.done, failed = p.failed + excluded.failed,
		skipped = p.skipped + excluded.skipped, first_at = LEAST(p.first_at, excluded.first_at),
		last_at = GREATEST(p.last_at, excluded.last_at)`
}

// bulkCounts returns the job's items per state (total is the job's), and
// the pace of those done or failed so far (0 with fewer than two).
func (s *Server) bulkCounts(ctx context.Context, id string, total int) (map[string]int, float64, error) {
	var done, failed, skipped int
	var first, last sql.NullTime
	if err := s.db.QueryRowContext(ctx, `SELECT coalesce(sum(done), 0), coalesce(sum(failed), 0), coalesce(sum(skipped), 0),
		min(first_at), max(last_at) FROM `+s.schema+`.bulk_progress WHERE job_id = $1`, id).
		Scan(&done, &failed, &skipped, &first, &last); err != nil {
		return nil, 0, fmt.Errorf("api: bulk job %s counts: %w", id, err)
	}
	counts := map[string]int{"done": done, "failed": failed, "skipped": skipped, "pending": total - done - failed - skipped}
	var pace float64
	if d := last.Time.Sub(first.Time).Seconds(); done+failed > 1 && first.Valid && last.Valid && d > 0 {
		pace = float64(done+failed-1) / d
	}
	return counts, pace, nil
}
