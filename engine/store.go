package engine

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/graftdev/graft/internal/pgconn"
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
	// listeners is the result_listeners table (see listeners.go).
	listeners string
	// workers is the roster of live workers (see roster.go).
	workers string
	channel map[string]string
	sql     storeSQL
	// hot holds the commit path's statements, prepared: query text to
	// *hotStmt (see hotQuery).
	hot sync.Map
	// folds holds the commit statements with checkpoint folds.
	folds foldTexts

	// arraysOnly, set by tests, sends every commit statement's rows as
	// arrays (see singleWrite.key).
	arraysOnly atomic.Bool

	// signalsLoaded, set by tests, learns how many signals each load read.
	signalsLoaded atomic.Pointer[func(n int)]
	// guarded: db's connections keep deadlines themselves (see bounded).
	guarded bool
}

// bounded returns a context for statements that must end within d, with
// no caller's context to end them sooner. On a pool of the engine's
// connector the connections keep the deadline themselves
// (pgconn.WithDeadline): a context that lib/pq watches costs a goroutine
// per statement, and at one commit at a time that hand-off costs more CPU
// than the commit. The context still ends at d for database/sql, so a
// statement waiting for one of the pool's connections gives up then: with
// every connection held by statements to stalled backends, it waited for
// as long as they did.
func (s *store) bounded(d time.Duration) (context.Context, context.CancelFunc) {
	if s.guarded {
		return pgconn.WithDeadline(context.Background(), time.Now().Add(d))
	}
	return context.WithTimeout(context.Background(), d)
}

const (
	chanWork = "work"
	chanDone = "done"
	chanWake = "wake"
)

