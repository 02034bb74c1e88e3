package engine_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// A deploy changes a workflow's code while a run waits for a signal: the
// first engine runs the old code until the wait and is stopped; a second
// engine on the same schema registers different code under the same name
// and resumes the run. The replay asks for a different step than the
// record holds, and the run fails with a NonDeterminismError naming both.
func TestNonDeterminismAfterCodeChange(t *testing.T) {
	t.Parallel()
	acts := func(log *rbAttempts) []*engine.Activity[string, string] {
		var out []*engine.Activity[string, string]
		for _, name := range []string{"nd.reserve", "nd.charge", "nd.ship"} {
			out = append(out, engine.NewActivity(name, func(ctx context.Context, in string) (string, error) {
				log.add(name)
				return name + " " + in, nil
			}))
		}
		return out
	}
	wait := func(ctx engine.Context) error {
		_, err := engine.GetSignalChannel[string](ctx, "go").Receive(ctx)
		return err
	}
	// v1 records: 1 activity nd.reserve, 2 activity nd.charge, then waits.
	v1 := func(a []*engine.Activity[string, string]) func(engine.Context, string) (string, error) {
		return func(ctx engine.Context, in string) (string, error) {
			for _, act := range a[:2] {
				if _, err := act.Run(ctx, in); err != nil {
					return "", err
				}
			}
			if err := wait(ctx); err != nil {
				return "", err
			}
			return a[2].Run(ctx, in)
		}
	}
	for _, tc := range []struct {
		name          string
		v2            func(a []*engine.Activity[string, string]) func(engine.Context, string) (string, error)
		seq           int
		recorded, new string
	}{
		{"first activity renamed", func(a []*engine.Activity[string, string]) func(engine.Context, string) (string, error) {
			return func(ctx engine.Context, in string) (string, error) {
				return a[2].Run(ctx, in) // ship before reserving
			}
		}, 1, `activity "nd.reserve"`, `activity "nd.ship"`},
		{"activity replaced by a timer", func(a []*engine.Activity[string, string]) func(engine.Context, string) (string, error) {
			return func(ctx engine.Context, in string) (string, error) {
				if _, err := a[0].Run(ctx, in); err != nil {
					return "", err
				}
				if err := engine.Sleep(ctx, time.Millisecond); err != nil {
					return "", err
				}
				return a[1].Run(ctx, in)
			}
		}, 2, `activity "nd.charge"`, "timer"},
		{"step removed", func(a []*engine.Activity[string, string]) func(engine.Context, string) (string, error) {
			return func(ctx engine.Context, in string) (string, error) {
				if _, err := a[0].Run(ctx, in); err != nil {
					return "", err
				}
				if err := wait(ctx); err != nil {
					return "", err
				}
				return a[2].Run(ctx, in)
			}
		}, 2, `activity "nd.charge"`, `signal "go"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var log rbAttempts
			a1 := acts(&log)
			e1 := testenv.Engine(t, &engine.Config{UnloadAfter: time.Hour})
			wf1 := engine.NewWorkflow("nd.order", v1(a1))
			require.NoError(t, e1.Register(a1[0], a1[1], a1[2], wf1))
			w1 := testenv.Worker(t, e1, engine.WorkerConfig{})
			ctx := testenv.Ctx(t, 30*time.Second)
			_, err := wf1.Start(ctx, e1.Client(), "o1", &engine.StartOptions{ID: "nd"})
			require.NoError(t, err)
			rbWaitStep(t, e1.Client(), "nd", "activity", "nd.charge", "completed")
			rbStop(t, w1, 10*time.Second)
			rbWaitStatus(t, e1.Client(), "nd", engine.StatusWaiting)

			// The new deploy: same name, different code.
			a2 := acts(&log)
			e2 := testenv.Engine(t, &engine.Config{Schema: e1.Schema()})
			wf2 := engine.NewWorkflow("nd.order", tc.v2(a2))
			require.NoError(t, e2.Register(a2[0], a2[1], a2[2], wf2))
			testenv.Worker(t, e2, engine.WorkerConfig{})
			c2 := e2.Client()
			require.NoError(t, c2.Signal(ctx, "nd", "go", "now"))
			h, err := c2.Handle(ctx, "nd")
			require.NoError(t, err)
			_, err = h.Result(ctx)

			var nd *engine.NonDeterminismError
			require.True(t, errors.As(err, &nd), "want a NonDeterminismError, got %T: %v", err, err)
			require.Equal(t, tc.seq, nd.Seq)
			require.Equal(t, tc.recorded, nd.Recorded)
			require.Equal(t, tc.new, nd.Requested)
			require.Contains(t, err.Error(), tc.recorded)
			require.Contains(t, err.Error(), tc.new)
			info, err := c2.Describe(ctx, "nd")
			require.NoError(t, err)
			require.Equal(t, engine.StatusFailed, info.Status)
			require.True(t, errors.As(info.Error, &nd))
			require.Equal(t, 0, log.count("nd.ship"), "nothing ran past the divergence")
			require.Equal(t, 1, log.count("nd.reserve"), "recorded steps were not run again")
		})
	}
}

// The same code resumed by another engine replays cleanly: the control case
// for the test above.
func TestNonDeterminismNotRaisedForSameCode(t *testing.T) {
	t.Parallel()
	var log rbAttempts
	mk := func() (*engine.Activity[int, int], *engine.Workflow[int, int]) {
		double := engine.NewActivity("nd.double", func(ctx context.Context, n int) (int, error) {
			log.add("double")
			return 2 * n, nil
		})
		return double, engine.NewWorkflow("nd.same", func(ctx engine.Context, n int) (int, error) {
			v, err := double.Run(ctx, n)
			if err != nil {
				return 0, err
			}
			add, err := engine.GetSignalChannel[int](ctx, "add").Receive(ctx)
			if err != nil {
				return 0, err
			}
			return double.Run(ctx, v+add)
		})
	}
	act1, wf1 := mk()
	e1 := testenv.Engine(t, &engine.Config{UnloadAfter: time.Hour})
	require.NoError(t, e1.Register(act1, wf1))
	w1 := testenv.Worker(t, e1, engine.WorkerConfig{})
	ctx := testenv.Ctx(t, 30*time.Second)
	_, err := wf1.Start(ctx, e1.Client(), 5, &engine.StartOptions{ID: "same"})
	require.NoError(t, err)
	rbWaitStep(t, e1.Client(), "same", "activity", "nd.double", "completed")
	rbStop(t, w1, 10*time.Second)

	act2, wf2 := mk()
	e2 := testenv.Engine(t, &engine.Config{Schema: e1.Schema()})
	require.NoError(t, e2.Register(act2, wf2))
	testenv.Worker(t, e2, engine.WorkerConfig{})
	require.NoError(t, e2.Client().Signal(ctx, "same", "add", 1))
	h, err := e2.Client().Handle(ctx, "same")
	require.NoError(t, err)
	out, err := h.Result(ctx)
	require.NoError(t, err)
	require.JSONEq(t, `22`, string(out))
	require.Equal(t, 2, log.count("double"))
}
