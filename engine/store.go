package engine

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// store holds graft's SQL. Table names are built once from the validated,
// quoted schema name.
type store struct {
	db      *sqlx.DB
	schema  string
	runs    string
	steps   string
	signals string
	beats   string
	channel map[string]string
	sql     storeSQL

	// signalsLoaded, set by tests, learns how many signals each load read.
	signalsLoaded atomic.Pointer[func(n int)]
}

const (
	chanWork = "work"
	chanDone = "done"
	chanWake = "wake"
)

func newStore(db *sqlx.DB, schema string) *store {
	q := pq.QuoteIdentifier(schema)
	s := &store{db: db, schema: schema, runs: q + ".runs", steps: q + ".steps", signals: q + ".signals", beats: q + ".heartbeats", channel: map[string]string{}}
	// Channel names are identifiers (at most 63 bytes): derive them from a
	// hash of the schema so any valid schema name fits.
	h := fnv.New64a()
	h.Write([]byte(schema))
	for _, c := range []string{chanWork, chanDone, chanWake} {
		s.channel[c] = fmt.Sprintf("graft_%x_%s", h.Sum64(), c)
	}
	s.buildSQL()
	return s
}

// dbtx is a transaction or, for single-statement batches, the pool itself.
type dbtx interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

type stepKey struct {
	run string
	seq int
}

// finishArgs renders the run transitions of batch[idx] as column arrays.
func finishArgs(batch []*writeOp, idx []int) []any {
	cols, args := columns(8)
	for _, i := range idx {
		op := batch[i]
		cols[0].str(op.runID)
		cols[1].str(op.owner)
		cols[2].str(string(op.fin.status))
		cols[3].bytes(op.fin.output)
		cols[4].jsonText(op.fin.errJSON)
		cols[5].time(nullTime(op.fin.wakeAt))
		cols[6].int(op.fin.knownEventSeq)
		cols[7].int(int64(op.token))
	}
	return args()
}

// finishSQL moves running runs to waiting or closed, fenced by the lease,
// and announces closed ones in the same statement. It uses parameters
// $p+1..$p+10 and yields (run_id, status) as the CTE named "fin".
func (s *store) finishSQL(p int) string {
	n := func(i int) string { return fmt.Sprintf("$%d", p+i) }
	return `fin AS (UPDATE ` + s.runs + ` r SET status = v.status, output = v.output, error = v.error, updated_at = now(),
			closed_at = CASE WHEN v.status IN ('completed','failed','cancelled','continued') THEN ` + n(9) + `::timestamptz END,
			wake_at = CASE WHEN v.status = 'waiting' AND r.event_seq > v.known THEN ` + n(9) + ` ELSE v.wake_at END,
			lease_expires_at = CASE WHEN v.status = 'running' THEN r.lease_expires_at END
		FROM unnest(` + n(1) + `::text[], ` + n(2) + `::text[], ` + n(3) + `::text[], ` + n(4) + `::bytea[], ` + n(5) + `::jsonb[],
			` + n(6) + `::timestamptz[], ` + n(7) + `::bigint[], ` + n(8) + `::int[]) AS v(run_id, owner, status, output, error, wake_at, known, token)
		WHERE r.run_id = v.run_id AND r.lease_owner = v.owner AND r.loads = v.token AND r.status = 'running'
		RETURNING r.run_id, r.closed_at, CASE WHEN r.status <> 'waiting' THEN pg_notify(` + n(10) + `, r.run_id) END AS notified),
		` + s.abandonTimersSQL()
}

func (s *store) finishRuns(ctx context.Context, tx dbtx, now time.Time, batch []*writeOp, idx []int) (map[string]bool, error) {
	ok := map[string]bool{}
	q := `WITH ` + s.finishSQL(0) + ` SELECT run_id FROM fin`
	err := collectIDs(ctx, tx, q, append(finishArgs(batch, idx), now, s.channel[chanDone]), func(id string) { ok[id] = true })
	return ok, err
}

// storeSQL holds the statements of the hot path, built once per store.
type storeSQL struct {
	stepsAndFinish, stepsFinishAndStarts string
}

func (s *store) buildSQL() {
	// Parameters: the steps, the transitions (finishSQL takes 10), then
	// for starts the runs (runsSQL takes 16), their steps and the channel.
	q := `WITH ` + s.stepsSQL(0) + `, ` + s.finishSQL(stepParams)
	sel := `SELECT 's', run_id, seq, NULL::text FROM ins UNION ALL SELECT 'f', run_id, 0, NULL FROM fin`
	s.sql.stepsAndFinish = q + ` ` + sel
	runsAt := stepParams + 10
	s.sql.stepsFinishAndStarts = q + `, ` + s.runsSQL(runsAt) + `, ` + s.newRunStepsSQL(runsAt+16) + ` ` + sel +
		fmt.Sprintf(` UNION ALL SELECT 'r', run_id, 0, CASE WHEN lease_owner IS NULL THEN pg_notify($%d, queue)::text END FROM nr
		UNION ALL SELECT 's', run_id, seq, NULL FROM nins`, runsAt+16+stepParams+1)
}

