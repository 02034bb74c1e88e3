package main

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/grafttest"
)

// graft records exports runs that a test then replays with the same code
// (and would report with changed code: see grafttest's tests).
func TestRecordsCommand(t *testing.T) {
	t.Parallel()
	step := engine.NewActivity("records.step", func(_ context.Context, s string) (string, error) { return s + "!", nil })
	wf := engine.NewWorkflow("records.wf", func(ctx engine.Context, s string) (string, error) { return step.Run(ctx, s) })
	e := grafttest.NewEngine(t)
	require.NoError(t, e.Register(wf, step))
	grafttest.StartWorker(t, e)
	ctx := grafttest.Context(t, time.Minute)
	r, err := wf.Start(ctx, e.Client(), "hi", nil)
	require.NoError(t, err)
	_, err = r.Result(ctx)
	require.NoError(t, err)

	path := filepath.Join(t.TempDir(), "runs.json")
	_, err = run(t, "records", "--schema", e.Schema(), "--type", "records.wf", "--status", "completed", "--out", path)
	require.NoError(t, err)
	grafttest.ReplayFile(t, path, wf)

	out, err := run(t, "records", "--schema", e.Schema(), "--run", r.RunID, "--out", "-")
	require.NoError(t, err)
	runs, err := engine.ReadRecords([]byte(out))
	require.NoError(t, err)
	require.Len(t, runs, 1)
	require.Equal(t, r.RunID, runs[0].RunID)
	require.Len(t, runs[0].Steps, 1)

	_, err = run(t, "records", "--schema", e.Schema())
	require.ErrorContains(t, err, "--out is required")
	_, err = run(t, "records", "--schema", e.Schema(), "--run", "nope", "--out", "-")
	require.ErrorIs(t, err, engine.ErrNotFound)
	// A wrong status or schema is named, not answered with "0 runs written"
	// or PostgreSQL's "relation ... does not exist".
	_, err = run(t, "records", "--schema", e.Schema(), "--status", "done", "--out", path)
	require.ErrorContains(t, err, `--status "done" is not a run status (pending, running, waiting, completed, failed, cancelled, continued, reset)`)
	_, err = run(t, "records", "--schema", e.Schema()+"_nope", "--out", path)
	require.ErrorContains(t, err, `schema "`+e.Schema()+`_nope" holds no graft runs table`)
}
