package engine_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// refuseSteps installs a trigger on the engine's steps table that refuses
// the first n inserts of steps of the given kind, as a database that fails a
// commit would.
func refuseSteps(t *testing.T, e *engine.Engine, kind string, n int) {
	t.Helper()
	q := pq.QuoteIdentifier(e.Schema())
	_, err := e.DB().Exec(fmt.Sprintf(`
		CREATE SEQUENCE %[1]s.refusals;
		CREATE FUNCTION %[1]s.refuse() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.kind = %[2]s AND nextval('%[1]s.refusals') <= %[3]d THEN
				RAISE EXCEPTION 'step refused by the test';
			END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER refuse BEFORE INSERT ON %[1]s.steps FOR EACH ROW EXECUTE FUNCTION %[1]s.refuse();`,
		q, pq.QuoteLiteral(kind), n))
	require.NoError(t, err)
}

// The ordering rule: an activity goes live only once the decision that led
// to it is durable. A trigger refuses the decision's step twice, so the run
// is dropped and replayed twice, and each replay may decide otherwise (the
// side effect returns a new value; the select finds its timer fired). Only
// the branch the record finally holds may have run: before the rule, the
// abandoned branch's activity had already run with the same idempotency key.
func TestOrderingRuleRefusedDecision(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{"side_effect", "select"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			var mu sync.Mutex
			ran := map[string]int{}
			branch := func(name string) *engine.Activity[string, string] {
				return engine.NewActivity("order."+name, func(ctx context.Context, _ string) (string, error) {
					mu.Lock()
					ran[name]++
					mu.Unlock()
					return name, nil
				})
			}
			approve, reject := branch("approve"), branch("reject")
			var picks atomic.Int32
			wf := engine.NewWorkflow("order.decide", func(ctx engine.Context, _ string) (string, error) {
				approved := false
				if kind == "side_effect" {
					n, err := engine.SideEffect(ctx, "pick", func() (int32, error) { return picks.Add(1), nil })
					if err != nil {
						return "", err
					}
					approved = n == 1 // only the first execution approves
				} else {
					// The signal is there from the start; the timer fires
					// before the second replay (the refusals pause the run
					// 100 ms, then 200 ms).
					timer := engine.NewTimer(ctx, 250*time.Millisecond)
					i, err := engine.Select(ctx, timer, engine.GetSignalChannel[string](ctx, "go"))
					if err != nil {
						return "", err
					}
					approved = i == 1
				}
				if approved {
					return approve.Run(ctx, "x")
				}
				return reject.Run(ctx, "x")
			})
			e := testenv.Engine(t, nil)
			require.NoError(t, e.Register(approve, reject, wf))
			refuseSteps(t, e, kind, 2)
			testenv.Worker(t, e, engine.WorkerConfig{})
			ctx := testenv.Ctx(t, 60*time.Second)
			run, err := wf.SignalWithStart(ctx, e.Client(), "", &engine.StartOptions{ID: "decide-" + kind}, "go", "now")
			require.NoError(t, err)
			out, err := run.Result(ctx)
			require.NoError(t, err)

			mu.Lock()
			defer mu.Unlock()
			require.Equal(t, map[string]int{out: 1}, ran, "only the recorded branch (%s) ran, once", out)
			info, err := e.Client().Describe(ctx, run.WorkflowID)
			require.NoError(t, err)
			// A refused batch is retried op by op, so two refusals may
			// fall on one load.
			require.GreaterOrEqual(t, info.Loads, 2, "the decision was refused")
		})
	}
}
