package engine_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// foldLog records checkpoint events in a table of the engine's schema:
// folded into the commit statement (via 'fold') when it may, through
// Checkpoint (via 'tx') otherwise. Its function raises while the table
// fold_fail has a row.
type foldLog struct {
	engine.InterceptorBase
	schema string
	fold   atomic.Bool

	mu   sync.Mutex
	rows []engine.CheckpointFoldRow
	// unwritten are the runs Unwritten named.
	unwritten []string
}

func (f *foldLog) setup(t *testing.T, e *engine.Engine) {
	s := pq.QuoteIdentifier(f.schema)
	_, err := e.DB().Exec(`CREATE TABLE ` + s + `.fold_log (workflow_id text, run_id text, kind text, via text);
		CREATE TABLE ` + s + `.fold_fail (x int);
		CREATE FUNCTION ` + s + `.fold_write(wfs text[], runs text[], kinds text[], written text[])
		RETURNS TABLE (a text, b text) LANGUAGE plpgsql AS $$
		BEGIN
			IF EXISTS (SELECT 1 FROM ` + s + `.fold_fail) THEN
				RAISE EXCEPTION 'fold refused';
			END IF;
			RETURN QUERY WITH w AS (INSERT INTO ` + s + `.fold_log
				SELECT v.wf, v.run, v.kind, 'fold' FROM unnest(wfs, runs, kinds) AS v(wf, run, kind)
				WHERE v.run = ANY(written) RETURNING 1)
			SELECT 'n'::text, count(*)::text FROM w;
		END $$`)
	require.NoError(t, err)
}

func (f *foldLog) args(evs []*engine.CheckpointEvent) []any {
	var wfs, runs, kinds []string
	for _, ev := range evs {
		wfs, runs, kinds = append(wfs, ev.WorkflowID), append(runs, ev.RunID), append(kinds, string(ev.Kind))
	}
	return []any{pq.Array(wfs), pq.Array(runs), pq.Array(kinds)}
}

func (f *foldLog) FoldCheckpoint(_ context.Context, evs []*engine.CheckpointEvent) (*engine.CheckpointFold, bool) {
	if !f.fold.Load() {
		return nil, false
	}
	return &engine.CheckpointFold{Func: pq.QuoteIdentifier(f.schema) + ".fold_write", Args: f.args(evs),
		Unwritten: func(runs []string) {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.unwritten = append(f.unwritten, runs...)
		},
		Done: func(_ context.Context, rows []engine.CheckpointFoldRow) {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.rows = append(f.rows, rows...)
		}}, true
}

func (f *foldLog) Checkpoint(ctx context.Context, tx engine.CheckpointTx, evs []*engine.CheckpointEvent) error {
	a := f.args(evs)
	_, err := tx.ExecContext(ctx, `INSERT INTO `+pq.QuoteIdentifier(f.schema)+`.fold_log
		SELECT v.wf, v.run, v.kind, 'tx' FROM unnest($1::text[], $2::text[], $3::text[]) AS v(wf, run, kind)`, a...)
	return err
}

// count counts the log's rows of a workflow by via and kind.
func (f *foldLog) count(t *testing.T, e *engine.Engine, wf, via, kind string) int {
	var n int
	require.NoError(t, e.DB().QueryRow(`SELECT count(*) FROM `+pq.QuoteIdentifier(f.schema)+`.fold_log
		WHERE workflow_id = $1 AND via = $2 AND kind = $3`, wf, via, kind).Scan(&n))
	return n
}