// stepsAndFinish writes step records, run transitions and plain run
// inserts (with the first step records of eager starts) in one statement:
// the common batch, committed without BEGIN/COMMIT round trips. The steps'
// lease check reads the runs as they were before the transitions, which
// keep the lease owner, so a run's last steps and its end commit together;
// the steps of a new run are fenced by its insert in the same statement.
// The caller keeps a run's end and a start of the same workflow ID out of
// one such statement (both would judge the ID by the same snapshot).
func (s *store) stepsAndFinish(ctx context.Context, tx dbtx, now time.Time, ttl time.Duration, w *singleWrite) (map[stepKey]bool, map[string]bool, map[string]bool, error) {
	okSteps, okFins, okRuns := map[stepKey]bool{}, map[string]bool{}, map[string]bool{}
	args := append(stepArgs(w.steps.steps, w.steps.owners), finishArgs(w.batch, w.fins)...)
	args = append(args, now, s.channel[chanDone])
	q := s.sql.stepsAndFinish
	if len(w.news) > 0 {
		q = s.sql.stepsFinishAndStarts
		args = append(args, runArgs(w.batch, w.news)...)
		args = append(args, ttlInterval(ttl))
		args = append(args, stepArgs(w.newSteps.steps, w.newSteps.owners)...)
		args = append(args, s.channel[chanWork])
	}
	rows, err := tx.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, nil, nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var kind, id string
		var seq int
		var notified sql.RawBytes
		if err := rows.Scan(&kind, &id, &seq, &notified); err != nil {
			return nil, nil, nil, err
		}
		switch kind {
		case "s":
			okSteps[stepKey{id, seq}] = true
		case "f":
			okFins[id] = true
		default:
			okRuns[id] = true
		}
	}
	return okSteps, okFins, okRuns, rows.Err()
}

// runArgs renders the run inserts of batch[idx] as column arrays.
func runArgs(batch []*writeOp, idx []int) []any {
	cols, args := columns(15)
	for _, i := range idx {
		nr := batch[i].newRun
		r := nr.row
		status := StatusPending
		switch {
		case nr.asleep:
			status = StatusWaiting
		case nr.leaseOwner != "":
			status = StatusRunning
		}
		cols[0].str(r.RunID)
		cols[1].str(r.WorkflowID)
		cols[2].str(r.WorkflowType)
		cols[3].str(r.Queue)
		cols[4].str(string(status))
		cols[5].bytes(r.Input)
		cols[6].jsonText(r.Headers)
		cols[7].time(r.WakeAt)
		cols[8].optStr(nr.leaseOwner)
		cols[9].nullStr(r.ParentRunID)
		cols[10].nullInt(r.ParentSeq)
		cols[11].nullStr(r.ParentClosePolicy)
		cols[12].nullStr(r.PreviousRunID)
		cols[13].str(r.StartReason)
		cols[14].str(string(nr.reuse))
	}
	return args()
}

// runsSQL inserts runs under their ID reuse policy; a run whose workflow ID
// has an open run is skipped. It uses $p+1..$p+16 (the last is the lease
// TTL of eager starts) and yields (run_id, queue, lease_owner) as CTE "nr".
func (s *store) runsSQL(p int) string {
	ph := make([]any, 16)
	for i := range ph {
		ph[i] = fmt.Sprintf("$%d", p+i+1)
	}
	return fmt.Sprintf(`nr AS (INSERT INTO `+s.runs+` (run_id, workflow_id, workflow_type, queue, status, input, headers, wake_at,
			lease_owner, lease_expires_at, loads, parent_run_id, parent_seq, parent_close_policy, previous_run_id, start_reason)
		SELECT v.run_id, v.workflow_id, v.workflow_type, v.queue, v.status, v.input, COALESCE(v.headers, '{}'), v.wake_at,
			v.lease_owner, CASE WHEN v.status = 'running' THEN now() + %[16]s::interval END,
			CASE WHEN v.lease_owner IS NOT NULL THEN 1 ELSE 0 END,
			v.parent_run_id, v.parent_seq, v.parent_close_policy, v.previous_run_id, v.start_reason
		FROM unnest(%[1]s::text[], %[2]s::text[], %[3]s::text[], %[4]s::text[], %[5]s::text[], %[6]s::bytea[], %[7]s::jsonb[], %[8]s::timestamptz[],
			%[9]s::text[], %[10]s::text[], %[11]s::int[], %[12]s::text[], %[13]s::text[], %[14]s::text[], %[15]s::text[])
			AS v(run_id, workflow_id, workflow_type, queue, status, input, headers,
			wake_at, lease_owner, parent_run_id, parent_seq, parent_close_policy, previous_run_id, start_reason, reuse)
		WHERE NOT (v.reuse = 'reject' AND EXISTS (SELECT 1 FROM `+s.runs+` x WHERE x.workflow_id = v.workflow_id))
		  AND NOT (v.reuse = 'failed_only' AND EXISTS (SELECT 1 FROM `+s.runs+` x WHERE x.workflow_id = v.workflow_id AND x.status = 'completed'))
		ON CONFLICT (workflow_id) WHERE status IN ('pending', 'running', 'waiting') DO NOTHING
		RETURNING run_id, queue, lease_owner)`, ph...)
}

