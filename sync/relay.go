package graftsync

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/lib/pq"
)

// outboxRow is one change waiting in the outbox.
type outboxRow struct {
	id       int64
	attempts int
	created  time.Time
	c        *change
}

// relayLoop delivers the outbox until Stop. At most one relay per mapping
// works at a time (an advisory lock held for each round); the others find
// the lock taken and wait for the next round.
func (mr *Mirror) relayLoop() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-mr.stop
		cancel()
	}()
	failures := 0
	for {
		// An empty outbox (the usual case in same-database mode) costs
		// this one query a round, not the relay's transaction.
		var n int
		var err error
		if mr.observeLag(ctx) {
			n, err = mr.relayOnce(ctx)
		}
		wait := mr.cfg.RelayInterval
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			failures++
			wait = mr.backoff(failures)
			mr.met.relayError(ctx)
			mr.log.Warn("graftsync: relay round failed; retrying", "table", mr.table.String(), "in", wait, "err", err)
		case n >= mr.cfg.RelayBatch:
			failures, wait = 0, 0
		default:
			failures = 0
		}
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
	}
}

// backoff is the wait after the n-th consecutive failure.
func (mr *Mirror) backoff(n int) time.Duration {
	d := mr.cfg.RetryMin
	for i := 1; i < n && d < mr.cfg.RetryMax; i++ {
		d *= 2
	}
	return min(d, mr.cfg.RetryMax)
}

// observeLag records the age of the oldest undelivered change. Every
// process does it, elected relay or not, so the gauge is right everywhere.
// It reports false when the outbox holds no change of the mapping.
func (mr *Mirror) observeLag(ctx context.Context) bool {
	var age float64
	err := mr.cfg.DB.QueryRowContext(ctx, `SELECT EXTRACT(EPOCH FROM clock_timestamp() - created_at)::float8 FROM (`+
		mr.sql.oldest+`) o`, mr.table.String()).Scan(&age)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		mr.met.setLag(0)
		return false
	case err == nil:
		mr.met.setLag(age)
	}
	return true
}

// RelayOnce runs one relay round now and returns the number of changes it
// took from the outbox (delivered, found stale, or put back for a retry). It
// is for tests and tools; Start runs rounds in the background.
func (mr *Mirror) RelayOnce(ctx context.Context) (int, error) {
	return mr.relayOnce(ctx)
}

