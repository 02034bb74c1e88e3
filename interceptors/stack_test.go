package interceptors_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/interceptors"
)

// stackProbe measures how much of a goroutine's stack the interceptors
// between its outer and inner marks hold while the call inside runs: the
// distance between a local of the outer mark and one of the inner. A
// measurement during which the stack was copied (it grew or shrank) is
// dropped: the outer local's address is taken before and after the call.
type stackProbe struct {
	mu    sync.Mutex
	inner uintptr
	used  []uintptr
}

func (p *stackProbe) outer(call func()) {
	var mark byte
	before := uintptr(unsafe.Pointer(&mark))
	call()
	after := uintptr(unsafe.Pointer(&mark))
	p.mu.Lock()
	defer p.mu.Unlock()
	if before == after && p.inner != 0 && p.inner < before {
		p.used = append(p.used, before-p.inner)
	}
	p.inner = 0
}

func (p *stackProbe) innerMark() {
	var mark byte
	p.mu.Lock()
	p.inner = uintptr(unsafe.Pointer(&mark))
	p.mu.Unlock()
}

func (p *stackProbe) min() uintptr {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := ^uintptr(0)
	for _, u := range p.used {
		m = min(m, u)
	}
	return m
}

// TestAllHoldsLittleStack pins how much of a workflow's goroutine stack
// All's interceptors hold around the workflow function and around an
// activity attempt (with the probe's own frames, 359 bytes a chain). A
// workflow's activities run on its goroutine, inside both chains, with the
// engine's commit path below them: stack held there can make the goroutine
// outgrow its first stack and copy it, which cost about 11 us per workflow
// -with interceptors in graft bench (runtime.copystack, absent from the
// bare profile). Measured: 4,270 bytes for the two chains at 5258e5e, 6,198
// with the records' attribute arrays in Logging's frames (f630cb3), 3,022
// with records and spans built in functions of their own, 2,094 with
// Metrics' measurements too, Recovery's deferred recover without a closure
// and the engine's chains calling each interceptor's method directly (the
// probe's own share is smaller then too), 1,950 with Recovery's methods on
// a pointer receiver (All holds a *Recovery: value methods were called
// through the compiler's wrapper, one frame more a chain, which the
// collector walks in every parked workflow goroutine at every cycle), 1,398
// with Tracing, Metrics and Logging in one interceptor (two frames a chain
// instead of six), 1,078 with Recovery folded into it (All without inner
// interceptors).
func TestAllHoldsLittleStack(t *testing.T) {
	t.Parallel()
	if interceptors.RaceEnabled {
		t.Skip("frames are larger under the race detector")
	}
	ctx := context.Background()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(tracetest.NewNoopExporter()))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	t.Cleanup(func() { _ = tp.Shutdown(ctx); _ = mp.Shutdown(ctx) })
	all, err := interceptors.All(interceptors.Config{Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)),
		TracerProvider: tp, MeterProvider: mp})
	require.NoError(t, err)

	var wf, act stackProbe
	list := []engine.Interceptor{
		engine.WorkflowInterceptorFunc(func(ctx engine.Context, in *engine.ExecuteWorkflowInput, next engine.WorkflowNext) (out any, err error) {
			wf.outer(func() { out, err = next(ctx, in) })
			return out, err
		}),
		engine.ActivityInterceptorFunc(func(ctx context.Context, in *engine.ActivityInput, next engine.ActivityNext) (out any, err error) {
			act.outer(func() { out, err = next(ctx, in) })
			return out, err
		}),
	}
	list = append(list, all...)
	list = append(list,
		engine.WorkflowInterceptorFunc(func(ctx engine.Context, in *engine.ExecuteWorkflowInput, next engine.WorkflowNext) (any, error) {
			wf.innerMark()
			return next(ctx, in)
		}),
		engine.ActivityInterceptorFunc(func(ctx context.Context, in *engine.ActivityInput, next engine.ActivityNext) (any, error) {
			act.innerMark()
			return next(ctx, in)
		}))
	step := engine.NewActivity("stack.step", func(_ context.Context, n int) (int, error) { return n + 1, nil })
	flow := engine.NewWorkflow("stack.flow", func(ctx engine.Context, n int) (int, error) { return step.Run(ctx, n) })
	e := newEngine(t, list, step, flow)
	for i := range 10 {
		run, err := flow.Start(ctx, e.Client(), i, &engine.StartOptions{ID: fmt.Sprintf("stack-%d", i)})
		require.NoError(t, err)
		out, err := run.Result(testCtx(t))
		require.NoError(t, err)
		require.Equal(t, i+1, out)
	}
	require.NotEmpty(t, wf.used, "no workflow measurement without a stack copy")
	require.NotEmpty(t, act.used, "no activity measurement without a stack copy")
	t.Logf("stack held by All: workflow chain %d bytes, activity chain %d bytes", wf.min(), act.min())
	require.LessOrEqual(t, wf.min()+act.min(), uintptr(2000), "stack All holds around a workflow's activity")
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}
