//go:build unix

package engine_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// stallFold folds every batch into the commit statement with a function
// that waits for advisory lock 4243, then raises: every fold is refused,
// and the batch is written again through Checkpoint (which writes nothing).
type stallFold struct {
	engine.InterceptorBase
	fn string
}

func (f *stallFold) setup(t *testing.T, e *engine.Engine) {
	t.Helper()
	f.fn = pq.QuoteIdentifier(e.Schema()) + ".fold_stall"
	_, err := e.DB().Exec(`CREATE FUNCTION ` + f.fn + `(written text[]) RETURNS TABLE (a text, b text)
		LANGUAGE plpgsql AS $$
		BEGIN
			PERFORM pg_advisory_xact_lock(4243);
			RAISE EXCEPTION 'fold refused';
		END $$`)
	require.NoError(t, err)
}

func (f *stallFold) FoldCheckpoint(context.Context, []*engine.CheckpointEvent) (*engine.CheckpointFold, bool) {
	return &engine.CheckpointFold{Func: f.fn}, true
}

func (f *stallFold) Checkpoint(context.Context, engine.CheckpointTx, []*engine.CheckpointEvent) error {
	return nil
}

// A folded commit statement is refused while every connection of the pool
// is taken: the batch, written again through Checkpoint, waits for a
// connection no longer than the commit's bound, says so (a wait for a
// connection, retried as a connection fault), and once the pool is free
// the run completes with each activity run once. Before, the second write
// ran under the context of the first, whose wait for a connection
// database/sql no longer bounded once a statement had been sent under it
// (pgconn.WithDeadline): it waited for as long as the pool stayed full.
func TestRefusedFoldDoesNotWaitForThePoolPastItsBound(t *testing.T) {
	t.Parallel()
	app := "refusedfold"
	dsn, db, admin := dfStallPools(t, app, 2)
	logs := &dfLog{}
	f := &stallFold{}
	// CommitTimeout leaves the test time to fill the pool while the fold
	// waits, within the statement's bound.
	e := testenv.Engine(t, &engine.Config{DB: db, DatabaseURL: dsn, Schema: "graft", Logger: slog.New(logs),
		CommitTimeout: 10 * time.Second, LeaseTTL: time.Minute, Interceptors: []engine.Interceptor{f}})
	f.setup(t, e)
	var calls ftCounter
	gate := make(chan struct{})
	act, wf := dfWorkflow("df.refusedfold", 3, &calls, gate, 1)
	require.NoError(t, e.Register(act, wf))
	testenv.Worker(t, e, engine.WorkerConfig{})
	ctx := testenv.Ctx(t, 150*time.Second)
	logs.dumpIfFailed(t)
	runs := dfStartGated(ctx, t, e, wf, &calls, "rf", 1)

	// The admin session takes both locks; one statement of the pool waits
	// for 4242, holding a connection.
	hold := dfHoldPool(ctx, t, db, admin, app, 1, 4243)

	// The outcome's commit: its folded statement takes the pool's other
	// connection and waits in the fold's function.
	close(gate)
	testenv.Eventually(t, 30*time.Second, func() bool { return dfWaitingFor(ctx, admin, app, 4243) > 0 },
		"the folded statement never waited in its function")
	// The pool shrinks to the held connection: the folded statement's, put
	// back, is closed, and the batch written again finds the pool full.
	db.SetMaxOpenConns(1)
	_, err := hold.lock.ExecContext(ctx, `SELECT pg_advisory_unlock(4243)`)
	require.NoError(t, err)
	testenv.Eventually(t, 60*time.Second, func() bool {
		return logs.count("engine: commit failed; retrying err=wait for a database connection") > 0
	}, "the batch written again after a refused fold waited for a pool connection past its bound")

	db.SetMaxOpenConns(2)
	hold.release(t)
	out, err := runs[0].Result(ctx)
	require.NoError(t, err)
	require.Equal(t, 3, out)
	require.Positive(t, logs.count("engine: a checkpoint fold failed"))
	dfRequireOnce(t, &calls, 3)
}

// txCheckpoint is a checkpoint interceptor that writes nothing: batches
// with checkpoint events commit in a transaction.
type txCheckpoint struct{ engine.InterceptorBase }

func (txCheckpoint) Checkpoint(context.Context, engine.CheckpointTx, []*engine.CheckpointEvent) error {
	return nil
}

// A commit in a transaction prepares its statement on the pool the first
// time (see hotStmt), which takes a second connection while the
// transaction holds one: with every other connection of the pool held,
// that wait ends at the commit's bound, and says so (a wait for a
// connection, retried as a connection fault); once the pool is free the
// run completes with each activity run once. Before, the preparation ran
// under the transaction's context, whose wait for a connection
// database/sql did not bound while the transaction held one
// (pgconn.WithDeadline): it waited for as long as the pool stayed full.
func TestCommitInTxDoesNotWaitForThePoolPastItsBound(t *testing.T) {
	t.Parallel()
	app := "txprepare"
	dsn, db, admin := dfStallPools(t, app, 2)
	logs := &dfLog{}
	e := testenv.Engine(t, &engine.Config{DB: db, DatabaseURL: dsn, Schema: "graft", Logger: slog.New(logs),
		CommitTimeout: time.Second, LeaseTTL: time.Minute, Interceptors: []engine.Interceptor{txCheckpoint{}}})
	var calls ftCounter
	act, wf := dfWorkflow("df.txprepare", 2, &calls, nil, 0)
	require.NoError(t, e.Register(act, wf))
	ctx := testenv.Ctx(t, 150*time.Second)
	logs.dumpIfFailed(t)

	// One statement of the pool waits for a lock the admin session holds,
	// holding a connection, before the engine has committed anything.
	hold := dfHoldPool(ctx, t, db, admin, app, 1)

	testenv.Worker(t, e, engine.WorkerConfig{})
	t.Cleanup(hold.unlock) // before the worker stops
	// The start commits in the committer (and runs the workflow here).
	started := make(chan error, 1)
	var run *engine.Run[int]
	go func() {
		var err error
		run, err = wf.Start(ctx, e.Client(), 0, &engine.StartOptions{ID: "tp"})
		started <- err
	}()
	testenv.Eventually(t, 60*time.Second, func() bool {
		return logs.count("engine: commit failed; retrying err=wait for a database connection") > 0
	}, "a commit in a transaction waited for a pool connection past its bound")

	hold.release(t)
	require.NoError(t, <-started)
	out, err := run.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, 2, out)
	dfRequireOnce(t, &calls, 2)
}
