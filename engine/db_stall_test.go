//go:build unix

package engine_test

import (
	"fmt"
	"log/slog"
	"syscall"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// The backends serving an engine are stopped (SIGSTOP) while its runs have
// an activity in flight, as a hung host or a blackholed network would stop
// them: the activities' outcomes, whose commits went to the stopped
// backends, are committed over new connections while the old ones are
// still stopped (each commit ends at CommitTimeout; its connection, whose
// server did not answer the cancellation, is given up and its backend
// terminated). Once the old backends resume they only die: no statement
// sent to them runs late, nothing is written twice, no activity runs again.
func TestStalledBackendsDoNotHoldCommits(t *testing.T) {
	t.Parallel()
	pg := testenv.PrivatePostgres(t)
	app := "stalled"
	dsn := dfWithAppName(t, pg.URL, app)
	db, err := engine.OpenDB(dsn)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	db.SetMaxOpenConns(6)
	admin, err := sqlx.Open("postgres", dfWithAppName(t, pg.URL, "admin"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = admin.Close() })

	logs := &dfLog{}
	var calls ftCounter
	gate := make(chan struct{})
	act, wf := dfWorkflow("df.stall", 4, &calls, gate, 2)
	e := testenv.Engine(t, &engine.Config{DB: db, DatabaseURL: dsn, Schema: "graft", Logger: slog.New(logs),
		CommitTimeout: time.Second, LeaseTTL: time.Minute})
	require.NoError(t, e.Register(act, wf))
	testenv.Worker(t, e, engine.WorkerConfig{})
	ctx := testenv.Ctx(t, 120*time.Second)
	t.Cleanup(func() {
		if t.Failed() {
			logs.dump(t)
		}
	})

	const n = 10
	var runs []*engine.Run[int]
	for i := 0; i < n; i++ {
		run, err := wf.Start(ctx, e.Client(), 0, &engine.StartOptions{ID: fmt.Sprintf("s-%d", i)})
		require.NoError(t, err)
		runs = append(runs, run)
	}
	testenv.Eventually(t, 30*time.Second, func() bool { return calls.get("gated") == n }, "activities never reached the gate")

	// Stop every idle backend of the engine (its pool and its LISTEN
	// connection); what it sends them next is queued, unread.
	var pids []int
	require.NoError(t, admin.SelectContext(ctx, &pids,
		`SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND state = 'idle'`, app))
	require.NotEmpty(t, pids)
	for _, pid := range pids {
		require.NoError(t, syscall.Kill(pid, syscall.SIGSTOP))
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			for _, pid := range pids {
				_ = syscall.Kill(pid, syscall.SIGCONT)
			}
		}
	}
	t.Cleanup(resume)

	close(gate) // the outcomes are written to the stopped backends
	for _, run := range runs {
		out, err := run.Result(ctx)
		require.NoError(t, err, "run %s never completed while its backends were stopped", run.WorkflowID)
		require.Equal(t, 4, out)
	}
	require.Positive(t, logs.count("engine: commit failed"), "no commit met a stopped backend")

	// The stopped backends resume. Those a commit was given up on were
	// terminated, so none of them runs what was queued for it; the others
	// (the LISTEN connection, pooled ones no query reached) carry on.
	resume()
	var ended int
	testenv.Eventually(t, 60*time.Second, func() bool {
		var busy int
		err := admin.GetContext(ctx, &busy, `SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1) AND state <> 'idle'`, pq.Array(pids))
		if err != nil || busy > 0 {
			return false
		}
		var left int
		err = admin.GetContext(ctx, &left, `SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)`, pq.Array(pids))
		ended = len(pids) - left
		return err == nil
	}, "the stopped backends never settled")
	require.Positive(t, ended, "no stopped backend was terminated")
	t.Logf("%d backends stopped, %d terminated; %d commits retried", len(pids), ended, logs.count("engine: commit failed"))
	dfRequireOnce(t, &calls, n*4)
	for _, run := range runs {
		h, err := e.Client().History(ctx, run.WorkflowID)
		require.NoError(t, err)
		require.Len(t, h, 1)
		require.Equal(t, engine.StatusCompleted, h[0].Run.Status)
		require.Len(t, h[0].Steps, 4)
		for _, st := range h[0].Steps {
			require.Equal(t, "completed", st.Status, "run %s step %d", run.WorkflowID, st.Seq)
		}
	}
}
