package engine_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// rosterNames records the workers the work notices of a client's process
// name.
type rosterNames struct {
	mu    sync.Mutex
	names []string
}

func (r *rosterNames) add(_, worker string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.names = append(r.names, worker)
}

func (r *rosterNames) named(worker string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, w := range r.names {
		if w == worker {
			n++
		}
	}
	return n
}

// rosterClient is a client in a process of its own (no worker here to take
// its starts eagerly), whose notices the returned record learns of.
func rosterClient(t *testing.T, e *engine.Engine, defs ...engine.Definition) (*engine.Client, *rosterNames) {
	t.Helper()
	c, err := engine.NewClient(engine.ClientConfig{DatabaseURL: testenv.DatabaseURL(), DB: e.DB(), Schema: e.Schema(), Workflows: defs})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	names := &rosterNames{}
	engine.SetWorkNoticeHookForTest(c, names.add)
	return c, names
}

// A worker process killed with SIGKILL keeps its roster row until it
// expires, and the notices of new runs go on naming it in turn with the
// live worker. The runs they announce are still run, by the live worker at
// its next poll: the workflows here start one at a time, each after the
// one before ended, so no notice to the live worker comes after a run sent
// to the dead one and could take it along.
func TestRunsAnnouncedToAKilledWorkerRunElsewhere(t *testing.T) {
	t.Parallel()
	e := testenv.Engine(t, &engine.Config{PollInterval: 100 * time.Millisecond})
	schema, db := e.Schema(), e.DB()
	rbTables(t, db, schema)
	defs := rbProcessDefs(db, schema)
	require.NoError(t, e.Register(defs...))
	dead := rbSpawn(t, schema, 15*time.Second, time.Hour)
	dead.WaitLine(t, rbHelperReady, rbReadyWithin)
	var deadID string
	require.NoError(t, db.QueryRow(`SELECT worker_id FROM `+pq.QuoteIdentifier(schema)+`.workers`).Scan(&deadID))
	dead.Kill(t)
	testenv.Worker(t, e, engine.WorkerConfig{})
	c, names := rosterClient(t, e, defs...)

	ctx := testenv.Ctx(t, 60*time.Second)
	for i := range 4 {
		run, err := c.StartByName(ctx, "proc.fleet", []byte(fmt.Sprint(i)), &engine.StartOptions{ID: fmt.Sprintf("roster-dead-%d", i)})
		require.NoError(t, err)
		out, err := run.Result(ctx)
		require.NoError(t, err, "workflow %d, announced to the killed worker or not, did not run", i)
		require.JSONEq(t, fmt.Sprintf(`"%d:first-done,final-done"`, i), string(out))
	}
	require.Positive(t, names.named(deadID), "no start was announced to the killed worker %s: %q", deadID, names.names)
}

// A worker whose every slot is taken hands on the notices that name it, so
// another worker takes their runs before its own poll (a minute here).
func TestRunsAnnouncedToAFullWorkerRunElsewhere(t *testing.T) {
	t.Parallel()
	release, held := make(chan struct{}), make(chan struct{}, 1)
	defer close(release) // before the workers stop
	hold := engine.NewActivity("roster.hold", func(ctx context.Context, _ struct{}) (struct{}, error) {
		held <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return struct{}{}, nil
	})
	block := engine.NewWorkflow("roster.block", func(ctx engine.Context, _ struct{}) (struct{}, error) {
		return hold.Run(ctx, struct{}{})
	})
	echo := engine.NewWorkflow("roster.echo", func(ctx engine.Context, in int) (int, error) { return in, nil })
	e := testenv.Engine(t, &engine.Config{PollInterval: time.Minute})
	require.NoError(t, e.Register(hold, block, echo))
	c, names := rosterClient(t, e)
	ctx := testenv.Ctx(t, 30*time.Second) // within the poll

	full := testenv.Worker(t, e, engine.WorkerConfig{MaxWorkflows: 1})
	_, err := block.Start(ctx, c, struct{}{}, nil)
	require.NoError(t, err)
	select {
	case <-held: // its one slot is taken
	case <-ctx.Done():
		t.Fatal("the blocking workflow did not start")
	}
	testenv.Worker(t, e, engine.WorkerConfig{})

	for i := range 4 {
		run, err := echo.Start(ctx, c, i, nil)
		require.NoError(t, err)
		got, err := run.Result(ctx)
		require.NoError(t, err, "workflow %d, announced to the full worker or not, did not run", i)
		require.Equal(t, i, got)
	}
	require.Positive(t, names.named(full.ID()), "no start was announced to the full worker: %q", names.names)
}
