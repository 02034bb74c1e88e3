package engine_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

const (
	clientTraceparent  = "00-0102030405060708090a0b0c0d0e0f10-0102030405060708-01"
	segmentTraceparent = "00-0102030405060708090a0b0c0d0e0f10-1112131415161718-01"
)

// setTraceparent writes a segment's span context into each activity call's
// headers in place, as interceptors.Tracing does.
type setTraceparent struct{ engine.InterceptorBase }

func (setTraceparent) WorkflowOutbound(ctx engine.Context, in *engine.OutboundInput, next engine.OutboundNext) error {
	in.Headers["traceparent"] = segmentTraceparent
	return next(ctx, in)
}

// TestOutboundHeadersAreNotCopiedPerCall: the three activity calls of a
// segment of a run that carries a traceparent, through an interceptor that
// writes the segment's, make two header maps (the first call's, which the
// others share, and the copy the next calls' interceptors write into), not
// one per call (two allocations each). Before: 20 allocations, now 18.
func TestOutboundHeadersAreNotCopiedPerCall(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes what is allocated")
	}
	run := engine.Headers{"traceparent": clientTraceparent}
	ics := []engine.Interceptor{setTraceparent{}}
	var out [3]engine.Headers
	allocs := testing.AllocsPerRun(200, func() {
		if err := engine.OutboundCallsForTest(run, ics, out[:]); err != nil {
			panic(err)
		}
	})
	for _, h := range out {
		require.Equal(t, engine.Headers{"traceparent": segmentTraceparent}, h)
	}
	require.Equal(t, engine.Headers{"traceparent": clientTraceparent}, run, "the run's headers")
	t.Logf("allocations for a segment of three calls: %.0f", allocs)
	require.LessOrEqual(t, allocs, 18.0)
}

// writeHeaders writes into the headers of its outbound calls in place: a
// header for the first activity alone, and one on a timer (which has no
// headers of its own to change).
type writeHeaders struct{ engine.InterceptorBase }

func (writeHeaders) WorkflowOutbound(ctx engine.Context, in *engine.OutboundInput, next engine.OutboundNext) error {
	switch {
	case in.Kind == engine.OutboundActivity && in.Name == "leak.first":
		in.Headers["only-first"] = "x"
	case in.Kind == engine.OutboundTimer:
		in.Headers["from-timer"] = "x"
	}
	return next(ctx, in)
}

type leakOut struct {
	First, Second, Workflow engine.Headers
}

// TestChangedHeadersStayWhereTheyWereChanged: headers an outbound
// interceptor writes into in place go with that call alone, and headers
// obtained from ActivityHeadersOf or WorkflowHeadersOf and then changed
// change nothing else: not another activity's, not the run's.
func TestChangedHeadersStayWhereTheyWereChanged(t *testing.T) {
	t.Parallel()
	e := testenv.Engine(t, &engine.Config{Interceptors: []engine.Interceptor{writeHeaders{}}})
	seen := func(ctx context.Context, _ struct{}) (engine.Headers, error) {
		h := engine.ActivityHeadersOf(ctx)
		out := h.Clone()
		h["activity-mutated"] = "x"
		return out, nil
	}
	first := engine.NewActivity("leak.first", seen)
	second := engine.NewActivity("leak.second", seen)
	wf := engine.NewWorkflow("leak.wf", func(ctx engine.Context, _ struct{}) (leakOut, error) {
		var out leakOut
		var err error
		if out.First, err = first.Run(ctx, struct{}{}); err != nil {
			return out, err
		}
		if err = engine.Sleep(ctx, time.Millisecond); err != nil {
			return out, err
		}
		engine.WorkflowHeadersOf(ctx)["workflow-mutated"] = "x"
		if out.Second, err = second.Run(ctx, struct{}{}); err != nil {
			return out, err
		}
		out.Workflow = engine.WorkflowHeadersOf(ctx)
		return out, nil
	})
	require.NoError(t, e.Register(first, second, wf))
	testenv.Worker(t, e, engine.WorkerConfig{})
	ctx := testenv.Ctx(t, 30*time.Second)
	start := engine.Headers{"customer": "c1"}
	run, err := wf.Start(ctx, e.Client(), struct{}{}, &engine.StartOptions{ID: "leak", Headers: start})
	require.NoError(t, err)
	out, err := run.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, engine.Headers{"customer": "c1", "only-first": "x"}, out.First)
	require.Equal(t, engine.Headers{"customer": "c1"}, out.Second)
	require.Equal(t, engine.Headers{"customer": "c1"}, out.Workflow)
	require.Equal(t, engine.Headers{"customer": "c1"}, start, "the caller's StartOptions.Headers")
	info, err := e.Client().Describe(ctx, "leak")
	require.NoError(t, err)
	require.Equal(t, engine.Headers{"customer": "c1"}, info.Headers)
}
