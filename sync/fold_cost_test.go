package graftsync_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/cpustat"
	"github.com/graftdev/graft/internal/devenv"
	graftsync "github.com/graftdev/graft/sync"
)

// TestFoldCost measures the fold function's backend CPU in the steady state
// of graft bench -with mirror (GRAFT_FOLD_COST=rounds; GRAFT_FOLD_COST_W
// workflows a batch, default 26). Each round is one transaction that calls
// the fold with the events of W workflows at each of their five
// checkpoints (start, three activities, end), as the bench's batches carry
// them, then Done; the backend's CPU is read from /proc/<pid>/schedstat
// (Linux, PostgreSQL on this machine). It prints the median per round and
// per workflow of five slices of the rounds; it asserts nothing.
func TestFoldCost(t *testing.T) {
	spec := os.Getenv("GRAFT_FOLD_COST")
	if spec == "" {
		t.Skip("GRAFT_FOLD_COST not set")
	}
	rounds, err := strconv.Atoi(spec)
	require.NoError(t, err)
	w := 26
	if v := os.Getenv("GRAFT_FOLD_COST_W"); v != "" {
		w, err = strconv.Atoi(v)
		require.NoError(t, err)
	}
	ctx := context.Background()
	db, err := sqlx.Open("postgres", devenv.DatabaseURL())
	require.NoError(t, err)
	defer db.Close()
	schema := fmt.Sprintf("foldcost_%d", time.Now().UnixNano())
	defer func() { _, _ = db.Exec(`DROP SCHEMA ` + schema + ` CASCADE`) }()
	_, err = db.Exec(`CREATE SCHEMA ` + schema + `;
CREATE TABLE ` + schema + `.operations (
	id text PRIMARY KEY, kind text NOT NULL DEFAULT 'bench', status text NOT NULL DEFAULT 'todo', step text,
	attempts int NOT NULL DEFAULT 0, last_error text, updated_at timestamptz NOT NULL DEFAULT now(), version bigint);
CREATE INDEX ON ` + schema + `.operations (status)`)
	require.NoError(t, err)
	n := (rounds + 5) * w
	_, err = db.Exec(`INSERT INTO `+schema+`.operations (id) SELECT 'bench-' || g FROM generate_series(0, $1 - 1) g`, n)
	require.NoError(t, err)
	_, err = db.Exec(`ANALYZE ` + schema + `.operations`)
	require.NoError(t, err)
	mr, err := graftsync.New(ctx, graftsync.Config{Mapping: graftsync.Mapping{
		Table: schema + ".operations",
		Key:   graftsync.Key{Column: "id"},
		// The states the rounds go through, and needs_operator, which
		// takes a value of its own in the statement.
		Status: &graftsync.StatusColumn{Column: "status", Values: map[graftsync.State]string{graftsync.StatePending: "todo",
			graftsync.StateRunning: "doing", graftsync.StateCompleted: "done", graftsync.StateNeedsOperator: "problem"}},
		Step:     &graftsync.StepColumn{Column: "step", Labels: map[string]string{"bench.noop": "noop"}},
		Error:    &graftsync.ErrorColumn{Column: "last_error"},
		Attempts: "attempts", UpdatedAt: "updated_at", Version: "version",
	}, DB: db, Schema: schema})
	require.NoError(t, err)
	defer mr.Close()

	// The measuring connection prints what the server tells it: with
	// GRAFT_FOLD_COST_EXPLAIN set, auto_explain's plans of the fold's
	// statements, analyzed, at the round it names.
	base, err := pq.NewConnector(devenv.DatabaseURL())
	require.NoError(t, err)
	mdb := sqlx.NewDb(sql.OpenDB(pq.ConnectorWithNoticeHandler(base, func(e *pq.Error) { fmt.Println(e.Message) })), "postgres")
	defer mdb.Close()
	cn, err := mdb.Conn(ctx)
	require.NoError(t, err)
	defer cn.Close()
	explainAt := -1
	if v := os.Getenv("GRAFT_FOLD_COST_EXPLAIN"); v != "" {
		explainAt, err = strconv.Atoi(v)
		require.NoError(t, err)
	}
	var pid int
	require.NoError(t, cn.QueryRowContext(ctx, `SELECT pg_backend_pid()`).Scan(&pid))
	sched := cpustat.OpenSched(pid)
	require.NotNil(t, sched, "the backend's /proc/<pid>/schedstat")
	defer sched.Close()
	cpu := func() int64 {
		v := sched.NS()
		require.NotEqual(t, int64(-1), v)
		return v
	}
	// The events of round r: group r starts, group r-k runs its k-th
	// checkpoint.
	events := func(r int) (evs []*engine.CheckpointEvent, written []string) {
		now := time.Now()
		for k := 4; k >= 0; k-- {
			g := r - k
			if g < 0 {
				continue
			}
			for i := range w {
				id := "bench-" + strconv.Itoa(g*w+i)
				ev := &engine.CheckpointEvent{WorkflowID: id, RunID: "run-" + id, WorkflowType: "bench.three", Seq: k + 1, At: now,
					Status: engine.StatusRunning}
				switch k {
				case 0:
					ev.Kind = engine.CheckpointWorkflowStarted
				case 4:
					ev.Kind, ev.Status = engine.CheckpointWorkflowClosed, engine.StatusCompleted
				default:
					ev.Kind, ev.ActivityName, ev.Attempt = engine.CheckpointActivityCompleted, "bench.noop", 1
				}
				evs = append(evs, ev)
				written = append(written, ev.RunID)
			}
		}
		return evs, written
	}
	// The round's transaction alone: BEGIN, SELECT, COMMIT, SELECT 1.
	var idle []float64
	for range 200 {
		c0 := cpu()
		tx, err := cn.BeginTx(ctx, nil)
		require.NoError(t, err)
		_, err = tx.ExecContext(ctx, `SELECT 'x', 'y'`)
		require.NoError(t, err)
		require.NoError(t, tx.Commit())
		_, err = cn.ExecContext(ctx, `SELECT 1`)
		require.NoError(t, err)
		idle = append(idle, float64(cpu()-c0)/1000)
	}
	sort.Float64s(idle)
	fmt.Printf("fold cost: an empty round %.0f us\n", idle[len(idle)/2])
	var per []float64
	var call *sql.Stmt
	for r := range rounds + 4 {
		evs, written := events(r)
		fold, ok := mr.FoldCheckpoint(ctx, evs)
		require.True(t, ok)
		args := append(append([]any{}, fold.Args...), pq.Array(written))
		ph := make([]string, len(args))
		for i := range ph {
			ph[i] = "$" + strconv.Itoa(i+1)
		}
		if r == explainAt {
			_, err := cn.ExecContext(ctx, `LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0; SET auto_explain.log_analyze = on;
				SET auto_explain.log_buffers = on; SET auto_explain.log_nested_statements = on; SET client_min_messages = log`)
			require.NoError(t, err)
		}
		// Prepared once, as the engine's statements are: the round then
		// costs no parse and plan of the call.
		if call == nil {
			call, err = cn.PrepareContext(ctx, `SELECT * FROM `+fold.Func+`(`+strings.Join(ph, ", ")+`)`)
			require.NoError(t, err)
			defer call.Close()
		}
		c0 := cpu()
		tx, err := cn.BeginTx(ctx, nil)
		require.NoError(t, err)
		rows, err := tx.StmtContext(ctx, call).QueryContext(ctx, args...)
		require.NoError(t, err)
		var got []engine.CheckpointFoldRow
		for rows.Next() {
			var fr engine.CheckpointFoldRow
			require.NoError(t, rows.Scan(&fr.A, &fr.B))
			got = append(got, fr)
		}
		require.NoError(t, rows.Err())
		require.NoError(t, tx.Commit())
		_, err = cn.ExecContext(ctx, `SELECT 1`)
		require.NoError(t, err)
		if r == explainAt {
			_, err := cn.ExecContext(ctx, `SET client_min_messages = notice; SET auto_explain.log_min_duration = -1`)
			require.NoError(t, err)
		}
		if r >= 4 && r != explainAt {
			per = append(per, float64(cpu()-c0)/1000)
		}
		fold.Done(ctx, got)
	}
	var wrote int
	require.NoError(t, db.QueryRow(`SELECT count(*) FROM `+schema+`.operations WHERE status = 'done' AND version IS NOT NULL`).Scan(&wrote))
	require.Equal(t, rounds, wrote/w)
	slices := 5
	for s := range slices {
		part := append([]float64(nil), per[s*len(per)/slices:(s+1)*len(per)/slices]...)
		sort.Float64s(part)
		med := part[len(part)/2]
		fmt.Printf("fold cost slice %d: median %.0f us a round, %.1f us a workflow\n", s, med, med/float64(w))
	}
}