func ttlInterval(ttl time.Duration) string { return fmt.Sprintf("%d milliseconds", ttl.Milliseconds()) }

func (s *store) insertRuns(ctx context.Context, tx dbtx, ttl time.Duration, batch []*writeOp, idx []int) (map[string]bool, error) {
	ok := map[string]bool{}
	// Runs no local worker took are announced to the queue's workers;
	// PostgreSQL folds identical notifications of one transaction into one.
	q := `WITH ` + s.runsSQL(0) + ` SELECT run_id, CASE WHEN lease_owner IS NULL THEN pg_notify($17, queue) END FROM nr`
	err := collectIDs(ctx, tx, q, append(runArgs(batch, idx), ttlInterval(ttl), s.channel[chanWork]), func(id string) { ok[id] = true })
	return ok, err
}

// fence is the lease a write needs: the owner's name and the number of the
// claim (the run's loads when it was claimed). An empty owner is unfenced.
type fence struct {
	owner string
	token int
}

// stepParams is the number of parameters stepsSQL takes.
const stepParams = 19

func stepArgs(steps []*stepRow, owners []fence) []any {
	cols, args := columns(stepParams)
	for k, st := range steps {
		cols[0].str(st.RunID)
		cols[1].int(int64(st.Seq))
		cols[2].str(st.Kind)
		cols[3].str(st.Name)
		cols[4].str(st.Status)
		cols[5].bytes(st.Input)
		cols[6].bytes(st.Output)
		cols[7].jsonText(st.Error)
		cols[8].int(int64(st.Attempts))
		cols[9].time(st.StartedAt)
		cols[10].time(st.CompletedAt)
		cols[11].time(st.FireAt)
		cols[12].nullInt(st.SignalID)
		cols[13].nullStr(st.ChildWorkflowID)
		cols[14].str(owners[k].owner)
		cols[15].int(int64(owners[k].token))
		cols[16].time(st.AttemptStartedAt)
		cols[17].time(st.NextAttemptAt)
		cols[18].jsonText(st.logAppend)
	}
	return args()
}

// stepsSQL writes step records fenced by the lease (an empty owner skips
// the check). A record of an activity step that has not ended (its start,
// made durable before the attempt ran, or its wait for the next attempt)
// is updated in place by the next record of that step: a later attempt's
// start or wait, or the outcome. A record's attempt log entries are
// appended to the step's attempt_log (a write without any leaves it as it
// is). Any other existing step is left alone, and its write reported as
// not done. It uses $p+1..$p+stepParams and yields (run_id, seq) as CTE
// "ins".
func (s *store) stepsSQL(p int) string {
	return s.stepsIntoSQL(p, "ins", `JOIN `+s.runs+` r ON r.run_id = v.run_id AND (v.owner = '' OR (r.lease_owner = v.owner AND r.loads = v.token))`)
}

// newRunStepsSQL writes the first step records of runs inserted by CTE "nr"
// of the same statement (an eager start's first commit): their fence is
// that insert. It uses $p+1..$p+stepParams and yields (run_id, seq) as CTE
// "nins".
func (s *store) newRunStepsSQL(p int) string {
	return s.stepsIntoSQL(p, "nins", `JOIN nr ON nr.run_id = v.run_id`)
}

func (s *store) stepsIntoSQL(p int, name, fenceJoin string) string {
	ph := make([]any, stepParams)
	for i := range ph {
		ph[i] = fmt.Sprintf("$%d", p+i+1)
	}
	//nolint:staticcheck // SA5009: ph holds one placeholder per %s; staticcheck cannot count a spread slice
	return name + ` AS (INSERT INTO ` + s.steps + ` AS t (` + stepColumns + `, attempt_log)
		SELECT v.run_id, v.seq, v.kind, v.name, v.status, v.input, v.output, v.error, v.attempts,
			v.started_at, v.completed_at, v.fire_at, v.signal_id, v.child_workflow_id, v.attempt_started_at, v.next_attempt_at, v.attempt_log
		FROM unnest(` + fmt.Sprintf(`%s::text[], %s::int[], %s::text[], %s::text[], %s::text[], %s::bytea[], %s::bytea[], %s::jsonb[], %s::int[],
			%s::timestamptz[], %s::timestamptz[], %s::timestamptz[], %s::bigint[], %s::text[], %s::text[], %s::int[],
			%s::timestamptz[], %s::timestamptz[], %s::jsonb[]`, ph...) + `)
			AS v(run_id, seq, kind, name, status, input, output, error, attempts,
			started_at, completed_at, fire_at, signal_id, child_workflow_id, owner, token,
			attempt_started_at, next_attempt_at, attempt_log)
		` + fenceJoin + `
		ON CONFLICT (run_id, seq) DO UPDATE SET status = EXCLUDED.status, input = COALESCE(EXCLUDED.input, t.input),
			output = EXCLUDED.output, error = EXCLUDED.error, attempts = EXCLUDED.attempts, completed_at = EXCLUDED.completed_at,
			attempt_started_at = EXCLUDED.attempt_started_at, next_attempt_at = EXCLUDED.next_attempt_at,
			attempt_log = CASE WHEN EXCLUDED.attempt_log IS NULL THEN t.attempt_log
				ELSE COALESCE(t.attempt_log, '[]'::jsonb) || EXCLUDED.attempt_log END
			WHERE t.status IN ('started', 'retrying', 'throttled') AND t.kind = 'activity' AND EXCLUDED.kind = 'activity'
		RETURNING run_id, seq)`
}

