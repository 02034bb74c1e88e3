package engine_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// A commit that closes a child and wakes its parent locks both runs (and
// every other run it writes) in run ID order, in one statement, before it
// writes anything: the order a client's cancel of the tree locks them in.
// Here the commit is the worker's own: it closes the child and then waits
// to complete the parent's step, whose row the test holds; the client's
// cancel of the parent comes next, then the test lets the commit go on.
// When the commit locked the child, then (after the step) the parent, and
// the cancel locked the parent and then the child, the two deadlocked
// each time, and the cancel, with no second attempt, failed with
// "deadlock detected" (40P01).
func TestCancelAgreesWithAChildsCommit(t *testing.T) {
	t.Parallel()
	childCommitCase(t, "cancelcommit", func(ctx context.Context, e *engine.Engine, parent string) (string, error) {
		return `cancel_requested_at IS NOT NULL`, e.Client().Cancel(ctx, parent, "test")
	})
}

// A client's reset of the parent locks it, then the children it hands to
// the new run: the order a child's commit locks them in.
func TestResetAgreesWithAChildsCommit(t *testing.T) {
	t.Parallel()
	childCommitCase(t, "resetcommit", func(ctx context.Context, e *engine.Engine, parent string) (string, error) {
		_, err := e.Client().Reset(ctx, parent, engine.ResetOptions{BeforeSeq: 1})
		return `status = 'reset'`, err
	})
}

// commitOrder is a parent run and its child, "<name>-parent" and
// "<name>-child", in a worker whose commits wait a minute for their locks
// (CommitTimeout) and look for a deadlock 10s after a wait begins. A
// deadlock then fails the client's transaction, which waits first and
// makes one attempt, not the commit.
type commitOrder struct {
	t      *testing.T
	name   string
	schema string // quoted
	e      *engine.Engine
	ctx    context.Context
	parent *engine.RunHandle
}

// newCommitOrder starts the parent, whose child runs childFn, and waits
// until both are marked running; defs are registered too.
func newCommitOrder(t *testing.T, name string, childFn func(engine.Context, int) (int, error), defs ...engine.Definition) *commitOrder {
	schema := testenv.Schema(t)
	child := engine.NewWorkflow(name+".child", childFn)
	parent := engine.NewWorkflow(name+".parent", func(ctx engine.Context, _ int) (string, error) {
		if _, err := child.RunChild(ctx, 0, &engine.ChildOptions{ID: name + "-child"}); err != nil {
			return "", err
		}
		return engine.GetSignalChannel[string](ctx, "go").Receive(ctx)
	})
	cfg := &engine.Config{Schema: schema, LeaseTTL: 10 * time.Minute, UnloadAfter: time.Hour, CommitTimeout: time.Minute}
	deadlockCheckAfter(t, cfg, "10s")
	e := testenv.Engine(t, cfg)
	require.NoError(t, e.Register(append(defs, child, parent)...))
	engine.SetClientConflictAttemptsForTest(e, 1)
	lsWorker(t, e, engine.WorkerConfig{ID: name + "-owner"}, nil)
	c := &commitOrder{t: t, name: name, schema: fmt.Sprintf("%q", schema), e: e, ctx: testenv.Ctx(t, 60*time.Second)}
	run, err := parent.Start(c.ctx, e.Client(), 0, &engine.StartOptions{ID: name + "-parent"})
	require.NoError(t, err)
	c.parent = &run.RunHandle
	// Both marked running (a second after their claims): nothing but the
	// child's end writes them from here on.
	testenv.Eventually(t, 20*time.Second, func() bool { return c.count(`status = 'running'`) == 2 }, "runs marked running")
	return c
}

// count counts the case's runs for which cond holds.
func (c *commitOrder) count(cond string, args ...any) int {
	var n int
	require.NoError(c.t, c.e.DB().QueryRow(`SELECT count(*) FROM `+c.schema+`.runs WHERE `+cond, args...).Scan(&n))
	return n
}

// waitLocks waits until n of the case's statements wait for a lock.
func (c *commitOrder) waitLocks(n int, what string) {
	testenv.Eventually(c.t, 20*time.Second, func() bool {
		var waiting int
		require.NoError(c.t, c.e.DB().QueryRow(`SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'
			AND query LIKE '%'||$1||'%'`, c.schema).Scan(&waiting))
		return waiting == n
	}, "%s never waited", what)
}

// hold locks, in a transaction of the test, the rows query selects; the
// returned function releases them.
func (c *commitOrder) hold(query string, args ...any) func() {
	tx, err := c.e.DB().BeginTx(c.ctx, nil)
	require.NoError(c.t, err)
	c.t.Cleanup(func() { _ = tx.Rollback() })
	_, err = tx.Exec(query, args...)
	require.NoError(c.t, err)
	return func() { require.NoError(c.t, tx.Commit()) }
}

// cross runs writer once the child's commit waits (after start), lets the
// commit go on (release) once the writer waits too, and returns the
// writer's error. The child must then complete.
func (c *commitOrder) cross(start, release func(), writer func() error) error {
	start()
	c.waitLocks(1, "the child's commit")
	done := make(chan error, 1)
	go func() { done <- writer() }()
	c.waitLocks(2, "the "+c.name)
	release()
	err := lsRecv(c.t, c.ctx, done)
	testenv.Eventually(c.t, 20*time.Second, func() bool {
		return c.count(`workflow_id = $1 AND status = 'completed'`, c.name+"-child") == 1
	}, "the child never completed")
	return err
}

