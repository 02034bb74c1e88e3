package engine_test

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// A workflow call from inside a SideEffect function would not be made on
// replay (the recorded value is returned without calling the function), so
// it fails the workflow at once with a clear error instead of a confusing
// non-determinism error later.
func TestSideEffectRefusesNestedWorkflowCalls(t *testing.T) {
	t.Parallel()
	wf := engine.NewWorkflow("se.nested", func(ctx engine.Context, _ struct{}) (int, error) {
		return engine.SideEffect(ctx, "outer", func() (int, error) {
			return engine.Rand(ctx).Intn(10), nil
		})
	})
	_, c := ftEnv(t, nil, wf)
	ctx := testenv.Ctx(t, 20*time.Second)
	run, err := wf.Start(ctx, c, struct{}{}, &engine.StartOptions{ID: "nested"})
	require.NoError(t, err)
	_, err = run.Result(ctx)
	var pe *engine.PanicError
	require.True(t, errors.As(err, &pe), "got %v", err)
	require.Contains(t, pe.Value, `SideEffect "outer"`)
}