func (s *store) insertSteps(ctx context.Context, tx dbtx, steps []*stepRow, owners []fence) (map[stepKey]bool, error) {
	ok := map[stepKey]bool{}
	rows, err := tx.QueryContext(ctx, `WITH `+s.stepsSQL(0)+` SELECT run_id, seq FROM ins`, stepArgs(steps, owners)...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var k stepKey
		if err := rows.Scan(&k.run, &k.seq); err != nil {
			return nil, err
		}
		ok[k] = true
	}
	return ok, rows.Err()
}

// lockLeases locks, for the rest of the transaction, the runs of
// batch[idx] that their ops' fence still holds, and returns them. Rows are
// locked in run ID order, so two transactions cannot deadlock on them.
func (s *store) lockLeases(ctx context.Context, tx dbtx, batch []*writeOp, idx []int) (map[string]bool, error) {
	cols, args := columns(3)
	for _, i := range idx {
		cols[0].str(batch[i].runID)
		cols[1].str(batch[i].owner)
		cols[2].int(int64(batch[i].token))
	}
	held := map[string]bool{}
	err := collectIDs(ctx, tx, `SELECT r.run_id FROM `+s.runs+` r
		JOIN unnest($1::text[], $2::text[], $3::int[]) AS v(run_id, owner, token) ON r.run_id = v.run_id
		WHERE r.lease_owner = v.owner AND r.loads = v.token AND r.status = 'running'
		ORDER BY r.run_id FOR SHARE OF r`, args(), func(id string) { held[id] = true })
	return held, err
}

// completeParentStep hands a closed child's outcome to the step of its
// parent that waits for it, and returns that parent (or "" if the step had
// its result already). The parent is read from the child's row, not from
// what the child's worker loaded: a reset may have given the child to a
// new run since.
func (s *store) completeParentStep(ctx context.Context, tx dbtx, childRunID, status string, output, errJSON []byte) (string, error) {
	var e any
	if errJSON != nil {
		e = string(errJSON)
	}
	var parent string
	err := collectIDs(ctx, tx, `UPDATE `+s.steps+` st SET status = $2, output = $3, error = $4, completed_at = now()
		FROM `+s.runs+` c WHERE c.run_id = $1 AND st.run_id = c.parent_run_id AND st.seq = c.parent_seq AND st.status = 'started'
		RETURNING st.run_id`, []any{childRunID, status, output, e}, func(id string) { parent = id })
	return parent, err
}

// openChildOf reports whether the open run of workflowID is the child of
// parentRunID at step seq, and locks it: its end, which completes the
// parent's step, then commits after the step is written.
func (s *store) openChildOf(ctx context.Context, tx dbtx, workflowID, parentRunID string, seq int) (bool, error) {
	rows, err := tx.QueryContext(ctx, `SELECT 1 FROM `+s.runs+` WHERE workflow_id = $1
		AND status IN ('pending','running','waiting') AND parent_run_id = $2 AND parent_seq = $3 FOR UPDATE`,
		workflowID, parentRunID, seq)
	if err != nil {
		return false, err
	}
	defer rows.Close()
	found := rows.Next()
	return found, rows.Err()
}

// saveHeartbeat keeps an activity step's latest heartbeat details, if the
// fence still holds the run: a copy that lost its lease cannot overwrite
// the details of the attempt that replaced it.
func (s *store) saveHeartbeat(ctx context.Context, f fence, runID string, seq int, details []byte) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO `+s.beats+` (run_id, seq, details)
		SELECT $1, $2, $3 FROM `+s.runs+` r WHERE r.run_id = $1 AND r.lease_owner = $4 AND r.loads = $5 AND r.status = 'running'
		ON CONFLICT (run_id, seq) DO UPDATE SET details = EXCLUDED.details, updated_at = now()`, runID, seq, details, f.owner, f.token)
	return err
}

// loadHeartbeat returns an activity step's saved heartbeat details, or nil.
func (s *store) loadHeartbeat(ctx context.Context, runID string, seq int) ([]byte, error) {
	var b []byte
	err := s.db.QueryRowContext(ctx, `SELECT details FROM `+s.beats+` WHERE run_id = $1 AND seq = $2`, runID, seq).Scan(&b)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return b, err
}

// insertSignal buffers a signal for a run.
func (s *store) insertSignal(ctx context.Context, tx dbtx, runID, name string, payload, headers []byte) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO `+s.signals+` (run_id, name, payload, headers) VALUES ($1, $2, $3, $4)`,
		runID, name, payload, nullJSON(headers))
	return err
}

// moveUnreadSignals gives the signals of each from[i] that no step of it
// consumed to to[i] (continue-as-new), keeping their order.
func (s *store) moveUnreadSignals(ctx context.Context, tx dbtx, from, to []string) error {
	_, err := tx.ExecContext(ctx, `UPDATE `+s.signals+` g SET run_id = v.to_id
		FROM unnest($1::text[], $2::text[]) AS v(from_id, to_id)
		WHERE g.run_id = v.from_id
		  AND NOT EXISTS (SELECT 1 FROM `+s.steps+` st WHERE st.run_id = v.from_id AND st.signal_id = g.id)`,
		pq.Array(from), pq.Array(to))
	return err
}

