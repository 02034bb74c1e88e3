package interceptors_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/interceptors"
	"github.com/graftdev/graft/internal/testenv"
)

func TestLoggingIsSilentOnReplay(t *testing.T) {
	t.Parallel()
	ctx := testenv.Ctx(t, 30*time.Second)
	h := newRecordHandler()
	step := engine.NewActivity("log.step", func(ctx context.Context, in string) (string, error) { return in + "!", nil })
	wf := resumeWorkflow("log.resume", step)
	logging := interceptors.NewLogging(interceptors.LoggingConfig{Logger: slog.New(h), Headers: []string{"customer"}})
	e := newEngine(t, []engine.Interceptor{logging}, step, wf)

	run, err := wf.Start(ctx, e.Client(), "a", &engine.StartOptions{ID: "log-1", Headers: engine.Headers{"customer": "c-7"}})
	require.NoError(t, err)
	waitUnloaded(t, e, "log-1")
	require.NoError(t, e.Client().Signal(ctx, "log-1", "go", "b"))
	out, err := run.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, "a!,b!", out)
	// A query replays the whole record: it must log nothing from the workflow.
	_, err = e.Client().Query(ctx, "log-1", "state", nil)
	require.NoError(t, err)

	info, err := e.Client().Describe(ctx, "log-1")
	require.NoError(t, err)
	require.GreaterOrEqual(t, info.Loads, 2, "the run was resumed by replay")

	started := h.find("workflow started", "workflow_id", "log-1")
	require.Len(t, started, 1, "the resumed run does not log its start again")
	require.Equal(t, slog.LevelInfo, started[0].Level)
	require.Equal(t, "log.resume", started[0].Attrs["workflow_type"])
	require.Equal(t, run.RunID, started[0].Attrs["run_id"])
	require.Equal(t, "c-7", started[0].Attrs["header.customer"])

	completed := h.find("workflow completed", "workflow_id", "log-1")
	require.Len(t, completed, 1)
	require.Contains(t, completed[0].Attrs, "duration")
	require.Len(t, h.find("signal received", "workflow_id", "log-1"), 1)

	acts := h.find("activity completed", "workflow_id", "log-1")
	require.Len(t, acts, 2, "one record per attempt; the replayed step is not logged")
	for _, r := range acts {
		require.Equal(t, "log.step", r.Attrs["activity"])
		require.Equal(t, int64(1), r.Attrs["attempt"])
		require.Equal(t, "c-7", r.Attrs["header.customer"])
		require.Contains(t, r.Attrs, "duration")
	}
	require.Len(t, h.find("activity started", "workflow_id", "log-1"), 2)
	require.Len(t, h.find("query answered", "workflow_id", "log-1"), 1)
}

func TestLoggingFailures(t *testing.T) {
	t.Parallel()
	ctx := testenv.Ctx(t, 30*time.Second)
	h := newRecordHandler()
	bad := engine.NewActivity("log.bad", func(ctx context.Context, in string) (string, error) {
		return "", engine.NewNonRetryableError("Bad", "bad input "+in, nil)
	})
	wf := engine.NewWorkflow("log.fails", func(ctx engine.Context, in string) (string, error) {
		return bad.Run(ctx, in)
	})
	e := newEngine(t, []engine.Interceptor{interceptors.NewLogging(interceptors.LoggingConfig{Logger: slog.New(h)})}, bad, wf)
	run, err := wf.Start(ctx, e.Client(), "x", &engine.StartOptions{ID: "log-fail"})
	require.NoError(t, err)
	_, err = run.Result(ctx)
	var app *engine.ApplicationError
	require.True(t, errors.As(err, &app), "got %v", err)

	failed := h.find("activity failed", "workflow_id", "log-fail")
	require.Len(t, failed, 1)
	require.Equal(t, slog.LevelWarn, failed[0].Level)
	require.ErrorContains(t, failed[0].Attrs["err"].(error), "bad input x")
	wfFailed := h.find("workflow failed", "workflow_id", "log-fail")
	require.Len(t, wfFailed, 1)
	require.Equal(t, slog.LevelError, wfFailed[0].Level)
}

// TestLoggingCarriesTheSpanIDs checks that with Tracing outside Logging the
// workflow's records carry its segment span's trace and span IDs, and an
// activity attempt's records its span's, as TraceID.String and
// SpanID.String write them.
func TestLoggingCarriesTheSpanIDs(t *testing.T) {
	t.Parallel()
	ctx := testenv.Ctx(t, 30*time.Second)
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	h := newRecordHandler()
	step := engine.NewActivity("logids.step", func(ctx context.Context, in string) (string, error) { return in, nil })
	wf := engine.NewWorkflow("logids.wf", func(ctx engine.Context, in string) (string, error) { return step.Run(ctx, in) })
	e := newEngine(t, []engine.Interceptor{interceptors.NewTracing(interceptors.TracingConfig{TracerProvider: tp}),
		interceptors.NewLogging(interceptors.LoggingConfig{Logger: slog.New(h)})}, step, wf)
	run, err := wf.Start(ctx, e.Client(), "x", &engine.StartOptions{ID: "logids-1"})
	require.NoError(t, err)
	_, err = run.Result(ctx)
	require.NoError(t, err)

	got := spans(exp.GetSpans())
	for _, c := range []struct{ span, msg string }{
		{"workflow logids.wf", "workflow started"}, {"workflow logids.wf", "workflow completed"},
		{"activity logids.step", "activity started"}, {"activity logids.step", "activity completed"},
	} {
		sc := got.one(t, c.span).SpanContext
		recs := h.find(c.msg, "workflow_id", "logids-1")
		require.Len(t, recs, 1, c.msg)
		require.Equal(t, sc.TraceID().String(), recs[0].Attrs["trace_id"], c.msg)
		require.Equal(t, sc.SpanID().String(), recs[0].Attrs["span_id"], c.msg)
	}
}
