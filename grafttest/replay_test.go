package grafttest_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/grafttest"
)

var (
	reserve = engine.NewActivity("order.reserve", func(_ context.Context, item string) (string, error) { return "R-" + item, nil })
	charge  = engine.NewActivity("order.charge", func(_ context.Context, item string) (string, error) { return "C-" + item, nil })
	ship    = engine.NewActivity("order.ship", func(_ context.Context, item string) (string, error) { return "S-" + item, nil })
)

// order builds the "order" workflow as deployed (steps reserve, a "go"
// signal, charge) and as changed by a later version of the code.
func order(steps ...*engine.Activity[string, string]) *engine.Workflow[string, string] {
	return engine.NewWorkflow("order", func(ctx engine.Context, item string) (string, error) {
		out := ""
		for i, a := range steps {
			if i == 1 {
				if _, err := engine.GetSignalChannel[string](ctx, "go").Receive(ctx); err != nil {
					return "", err
				}
			}
			r, err := a.Run(ctx, item)
			if err != nil {
				return "", err
			}
			out += r + " "
		}
		return out, nil
	})
}

// Runs recorded with one version of a workflow (two closed, one open and
// waiting for its signal) replay against the same code, from the database
// and from an exported file; a changed version is reported with the step,
// what the record holds and what the code asked for.
func TestReplayReportsChangedWorkflow(t *testing.T) {
	t.Parallel()
	deployed := order(reserve, charge)
	e := grafttest.NewEngine(t)
	require.NoError(t, e.Register(deployed, reserve, charge))
	grafttest.StartWorker(t, e)
	c := e.Client()
	ctx := grafttest.Context(t, time.Minute)
	for _, id := range []string{"o1", "o2", "o3"} {
		_, err := deployed.Start(ctx, c, id, &engine.StartOptions{ID: id})
		require.NoError(t, err)
	}
	for _, id := range []string{"o1", "o2"} {
		require.NoError(t, c.Signal(ctx, id, "go", ""))
		h, err := c.Handle(ctx, id)
		require.NoError(t, err)
		grafttest.WaitStatus(t, h, engine.StatusCompleted)
	}
	grafttest.Eventually(t, func() bool {
		r, err := c.Handle(ctx, "o3")
		if err != nil {
			return false
		}
		rec, err := c.Record(ctx, r.RunID)
		return err == nil && len(rec.Steps) == 1 && rec.Steps[0].Status == "completed"
	}, "o3 reserved and waiting for its signal")

	// The same code replays every run, from the database and from a file.
	grafttest.ReplayDatabase(t, c, engine.ListFilter{}, deployed)
	path := filepath.Join(t.TempDir(), "orders.json")
	grafttest.ExportRecords(t, c, engine.ListFilter{}, path)
	grafttest.ReplayFile(t, path, deployed)
	runs := grafttest.Records(t, c, engine.ListFilter{})
	require.Len(t, runs, 3)

	replay := func(wf *engine.Workflow[string, string]) map[string]*engine.NonDeterminismError {
		r, err := engine.NewReplayer(wf)
		require.NoError(t, err)
		out := map[string]*engine.NonDeterminismError{}
		for _, run := range runs {
			err := r.Replay(ctx, run)
			if err == nil {
				continue
			}
			var re *engine.ReplayError
			require.ErrorAs(t, err, &re)
			require.Equal(t, run.RunID, re.RunID)
			var nd *engine.NonDeterminismError
			require.True(t, errors.As(err, &nd), "%v", err)
			out[run.WorkflowID] = nd
		}
		return out
	}
	require.Empty(t, replay(deployed))

	// Another activity in place of charge: the closed runs are reported at
	// step 3 (1 reserve, 2 the signal); the open run has not got there.
	got := replay(order(reserve, ship))
	require.Len(t, got, 2)
	for _, id := range []string{"o1", "o2"} {
		require.Equal(t, 3, got[id].Seq)
		require.Equal(t, `activity "order.charge"`, got[id].Recorded)
		require.Equal(t, `activity "order.ship"`, got[id].Requested)
	}

	// A step removed: the closed runs return before their record ends.
	got = replay(order(reserve))
	require.Len(t, got, 2)
	require.Equal(t, 2, got["o1"].Seq)
	require.Equal(t, `signal "go"`, got["o1"].Recorded)
	require.Equal(t, "the workflow's return", got["o1"].Requested)

	// A step added at the end: the closed runs ask for a step past their
	// record; the open run is still replayable.
	got = replay(order(reserve, charge, ship))
	require.Len(t, got, 2)
	require.Equal(t, 4, got["o2"].Seq)
	require.Equal(t, "another step", got["o2"].Requested)

	// A file in another format is refused with a clear error.
	_, err := engine.ReadRecords([]byte(`{"format":"x","runs":[]}`))
	require.ErrorContains(t, err, `format "x"`)
}