// carryCancel copies a cancellation requested of each from[i], which the
// run never observed (no cancel step), to to[i]: a cancel that raced with
// continue-as-new still stops the loop.
func (s *store) carryCancel(ctx context.Context, tx dbtx, from, to []string) error {
	_, err := tx.ExecContext(ctx, `UPDATE `+s.runs+` n SET cancel_requested_at = o.cancel_requested_at,
			cancel_reason = o.cancel_reason, event_seq = n.event_seq + 1
		FROM unnest($1::text[], $2::text[]) AS v(from_id, to_id)
		JOIN `+s.runs+` o ON o.run_id = v.from_id
		WHERE n.run_id = v.to_id AND o.cancel_requested_at IS NOT NULL AND n.cancel_requested_at IS NULL
		  AND NOT EXISTS (SELECT 1 FROM `+s.steps+` st WHERE st.run_id = v.from_id AND st.kind = 'cancel')`,
		pq.Array(from), pq.Array(to))
	return err
}

// carryParent gives each to[i] the parent that from[i] has now (a reset
// may have moved it since from[i] was loaded): a child that continues as
// new still reports to the run that waits for it.
func (s *store) carryParent(ctx context.Context, tx dbtx, from, to []string) error {
	_, err := tx.ExecContext(ctx, `UPDATE `+s.runs+` n SET parent_run_id = o.parent_run_id, parent_seq = o.parent_seq
		FROM unnest($1::text[], $2::text[]) AS v(from_id, to_id)
		JOIN `+s.runs+` o ON o.run_id = v.from_id
		WHERE n.run_id = v.to_id AND o.parent_run_id IS NOT NULL AND n.parent_run_id IS DISTINCT FROM o.parent_run_id`,
		pq.Array(from), pq.Array(to))
	return err
}

// bumpEvents records that something happened to each run (a signal, a
// cancellation, a child's result) and makes unloaded ones due now.
func (s *store) bumpEvents(ctx context.Context, tx dbtx, now time.Time, runIDs []string) error {
	_, err := tx.ExecContext(ctx, `UPDATE `+s.runs+` SET event_seq = event_seq + 1,
		wake_at = CASE WHEN status = 'waiting' THEN $2 ELSE wake_at END WHERE run_id = ANY($1)`, pq.Array(runIDs), now)
	return err
}

// cancelChildrenOf requests cancellation of the open children of the given
// runs whose parent close policy is "cancel".
func (s *store) cancelChildrenOf(ctx context.Context, tx dbtx, now time.Time, parents []string, reason string) ([]string, error) {
	var ids []string
	err := collectIDs(ctx, tx, `UPDATE `+s.runs+` SET cancel_requested_at = now(), cancel_reason = $2,
		event_seq = event_seq + 1, wake_at = CASE WHEN status IN ('waiting','pending') THEN $3 ELSE wake_at END
		WHERE parent_run_id = ANY($1) AND parent_close_policy = 'cancel'
		  AND status IN ('pending','running','waiting') AND cancel_requested_at IS NULL
		RETURNING run_id`, []any{pq.Array(parents), reason, now}, func(id string) { ids = append(ids, id) })
	return ids, err
}

func (s *store) notify(ctx context.Context, tx dbtx, channel, payload string) error {
	_, err := tx.ExecContext(ctx, `SELECT pg_notify($1, $2)`, s.channel[channel], payload)
	return err
}

// notifyIDs sends comma-joined IDs in payloads under PostgreSQL's 8000-byte limit.
func (s *store) notifyIDs(ctx context.Context, tx dbtx, channel string, ids []string) error {
	var b strings.Builder
	flush := func() error {
		if b.Len() == 0 {
			return nil
		}
		err := s.notify(ctx, tx, channel, b.String())
		b.Reset()
		return err
	}
	for _, id := range ids {
		if b.Len()+len(id)+1 > 7000 {
			if err := flush(); err != nil {
				return err
			}
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(id)
	}
	return flush()
}

type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

func collectIDs(ctx context.Context, q queryer, query string, args []any, f func(string)) error {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return err
	}
	extra := make([]any, len(cols)-1)
	for i := range extra {
		extra[i] = new(sql.RawBytes)
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(append([]any{&id}, extra...)...); err != nil {
			return err
		}
		f(id)
	}
	return rows.Err()
}

// claimDue leases up to n runs of the given queues and types whose wake
// time has come (new runs and unloaded ones), oldest first. Each queue is
// read in the order of its (queue, wake_at) index, so a claim costs the
// same behind a million due runs as behind none; the rows taken from a
// queue beyond the first n overall are only locked for the statement.
func (s *store) claimDue(ctx context.Context, owner string, queues, types []string, n int, now time.Time, ttl time.Duration) ([]*runRow, error) {
	return s.claim(ctx, s.claimDueSQL(len(queues)), owner, queues, types, n, now, ttl)
}

