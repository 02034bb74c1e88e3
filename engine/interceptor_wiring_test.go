package engine_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// misspelt means to wrap activities, but its method's next has the wrong
// type, so it implements no chain: left in a list, it would do nothing.
type misspelt struct{ engine.InterceptorBase }

func (misspelt) ExecuteActivity(ctx context.Context, in *engine.ActivityInput, next func(context.Context) (any, error)) (any, error) {
	return next(ctx)
}

// A value that takes part in no chain is refused when the engine or the
// worker is built, with an error naming its place and its type, instead of
// being silently ignored.
func TestInterceptorInNoChainIsRefused(t *testing.T) {
	t.Parallel()
	ok := engine.ActivityInterceptorFunc(func(ctx context.Context, in *engine.ActivityInput, next engine.ActivityNext) (any, error) {
		return next(ctx, in)
	})
	for _, tc := range []struct {
		name string
		list []engine.Interceptor
		want string
	}{
		{"no chain", []engine.Interceptor{ok, misspelt{}},
			"engine: Config.Interceptors[1]: engine_test.misspelt takes part in no chain"},
		{"pointer", []engine.Interceptor{&misspelt{}},
			"engine: Config.Interceptors[0]: *engine_test.misspelt takes part in no chain"},
		{"nil", []engine.Interceptor{ok, nil}, "engine: Config.Interceptors[1] is nil"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := engine.New(engine.Config{DB: testenv.DB(t), DatabaseURL: testenv.DatabaseURL(), Interceptors: tc.list})
			require.ErrorContains(t, err, tc.want)
		})
	}

	e := testenv.Engine(t, &engine.Config{Interceptors: []engine.Interceptor{ok}})
	wf := engine.NewWorkflow("wiring", func(ctx engine.Context, _ struct{}) (struct{}, error) { return struct{}{}, nil })
	require.NoError(t, e.Register(wf))
	_, err := e.NewWorker(engine.WorkerConfig{Interceptors: []engine.Interceptor{ok, misspelt{}}})
	require.ErrorContains(t, err, "engine: WorkerConfig.Interceptors[1]: engine_test.misspelt takes part in no chain")
	w, err := e.NewWorker(engine.WorkerConfig{Interceptors: []engine.Interceptor{ok}})
	require.NoError(t, err)
	// A worker never started stops at once (it used to wait for a loop that
	// never ran) and cannot be started after.
	require.NoError(t, w.Stop(testenv.Ctx(t, time.Minute)))
	require.EqualError(t, w.Start(context.Background()), "engine: worker stopped")
}
