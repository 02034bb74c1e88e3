package api_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
	"github.com/graftdev/graft/tasks/api"
)

// A run the engine parked for an operator (a checkpoint interceptor refused
// its close Config.CheckpointRefusalLimit times, so it failed with a
// NeedsOperator error) is listed and counted under needs_operator, and its
// row carries the condition, besides being failed.
func TestParkedRunNeedsOperator(t *testing.T) {
	hook := engine.CheckpointInterceptorFunc(func(_ context.Context, _ engine.CheckpointTx, evs []*engine.CheckpointEvent) error {
		for _, ev := range evs {
			if ev.Kind == engine.CheckpointWorkflowClosed && ev.WorkflowID == "parked" {
				return errors.New("legacy row rejects status 'completed'")
			}
		}
		return nil
	})
	e := testenv.Engine(t, &engine.Config{CheckpointRefusalLimit: 2, Interceptors: []engine.Interceptor{hook}})
	ev := newEnvOn(t, e, api.Config{})
	ctx := testenv.Ctx(t, 60*time.Second)
	ev.start(t, "parked", "acme", orderIn{Item: "book"})
	ev.start(t, "fine", "acme", orderIn{Item: "pen"})
	testenv.Eventually(t, 45*time.Second, func() bool {
		d, err := e.Client().Describe(ctx, "parked")
		return err == nil && d.Status == engine.StatusFailed
	}, "the refused run was never parked")
	d, err := e.Client().Describe(ctx, "parked")
	require.NoError(t, err)
	require.ErrorIs(t, d.Error, engine.ErrNeedsOperator)

	page := ev.list(t, "viewer", api.ListOperationsParams{Status: &[]api.StatusFilter{api.StatusFilterNeedsOperator}})
	require.Len(t, page.Items, 1)
	op := page.Items[0]
	require.Equal(t, "parked", op.Id)
	require.NotNil(t, op.Conditions)
	require.True(t, slices.Contains(*op.Conditions, api.CondNeedsOperator), "%v", *op.Conditions)
	require.EqualValues(t, 1, page.Counts[api.CondNeedsOperator])
	require.EqualValues(t, 1, page.Counts["failed"])

	// The unfiltered list counts it too, and flags its row.
	page = ev.list(t, "viewer", api.ListOperationsParams{})
	require.EqualValues(t, 1, page.Counts[api.CondNeedsOperator])
	for _, op := range page.Items {
		flagged := op.Conditions != nil && slices.Contains(*op.Conditions, api.CondNeedsOperator)
		require.Equal(t, op.Id == "parked", flagged, "%s: %v", op.Id, op.Conditions)
	}
}