// claimDueSQL is claimDue's selection of due runs for nq queues.
func (s *store) claimDueSQL(nq int) string {
	if nq == 1 { // the usual case, with the cheaper plan
		return `SELECT run_id FROM ` + s.runs + `
			WHERE queue = ($2::text[])[1] AND status IN ('pending','waiting') AND wake_at <= $5 AND workflow_type = ANY($3)
			ORDER BY wake_at LIMIT $4 FOR UPDATE SKIP LOCKED`
	}
	return `SELECT d.run_id FROM (SELECT DISTINCT unnest($2::text[]) AS name) q
		CROSS JOIN LATERAL (
			SELECT run_id, wake_at FROM ` + s.runs + `
			WHERE queue = q.name AND status IN ('pending','waiting') AND wake_at <= $5 AND workflow_type = ANY($3)
			ORDER BY wake_at LIMIT $4 FOR UPDATE SKIP LOCKED) d
		ORDER BY d.wake_at LIMIT $4`
}

// claimExpired leases up to n running runs whose owner stopped renewing.
// held are the runs the claiming worker has loaded: a copy of a run that
// still runs here (its renewal is late) is not claimed a second time; the
// renewal stops it if another worker takes the run.
func (s *store) claimExpired(ctx context.Context, owner string, queues, types []string, n int, now time.Time, ttl time.Duration, held []string) ([]*runRow, error) {
	return s.claim(ctx, s.claimExpiredSQL(), owner, queues, types, n, now, ttl, pq.Array(held))
}

// claimExpiredSQL is claimExpired's selection, read from the runs_leased
// index (running runs by lease expiry).
func (s *store) claimExpiredSQL() string {
	return `SELECT run_id FROM ` + s.runs + `
		WHERE status = 'running' AND lease_expires_at < now() AND queue = ANY($2) AND workflow_type = ANY($3)
		AND $5::timestamptz IS NOT NULL AND NOT (run_id = ANY($7))
		LIMIT $4 FOR UPDATE SKIP LOCKED`
}

// expireLeases ends the leases held under owner's name now, so that the
// runs are claimed at once (a restarted worker's predecessor's runs).
func (s *store) expireLeases(ctx context.Context, owner string) error {
	_, err := s.db.ExecContext(ctx, `UPDATE `+s.runs+` SET lease_expires_at = now() - interval '1 second'
		WHERE lease_owner = $1 AND status = 'running' AND lease_expires_at > now()`, owner)
	return err
}

// claim leases the runs that the query due selects (and locks) to owner.
func (s *store) claim(ctx context.Context, due, owner string, queues, types []string, n int, now time.Time, ttl time.Duration, extra ...any) ([]*runRow, error) {
	var out []*runRow
	err := sqlx.SelectContext(ctx, s.db, &out, s.claimSQL(due), claimArgs(owner, queues, types, n, now, ttl, extra...)...)
	return out, err
}

// claimSQL leases the runs that due selects and returns them.
func (s *store) claimSQL(due string) string {
	return `WITH due AS (` + due + `)
		UPDATE ` + s.runs + ` r SET status = 'running', lease_owner = $1,
			lease_expires_at = now() + $6::interval, loads = r.loads + 1, updated_at = now()
		FROM due WHERE r.run_id = due.run_id
		RETURNING ` + prefixCols("r.", runColumns)
}

func claimArgs(owner string, queues, types []string, n int, now time.Time, ttl time.Duration, extra ...any) []any {
	return append([]any{owner, pq.Array(queues), pq.Array(types), n, now, fmt.Sprintf("%d milliseconds", ttl.Milliseconds())}, extra...)
}

func prefixCols(p, cols string) string {
	parts := strings.Split(cols, ",")
	for i, c := range parts {
		parts[i] = p + strings.TrimSpace(c)
	}
	return strings.Join(parts, ", ")
}

// nextWake returns the earliest wake time of unloaded runs in the queues,
// from the head of each queue's (queue, wake_at) index.
func (s *store) nextWake(ctx context.Context, queues, types []string) (time.Time, bool, error) {
	var t sql.NullTime
	err := s.db.QueryRowContext(ctx, s.nextWakeSQL(len(queues)), pq.Array(queues), pq.Array(types)).Scan(&t)
	return t.Time, t.Valid, err
}

// nextWakeSQL is nextWake's query for nq queues.
func (s *store) nextWakeSQL(nq int) string {
	if nq == 1 { // the usual case, with the cheaper plan
		return `SELECT min(wake_at) FROM ` + s.runs + `
			WHERE queue = ($1::text[])[1] AND status IN ('pending','waiting') AND workflow_type = ANY($2)`
	}
	return `SELECT min(d.wake_at) FROM (SELECT DISTINCT unnest($1::text[]) AS name) q
		CROSS JOIN LATERAL (
			SELECT wake_at FROM ` + s.runs + `
			WHERE queue = q.name AND status IN ('pending','waiting') AND workflow_type = ANY($2)
			ORDER BY wake_at LIMIT 1) d`
}

