package engine_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

type ftProgress struct {
	Stage string
	Items []string
}

// ftQueryWorkflow collects "item" signals until "done", exposing its
// progress through a query with an argument.
func ftQueryWorkflow() *engine.Workflow[string, ftProgress] {
	return engine.NewWorkflow("query.collect", func(ctx engine.Context, name string) (ftProgress, error) {
		p := ftProgress{Stage: "collecting"}
		engine.SetQueryHandler(ctx, "progress", func(prefix string) (ftProgress, error) {
			out := ftProgress{Stage: prefix + p.Stage, Items: append([]string(nil), p.Items...)}
			return out, nil
		})
		engine.SetQueryHandler(ctx, "count", func(struct{}) (int, error) { return len(p.Items), nil })
		items := engine.GetSignalChannel[string](ctx, "item")
		done := engine.GetSignalChannel[struct{}](ctx, "done")
		for {
			i, err := engine.Select(ctx, items, done)
			if err != nil {
				return p, err
			}
			if i == 1 {
				break
			}
			v, err := items.Receive(ctx)
			if err != nil {
				return p, err
			}
			p.Items = append(p.Items, v)
		}
		p.Stage = "done"
		return p, nil
	})
}

// Queries are answered while the run is loaded, unloaded and finished, and
// answering one never loads the run on a worker.
func TestQueryLoadedUnloadedFinished(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		unload time.Duration
	}{{"loaded", time.Hour}, {"unloaded", 50 * time.Millisecond}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			wf := ftQueryWorkflow()
			_, c := ftEnv(t, &engine.Config{UnloadAfter: tc.unload}, wf)
			ctx := testenv.Ctx(t, 20*time.Second)
			run, err := wf.Start(ctx, c, "q", &engine.StartOptions{ID: "q"})
			require.NoError(t, err)
			// Before the first signal: the handler already answers.
			testenv.Eventually(t, 10*time.Second, func() bool {
				n, err := engine.QueryAs[int](ctx, c, "q", "count", nil)
				return err == nil && n == 0
			}, "first query")
			require.NoError(t, c.Signal(ctx, "q", "item", "a"))
			require.NoError(t, c.Signal(ctx, "q", "item", "b"))
			testenv.Eventually(t, 10*time.Second, func() bool {
				n, err := engine.QueryAs[int](ctx, c, "q", "count", nil)
				return err == nil && n == 2
			}, "items counted")
			if tc.unload < time.Second {
				info := ftWaitUnloaded(t, c, "q", 1)
				p, err := engine.QueryAs[ftProgress](ctx, c, "q", "progress", "now ")
				require.NoError(t, err)
				require.Equal(t, ftProgress{Stage: "now collecting", Items: []string{"a", "b"}}, p)
				after := ftDescribe(t, c, "q")
				require.Equal(t, engine.StatusWaiting, after.Status, "a query does not load the run")
				require.Equal(t, info.Loads, after.Loads)
			} else {
				require.Equal(t, engine.StatusRunning, ftDescribe(t, c, "q").Status)
				p, err := engine.QueryAs[ftProgress](ctx, c, "q", "progress", "")
				require.NoError(t, err)
				require.Equal(t, []string{"a", "b"}, p.Items)
			}

			_, err = c.Query(ctx, "q", "nope", nil)
			require.ErrorIs(t, err, engine.ErrUnknownQuery)
			_, err = c.Query(ctx, "q", "progress", map[string]int{"not": 1})
			require.ErrorIs(t, err, engine.ErrBadInput)

			require.NoError(t, c.Signal(ctx, "q", "done", struct{}{}))
			_, err = run.Result(ctx)
			require.NoError(t, err)
			p, err := engine.QueryAs[ftProgress](ctx, c, "q", "progress", "")
			require.NoError(t, err)
			require.Equal(t, ftProgress{Stage: "done", Items: []string{"a", "b"}}, p)
		})
	}
}

// Queries of unknown workflows return ErrNotFound; a query handler that
// returns an error passes it to the caller.
func TestQueryErrors(t *testing.T) {
	t.Parallel()
	wf := engine.NewWorkflow("query.err", func(ctx engine.Context, _ struct{}) (int, error) {
		engine.SetQueryHandler(ctx, "fail", func(struct{}) (int, error) {
			return 0, engine.NewApplicationError("Nope", "handler refused", nil)
		})
		return 1, nil
	})
	_, c := ftEnv(t, nil, wf)
	ctx := testenv.Ctx(t, 20*time.Second)
	_, err := c.Query(ctx, "missing", "x", nil)
	require.ErrorIs(t, err, engine.ErrNotFound)
	run, err := wf.Start(ctx, c, struct{}{}, &engine.StartOptions{ID: "qe"})
	require.NoError(t, err)
	_, err = run.Result(ctx)
	require.NoError(t, err)
	_, err = c.Query(ctx, "qe", "fail", nil)
	require.Equal(t, "Nope", ftAppErr(t, err).Type)
}

// A query while an activity is in flight answers from the state before it:
// the replay stops at the first step without a record.
func TestQueryDuringActivity(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	act := engine.NewActivity("query.slow", func(ctx context.Context, _ struct{}) (string, error) {
		<-release
		return "x", nil
	})
	wf := engine.NewWorkflow("query.act", func(ctx engine.Context, _ struct{}) (string, error) {
		state := "before"
		engine.SetQueryHandler(ctx, "state", func(struct{}) (string, error) { return state, nil })
		v, err := act.Run(ctx, struct{}{})
		if err != nil {
			return "", err
		}
		state = "after " + v
		if _, err := engine.GetSignalChannel[int](ctx, "end").Receive(ctx); err != nil {
			return "", err
		}
		return state, nil
	})
	_, c := ftEnv(t, nil, act, wf)
	ctx := testenv.Ctx(t, 20*time.Second)
	run, err := wf.Start(ctx, c, struct{}{}, &engine.StartOptions{ID: "qa"})
	require.NoError(t, err)
	testenv.Eventually(t, 10*time.Second, func() bool {
		s, err := engine.QueryAs[string](ctx, c, "qa", "state", nil)
		return err == nil && s == "before"
	}, "state before")
	close(release)
	testenv.Eventually(t, 10*time.Second, func() bool {
		s, err := engine.QueryAs[string](ctx, c, "qa", "state", nil)
		return err == nil && s == "after x"
	}, "state after")
	require.NoError(t, c.Signal(ctx, "qa", "end", 1))
	out, err := run.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, "after x", out)
}
