package engine_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// A subscription charges each period, sleeps a month, and continues as new
// so its record never grows; cancelled mid-period, it refunds the unused
// part in a disconnected context and ends as cancelled.

type subIn struct {
	Customer string
	Period   int
}

type subLedger struct {
	mu      sync.Mutex
	charges []string
	refunds []string
	// refundCtxErr is the refund activity's ctx.Err(), which must be nil.
	refundCtxErr error
}

func (l *subLedger) snapshot() ([]string, []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.charges...), append([]string(nil), l.refunds...)
}

const subPeriod = 30 * 24 * time.Hour

func subDefs(l *subLedger) (*engine.Workflow[subIn, string], []engine.Definition) {
	charge := engine.NewActivity("sub.charge", func(ctx context.Context, in subIn) (string, error) {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.charges = append(l.charges, fmt.Sprintf("%s#%d", in.Customer, in.Period))
		return engine.ActivityInfoOf(ctx).IdempotencyKey, nil
	})
	refund := engine.NewActivity("sub.refund", func(ctx context.Context, in subIn) (string, error) {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.refunds = append(l.refunds, fmt.Sprintf("%s#%d", in.Customer, in.Period))
		l.refundCtxErr = ctx.Err()
		return "refunded", nil
	})
	var sub *engine.Workflow[subIn, string]
	sub = engine.NewWorkflow("sub.monthly", func(ctx engine.Context, in subIn) (string, error) {
		engine.SetQueryHandler(ctx, "period", func(struct{}) (int, error) { return in.Period, nil })
		if _, err := charge.Run(ctx, in); err != nil {
			return "", err
		}
		if err := engine.Sleep(ctx, subPeriod); err != nil {
			// Cancelled mid-period: cleanup is not cancelled with us.
			dctx := engine.Disconnected(ctx)
			if _, rerr := refund.Run(dctx, in); rerr != nil {
				return "", rerr
			}
			return "", err
		}
		return "", engine.ContinueAsNew(ctx, sub, subIn{Customer: in.Customer, Period: in.Period + 1})
	})
	return sub, []engine.Definition{charge, refund, sub}
}

func TestSubscriptionMonthlyCancelledMidPeriod(t *testing.T) {
	t.Parallel()
	clock := engine.NewFakeClock(ftT0)
	ledger := &subLedger{}
	sub, defs := subDefs(ledger)
	_, c := ftEnv(t, &engine.Config{Clock: clock}, defs...)
	ctx := testenv.Ctx(t, 60*time.Second)
	run, err := sub.Start(ctx, c, subIn{Customer: "acme", Period: 1}, &engine.StartOptions{ID: "sub-acme"})
	require.NoError(t, err)

	const months = 4
	for p := 1; p <= months; p++ {
		// Sleeping a month holds no goroutine: the run is unloaded until then.
		wake := ftT0.Add(time.Duration(p) * subPeriod)
		testenv.Eventually(t, 20*time.Second, func() bool {
			info := ftDescribe(t, c, "sub-acme")
			return info.Status == engine.StatusWaiting && info.WakeAt.Equal(wake)
		}, "period %d never started sleeping", p)
		n, err := engine.QueryAs[int](ctx, c, "sub-acme", "period", nil)
		require.NoError(t, err)
		require.Equal(t, p, n)
		charges, _ := ledger.snapshot()
		require.Len(t, charges, p)
		if p < months {
			clock.Advance(subPeriod)
		}
	}
	clock.Advance(12 * 24 * time.Hour) // mid-period
	require.NoError(t, c.Cancel(ctx, "sub-acme", "customer closed the account"))
	require.NoError(t, c.Cancel(ctx, "sub-acme", "customer closed the account"))

	_, err = run.Result(ctx) // follows the continue-as-new chain
	var ce *engine.CanceledError
	require.True(t, errors.As(err, &ce), "got %v", err)
	require.Equal(t, "customer closed the account", ce.Reason)

	charges, refunds := ledger.snapshot()
	require.Equal(t, []string{"acme#1", "acme#2", "acme#3", "acme#4"}, charges)
	require.Equal(t, []string{"acme#4"}, refunds)
	require.NoError(t, ledger.refundCtxErr, "cleanup ran in a context cancellation does not touch")

	h, err := c.History(ctx, "sub-acme")
	require.NoError(t, err)
	require.Len(t, h, months)
	for i, r := range h {
		if i < months-1 {
			require.Equal(t, engine.StatusContinued, r.Run.Status)
			require.LessOrEqual(t, len(r.Steps), 2, "each run's record stays small")
		} else {
			require.Equal(t, engine.StatusCancelled, r.Run.Status)
		}
		if i > 0 {
			require.Equal(t, h[i-1].Run.RunID, r.Run.PreviousRunID)
			require.Equal(t, "continue_as_new", r.Run.StartReason)
		}
	}
	// Nothing more is charged later: no run of the chain is left open.
	open, err := c.List(ctx, engine.ListFilter{Statuses: []engine.Status{engine.StatusPending, engine.StatusRunning, engine.StatusWaiting}})
	require.NoError(t, err)
	require.Empty(t, open)
}

// Continue-as-new keeps a long loop's record bounded and the handle's
// Result follows the chain to its end.
func TestContinueAsNewLoop(t *testing.T) {
	t.Parallel()
	var loop *engine.Workflow[int, int]
	loop = engine.NewWorkflow("can.loop", func(ctx engine.Context, n int) (int, error) {
		if n >= 20 {
			return n, nil
		}
		if _, err := engine.SideEffect(ctx, "tick", func() (int, error) { return n, nil }); err != nil {
			return 0, err
		}
		return 0, engine.ContinueAsNew(ctx, loop, n+1)
	})
	_, c := ftEnv(t, nil, loop)
	ctx := testenv.Ctx(t, 30*time.Second)
	run, err := loop.Start(ctx, c, 0, &engine.StartOptions{ID: "loop"})
	require.NoError(t, err)
	out, err := run.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, 20, out)
	h, err := c.History(ctx, "loop")
	require.NoError(t, err)
	require.Len(t, h, 21)
	for _, r := range h[:20] {
		require.Len(t, r.Steps, 1)
	}
	info := ftDescribe(t, c, "loop")
	require.Equal(t, engine.StatusCompleted, info.Status)
	require.JSONEq(t, "20", string(info.Output))
}
