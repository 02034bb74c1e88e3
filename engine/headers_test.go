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

// readHeaders reads its input's headers; with readOnly it says so.
type readHeaders struct {
	engine.InterceptorBase
	engine.HeadersReadOnly
	seen chan engine.Headers
}

func (r readHeaders) ExecuteWorkflow(ctx engine.Context, in *engine.ExecuteWorkflowInput, next engine.WorkflowNext) (any, error) {
	if r.seen != nil && !in.Replaying {
		r.seen <- in.Headers.Clone()
	}
	return next(ctx, in)
}

// writeInputHeaders writes into its input's headers in place.
type writeInputHeaders struct{ engine.InterceptorBase }

func (writeInputHeaders) ExecuteWorkflow(ctx engine.Context, in *engine.ExecuteWorkflowInput, next engine.WorkflowNext) (any, error) {
	in.Headers["written"] = "x"
	return next(ctx, in)
}

// TestWorkflowInputHeadersCopiedUnlessReadOnly: a workflow execution's
// input gets a copy of the run's headers as long as one of its workflow
// interceptors may write into them, and the run's own (no copy) when all
// embed HeadersReadOnly; a write then reaches neither the run's headers
// nor another execution's.
func TestWorkflowInputHeadersCopiedUnlessReadOnly(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		ics  []engine.Interceptor
		copy bool
	}{
		{[]engine.Interceptor{readHeaders{}}, false},
		{[]engine.Interceptor{readHeaders{}, readHeaders{}}, false},
		{[]engine.Interceptor{readHeaders{}, writeInputHeaders{}}, true},
		{[]engine.Interceptor{writeInputHeaders{}, readHeaders{}}, true},
		{[]engine.Interceptor{setTraceparent{}}, false}, // no workflow interceptor
	} {
		copies, err := engine.CopiesWorkflowHeadersForTest(c.ics)
		require.NoError(t, err)
		require.Equal(t, c.copy, copies, "%T", c.ics)
	}

	seen := make(chan engine.Headers, 4)
	e := testenv.Engine(t, &engine.Config{Interceptors: []engine.Interceptor{writeInputHeaders{}, readHeaders{seen: seen}}})
	wf := engine.NewWorkflow("input-headers.wf", func(ctx engine.Context, _ struct{}) (engine.Headers, error) {
		return engine.WorkflowHeadersOf(ctx), nil
	})
	require.NoError(t, e.Register(wf))
	testenv.Worker(t, e, engine.WorkerConfig{})
	ctx := testenv.Ctx(t, 30*time.Second)
	for _, id := range []string{"input-headers-1", "input-headers-2"} {
		run, err := wf.Start(ctx, e.Client(), struct{}{}, &engine.StartOptions{ID: id, Headers: engine.Headers{"customer": "c1"}})
		require.NoError(t, err)
		out, err := run.Result(ctx)
		require.NoError(t, err)
		require.Equal(t, engine.Headers{"customer": "c1", "written": "x"}, <-seen, "what the inner interceptor saw")
		require.Equal(t, engine.Headers{"customer": "c1"}, out, "the run's headers")
		info, err := e.Client().Describe(ctx, id)
		require.NoError(t, err)
		require.Equal(t, engine.Headers{"customer": "c1"}, info.Headers)
	}
}

// putTraceparent puts a copy of the run's headers with a segment's span
// context into each activity call, made once, when the engine lends the
// run's headers shared, as interceptors.Tracing does; otherwise it writes
// into the call's headers in place. shared records what HeadersShared said.
type putTraceparent struct {
	engine.InterceptorBase
	engine.HeadersReadOnly
	copied engine.Headers
	shared *[]bool
}

func (p *putTraceparent) WorkflowOutbound(ctx engine.Context, in *engine.OutboundInput, next engine.OutboundNext) error {
	*p.shared = append(*p.shared, in.HeadersShared())
	if !in.HeadersShared() {
		in.Headers["traceparent"] = segmentTraceparent
		return next(ctx, in)
	}
	if p.copied == nil {
		p.copied = in.Headers.Clone()
		p.copied["traceparent"] = segmentTraceparent
	}
	in.Headers = p.copied
	return next(ctx, in)
}

// TestOutboundHeadersSharedWhenReadOnly: when every outbound interceptor
// embeds HeadersReadOnly, the calls' chains get the run's own headers
// (HeadersShared) and the map an interceptor puts there goes with the call:
// the segment's three calls then make one map, the interceptor's, instead
// of two copies of the run's. With an interceptor that may write in place
// in the chain, the headers are the call's to change (not shared) and
// each call still goes with the segment's traceparent.
func TestOutboundHeadersSharedWhenReadOnly(t *testing.T) {
	run := engine.Headers{"traceparent": clientTraceparent}
	for _, c := range []struct {
		name   string
		writer bool
	}{{"read only", false}, {"with a writer", true}} {
		var shared []bool
		p := &putTraceparent{shared: &shared}
		ics := []engine.Interceptor{p}
		if c.writer {
			ics = append(ics, writeHeaders{})
		}
		var out [3]engine.Headers
		require.NoError(t, engine.OutboundCallsForTest(run, ics, out[:]))
		for _, h := range out {
			require.Equal(t, engine.Headers{"traceparent": segmentTraceparent}, h, c.name)
		}
		require.Equal(t, []bool{!c.writer, !c.writer, !c.writer}, shared, c.name)
		require.Equal(t, engine.Headers{"traceparent": clientTraceparent}, run, "the run's headers")
	}
	if raceEnabled {
		return // the race detector changes what is allocated
	}
	var out [3]engine.Headers
	shared := make([]bool, 0, 3)
	p := &putTraceparent{shared: &shared}
	ics := []engine.Interceptor{p}
	allocs := testing.AllocsPerRun(200, func() {
		shared, p.copied = shared[:0], nil
		if err := engine.OutboundCallsForTest(run, ics, out[:]); err != nil {
			panic(err)
		}
	})
	t.Logf("allocations for a segment of three calls: %.0f", allocs)
	require.LessOrEqual(t, allocs, 18.0-2)
}