func newStore(db *sqlx.DB, schema string) *store {
	q := pq.QuoteIdentifier(schema)
	s := &store{db: db, schema: schema, runs: q + ".runs", steps: q + ".steps", signals: q + ".signals", beats: q + ".heartbeats", listeners: q + ".result_listeners", workers: q + ".workers", channel: map[string]string{},
		guarded: db != nil && pgconn.Guards(db.Driver())}
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

// finishCols are the columns of run transitions, one row an op.
var finishCols = newUnnest(
	textCol("run_id", func(op *writeOp) string { return op.runID }),
	textCol("owner", func(op *writeOp) string { return op.owner }),
	textCol("status", func(op *writeOp) string { return string(op.fin.status) }),
	byteaCol("output", func(op *writeOp) []byte { return op.fin.output }),
	jsonbCol("error", func(op *writeOp) []byte { return op.fin.errJSON }),
	timeCol("wake_at", func(op *writeOp) sql.NullTime { return nullTime(op.fin.wakeAt) }),
	bigintCol("known", func(op *writeOp) int64 { return op.fin.knownEventSeq }),
	intCol("token", func(op *writeOp) int { return op.token }),
	boolCol("timers", func(op *writeOp) bool { return op.fin.hasTimers }),
)

// finishParams is the number of parameters finishSQL takes: the columns
// and the time.
var finishParams = len(finishCols) + 1

// finishArgs appends the run transitions of batch[idx] to args, as the
// arguments of transitionsSQL(p, rows), built in buf.
func finishArgs(args []any, buf *paramBuf, batch []*writeOp, idx []int, rows int) []any {
	b := finishCols.batchIn(buf, len(idx))
	for _, i := range idx {
		b.add(batch[i])
	}
	return b.argsAs(args, rows)
}

// finishSQL moves running runs to waiting or closed, fenced by the lease
// (the committer's notifier announces the closed ones after the commit),
// and marks the abandoned timers of the runs it closes (see
// abandonTimersSQL). It uses parameters $p+1..$p+finishParams and yields
// (run_id, closed_at, timers) as the CTE named "fin".
func (s *store) finishSQL(p int) string {
	return s.transitionsSQL(p, 0) + `,
		` + s.abandonTimersSQL()
}

// transitionsSQL is finishSQL without the abandoned timers: a commit
// statement leaves that arm out when none of its runs recorded a timer.
//
// Each run is found by its primary key. Its status check is written so the
// planner cannot prove runs_leased's predicate (status = 'running') from
// it: when it could, the prepared statement's generic plan read the whole
// lease index (every running run, and the dead entries of every run that
// ran since the last vacuum: 3,084 entries a statement at bench -c 256)
// and hash-joined it to the batch, instead of probing a few keys.
//
// rows is as for unnestCols.from: 0 takes the transitions as arrays, else
// exactly that many as a VALUES list; the time follows them.
func (s *store) transitionsSQL(p, rows int) string {
	now := fmt.Sprintf("$%d", p+finishCols.params(rows)+1)
	return `fin AS (UPDATE ` + s.runs + ` r SET status = v.status, output = v.output, error = v.error, updated_at = now(),
			closed_at = CASE WHEN v.status IN ('completed','failed','cancelled','continued') THEN ` + now + `::timestamptz END,
			wake_at = CASE WHEN v.status = 'waiting' AND r.event_seq > v.known THEN ` + now + ` ELSE v.wake_at END,
			lease_expires_at = CASE WHEN v.status = 'running' THEN r.lease_expires_at END, claimed_until = NULL
		FROM ` + finishCols.from(p, "v", rows) + `
		WHERE r.run_id = v.run_id AND r.lease_owner = v.owner AND r.loads = v.token
		  AND CASE WHEN ` + leased("r") + ` THEN true END
		RETURNING r.run_id, r.closed_at, v.timers)`
}

func (s *store) finishRuns(ctx context.Context, tx dbtx, buf *paramBuf, now time.Time, batch []*writeOp, idx []int) (map[string]bool, error) {
	ok := map[string]bool{}
	args := finishArgs(buf.start(finishParams), buf, batch, idx, 0)
	args = append(args, now)
	err := collectIDs(ctx, tx, s.sql.finishRuns, args, func(id string) { ok[id] = true })
	buf.sent(args)
	return ok, err
}

// storeSQL holds the statements of the hot path, built once per store.
type storeSQL struct {
	finishRuns, insertSteps         string
	insertRuns, insertAnnouncedRuns string
	// commit holds the commit statement of each shape (see commitShape),
	// with its rows as arrays; commitRows those with some arms' rows as
	// VALUES lists, by commitKey, made as they are first used.
	commit     [shapeAll + 1]commitSQL
	commitRows sync.Map
}

// commitShape names the parts a commit statement writes. Each part is an
// arm of the statement (CTEs and their rows in its result) and is left out
// when the batch has nothing for it: PostgreSQL initialises and locks
// every relation and index of a plan at each execution, however empty its
// arrays, and at bench -c 1 (a workflow of three activities: its start,
// two commits of steps only and its close) the unused arms of the single
// statement were about a third of a steps-only commit's backend CPU.
type commitShape uint8

const (
	// shapeSteps: step records of existing runs ("ins").
	shapeSteps commitShape = 1 << iota
	// shapeFin: run transitions ("fin"), and whether a closing run
	// waits on closes elsewhere (row 'l').
	shapeFin
	// shapeTimers: abandoned timers of the runs fin closes ("abandoned");
	// only with shapeFin, when a run of the batch recorded a timer.
	shapeTimers
	// shapeNews: run inserts ("nr", "nrlk", "nrsup").
	shapeNews
	// shapeNewSteps: the first step records of the inserted runs
	// ("nins"); only with shapeNews.
	shapeNewSteps

	shapeAll = shapeSteps | shapeFin | shapeTimers | shapeNews | shapeNewSteps
)

// commitSQL is a commit statement: its text, the number of parameters it
// takes and the CTEs that yield the runs it writes (for folds).
type commitSQL struct {
	q       string
	params  int
	written []string
}

func (s *store) buildSQL() {
	s.sql.finishRuns = `WITH ` + s.finishSQL(0) + ` SELECT run_id FROM fin`
	s.sql.insertRuns = `WITH ` + s.runsSQL(0, 0) + ` SELECT run_id FROM nr`
	// PostgreSQL folds identical notifications of one transaction into one.
	s.sql.insertAnnouncedRuns = `WITH ` + s.runsSQL(0, 0) + fmt.Sprintf(` SELECT run_id, CASE WHEN lease_owner IS NULL THEN pg_notify($%d, queue) END FROM nr`, runParams+1)
	s.sql.insertSteps = `WITH ` + s.stepsSQL(0, 0) + ` SELECT run_id, seq FROM ins`
	for sh := range s.sql.commit {
		s.sql.commit[sh] = s.commitSQL(commitKey{sh: commitShape(sh)})
	}
}

// commitKey names a commit statement: its shape, and for each of its arms
// the rows it takes as a VALUES list (0: as arrays; see unnestCols.from).
type commitKey struct {
	sh                          commitShape
	steps, fins, news, newSteps uint8
}

// merged reports whether the statement of k writes the step records of
// existing runs and those of the runs it inserts in one part (see
// allStepsSQL): a statement with both, each as arrays.
func (k commitKey) merged() bool {
	return k.sh&(shapeSteps|shapeNewSteps) == shapeSteps|shapeNewSteps && k.steps == 0 && k.newSteps == 0
}

// commitFor returns the commit statement of k.
func (s *store) commitFor(k commitKey) commitSQL {
	if k.steps|k.fins|k.news|k.newSteps == 0 {
		return s.sql.commit[k.sh]
	}
	if c, ok := s.sql.commitRows.Load(k); ok {
		return c.(commitSQL)
	}
	c, _ := s.sql.commitRows.LoadOrStore(k, s.commitSQL(k))
	return c.(commitSQL)
}

// commitSQL builds the commit statement of k. Its parameters are, in
// order, those of the parts k's shape has: the steps, the transitions and
// the time, the run inserts and the lease TTL, the new runs' steps. Its
// rows are (kind, run_id, seq): 's' a step written, 'f' a transition, 'l'
// a process waits on closes elsewhere, 'r' a run inserted.
func (s *store) commitSQL(k commitKey) commitSQL {
	sh := k.sh
	var c commitSQL
	var ctes, sel []string
	merged := k.merged()
	if sh&shapeSteps != 0 && !merged {
		ctes = append(ctes, s.stepsSQL(c.params, int(k.steps)))
		sel = append(sel, `SELECT 's', run_id, seq FROM ins`)
		c.params += stepCols.params(int(k.steps))
		c.written = append(c.written, "ins")
	}
	if sh&shapeFin != 0 {
		ctes = append(ctes, s.transitionsSQL(c.params, int(k.fins)))
		if sh&shapeTimers != 0 {
			ctes = append(ctes, s.abandonTimersSQL())
		}
		// A statement that closes runs also says whether a process
		// waits on closes elsewhere (row 'l'): only then are they
		// announced (see listeners.go).
		sel = append(sel, `SELECT 'f', run_id, 0 FROM fin`, `SELECT 'l', '', 0 WHERE EXISTS (SELECT 1 FROM fin WHERE closed_at IS NOT NULL)
			AND EXISTS (SELECT 1 FROM `+s.listeners+` WHERE expires_at > now())`)
		c.params += finishCols.params(int(k.fins)) + 1
		c.written = append(c.written, "fin")
	}
	if sh&shapeNews != 0 {
		ctes = append(ctes, s.runsSQL(c.params, int(k.news)))
		sel = append(sel, `SELECT 'r', run_id, 0 FROM nr`)
		c.params += runCols.params(int(k.news)) + 1
		c.written = append(c.written, "nr")
		if merged {
			ctes = append(ctes, s.allStepsSQL(c.params))
			sel = append(sel, `SELECT 's', run_id, seq FROM ins`)
			c.params += stepCols.params(0)
			c.written = append(c.written, "ins")
		} else if sh&shapeNewSteps != 0 {
			ctes = append(ctes, s.newRunStepsSQL(c.params, int(k.newSteps)))
			sel = append(sel, `SELECT 's', run_id, seq FROM nins`)
			c.params += stepCols.params(int(k.newSteps))
			c.written = append(c.written, "nins")
		}
	}
	if len(ctes) == 0 {
		return commitSQL{}
	}
	c.q = `WITH ` + strings.Join(ctes, `, `) + ` ` + strings.Join(sel, ` UNION ALL `)
	return c
}

// shape is the commit statement's shape for w. A batch of more than
// shapeOps ops takes one of two shapes, with or without run inserts, each
// with every other part but the abandoned timers, which it has only when
// a run it closes recorded a timer: the unused parts' cost is then spread
// over its ops, while each shape is a statement of its own that every
// connection prepares, and runs on custom plans for its first five
// executions after each preparation (see hotStmt); those scan runs when a
// batch has two rows or more, and at bench -c 256 one shape per batch
// doubled the rows read by scans (seq_rows_read_per_wf 15-19 to 27-36).
// The timers' part (an UPDATE of steps, set up at every execution) is
// left out because most batches of most workloads close no run with a
// timer: they keep to two shapes. A batch of starts only (a process that
// starts runs and does not run them, a client) takes the statement of
// its parts, which its batches of three or four starts take too: no
// steps, no transitions.
//
// A batch of at most shapeOps ops, or of starts only, takes the shape of
// exactly its parts.
func (w *singleWrite) shape() commitShape {
	timers := false
	for _, i := range w.fins {
		if w.batch[i].fin.hasTimers {
			timers = true
			break
		}
	}
	if len(w.batch) > shapeOps && (len(w.steps.steps) > 0 || len(w.fins) > 0) {
		sh := shapeSteps | shapeFin
		if len(w.news) > 0 {
			sh |= shapeNews | shapeNewSteps
		}
		if timers {
			sh |= shapeTimers
		}
		return sh
	}
	var sh commitShape
	if len(w.steps.steps) > 0 {
		sh |= shapeSteps
	}
	if len(w.fins) > 0 {
		sh |= shapeFin
		if timers {
			sh |= shapeTimers
		}
	}
	if len(w.news) > 0 {
		sh |= shapeNews
		if len(w.newSteps.steps) > 0 {
			sh |= shapeNewSteps
		}
	}
	return sh
}

// shapeOps is the most ops a batch has and still takes the shape of
// exactly its parts (a batch of starts only takes it at any size).
const shapeOps = 4

// key is the commit statement for w of shape sh: a batch of at most
// shapeOps ops sends each arm of up to valuesRows rows as a VALUES list
// (see unnestCols.from). At bench -c 1 that is every commit: two step
// records, a step and a run's end, a run's insert and its first step.
func (w *singleWrite) key(sh commitShape) commitKey {
	k := commitKey{sh: sh}
	if len(w.batch) > shapeOps {
		return k
	}
	rows := func(n int) uint8 {
		if n > valuesRows {
			return 0
		}
		return uint8(n)
	}
	if sh&shapeSteps != 0 {
		k.steps = rows(len(w.steps.steps))
	}
	if sh&shapeFin != 0 {
		k.fins = rows(len(w.fins))
	}
	if sh&shapeNews != 0 {
		k.news = rows(len(w.news))
	}
	if sh&shapeNewSteps != 0 {
		k.newSteps = rows(len(w.newSteps.steps))
	}
	return k
}

// stepsAndFinish writes step records, run transitions and plain run
// inserts (with the first step records of eager starts) in one statement:
// the common batch, committed without BEGIN/COMMIT round trips. The steps'
// lease check reads the runs as they were before the transitions, which
// keep the lease owner, so a run's last steps and its end commit together;
// the steps of a new run are fenced by its insert in the same statement.
// The caller keeps a run's end and a start of the same workflow ID out of
// one such statement (both would judge the ID by the same snapshot).
// The statement has only the parts the batch needs (see commitShape).
// With folds (see CheckpointFolder), their calls join the statement and
// their rows go to w.foldRows.
func (s *store) stepsAndFinish(ctx context.Context, tx dbtx, now time.Time, ttl time.Duration, w *singleWrite) (map[string]bool, map[string]bool, error) {
	// The sets are made as their first row comes: most commits write
	// steps only, or steps and one kind more. Written steps are marked in
	// w's batches.
	var okFins, okRuns map[string]bool
	sh := w.shape()
	if sh == 0 {
		// Nothing but folds' calls (ops with events only): the
		// statement of steps, with none.
		sh = shapeSteps
	}
	k := w.key(sh)
	if s.arraysOnly.Load() {
		k = commitKey{sh: sh}
	}
	c := s.commitFor(k)
	q, n := c.q, c.params
	if len(w.folds) > 0 {
		q = s.folds.text(q, n, c.written, w.folds)
		for _, f := range w.folds {
			n += len(f.Args)
		}
		w.foldRows = make([][]CheckpointFoldRow, len(w.folds))
	}
	buf := w.params
	args := buf.start(n)
	merged := k.merged()
	if sh&shapeSteps != 0 && !merged {
		args = stepArgs(args, buf, w.steps.steps, w.steps.owners, int(k.steps))
	}
	if sh&shapeFin != 0 {
		args = finishArgs(args, buf, w.batch, w.fins, int(k.fins))
		args = append(args, now)
	}
	if sh&shapeNews != 0 {
		args = runArgs(args, buf, w.batch, w.news, int(k.news))
		args = append(args, ttlInterval(ttl))
		if merged {
			args = stepArgs2(args, buf, &w.steps, &w.newSteps)
		} else if sh&shapeNewSteps != 0 {
			args = stepArgs(args, buf, w.newSteps.steps, w.newSteps.owners, int(k.newSteps))
		}
	}
	args = foldArgs(args, w.folds)
	rows, err := s.hotQuery(ctx, tx, q, args...)
	buf.sent(args)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	// One row's columns, scanned into one variable: each a variable of
	// its own escaped to the heap for every row.
	var r struct {
		kind, id string
		seq      int
	}
	for rows.Next() {
		if err := rows.Scan(&r.kind, &r.id, &r.seq); err != nil {
			return nil, nil, err
		}
		kind, id := r.kind, r.id
		if foldRow(w.foldRows, kind, id) {
			continue
		}
		switch kind {
		case "s":
			if k := (stepKey{id, r.seq}); !w.steps.mark(k) {
				w.newSteps.mark(k)
			}
		case "f":
			if okFins == nil {
				okFins = make(map[string]bool, len(w.fins))
			}
			okFins[id] = true
		case "l":
			w.listeners = true
		default:
			if okRuns == nil {
				okRuns = make(map[string]bool, len(w.news))
			}
			okRuns[id] = true
		}
	}
	return okFins, okRuns, rows.Err()
}

// runCols are the columns of run inserts, one row an op with a new run.
var runCols = newUnnest(
	textCol("run_id", func(op *writeOp) string { return op.newRun.row.RunID }),
	textCol("workflow_id", func(op *writeOp) string { return op.newRun.row.WorkflowID }),
	textCol("workflow_type", func(op *writeOp) string { return op.newRun.row.WorkflowType }),
	textCol("queue", func(op *writeOp) string { return op.newRun.row.Queue }),
	textCol("status", func(op *writeOp) string {
		switch {
		case op.newRun.asleep:
			return string(StatusWaiting)
		case op.newRun.leaseOwner != "":
			return string(StatusRunning)
		}
		return string(StatusPending)
	}),
	byteaCol("input", func(op *writeOp) []byte { return op.newRun.row.Input }),
	jsonbCol("headers", func(op *writeOp) []byte { return op.newRun.row.Headers }),
	timeCol("wake_at", func(op *writeOp) sql.NullTime { return op.newRun.row.WakeAt }),
	optTextCol("lease_owner", func(op *writeOp) string { return op.newRun.leaseOwner }),
	nullTextCol("parent_run_id", func(op *writeOp) sql.NullString { return op.newRun.row.ParentRunID }),
	nullIntCol("parent_seq", func(op *writeOp) sql.NullInt64 { return op.newRun.row.ParentSeq }),
	nullTextCol("parent_close_policy", func(op *writeOp) sql.NullString { return op.newRun.row.ParentClosePolicy }),
	nullTextCol("previous_run_id", func(op *writeOp) sql.NullString { return op.newRun.row.PreviousRunID }),
	textCol("start_reason", func(op *writeOp) string { return op.newRun.row.StartReason }),
	textCol("reuse", func(op *writeOp) string { return string(op.newRun.reuse) }),
)

// runParams is the number of parameters runsSQL takes: the columns and the
// lease TTL of eager starts.
var runParams = len(runCols) + 1

// runArgs appends the run inserts of batch[idx] to args, as the
// arguments of runsSQL(p, rows), built in buf.
func runArgs(args []any, buf *paramBuf, batch []*writeOp, idx []int, rows int) []any {
	b := runCols.batchIn(buf, len(idx))
	for _, i := range idx {
		b.add(batch[i])
	}
	return b.argsAs(args, rows)
}

// runsSQL inserts runs under their ID reuse policy; a run whose workflow ID
// has an open run is skipped. The earlier runs of an inserted run's
// workflow ID are marked superseded (CTE "nrsup"), locked in run ID order
// first (CTE "nrlk", see Lock order, above lockLeases: the join reads them
// in the batch's order). It uses $p+1..$p+runParams and yields (run_id,
// workflow_id, queue, lease_owner) as CTE "nr".
//
// The shapes are chosen for the prepared statement's generic plan:
//   - nrlk joins nr on the workflow ID alone: one probe of
//     runs_by_workflow per inserted run (nr is guessed at one row, see
//     unnestCols.sql). With the batch's IDs as an extra index condition
//     the plan probed the index once per ID per inserted run: k² descents
//     for k starts (238,332 index scans for 20,000 starts at bench
//     -c 256). With the IDs as one array (ANY of an InitPlan), which
//     PostgreSQL guesses at 10 IDs, it scanned the whole runs table at
//     every start until the table was large and analysed. The new rows
//     are not visible to the statement's snapshot, so only earlier runs
//     are marked.
//   - the reject and failed_only policies' looks for an earlier run are
//     kept from being turned into a hashed subplan (OFFSET 0), which reads
//     every run (every completed run) once per statement instead of
//     probing runs_by_workflow.
//
// rows is as for unnestCols.from; the TTL follows the runs' parameters.
func (s *store) runsSQL(p, rows int) string {
	ttl := fmt.Sprintf("$%d", p+runCols.params(rows)+1)
	return `nr AS (INSERT INTO ` + s.runs + ` (run_id, workflow_id, workflow_type, queue, status, input, headers, wake_at,
			lease_owner, lease_expires_at, loads, parent_run_id, parent_seq, parent_close_policy, previous_run_id, start_reason)
		SELECT v.run_id, v.workflow_id, v.workflow_type, v.queue, v.status, v.input, COALESCE(v.headers, '{}'), v.wake_at,
			v.lease_owner, CASE WHEN v.status = 'running' THEN now() + ` + ttl + `::interval END,
			CASE WHEN v.lease_owner IS NOT NULL THEN 1 ELSE 0 END,
			v.parent_run_id, v.parent_seq, v.parent_close_policy, v.previous_run_id, v.start_reason
		FROM ` + runCols.from(p, "v", rows) + `
		WHERE NOT (v.reuse = 'reject' AND EXISTS (SELECT 1 FROM ` + s.runs + ` x WHERE x.workflow_id = v.workflow_id OFFSET 0))
		  AND NOT (v.reuse = 'failed_only' AND EXISTS (SELECT 1 FROM ` + s.runs + ` x WHERE x.workflow_id = v.workflow_id AND x.status = 'completed' OFFSET 0))
		ON CONFLICT (workflow_id) WHERE status IN ('pending', 'running', 'waiting') DO NOTHING
		RETURNING run_id, workflow_id, queue, lease_owner),
		nrlk AS (SELECT x.run_id FROM ` + s.runs + ` x JOIN nr ON x.workflow_id = nr.workflow_id
		WHERE NOT x.superseded ORDER BY x.run_id FOR NO KEY UPDATE OF x),
		nrsup AS (UPDATE ` + s.runs + ` x SET superseded = true FROM nrlk WHERE x.run_id = nrlk.run_id AND NOT x.superseded)`
}

func ttlInterval(ttl time.Duration) string { return fmt.Sprintf("%d milliseconds", ttl.Milliseconds()) }

// insertRuns inserts the runs of batch[idx]. With announce, the runs no
// local worker took are announced to the queue's workers by the
// transaction (a caller's own, whose commit the engine does not see); the
// committer's notifier announces those of its batches after the commit.
func (s *store) insertRuns(ctx context.Context, tx dbtx, buf *paramBuf, ttl time.Duration, batch []*writeOp, idx []int, announce bool) (map[string]bool, error) {
	ok := map[string]bool{}
	args := runArgs(buf.start(runParams+1), buf, batch, idx, 0)
	q := s.sql.insertRuns
	if announce {
		q, args = s.sql.insertAnnouncedRuns, append(args, ttlInterval(ttl), s.channel[chanWork])
	} else {
		args = append(args, ttlInterval(ttl))
	}
	err := collectIDs(ctx, tx, q, args, func(id string) { ok[id] = true })
	buf.sent(args)
	return ok, err
}

// leased is the condition that the run aliased a is held by a worker: it is
// running (leased until lease_expires_at, or until claimed_until when a
// claim took it from an expired lease), or it is a pending or waiting run
// a worker claimed and has not yet marked running (see claimSQL). A lease
// that expired still holds until
// another claim takes the run (and increments loads). Every transition
// that ends a claim clears claimed_until.
func leased(a string) string {
	return `(` + a + `.status = 'running' OR (` + a + `.status IN ('pending','waiting') AND ` + a + `.claimed_until IS NOT NULL))`
}

// fence is the lease a write needs: the owner's name and the number of the
// claim (the run's loads when it was claimed). An empty owner is unfenced.
type fence struct {
	owner string
	token int
}

// stepIn is a step record with the fence of its write.
type stepIn struct {
	st *stepRow
	f  fence
}

// stepCols are the columns of step records.
var stepCols = newUnnest(
	textCol("run_id", func(r stepIn) string { return r.st.RunID }),
	intCol("seq", func(r stepIn) int { return r.st.Seq }),
	textCol("kind", func(r stepIn) string { return r.st.Kind }),
	textCol("name", func(r stepIn) string { return r.st.Name }),
	textCol("status", func(r stepIn) string { return r.st.Status }),
	byteaCol("input", func(r stepIn) []byte { return r.st.Input }),
	byteaCol("output", func(r stepIn) []byte { return r.st.Output }),
	jsonbCol("error", func(r stepIn) []byte { return r.st.Error }),
	intCol("attempts", func(r stepIn) int { return r.st.Attempts }),
	timeCol("started_at", func(r stepIn) sql.NullTime { return r.st.StartedAt }),
	timeCol("completed_at", func(r stepIn) sql.NullTime { return r.st.CompletedAt }),
	timeCol("fire_at", func(r stepIn) sql.NullTime { return r.st.FireAt }),
	nullBigintCol("signal_id", func(r stepIn) sql.NullInt64 { return r.st.SignalID }),
	nullTextCol("child_workflow_id", func(r stepIn) sql.NullString { return r.st.ChildWorkflowID }),
	textCol("owner", func(r stepIn) string { return r.f.owner }),
	intCol("token", func(r stepIn) int { return r.f.token }),
	timeCol("attempt_started_at", func(r stepIn) sql.NullTime { return r.st.AttemptStartedAt }),
	timeCol("next_attempt_at", func(r stepIn) sql.NullTime { return r.st.NextAttemptAt }),
	jsonbCol("attempt_log", func(r stepIn) []byte { return r.st.logAppend }),
)

// stepParams is the number of parameters stepsSQL takes.
var stepParams = len(stepCols)

// stepArgs appends steps, each written under owners[k], to args, as the
// arguments of stepsSQL(p, rows), built in buf.
func stepArgs(args []any, buf *paramBuf, steps []*stepRow, owners []fence, rows int) []any {
	b := stepCols.batchIn(buf, len(steps))
	for k, st := range steps {
		b.add(stepIn{st, owners[k]})
	}
	return b.argsAs(args, rows)
}

// stepArgs2 appends the steps of a and then those of b, as the arguments
// of allStepsSQL, built in buf.
func stepArgs2(args []any, buf *paramBuf, a, b *batchSteps) []any {
	u := stepCols.batchIn(buf, len(a.steps)+len(b.steps))
	for _, bs := range []*batchSteps{a, b} {
		for k, st := range bs.steps {
			u.add(stepIn{st, bs.owners[k]})
		}
	}
	return u.argsAs(args, 0)
}

// stepsSQL writes step records fenced by the lease (an empty owner skips
// the check). A record of an activity step that has not ended (its start,
// made durable before the attempt ran, or its wait for the next attempt)
// is updated in place by the next record of that step: a later attempt's
// start or wait, or the outcome. A record's attempt log entries are
// appended to the step's attempt_log (a write without any leaves it as it
// is). Any other existing step is left alone, and its write reported as
// not done. It uses $p+1..$p+stepCols.params(rows) (rows as for
// unnestCols.from) and yields (run_id, seq) as CTE "ins".
func (s *store) stepsSQL(p, rows int) string {
	return s.stepsIntoSQL(p, rows, "ins", `JOIN `+s.runs+` r ON r.run_id = v.run_id AND (v.owner = '' OR (r.lease_owner = v.owner AND r.loads = v.token))`)
}

// newRunStepsSQL writes the first step records of runs inserted by CTE "nr"
// of the same statement (an eager start's first commit): their fence is
// that insert. It uses $p+1..$p+stepCols.params(rows) and yields (run_id,
// seq) as CTE "nins".
func (s *store) newRunStepsSQL(p, rows int) string {
	return s.stepsIntoSQL(p, rows, "nins", `JOIN nr ON nr.run_id = v.run_id`)
}

// allStepsSQL is stepsSQL and newRunStepsSQL in one part, for a statement
// that has both: the step records of existing runs, fenced by the lease,
// and those of the runs CTE "nr" inserts, fenced by that insert (the
// runs table does not show the statement's own new rows). One part
// instead of two saves PostgreSQL the second INSERT's executor set-up
// at each execution (its ON CONFLICT clause, the unnest of 19 arrays, the
// steps' indexes). It yields (run_id, seq) as CTE "ins".
func (s *store) allStepsSQL(p int) string {
	return s.stepsIntoSQL(p, 0, "ins", `LEFT JOIN `+s.runs+` r ON r.run_id = v.run_id AND (v.owner = '' OR (r.lease_owner = v.owner AND r.loads = v.token))
		WHERE r.run_id IS NOT NULL OR v.run_id IN (SELECT nr.run_id FROM nr)`)
}

func (s *store) stepsIntoSQL(p, rows int, name, fenceJoin string) string {
	return name + ` AS (INSERT INTO ` + s.steps + ` AS t (` + stepColumns + `, attempt_log)
		SELECT v.run_id, v.seq, v.kind, v.name, v.status, v.input, v.output, v.error, v.attempts,
			v.started_at, v.completed_at, v.fire_at, v.signal_id, v.child_workflow_id, v.attempt_started_at, v.next_attempt_at, v.attempt_log
		FROM ` + stepCols.from(p, "v", rows) + `
		` + fenceJoin + `
		ON CONFLICT (run_id, seq) DO UPDATE SET status = EXCLUDED.status, input = COALESCE(EXCLUDED.input, t.input),
			output = EXCLUDED.output, error = EXCLUDED.error, attempts = EXCLUDED.attempts, completed_at = EXCLUDED.completed_at,
			attempt_started_at = EXCLUDED.attempt_started_at, next_attempt_at = EXCLUDED.next_attempt_at,
			attempt_log = CASE WHEN EXCLUDED.attempt_log IS NULL THEN t.attempt_log
				ELSE COALESCE(t.attempt_log, '[]'::jsonb) || EXCLUDED.attempt_log END
			WHERE t.status IN ('started', 'retrying', 'throttled') AND t.kind = 'activity' AND EXCLUDED.kind = 'activity'
		RETURNING run_id, seq)`
}

func (s *store) insertSteps(ctx context.Context, tx dbtx, buf *paramBuf, steps []*stepRow, owners []fence) (map[stepKey]bool, error) {
	ok := map[stepKey]bool{}
	args := stepArgs(buf.start(stepParams), buf, steps, owners, 0)
	rows, err := tx.QueryContext(ctx, s.sql.insertSteps, args...)
	buf.sent(args)
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

// Lock order. A statement that locks several runs locks them in run ID
// order, the order the commit statement locks its batch in (its batch is
// sorted, and each run is found by its key), so of two such statements one
// waits for the other, and neither deadlocks (40P01). An UPDATE alone
// locks rows in the order its plan reads them (table order in a scan,
// index order in an index scan), so such a statement first locks its runs
// in a CTE (SELECT ... ORDER BY run_id FOR [NO KEY] UPDATE) and updates
// them from it. A run that changed while the CTE waited for it is checked
// again against the CTE's conditions when its lock is taken. A commit
// whose batch wakes parents or cancels children, which its statements
// lock after the batch's runs, locks all of them first in one statement
// (lockTree); a client's cancel or reset locks a run and its children in
// one statement too.

// leaseCols are the lease fences of ops.
var leaseCols = newUnnest(
	textCol("run_id", func(op *writeOp) string { return op.runID }),
	textCol("owner", func(op *writeOp) string { return op.owner }),
	intCol("token", func(op *writeOp) int { return op.token }),
)

// lockLeases locks, for the rest of the transaction, the runs of
// batch[idx] that their ops' fence still holds, and returns them. Rows are
// locked in run ID order, so two transactions cannot deadlock on them.
func (s *store) lockLeases(ctx context.Context, tx dbtx, batch []*writeOp, idx []int) (map[string]bool, error) {
	b := leaseCols.batch(len(idx))
	for _, i := range idx {
		b.add(batch[i])
	}
	held := map[string]bool{}
	err := collectIDs(ctx, tx, `SELECT r.run_id FROM `+s.runs+` r
		JOIN `+leaseCols.sql(0, "v")+` ON r.run_id = v.run_id
		WHERE r.lease_owner = v.owner AND r.loads = v.token AND `+leased("r")+`
		ORDER BY r.run_id FOR SHARE OF r`, b.args(nil), func(id string) { held[id] = true })
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
		SELECT $1, $2, $3 FROM `+s.runs+` r WHERE r.run_id = $1 AND r.lease_owner = $4 AND r.loads = $5 AND `+leased("r")+`
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

// continuedCols pair an op's run, which continues as new, with the new
// run: from_id and to_id.
var continuedCols = newUnnest(
	textCol("from_id", func(op *writeOp) string { return op.runID }),
	textCol("to_id", func(op *writeOp) string { return op.newRun.row.RunID }),
)

// continuedArgs renders ops that continue as new as continuedCols.
func continuedArgs(ops []*writeOp) []any {
	b := continuedCols.batch(len(ops))
	for _, op := range ops {
		b.add(op)
	}
	return b.args(nil)
}

// moveUnreadSignals gives the signals of each op's run that no step of it
// consumed to the new run it continues as, keeping their order.
func (s *store) moveUnreadSignals(ctx context.Context, tx dbtx, ops []*writeOp) error {
	_, err := tx.ExecContext(ctx, `UPDATE `+s.signals+` g SET run_id = v.to_id
		FROM `+continuedCols.sql(0, "v")+`
		WHERE g.run_id = v.from_id
		  AND NOT EXISTS (SELECT 1 FROM `+s.steps+` st WHERE st.run_id = v.from_id AND st.signal_id = g.id)`,
		continuedArgs(ops)...)
	return err
}

// carryCancel copies a cancellation requested of each op's run, which the
// run never observed (no cancel step), to the new run it continues as: a
// cancel that raced with continue-as-new still stops the loop.
func (s *store) carryCancel(ctx context.Context, tx dbtx, ops []*writeOp) error {
	_, err := tx.ExecContext(ctx, `UPDATE `+s.runs+` n SET cancel_requested_at = o.cancel_requested_at,
			cancel_reason = o.cancel_reason, event_seq = n.event_seq + 1
		FROM `+continuedCols.sql(0, "v")+`
		JOIN `+s.runs+` o ON o.run_id = v.from_id
		WHERE n.run_id = v.to_id AND o.cancel_requested_at IS NOT NULL AND n.cancel_requested_at IS NULL
		  AND NOT EXISTS (SELECT 1 FROM `+s.steps+` st WHERE st.run_id = v.from_id AND st.kind = 'cancel')`,
		continuedArgs(ops)...)
	return err
}

// carryParent gives the new run each op's run continues as the parent
// that the op's run has now (a reset may have moved it since the run was
// loaded): a child that continues as new still reports to the run that
// waits for it.
func (s *store) carryParent(ctx context.Context, tx dbtx, ops []*writeOp) error {
	_, err := tx.ExecContext(ctx, `UPDATE `+s.runs+` n SET parent_run_id = o.parent_run_id, parent_seq = o.parent_seq
		FROM `+continuedCols.sql(0, "v")+`
		JOIN `+s.runs+` o ON o.run_id = v.from_id
		WHERE n.run_id = v.to_id AND o.parent_run_id IS NOT NULL AND n.parent_run_id IS DISTINCT FROM o.parent_run_id`,
		continuedArgs(ops)...)
	return err
}

// bumpEvents records that something happened to each run (a signal, a
// cancellation, a child's result) and makes unloaded ones due now. The
// runs are locked in run ID order first (see Lock order, above lockLeases).
func (s *store) bumpEvents(ctx context.Context, tx dbtx, now time.Time, runIDs []string) error {
	_, err := tx.ExecContext(ctx, `WITH lk AS (SELECT run_id FROM `+s.runs+` WHERE run_id = ANY($1) ORDER BY run_id FOR NO KEY UPDATE)
		UPDATE `+s.runs+` r SET event_seq = r.event_seq + 1,
		wake_at = CASE WHEN r.status = 'waiting' THEN $2 ELSE r.wake_at END FROM lk WHERE r.run_id = lk.run_id`, pq.Array(runIDs), now)
	return err
}

// lockTree locks own, the parents of children (as their rows name them
// now), and the open children with the cancel policy of parents, in one
// statement, in run ID order (see Lock order, above lockLeases): the runs
// a commit that wakes parents and cancels children writes, which are
// otherwise locked as two sets, one after the other. A child's parent
// changed by a reset that committed after the statement's snapshot is not
// among them: the statement that wakes it locks it later.
//
// Prepared (hotQuery), and the runs found by key (= ANY of the IDs, not a
// join, which PostgreSQL planned as a hash join over a scan of all of
// runs): sent unprepared with the join, it cost its backend about 620 µs a
// call, most of it planning (bench -scenario children -stats). The open
// children are found by their parents (runs_by_parent), their status
// checked on the rows (the status with the empty string appended, which no
// index matches): with status IN, the generic plan ANDed runs_by_parent's bitmap with
// runs_one_open's, read whole (every open run's entry, and until a vacuum
// the dead ones of every run once open).
func (s *store) lockTree(ctx context.Context, tx dbtx, own, children, parents []string) error {
	rows, err := s.hotQuery(ctx, tx, `SELECT r.run_id FROM `+s.runs+` r WHERE r.run_id = ANY (ARRAY(
			SELECT unnest($1::text[])
			UNION SELECT parent_run_id FROM `+s.runs+` WHERE run_id = ANY($2::text[]) AND parent_run_id IS NOT NULL
			UNION SELECT run_id FROM `+s.runs+` WHERE parent_run_id = ANY($3::text[]) AND parent_close_policy = 'cancel'
				AND (status || '') IN ('pending','running','waiting') AND cancel_requested_at IS NULL))
		ORDER BY r.run_id FOR NO KEY UPDATE OF r`,
		pq.Array(own), pq.Array(children), pq.Array(parents))
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
	}
	return rows.Err()
}

// cancelChildrenOf requests cancellation of the open children of the given
// runs whose parent close policy is "cancel". The children are locked in
// run ID order first (see Lock order, above lockLeases); one that closed or was cancelled
// meanwhile drops out when its lock is taken.
func (s *store) cancelChildrenOf(ctx context.Context, tx dbtx, now time.Time, parents []string, reason string) ([]string, error) {
	var ids []string
	err := collectIDs(ctx, tx, s.cancelChildrenSQL(), []any{pq.Array(parents), reason, now}, func(id string) { ids = append(ids, id) })
	return ids, err
}

// cancelChildrenSQL is cancelChildrenOf's statement ($1 the parents, $2
// the reason, $3 the time). The children are found by their parents
// (runs_by_parent), their status checked on the rows (the status with the
// empty string appended, which no index matches, as in lockTree): with
// status IN, a batch of a few hundred closing parents was planned as a
// read of runs_one_open whole when the statistics said few runs were open,
// which took every entry of a run once open until a vacuum (see
// TestCancelChildrenFindsThemByParent).
func (s *store) cancelChildrenSQL() string {
	return `WITH lk AS (SELECT run_id FROM ` + s.runs + `
			WHERE parent_run_id = ANY($1) AND parent_close_policy = 'cancel'
			  AND (status || '') IN ('pending','running','waiting') AND cancel_requested_at IS NULL
			ORDER BY run_id FOR NO KEY UPDATE)
		UPDATE ` + s.runs + ` r SET cancel_requested_at = now(), cancel_reason = $2,
		event_seq = r.event_seq + 1, wake_at = CASE WHEN r.status IN ('waiting','pending') THEN $3 ELSE r.wake_at END
		FROM lk WHERE r.run_id = lk.run_id
		RETURNING r.run_id`
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
//
// A waiting run stays waiting when claimed (see claimSQL), so the index
// still lists the waiting runs that workers hold, until their first lease
// renewal or transition: the claim passes over those whose lease is live,
// and takes those whose lease expired (their worker is gone), except the
// runs in held, which still run here (a late renewal).
func (s *store) claimDue(ctx context.Context, owner string, queues, types []string, n int, now time.Time, ttl time.Duration, held []string) ([]*runRow, map[string][]*signalRow, map[string]bool, error) {
	return s.claim(ctx, s.claimSQL(s.claimDueSQL(len(queues)), ""), owner, queues, types, n, now, ttl, pq.Array(held))
}

// claimableLease is claimDue's condition on a due run's claim ($7: the
// runs the claiming worker holds).
const claimableLease = `(claimed_until IS NULL OR (claimed_until < now() AND NOT (run_id = ANY($7))))`

// claimDueSQL is claimDue's selection of due runs for nq queues.
func (s *store) claimDueSQL(nq int) string {
	if nq == 1 { // the usual case, with the cheaper plan
		return `SELECT run_id FROM ` + s.runs + `
			WHERE queue = ($2::text[])[1] AND status IN ('pending','waiting') AND wake_at <= $5 AND workflow_type = ANY($3)
			  AND ` + claimableLease + `
			ORDER BY wake_at LIMIT $4 FOR UPDATE SKIP LOCKED`
	}
	return `SELECT d.run_id FROM (SELECT DISTINCT unnest($2::text[]) AS name) q
		CROSS JOIN LATERAL (
			SELECT run_id, wake_at FROM ` + s.runs + `
			WHERE queue = q.name AND status IN ('pending','waiting') AND wake_at <= $5 AND workflow_type = ANY($3)
			  AND ` + claimableLease + `
			ORDER BY wake_at LIMIT $4 FOR UPDATE SKIP LOCKED) d
		ORDER BY d.wake_at LIMIT $4`
}

// claimExpired leases up to n running runs whose owner stopped renewing.
// held are the runs the claiming worker has loaded: a copy of a run that
// still runs here (its renewal is late) is not claimed a second time; the
// renewal stops it if another worker takes the run. within, when not zero,
// looks only at leases that expired within that long, and two lease
// periods, before now (see claimExpiredSQL): the runs whose leases expired
// earlier were seen by the caller's previous looks. The
// lease index keeps an entry of every run that was claimed, until VACUUM
// removes the dead ones (a long transaction anywhere holds that back), so
// a look at every expired lease reads the entries of every run claimed
// and closed since: after a million sleepers woke, 2.8 s (EXPLAIN ANALYZE,
// 958,735 entries) instead of a few milliseconds.
func (s *store) claimExpired(ctx context.Context, owner string, queues, types []string, n int, now time.Time, ttl time.Duration, held []string, within time.Duration) ([]*runRow, map[string][]*signalRow, map[string]bool, error) {
	return s.claim(ctx, s.claimSQL(s.claimExpiredSQL(), claimExpiredLease), owner, queues, types, n, now, ttl, pq.Array(held), expiredWindow(within))
}

// expiredWindow renders claimExpired's within as an interval: none (zero)
// is a century.
func expiredWindow(within time.Duration) string {
	if within <= 0 {
		return "100 years"
	}
	return fmt.Sprintf("%d milliseconds", within.Milliseconds())
}

// claimExpiredSQL is claimExpired's selection: the running runs whose
// lease expired, lease_expires_at read from the runs_leased index (running
// runs by lease_expires_at) from now less $8 and two lease periods ($6).
// A run a claim took from there keeps its expired lease_expires_at (and
// its entry in the index), or one a lease period old if it was older
// (claimExpiredLease), and is leased until claimed_until (see claimSQL):
// the look passes over it until its worker's promotion pass moves its
// lease, about a second later. If that worker died before the pass, its
// claim runs out a lease period after it was made, and the run's
// lease_expires_at is older than the claim by at most a lease period: the
// first look after its claim ran out, whose window reaches back to its
// previous look, reads it in the two lease periods beyond, however old its
// lease was when it was claimed (by a look at every expired lease, one
// after a stall, or one that took it from this range). A run the look
// that should have taken it passed over because its row was locked (SKIP
// LOCKED) is in the range of the looks that follow for two lease periods
// more. The range reads more index entries than the window alone, most of
// them dead (lease renewals move lease_expires_at, an update that is not
// heap-only, and leave the old entry), but two lease periods of them, not
// every one since the last VACUUM as a look at every expired lease does.
// The run is also taken at once by a successor worker with its claimer's
// ID (expireLeases).
func (s *store) claimExpiredSQL() string {
	return `SELECT run_id FROM ` + s.runs + `
		WHERE status = 'running' AND lease_expires_at < now()
		AND lease_expires_at >= now() - $8::interval - 2 * $6::interval
		AND (claimed_until IS NULL OR claimed_until < now())
		AND queue = ANY($2) AND workflow_type = ANY($3)
		AND $5::timestamptz IS NOT NULL AND NOT (run_id = ANY($7))
		LIMIT $4 FOR UPDATE SKIP LOCKED`
}

// claimExpiredLease is what a claim of expired leases sets beside
// claimSQL's columns: a lease_expires_at older than a lease period ($6)
// moves to a lease period ago, still expired, so that the run stays within
// reach of the windowed looks should its claimer die (claimExpiredSQL). A
// lease that expired within a lease period, which every look of a worker
// that looks at its usual pace takes, is left as it is, and its claim
// stays heap-only; a moved one is an entry in each of runs' indexes, paid
// only by the runs left expired longer than a lease period (all workers
// down, a stall), which their promotion pass would move a second later
// anyway.
const claimExpiredLease = `, lease_expires_at = GREATEST(r.lease_expires_at, now() - $6::interval)`

// expireLeases ends the leases held under owner's name now, so that the
// runs are claimed at once (a restarted worker's predecessor's runs): a
// running run's lease_expires_at moves to just now, where the next look
// for expired leases reads, even for a run leased until claimed_until
// (its old lease_expires_at may be outside that look's window). It
// locks the runs in run ID order, the order the commit statement and
// releases lock them in: an UPDATE alone locks them in the order it finds
// them (table order), and a writer holding one run while it waited for
// another the update held made a deadlock (40P01; seven in one chaos run,
// whose runs then waited out their leases).
func (s *store) expireLeases(ctx context.Context, owner string) error {
	_, err := s.db.ExecContext(ctx, `WITH held AS (
			SELECT run_id FROM `+s.runs+` r
			WHERE r.lease_owner = $1 AND `+leased("r")+` AND GREATEST(r.lease_expires_at, r.claimed_until) > now()
			ORDER BY run_id FOR NO KEY UPDATE)
		UPDATE `+s.runs+` r SET
			lease_expires_at = CASE WHEN r.status = 'running' THEN now() - interval '1 second' END,
			claimed_until = CASE WHEN r.status IN ('pending','waiting') THEN now() - interval '1 second' END
		FROM held WHERE r.run_id = held.run_id AND r.lease_owner = $1 AND `+leased("r"), owner)
	return err
}

// claim runs query, a claimSQL, for owner, and returns the claimed runs,
// the first page of each one's buffered signals, read in the same
// statement, and the runs that had an event (a signal) the claim's read did
// not see (see claimSQL): such a run's EventSeq is the count the read saw.
//
// The statement runs prepared (hotQuery), on a generic plan once a
// connection has run it a few times: parsed and planned at each claim (a
// few CTEs, the run's columns returned, two subplans), its planning was a
// fifth to a third of its CPU in PostgreSQL. bench -n 50000 -c 512
// -workers 4 -stats (each process claims for its own notices, 0.035-0.038
// claims a workflow): the claim's backend CPU 2.7-3.1 ms a call
// unprepared, 2.2-2.5 ms prepared.
func (s *store) claim(ctx context.Context, query, owner string, queues, types []string, n int, now time.Time, ttl time.Duration, extra ...any) ([]*runRow, map[string][]*signalRow, map[string]bool, error) {
	var got []*claimedRow
	rows, err := s.hotQuery(ctx, s.db, query, claimArgs(owner, queues, types, n, now, ttl, extra...)...)
	if err != nil {
		return nil, nil, nil, err
	}
	if err := sqlx.StructScan(rows, &got); err != nil {
		return nil, nil, nil, err
	}
	out := make([]*runRow, len(got))
	sigs := map[string][]*signalRow{}
	raced := map[string]bool{}
	read := 0
	for i, g := range got {
		out[i] = &g.runRow
		if g.SeenSeq == nil || *g.SeenSeq != g.EventSeq {
			raced[g.RunID] = true
			g.EventSeq = 0
			if g.SeenSeq != nil {
				g.EventSeq = *g.SeenSeq
			}
		}
		if len(g.Signals) == 0 {
			continue
		}
		var page []*claimedSignal
		if err := json.Unmarshal(g.Signals, &page); err != nil {
			return nil, nil, nil, fmt.Errorf("engine: signals of claimed run %s: %w", g.RunID, err)
		}
		rs := make([]*signalRow, len(page))
		for j, p := range page {
			rs[j] = &signalRow{ID: p.ID, RunID: g.RunID, Name: p.Name, Payload: p.Payload, CreatedAt: p.CreatedAt}
			if p.Headers != nil {
				rs[j].Headers = []byte(*p.Headers)
			}
		}
		sigs[g.RunID] = rs
		read += len(rs)
	}
	if h := s.signalsLoaded.Load(); h != nil && len(got) > 0 {
		(*h)(read)
	}
	return out, sigs, raced, nil
}

// claimedRow is a row of a claim: the run and the first page of its
// buffered signals (NULL: none), a JSON array of claimedSignal, and the
// run's event_seq in the snapshot they were read in.
type claimedRow struct {
	runRow
	Signals []byte `db:"signals"`
	SeenSeq *int64 `db:"seen_seq"`
}

// claimedSignal is a signal as a claim reads it (claimSQL): its
// payload in base64, its headers as JSON text.
type claimedSignal struct {
	ID        int64     `json:"i"`
	Name      string    `json:"n"`
	Payload   []byte    `json:"p"`
	Headers   *string   `json:"h"`
	CreatedAt time.Time `json:"t"`
}

// claimSQL leases the runs that due selects, setting also what set
// assigns (claimExpiredLease, or nothing), and returns them. A run keeps
// its status and lease_expires_at, and is leased until claimed_until: a
// pending run (new) or a waiting one (woken) stays pending or waiting, and
// a running run whose lease expired (its worker died) stays running with
// its expired lease_expires_at (one older than a lease period moves, see
// claimExpiredLease). The claim then changes no indexed column
// (status and lease_expires_at are indexed), and PostgreSQL writes it as a
// heap-only update, without an entry in any of runs' indexes; a change of
// status or of lease_expires_at is one in every index whose predicate the
// row meets, and the entries keyed by workflow ID land on random pages (a
// claim of 200 of 300,000 pending runs, 1M runs in all: 10.2 ms and 5,440
// buffers as a change of status; a claim of 200 expired leases among a
// million runs: 17 ms and 5,800 buffers warm as a move of
// lease_expires_at). The run is marked running, its lease moved to
// lease_expires_at, by its first lease renewal, or left by its next
// transition (most runs end or wait sooner); until then claimed_until says
// that a worker holds it (see leased), and the engine reports it as
// running (runRow.status).
//
// Each claimed run comes with the first page (signalPage) of its buffered
// signals, oldest first, as a JSON array in the column signals (NULL:
// none), read in the claim's own snapshot: a claim is one round trip, not
// a claim and a read of its runs' signals (that read was 0.035 statements
// a workflow at bench -workers 4). A signal committed after that snapshot
// is not in it, though the claim may have locked the row its transaction
// updated (event_seq): seen_seq, the run's event_seq in the snapshot,
// differs from the row's then. The run is loaded knowing only seen_seq
// events (claim), so that until a refresh reads the signal the run counts
// it as unread: an unload before that leaves the run due (finishSQL's
// known), where the row's newer count had the unload take the signal for
// read and leave the run waiting with no wake time and the signal unread
// (TestSignalRacingTheClaimIsDelivered, with an unload at the run's first
// wait). The worker refreshes such a run once it is loaded, as it does one
// whose wake-up arrived while it claimed (Worker.claiming).
//
// A run that never counted an event (event_seq 0 in the row the update
// returns, its latest version) holds no signal and raced with none: a
// delivery counts an event in the transaction that writes the signal, and
// the signals table's trigger (migration 015) counts one for a run any
// other writer hands signals to (a signal-with-start, a continue-as-new, a
// reset, an older build's), and the count only grows, so the snapshot's
// count is 0 too. Its claim skips both subplans (a CASE runs a subplan
// only for the rows whose branch is taken): most claimed runs are new
// ones, and bench -n 50000 -c 512 -stats claims cost 1.30-1.40 ms of
// backend CPU a call against 1.47-1.76 (-workers 4), 1.05-1.21 against
// 1.30-1.42 (-workers 1).
func (s *store) claimSQL(due, set string) string {
	return `WITH due AS (` + due + `), c AS (
		UPDATE ` + s.runs + ` r SET lease_owner = $1, claimed_until = now() + $6::interval,
			loads = r.loads + 1, updated_at = now()` + set + `
		FROM due WHERE r.run_id = due.run_id
		RETURNING ` + prefixCols("r.", runColumns) + `)
		SELECT c.*, CASE WHEN c.event_seq > 0 THEN (SELECT json_agg(json_build_object('i', g.id, 'n', g.name, 'p', encode(g.payload, 'base64'),
				'h', g.headers::text, 't', g.created_at) ORDER BY g.id)
			FROM (SELECT id, name, payload, headers, created_at FROM ` + s.signals + ` x
				WHERE x.run_id = c.run_id ORDER BY x.id LIMIT ` + strconv.Itoa(signalPage) + `) g) END AS signals,
			CASE WHEN c.event_seq > 0 THEN (SELECT o.event_seq FROM ` + s.runs + ` o WHERE o.run_id = c.run_id) ELSE 0 END AS seen_seq
		FROM c`
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
// from the head of each queue's (queue, wake_at) index, passing over the
// claimed waiting runs that are still there (see claimDue) unless their
// lease expired under another owner than owner.
func (s *store) nextWake(ctx context.Context, owner string, queues, types []string) (time.Time, bool, error) {
	var t sql.NullTime
	err := s.db.QueryRowContext(ctx, s.nextWakeSQL(len(queues)), pq.Array(queues), pq.Array(types), owner).Scan(&t)
	return t.Time, t.Valid, err
}

// wakeLease is nextWake's condition on a run's lease ($3: the owner).
const wakeLease = `(claimed_until IS NULL OR (claimed_until < now() AND lease_owner IS DISTINCT FROM $3))`

// nextWakeSQL is nextWake's query for nq queues.
func (s *store) nextWakeSQL(nq int) string {
	if nq == 1 { // the usual case, with the cheaper plan
		return `SELECT min(wake_at) FROM ` + s.runs + `
			WHERE queue = ($1::text[])[1] AND status IN ('pending','waiting') AND workflow_type = ANY($2) AND ` + wakeLease
	}
	return `SELECT min(d.wake_at) FROM (SELECT DISTINCT unnest($1::text[]) AS name) q
		CROSS JOIN LATERAL (
			SELECT wake_at FROM ` + s.runs + `
			WHERE queue = q.name AND status IN ('pending','waiting') AND workflow_type = ANY($2) AND ` + wakeLease + `
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
	// ended: the run's row is no longer leased, but still under this
	// claim: the copy's own end or unload committed, and the copy, not yet
	// told, is ending by itself. The lease was not lost.
	ended bool
}

// fencedRun is a loaded run and the claim it is held under.
type fencedRun struct {
	runID string
	token int
}

// renewCols are the runs a renewal extends.
var renewCols = newUnnest(
	textCol("run_id", func(r fencedRun) string { return r.runID }),
	intCol("token", func(r fencedRun) int { return r.token }),
)

// renewLeases extends the leases of the runs a worker has loaded, each
// under its claim, and reports for each run whether the claim still holds
// it and its event counter, so the worker
// stops the runs it lost and refreshes those that had an event it may not
// have been told about. A run whose row is still under the claim but no
// longer leased is reported ended, not lost: its copy's end or unload
// committed after the worker listed its runs, and the copy has not been
// told yet. Only loaded runs are renewed, so a run this worker
// dropped cannot stay leased. It never waits on a row lock (a row locked
// by a transition or a signal is renewed next time), so it takes no part
// in a deadlock and is not held up behind long transactions.
func (s *store) renewLeases(ctx context.Context, owner string, runs []fencedRun, ttl time.Duration) (map[string]renewal, error) {
	out := make(map[string]renewal, len(runs))
	if len(runs) == 0 {
		return out, nil
	}
	b := renewCols.batch(len(runs))
	for _, r := range runs {
		b.add(r)
	}
	rows, err := s.db.QueryContext(ctx, `WITH mine AS (
			SELECT r.run_id, r.event_seq, `+leased("r")+` AS leased FROM `+s.runs+` r
			JOIN `+renewCols.sql(1, "v")+` ON r.run_id = v.run_id
			WHERE r.lease_owner = $1 AND r.loads = v.token),
		locked AS (
			SELECT r.run_id FROM `+s.runs+` r JOIN mine h ON r.run_id = h.run_id AND h.leased
			WHERE r.lease_owner = $1 AND `+leased("r")+`
			FOR NO KEY UPDATE OF r SKIP LOCKED),
		renewed AS (
			UPDATE `+s.runs+` r SET lease_expires_at = now() + $4::interval, status = 'running', claimed_until = NULL
			FROM locked WHERE r.run_id = locked.run_id)
		SELECT run_id, event_seq, leased FROM mine`,
		append(b.args([]any{owner}), ttlInterval(ttl))...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var seq int64
		var held bool
		if err := rows.Scan(&id, &seq, &held); err != nil {
			return nil, err
		}
		out[id] = renewal{held: held, eventSeq: seq, ended: !held}
	}
	return out, rows.Err()
}

// releaseCols are the runs a worker gives back.
var releaseCols = newUnnest(
	textCol("run_id", func(r *release) string { return r.runID }),
	textCol("owner", func(r *release) string { return r.fence.owner }),
	intCol("token", func(r *release) int { return r.fence.token }),
	timeCol("wake_at", func(r *release) sql.NullTime { return nullTime(r.wakeAt) }),
	jsonbCol("error", func(r *release) []byte { return r.errJSON }),
)

// releaseRuns gives back runs this worker holds, each under its claim's
// fence: they become waiting, due at their wakeAt, and the queue's workers
// are told, so any of them resumes them from their record once due.
// Clearing the owner also fences out writes of this worker still in
// flight. Rows are locked in run ID order, the order other batch writers
// lock them in: the update alone locks them in the order its plan reads
// them (table order when it scans runs), which deadlocked with a writer
// holding one run and waiting for another (TestReleaseNeverDeadlocks).
func (s *store) releaseRuns(ctx context.Context, rs []release) error {
	sort.Slice(rs, func(i, j int) bool { return rs[i].runID < rs[j].runID })
	b := releaseCols.batch(len(rs))
	for i := range rs {
		b.add(&rs[i])
	}
	_, err := s.db.ExecContext(ctx, `WITH v AS (SELECT * FROM `+releaseCols.sql(0, "v")+`),
		lk AS (SELECT x.run_id FROM `+s.runs+` x JOIN v ON x.run_id = v.run_id
			WHERE x.lease_owner = v.owner AND x.loads = v.token AND `+leased("x")+`
			ORDER BY x.run_id FOR NO KEY UPDATE OF x),
		r AS (UPDATE `+s.runs+` x SET status = 'waiting', lease_owner = NULL,
			lease_expires_at = NULL, claimed_until = NULL, wake_at = v.wake_at, error = COALESCE(v.error, x.error), updated_at = now()
		FROM lk JOIN v ON lk.run_id = v.run_id
		WHERE x.run_id = lk.run_id AND x.lease_owner = v.owner AND x.loads = v.token AND `+leased("x")+` RETURNING x.queue)
		SELECT pg_notify($`+fmt.Sprint(len(releaseCols)+1)+`, queue) FROM r`, append(b.args(nil), s.channel[chanWork])...)
	return err
}

// writtenStepCols identify the step records a batch wrote, writtenFinCols
// the transitions it made, each by what only that write leaves (see
// written).
var (
	writtenStepCols = newUnnest(
		textCol("run_id", func(st *stepRow) string { return st.RunID }),
		intCol("seq", func(st *stepRow) int { return st.Seq }),
		textCol("status", func(st *stepRow) string { return st.Status }),
		intCol("attempts", func(st *stepRow) int { return st.Attempts }),
		timeCol("next_attempt_at", func(st *stepRow) sql.NullTime { return st.NextAttemptAt }),
	)
	writtenFinCols = newUnnest(
		textCol("run_id", func(op *writeOp) string { return op.runID }),
		textCol("status", func(op *writeOp) string { return string(op.fin.status) }),
		textCol("owner", func(op *writeOp) string { return op.owner }),
		intCol("token", func(op *writeOp) int { return op.token }),
	)
)

// written reads back which parts of a batch the database holds (see
// committer.readBack). A part is matched by what its write alone leaves,
// not by a state the row may already have been in: a step record by its
// status, attempt count and next attempt's time (a limiter's second
// snooze of a step leaves the status and the count of the first: a
// snooze is no attempt), a transition by its status under the writer's
// claim with the claim's lease ended (a woken run's row stays waiting
// while its worker holds it, and an unload leaves it waiting). Matched by
// status alone, a batch that never committed was taken for committed when
// it held such a record, and its other writes for fenced out: a live
// run's activity start was refused as if its lease were lost.
func (s *store) written(ctx context.Context, q *writtenQuery) (written, error) {
	w := written{steps: map[stepKey]bool{}, runs: map[string]bool{}, fins: map[string]bool{}}
	steps, fins := writtenStepCols.batch(len(q.steps)), writtenFinCols.batch(len(q.fins))
	for _, st := range q.steps {
		steps.add(st)
	}
	for _, op := range q.fins {
		fins.add(op)
	}
	args := fins.args(steps.args(nil))
	rows, err := s.db.QueryContext(ctx, `SELECT 's', st.run_id, st.seq FROM `+s.steps+` st
			JOIN `+writtenStepCols.sql(0, "v")+`
			ON st.run_id = v.run_id AND st.seq = v.seq AND st.status = v.status AND st.attempts = v.attempts
				AND st.next_attempt_at IS NOT DISTINCT FROM v.next_attempt_at
		UNION ALL SELECT 'f', r.run_id, 0 FROM `+s.runs+` r
			JOIN `+writtenFinCols.sql(len(writtenStepCols), "v")+` ON r.run_id = v.run_id AND r.status = v.status
				AND r.lease_owner = v.owner AND r.loads = v.token AND r.claimed_until IS NULL
		UNION ALL SELECT 'r', run_id, 0 FROM `+s.runs+fmt.Sprintf(` WHERE run_id = ANY($%d::text[])`, len(args)+1),
		append(args, pq.Array(q.runIDs))...)
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