// loadHistories reads the steps of several runs at once.
func (s *store) loadHistories(ctx context.Context, runIDs []string) (map[string][]*stepRow, error) {
	var rows []*stepRow
	if err := sqlx.SelectContext(ctx, s.db, &rows, `SELECT `+stepColumns+` FROM `+s.steps+`
		WHERE run_id = ANY($1) ORDER BY run_id, seq`, pq.Array(runIDs)); err != nil {
		return nil, err
	}
	out := map[string][]*stepRow{}
	for _, r := range rows {
		out[r.RunID] = append(out[r.RunID], r)
	}
	return out, nil
}

// historyStep is a step with its attempt log, which only History reads.
type historyStep struct {
	stepRow
	AttemptLog []byte `db:"attempt_log"`
}

// loadHistoriesWithAttempts is loadHistories with each step's attempt log.
func (s *store) loadHistoriesWithAttempts(ctx context.Context, runIDs []string) (map[string][]*historyStep, error) {
	var rows []*historyStep
	if err := sqlx.SelectContext(ctx, s.db, &rows, `SELECT `+stepColumns+`, attempt_log FROM `+s.steps+`
		WHERE run_id = ANY($1) ORDER BY run_id, seq`, pq.Array(runIDs)); err != nil {
		return nil, err
	}
	out := map[string][]*historyStep{}
	for _, r := range rows {
		out[r.RunID] = append(out[r.RunID], r)
	}
	return out, nil
}

// signalPage is the most signals loadSignals reads for one run at a time:
// a run with a flood of unread signals is loaded a page at a time, as its
// workflow reads them, not all at once.
const signalPage = 1000

// loadSignals reads up to signalPage buffered signals of each of several
// runs, those after afterID, in delivery order.
func (s *store) loadSignals(ctx context.Context, runIDs []string, afterID int64) (map[string][]*signalRow, error) {
	var rows []*signalRow
	if err := sqlx.SelectContext(ctx, s.db, &rows, `SELECT g.id, g.run_id, g.name, g.payload, g.headers, g.created_at
		FROM unnest($1::text[]) AS r(run_id) CROSS JOIN LATERAL (
			SELECT id, run_id, name, payload, headers, created_at FROM `+s.signals+` x
			WHERE x.run_id = r.run_id AND x.id > $2 ORDER BY x.id LIMIT $3) g
		ORDER BY g.id`, pq.Array(runIDs), afterID, signalPage); err != nil {
		return nil, err
	}
	if h := s.signalsLoaded.Load(); h != nil {
		(*h)(len(rows))
	}
	out := map[string][]*signalRow{}
	for _, r := range rows {
		out[r.RunID] = append(out[r.RunID], r)
	}
	return out, nil
}

// renewal is what a renewal learned of one run: whether the claim still
// holds it, and its event counter.
type renewal struct {
	held     bool
	eventSeq int64
}

// renewLeases extends the leases of the runs a worker has loaded, each
// under its claim (tokens[i] for runIDs[i]), and reports for each run
// whether the claim still holds it and its event counter, so the worker
// stops the runs it lost and refreshes those that had an event it may not
// have been told about. Only loaded runs are renewed, so a run this worker
// dropped cannot stay leased. It never waits on a row lock (a row locked
// by a transition or a signal is renewed next time), so it takes no part
// in a deadlock and is not held up behind long transactions.
func (s *store) renewLeases(ctx context.Context, owner string, runIDs []string, tokens []int, ttl time.Duration) (map[string]renewal, error) {
	out := make(map[string]renewal, len(runIDs))
	if len(runIDs) == 0 {
		return out, nil
	}
	rows, err := s.db.QueryContext(ctx, `WITH held AS (
			SELECT r.run_id, r.event_seq FROM `+s.runs+` r
			JOIN unnest($2::text[], $3::int[]) AS v(run_id, token) ON r.run_id = v.run_id
			WHERE r.lease_owner = $1 AND r.loads = v.token AND r.status = 'running'),
		locked AS (
			SELECT r.run_id FROM `+s.runs+` r JOIN held h ON r.run_id = h.run_id
			WHERE r.lease_owner = $1 AND r.status = 'running'
			FOR NO KEY UPDATE OF r SKIP LOCKED),
		renewed AS (
			UPDATE `+s.runs+` r SET lease_expires_at = now() + $4::interval FROM locked WHERE r.run_id = locked.run_id)
		SELECT run_id, event_seq FROM held`,
		owner, pq.Array(runIDs), pq.Array(tokens), fmt.Sprintf("%d milliseconds", ttl.Milliseconds()))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var seq int64
		if err := rows.Scan(&id, &seq); err != nil {
			return nil, err
		}
		out[id] = renewal{held: true, eventSeq: seq}
	}
	return out, rows.Err()
}

// releaseRun gives a run this worker holds under the claim f back: it
// becomes waiting, due at wakeAt, and the queue's workers are told, so any
// of them resumes it from its record as soon as it is due. Clearing the
// owner also fences out writes of this worker still in flight.
func (s *store) releaseRun(ctx context.Context, f fence, runID string, wakeAt time.Time) error {
	_, err := s.db.ExecContext(ctx, `WITH r AS (UPDATE `+s.runs+` SET status = 'waiting', lease_owner = NULL,
			lease_expires_at = NULL, wake_at = $3, updated_at = now()
		WHERE run_id = $1 AND lease_owner = $2 AND loads = $5 AND status = 'running' RETURNING queue)
		SELECT pg_notify($4, queue) FROM r`, runID, f.owner, wakeAt, s.channel[chanWork], f.token)
	return err
}