// childCommitCase holds the parent's step rows while its child closes:
// the child's commit waits for them, and writer comes while it waits.
// writer must not fail, and the parent's run must then match the
// condition it returns.
func childCommitCase(t *testing.T, name string, writer func(ctx context.Context, e *engine.Engine, parent string) (string, error)) {
	c := newCommitOrder(t, name, func(ctx engine.Context, _ int) (int, error) {
		return engine.GetSignalChannel[int](ctx, "go").Receive(ctx)
	})
	release := c.hold(`SELECT 1 FROM `+c.schema+`.steps WHERE run_id = $1 FOR NO KEY UPDATE`, c.parent.RunID)
	var cond string
	err := c.cross(func() { require.NoError(t, c.e.Client().Signal(c.ctx, name+"-child", "go", 1)) }, release, func() (err error) {
		cond, err = writer(c.ctx, c.e, name+"-parent")
		return err
	})
	require.NoError(t, err, "the %s", name)
	require.Equal(t, 1, c.count(`run_id = $1 AND `+cond, c.parent.RunID), "the parent after the %s", name)
}

// A reset locks the run it replaces and the children it hands to the new
// run in one statement, in run ID order. A run made by a reset adopts its
// predecessor's open children, whose IDs are lower than its own: when the
// reset locked that run first, then its children, it crossed a commit that
// closes such a child and wakes its parent (child first, by run ID). Here
// the test holds the child's row while the child's commit waits for it,
// then the reset comes, then the test lets the commit go on.
func TestResetAgreesWithACommitOfAnAdoptedChild(t *testing.T) {
	t.Parallel()
	adoptedChildCase(t, "resetadopted", func(ctx context.Context, ce *engine.Engine, workflowID string) error {
		_, err := ce.Client().Reset(ctx, workflowID, engine.ResetOptions{BeforeSeq: 1})
		return err
	})
}

// ResetManyTx locks the latest runs and the children it hands to the new
// runs in one statement, in run ID order, as Reset does: when it locked
// the runs, then their children, it crossed a commit that closes an
// adopted child and wakes its parent, and failed with "deadlock detected"
// (40P01).
func TestResetManyAgreesWithACommitOfAnAdoptedChild(t *testing.T) {
	t.Parallel()
	adoptedChildCase(t, "resetmanyadopted", func(ctx context.Context, ce *engine.Engine, workflowID string) error {
		tx, err := ce.DB().BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer func() { _ = tx.Rollback() }()
		res, err := ce.Client().ResetManyTx(ctx, tx, []string{workflowID}, engine.ResetOptions{BeforeSeq: 1})
		if err != nil {
			return err
		}
		if res[0].Err != nil {
			return res[0].Err
		}
		return tx.Commit()
	})
}

// adoptedChildCase resets the parent of "<name>-parent", whose new run
// adopts the child, and then, while the child's commit waits for the
// child's row the test holds, resets it again with writer.
func adoptedChildCase(t *testing.T, name string, writer func(ctx context.Context, ce *engine.Engine, workflowID string) error) {
	finish := make(chan struct{})
	block := engine.NewActivity(name+".block", func(ctx context.Context, _ int) (int, error) {
		select {
		case <-finish:
			return 1, nil
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	})
	c := newCommitOrder(t, name, func(ctx engine.Context, _ int) (int, error) { return block.Run(ctx, 0) }, block)
	adopter, err := c.e.Client().Reset(c.ctx, name+"-parent", engine.ResetOptions{BeforeSeq: 1})
	require.NoError(t, err)
	var childRun string
	require.NoError(t, c.e.DB().QueryRow(`SELECT run_id FROM `+c.schema+`.runs WHERE workflow_id = $1`, name+"-child").Scan(&childRun))
	require.Less(t, childRun, adopter.RunID, "the adopted child's run ID")
	testenv.Eventually(t, 20*time.Second, func() bool {
		return c.count(`status = 'running' AND (run_id = $1 OR (run_id = $2 AND parent_run_id = $1))`, adopter.RunID, childRun) == 2
	}, "the new run and its adopted child marked running")

	// The reset starts its last wait as the commit does (when the test
	// lets the commit take the child's row and go on to the parent), so
	// it comes from another engine whose sessions look for a deadlock
	// 1s after a wait begins: the reset, not the commit, is then the one
	// PostgreSQL cancels.
	ccfg := &engine.Config{Schema: c.e.Schema()}
	deadlockCheckAfter(t, ccfg, "1s")
	ce := testenv.Engine(t, ccfg)
	engine.SetClientConflictAttemptsForTest(ce, 1)
	release := c.hold(`SELECT 1 FROM `+c.schema+`.runs WHERE run_id = $1 FOR NO KEY UPDATE`, childRun)
	err = c.cross(func() { close(finish) }, release, func() error { return writer(c.ctx, ce, name+"-parent") })
	require.NoError(t, err, "the reset")
	require.Equal(t, 1, c.count(`run_id = $1 AND status = 'reset'`, adopter.RunID), "the adopting run after the reset")
}
