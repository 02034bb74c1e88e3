package engine_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/grafttest"
)

type typedReceipt struct {
	Domain string
	Years  int
}

// An untyped handle (Client.Handle, Client.Reset) gives a typed result
// through engine.Typed, and describes its own run, not the latest one.
func TestTypedHandle(t *testing.T) {
	t.Parallel()
	var fixed atomic.Bool
	charge := engine.NewActivity("typed.charge", func(_ context.Context, d string) (string, error) {
		if !fixed.Load() {
			return "", engine.NewNonRetryableError("CardDeclined", "declined", nil)
		}
		return d, nil
	})
	wf := engine.NewWorkflow("typed.renew", func(ctx engine.Context, d string) (typedReceipt, error) {
		got, err := charge.Run(ctx, d)
		return typedReceipt{Domain: got, Years: 2}, err
	})
	e := grafttest.NewEngine(t)
	require.NoError(t, e.Register(wf, charge))
	grafttest.StartWorker(t, e)
	c := e.Client()
	ctx := grafttest.Context(t, time.Minute)

	_, err := wf.Start(ctx, c, "example.org", &engine.StartOptions{ID: "typed-1"})
	require.NoError(t, err)
	h, err := c.Handle(ctx, "typed-1")
	require.NoError(t, err)
	failed := grafttest.WaitStatus(t, h, engine.StatusFailed)
	require.Equal(t, h.RunID, failed.RunID)
	_, err = engine.Typed[typedReceipt](h).Result(ctx)
	require.ErrorContains(t, err, "declined")

	fixed.Store(true)
	reset, err := c.Reset(ctx, "typed-1", engine.ResetOptions{BeforeLastFailedActivity: true})
	require.NoError(t, err)
	got, err := engine.Typed[typedReceipt](reset).Result(ctx)
	require.NoError(t, err)
	require.Equal(t, typedReceipt{Domain: "example.org", Years: 2}, got)

	// The old handle still describes the run it names.
	old, err := h.Describe(ctx)
	require.NoError(t, err)
	require.Equal(t, h.RunID, old.RunID)
	require.NotEqual(t, reset.RunID, old.RunID)
}