// releaseRuns is releaseRun for many runs in one statement, in run ID
// order so that it locks rows in the order other batch writers do.
func (s *store) releaseRuns(ctx context.Context, rs []release) error {
	sort.Slice(rs, func(i, j int) bool { return rs[i].runID < rs[j].runID })
	cols, args := columns(4)
	for _, r := range rs {
		cols[0].str(r.runID)
		cols[1].str(r.fence.owner)
		cols[2].int(int64(r.fence.token))
		cols[3].time(nullTime(r.wakeAt))
	}
	_, err := s.db.ExecContext(ctx, `WITH r AS (UPDATE `+s.runs+` x SET status = 'waiting', lease_owner = NULL,
			lease_expires_at = NULL, wake_at = v.wake_at, updated_at = now()
		FROM unnest($1::text[], $2::text[], $3::int[], $4::timestamptz[]) AS v(run_id, owner, token, wake_at)
		WHERE x.run_id = v.run_id AND x.lease_owner = v.owner AND x.loads = v.token AND x.status = 'running' RETURNING x.queue)
		SELECT pg_notify($5, queue) FROM r`, append(args(), s.channel[chanWork])...)
	return err
}

// written reads back which parts of a batch the database holds (see
// committer.readBack).
func (s *store) written(ctx context.Context, q *writtenQuery) (written, error) {
	w := written{steps: map[stepKey]bool{}, runs: map[string]bool{}, fins: map[string]bool{}}
	rows, err := s.db.QueryContext(ctx, `SELECT 's', st.run_id, st.seq FROM `+s.steps+` st
			JOIN unnest($1::text[], $2::int[], $6::text[], $7::int[]) AS v(run_id, seq, status, attempts)
			ON st.run_id = v.run_id AND st.seq = v.seq AND st.status = v.status AND st.attempts = v.attempts
		UNION ALL SELECT 'r', run_id, 0 FROM `+s.runs+` WHERE run_id = ANY($3::text[])
		UNION ALL SELECT 'f', r.run_id, 0 FROM `+s.runs+` r
			JOIN unnest($4::text[], $5::text[]) AS v(run_id, status) ON r.run_id = v.run_id AND r.status = v.status`,
		pq.Array(q.stepRuns), pq.Array(q.stepSeqs), pq.Array(q.runIDs), pq.Array(q.finRuns), pq.Array(q.finStatuses),
		pq.Array(q.stepStatuses), pq.Array(q.stepAttempts))
	if err != nil {
		return w, err
	}
	defer rows.Close()
	for rows.Next() {
		var kind, id string
		var seq int
		if err := rows.Scan(&kind, &id, &seq); err != nil {
			return w, err
		}
		switch kind {
		case "s":
			w.steps[stepKey{id, seq}] = true
		case "r":
			w.runs[id] = true
		default:
			w.fins[id] = true
		}
	}
	return w, rows.Err()
}

// unclaimNew gives back a run that was created leased to owner (an eager
// start) but never executed: it becomes pending again, as if started without
// a local worker, and the queue's workers are told.
func (s *store) unclaimNew(ctx context.Context, owner, runID string) error {
	_, err := s.db.ExecContext(ctx, `WITH r AS (UPDATE `+s.runs+` SET status = 'pending', lease_owner = NULL,
			lease_expires_at = NULL, loads = loads - 1, updated_at = now()
		WHERE run_id = $1 AND lease_owner = $2 AND loads = 1 AND status = 'running' RETURNING queue)
		SELECT pg_notify($3, queue) FROM r`, runID, owner, s.channel[chanWork])
	return err
}

func (s *store) getRun(ctx context.Context, q sqlx.QueryerContext, runID string) (*runRow, error) {
	var r runRow
	err := sqlx.GetContext(ctx, q, &r, `SELECT `+runColumns+` FROM `+s.runs+` WHERE run_id = $1`, runID)
	if err == sql.ErrNoRows {
		return nil, ErrNotFound
	}
	return &r, err
}

// latestRun returns the newest run of a workflow ID (the open one if any).
func (s *store) latestRun(ctx context.Context, q sqlx.QueryerContext, workflowID string) (*runRow, error) {
	var r runRow
	err := sqlx.GetContext(ctx, q, &r, `SELECT `+runColumns+` FROM `+s.runs+` WHERE workflow_id = $1
		ORDER BY (status IN ('pending','running','waiting')) DESC, created_at DESC, run_id DESC LIMIT 1`, workflowID)
	if err == sql.ErrNoRows {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, workflowID)
	}
	return &r, err
}

// loadChildResults reads child steps of a run that have a result.
func (s *store) loadChildResults(ctx context.Context, runID string, seqs []int) ([]*stepRow, error) {
	var rows []*stepRow
	err := sqlx.SelectContext(ctx, s.db, &rows, `SELECT `+stepColumns+` FROM `+s.steps+`
		WHERE run_id = $1 AND seq = ANY($2) AND kind = 'child' AND status <> 'started'`, runID, pq.Array(seqs))
	return rows, err
}