// A CheckpointFolder's write joins the engine's commit statement: the
// checkpoint and the folded write are one transaction (the same xmin), the
// fold's rows reach Done, the events of a start the statement refused
// (already started) are not written, and while the fold's function fails
// the batches go through Checkpoint instead and the runs complete.
func TestCheckpointFoldJoinsTheCommitStatement(t *testing.T) {
	t.Parallel()
	f := &foldLog{}
	f.fold.Store(true)
	e := testenv.Engine(t, &engine.Config{Interceptors: []engine.Interceptor{f}})
	f.schema = e.Schema()
	f.setup(t, e)
	act := engine.NewActivity("fold.double", func(_ context.Context, n int) (int, error) { return 2 * n, nil })
	wf := engine.NewWorkflow("fold.wf", func(ctx engine.Context, n int) (int, error) {
		if n < 0 {
			if _, err := engine.GetSignalChannel[bool](ctx, "release").Receive(ctx); err != nil {
				return 0, err
			}
		}
		return act.Run(ctx, n)
	})
	require.NoError(t, e.Register(act, wf))
	testenv.Worker(t, e, engine.WorkerConfig{})
	ctx := testenv.Ctx(t, 60*time.Second)

	run, err := wf.Start(ctx, e.Client(), 21, &engine.StartOptions{ID: "folded"})
	require.NoError(t, err)
	out, err := run.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, 42, out)
	require.Equal(t, 1, f.count(t, e, "folded", "fold", string(engine.CheckpointActivityCompleted)))
	require.Equal(t, 1, f.count(t, e, "folded", "fold", string(engine.CheckpointWorkflowClosed)))
	require.Zero(t, f.count(t, e, "folded", "tx", string(engine.CheckpointWorkflowClosed)))
	s := pq.QuoteIdentifier(f.schema)
	var same bool
	require.NoError(t, e.DB().QueryRow(`SELECT l.xmin::text = r.xmin::text FROM `+s+`.fold_log l, `+s+`.runs r
		WHERE l.workflow_id = 'folded' AND l.kind = 'workflow_closed' AND r.run_id = l.run_id`).Scan(&same))
	require.True(t, same, "the run's end and the folded write commit together")
	f.mu.Lock()
	require.NotEmpty(t, f.rows)
	require.Equal(t, "n", f.rows[0].A)
	require.Empty(t, f.unwritten, "every event so far was written")
	f.mu.Unlock()

	// A second start of an open workflow ID is refused: its event is not
	// written, and Unwritten names its run (not the open one).
	open, err := wf.Start(ctx, e.Client(), -1, &engine.StartOptions{ID: "open"})
	require.NoError(t, err)
	_, err = wf.Start(ctx, e.Client(), -1, &engine.StartOptions{ID: "open"})
	require.ErrorIs(t, err, engine.ErrAlreadyStarted)
	require.Equal(t, 1, f.count(t, e, "open", "fold", string(engine.CheckpointWorkflowStarted)))
	info, err := open.Describe(ctx)
	require.NoError(t, err)
	f.mu.Lock()
	require.Len(t, f.unwritten, 1)
	require.NotEqual(t, info.RunID, f.unwritten[0])
	f.mu.Unlock()

	// The fold's function fails: Checkpoint writes the batches.
	_, err = e.DB().Exec(`INSERT INTO ` + s + `.fold_fail VALUES (1)`)
	require.NoError(t, err)
	require.NoError(t, e.Client().Signal(ctx, "open", "release", true))
	res, err := open.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, -2, res)
	require.Equal(t, 1, f.count(t, e, "open", "tx", string(engine.CheckpointWorkflowClosed)))
	require.Zero(t, f.count(t, e, "open", "fold", string(engine.CheckpointWorkflowClosed)))

	// A folder that declines: Checkpoint writes.
	f.fold.Store(false)
	_, err = e.DB().Exec(`DELETE FROM ` + s + `.fold_fail`)
	require.NoError(t, err)
	run, err = wf.Start(ctx, e.Client(), 1, &engine.StartOptions{ID: "declined"})
	require.NoError(t, err)
	_, err = run.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, f.count(t, e, "declined", "tx", string(engine.CheckpointWorkflowClosed)))
	require.Zero(t, f.count(t, e, "declined", "fold", string(engine.CheckpointWorkflowClosed)))
}