func (mr *Mirror) relayOnce(ctx context.Context) (int, error) {
	tx, err := mr.cfg.DB.BeginTxx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	var elected bool
	if err := tx.QueryRowContext(ctx, `SELECT pg_try_advisory_xact_lock($1)`, lockKey("graftsync-relay:"+mr.cfg.Schema+":"+mr.table.String())).Scan(&elected); err != nil {
		return 0, err
	}
	if !elected {
		return 0, nil
	}
	rows, err := tx.QueryContext(ctx, mr.sql.claim, mr.table.String(), mr.cfg.RelayBatch)
	if err != nil {
		return 0, err
	}
	var got []*outboxRow
	for rows.Next() {
		r := &outboxRow{c: &change{}}
		var payload string
		var first, last int64
		if err := rows.Scan(&r.id, &r.c.Key, &first, &last, &payload, &r.created); err != nil {
			rows.Close()
			return 0, err
		}
		if err := json.Unmarshal([]byte(payload), r.c); err != nil {
			rows.Close()
			return 0, fmt.Errorf("decode outbox change %d: %w", r.id, err)
		}
		r.c.First, r.c.Last = first, last
		got = append(got, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	if len(got) == 0 {
		return 0, tx.Commit()
	}
	groups := groupByKey(got)
	done, failed, err := mr.deliverGroups(ctx, groups)
	if err != nil {
		return 0, err
	}
	var ids []int64
	for _, g := range done {
		for _, r := range g {
			ids = append(ids, r.id)
			mr.met.delivery(ctx, time.Since(r.created))
		}
	}
	if len(ids) > 0 {
		if _, err := tx.ExecContext(ctx, mr.sql.deliver, pq.Array(ids)); err != nil {
			return 0, err
		}
	}
	for _, f := range failed {
		var fids []int64
		attempts := 0
		for _, r := range f.rows {
			fids = append(fids, r.id)
			attempts = max(attempts, r.attempts)
		}
		wait := mr.backoff(attempts + 1)
		mr.met.relayError(ctx)
		mr.log.Warn("graftsync: relay could not deliver a row's changes; retrying it alone", "table", mr.table.String(),
			"key", f.rows[0].c.Key, "in", wait, "err", f.err)
		if _, err := tx.ExecContext(ctx, mr.sql.retry, pq.Array(fids), fmt.Sprintf("%d milliseconds", wait.Milliseconds()), f.err.Error()); err != nil {
			return 0, err
		}
	}
	return len(got), tx.Commit()
}

func groupByKey(rows []*outboxRow) [][]*outboxRow {
	idx := map[string]int{}
	var out [][]*outboxRow
	for _, r := range rows {
		i, ok := idx[r.c.Key]
		if !ok {
			i = len(out)
			idx[r.c.Key] = i
			out = append(out, nil)
		}
		out[i] = append(out[i], r)
	}
	return out
}

type failedGroup struct {
	rows []*outboxRow
	err  error
}

// deliverGroups delivers every row's changes in one legacy transaction. If
// that fails, it delivers row by row, so that one row whose change cannot
// be written (a constraint, a trigger) holds back only itself. If every row
// fails, the legacy database is likely the problem: it returns the error and
// marks nothing.
func (mr *Mirror) deliverGroups(ctx context.Context, groups [][]*outboxRow) (done [][]*outboxRow, failed []failedGroup, err error) {
	err = mr.deliver(ctx, groups)
	if err == nil {
		return groups, nil, nil
	}
	if len(groups) == 1 {
		if ctx.Err() != nil {
			return nil, nil, err
		}
		return nil, []failedGroup{{groups[0], err}}, nil
	}
	first := err
	for _, g := range groups {
		if err := mr.deliver(ctx, [][]*outboxRow{g}); err != nil {
			failed = append(failed, failedGroup{g, err})
		} else {
			done = append(done, g)
		}
	}
	if len(done) == 0 {
		return nil, nil, first
	}
	return done, failed, nil
}

// deliver applies the groups' changes in one legacy transaction: it reads
// each row's applied position under a lock (from mirror_state, or the
// version column), drops changes at or below it (a delivery repeated after
// a crash between the legacy commit and the outbox delete), folds the rest
// in order and writes them.
func (mr *Mirror) deliver(ctx context.Context, groups [][]*outboxRow) error {
	tx, err := mr.legacyDB().BeginTxx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, planOff); err != nil {
		return err
	}
	keys := make([]string, len(groups))
	for i, g := range groups {
		keys[i] = g[0].c.Key
	}
	applied := map[string]int64{}
	rows, err := tx.QueryContext(ctx, mr.sql.readState, mr.table.String(), pq.Array(keys))
	if err != nil {
		return err
	}
	for rows.Next() {
		var k string
		var ord int64
		if err := rows.Scan(&k, &ord); err != nil {
			rows.Close()
			return err
		}
		applied[k] = ord
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	var cs []*change
	var stale int64
	for _, g := range groups {
		var merged *change
		for _, r := range g {
			if ord, ok := applied[r.c.Key]; ok && r.c.First <= ord {
				stale++
				continue
			}
			if merged == nil {
				c := *r.c
				c.Extras = append([]*string(nil), r.c.Extras...)
				merged = &c
			} else {
				merged.merge(r.c)
			}
		}
		if merged != nil {
			cs = append(cs, merged)
		}
	}
	mr.met.wrote(ctx, 0, stale, 0)
	if len(cs) == 0 {
		return tx.Commit()
	}
	if err := mr.apply(ctx, tx.Tx, false, cs); err != nil {
		return err
	}
	if err := mr.settle(ctx, cs, false); err != nil {
		return err
	}
	return tx.Commit()
}
