package interceptors_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/interceptors"
	"github.com/graftdev/graft/internal/testenv"
)

func TestTraceContextRoundTrip(t *testing.T) {
	t.Parallel()
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		SpanID:     trace.SpanID{1, 2, 3, 4, 5, 6, 7, 8},
		TraceFlags: trace.FlagsSampled,
	})
	h := engine.Headers{"customer": "c-1"}
	interceptors.InjectTraceContext(trace.ContextWithSpanContext(context.Background(), sc), h)
	require.Equal(t, "00-0102030405060708090a0b0c0d0e0f10-0102030405060708-01", h["traceparent"])
	require.Equal(t, "c-1", h["customer"])
	require.ElementsMatch(t, []string{"customer", "traceparent"}, interceptors.HeaderCarrier(h).Keys())

	got := trace.SpanContextFromContext(interceptors.ExtractTraceContext(context.Background(), h))
	require.True(t, got.IsRemote())
	require.Equal(t, sc.TraceID(), got.TraceID())
	require.Equal(t, sc.SpanID(), got.SpanID())

	empty := engine.Headers{}
	interceptors.InjectTraceContext(context.Background(), empty)
	require.Empty(t, empty, "no span, no header")
	require.False(t, trace.SpanContextFromContext(interceptors.ExtractTraceContext(context.Background(), empty)).IsValid())
}

type customerKey struct{}

func TestPropagateHeaders(t *testing.T) {
	t.Parallel()
	ic := interceptors.PropagateHeaders(func(ctx context.Context) engine.Headers {
		id, _ := ctx.Value(customerKey{}).(string)
		return engine.Headers{"customer": id, "tenant": "from-context"}
	})
	ctx := context.WithValue(context.Background(), customerKey{}, "c-9")
	var seen engine.Headers
	last := func(_ context.Context, in *engine.ClientCallInput) (any, error) { seen = in.Headers; return nil, nil }
	_, err := ic.ClientCall(ctx, &engine.ClientCallInput{Kind: engine.ClientStart, Headers: engine.Headers{"tenant": "explicit"}}, last)
	require.NoError(t, err)
	require.Equal(t, engine.Headers{"customer": "c-9", "tenant": "explicit"}, seen, "the start's own headers win")
	seen = nil
	_, err = ic.ClientCall(ctx, &engine.ClientCallInput{Kind: engine.ClientSignal}, last)
	require.NoError(t, err)
	require.Nil(t, seen, "only starts carry headers")
}

// ---- headers across a worker subprocess and a replay -----------------------

const (
	hdrHelperEnv    = "GRAFT_INTERCEPTORS_HELPER"
	hdrHelperSchema = "GRAFT_INTERCEPTORS_HELPER_SCHEMA"
	hdrHelperReady  = "GRAFT-INTERCEPTORS-HELPER-READY"
)

// recordIn asks hdr.record to store the headers it sees, with the
// workflow's own headers at the time it made the call.
type recordIn struct {
	Step     string
	Workflow engine.Headers
}

// headerDefs are registered by the test (to start the workflow) and by the
// worker subprocess (to run it). hdr.record writes what it saw into the
// schema's seen table, so the test can read it after the process is gone.
func headerDefs(db *sqlx.DB, schema string) []engine.Definition {
	record := engine.NewActivity("hdr.record", func(ctx context.Context, in recordIn) (string, error) {
		act, err := json.Marshal(engine.ActivityHeadersOf(ctx))
		if err != nil {
			return "", err
		}
		wf, err := json.Marshal(in.Workflow)
		if err != nil {
			return "", err
		}
		_, err = db.ExecContext(ctx, `INSERT INTO `+pq.QuoteIdentifier(schema)+`.seen (step, activity_headers, workflow_headers, pid)
			VALUES ($1, $2, $3, $4)`, in.Step, string(act), string(wf), os.Getpid())
		return in.Step, err
	})
	child := engine.NewWorkflow("hdr.child", func(ctx engine.Context, in string) (string, error) {
		return record.Run(ctx, recordIn{Step: "child", Workflow: engine.WorkflowHeadersOf(ctx)})
	})
	wf := engine.NewWorkflow("hdr.wf", func(ctx engine.Context, in string) (string, error) {
		if _, err := record.Run(ctx, recordIn{Step: "before", Workflow: engine.WorkflowHeadersOf(ctx)}); err != nil {
			return "", err
		}
		// The run unloads here and is resumed by replay when the signal comes.
		if _, err := engine.GetSignalChannel[string](ctx, "go").Receive(ctx); err != nil {
			return "", err
		}
		if _, err := record.Run(ctx, recordIn{Step: "after", Workflow: engine.WorkflowHeadersOf(ctx)}); err != nil {
			return "", err
		}
		return child.RunChild(ctx, in, nil)
	})
	return []engine.Definition{record, child, wf}
}

// TestHeadersHelperProcess is not a test: it is the body of the worker
// subprocess TestHeadersAcrossProcessAndReplay starts. It runs with the full
// interceptor set until its stdin closes.
func TestHeadersHelperProcess(t *testing.T) {
	if os.Getenv(hdrHelperEnv) != "1" {
		t.Skip("worker subprocess body for TestHeadersAcrossProcessAndReplay")
	}
	schema := os.Getenv(hdrHelperSchema)
	db := testenv.DB(t)
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(tracetest.NewInMemoryExporter()))
	defer tp.Shutdown(context.Background())
	// Warnings (failed attempts) reach the parent test's log if it fails.
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	list, err := interceptors.All(interceptors.Config{Logger: logger, TracerProvider: tp})
	require.NoError(t, err)
	e, err := engine.New(engine.Config{DB: db, DatabaseURL: testenv.DatabaseURL(), Schema: schema,
		UnloadAfter: 30 * time.Millisecond, PollInterval: 100 * time.Millisecond, Interceptors: list})
	require.NoError(t, err)
	defer e.Close()
	require.NoError(t, e.Register(headerDefs(db, schema)...))
	w, err := e.NewWorker(engine.WorkerConfig{})
	require.NoError(t, err)
	require.NoError(t, w.Start(context.Background()))
	fmt.Println(hdrHelperReady)
	_, _ = io.Copy(io.Discard, os.Stdin) // until the parent closes stdin
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, w.Stop(ctx))
}

// spawnWorker starts the worker subprocess on schema and waits until it runs.
func spawnWorker(t *testing.T, schema string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHeadersHelperProcess$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), hdrHelperEnv+"=1", hdrHelperSchema+"="+schema, "GRAFT_DATABASE_URL="+testenv.DatabaseURL())
	out := &readyBuffer{ready: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = out, out
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = stdin.Close()
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("worker subprocess output:\n%s", out.String())
		}
	})
	select {
	case <-out.ready:
	case <-exited:
		t.Fatalf("worker subprocess exited before it was ready:\n%s", out.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("worker subprocess not ready within 30s:\n%s", out.String())
	}
}

// readyBuffer collects a subprocess's output and closes ready when the
// readiness line appears.
type readyBuffer struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	ready chan struct{}
	once  sync.Once
}

func (b *readyBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.buf.Write(p)
	if strings.Contains(b.buf.String(), hdrHelperReady+"\n") {
		b.once.Do(func() { close(b.ready) })
	}
	return n, err
}

func (b *readyBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestHeadersAcrossProcessAndReplay(t *testing.T) {
	t.Parallel()
	ctx := testenv.Ctx(t, 60*time.Second)
	db := testenv.DB(t)
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	// This process only starts and signals: it has no worker, so the run
	// executes in the subprocess.
	e := testenv.Engine(t, &engine.Config{Interceptors: []engine.Interceptor{
		interceptors.NewTracing(interceptors.TracingConfig{TracerProvider: tp}),
		interceptors.PropagateHeaders(func(ctx context.Context) engine.Headers {
			id, _ := ctx.Value(customerKey{}).(string)
			return engine.Headers{"customer": id}
		}),
	}})
	schema := e.Schema()
	require.NoError(t, e.Register(headerDefs(db, schema)...))
	_, err := db.ExecContext(ctx, `CREATE TABLE `+pq.QuoteIdentifier(schema)+`.seen (
		step text NOT NULL, activity_headers jsonb NOT NULL, workflow_headers jsonb NOT NULL, pid int NOT NULL)`)
	require.NoError(t, err)
	spawnWorker(t, schema)

	ctx = context.WithValue(ctx, customerKey{}, "c-42")
	ctx, caller := tp.Tracer("test").Start(ctx, "caller")
	wf := headerDefs(nil, schema)[2].(*engine.Workflow[string, string])
	run, err := wf.Start(ctx, e.Client(), "x", &engine.StartOptions{ID: "hdr-1", Headers: engine.Headers{"provider": "registry-a"}})
	require.NoError(t, err)
	waitUnloaded(t, e, "hdr-1")
	require.NoError(t, e.Client().Signal(ctx, "hdr-1", "go", ""))
	out, err := run.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, "child", out)
	caller.End()

	info, err := e.Client().Describe(ctx, "hdr-1")
	require.NoError(t, err)
	require.GreaterOrEqual(t, info.Loads, 2, "the run was resumed by replay after its signal wait")
	require.Equal(t, "c-42", info.Headers["customer"], "headers are persisted with the run")

	var rows []struct {
		Step     string `db:"step"`
		Activity []byte `db:"activity_headers"`
		Workflow []byte `db:"workflow_headers"`
		PID      int    `db:"pid"`
	}
	require.NoError(t, db.SelectContext(ctx, &rows, `SELECT step, activity_headers, workflow_headers, pid FROM `+
		pq.QuoteIdentifier(schema)+`.seen ORDER BY step`))
	require.Len(t, rows, 3)
	start := spans(exp.GetSpans()).one(t, "start hdr.wf")
	seen := map[string][2]engine.Headers{}
	for _, r := range rows {
		var act, wfh engine.Headers
		require.NoError(t, json.Unmarshal(r.Activity, &act))
		require.NoError(t, json.Unmarshal(r.Workflow, &wfh))
		require.NotEqual(t, os.Getpid(), r.PID, "step %s ran in the worker subprocess", r.Step)
		for _, h := range []engine.Headers{act, wfh} {
			require.Equal(t, "c-42", h["customer"], "step %s: %v", r.Step, h)
			require.Equal(t, "registry-a", h["provider"], "step %s: %v", r.Step, h)
			sc := trace.SpanContextFromContext(interceptors.ExtractTraceContext(context.Background(), h))
			require.Equal(t, caller.SpanContext().TraceID(), sc.TraceID(), "step %s is in the caller's trace", r.Step)
		}
		seen[r.Step] = [2]engine.Headers{act, wfh}
	}
	// The workflow's headers are the ones the client wrote, before and after
	// the replay: the start span is their trace parent.
	for _, step := range []string{"before", "after"} {
		sc := trace.SpanContextFromContext(interceptors.ExtractTraceContext(context.Background(), seen[step][1]))
		require.Equal(t, start.SpanContext.SpanID(), sc.SpanID(), "step %s", step)
	}
	require.Equal(t, seen["before"][1], seen["after"][1], "the run's headers are the same after the replay")
	// Each activity's parent is the workflow segment that called it: two
	// segments, two different parents, neither of them the start span.
	before := trace.SpanContextFromContext(interceptors.ExtractTraceContext(context.Background(), seen["before"][0]))
	after := trace.SpanContextFromContext(interceptors.ExtractTraceContext(context.Background(), seen["after"][0]))
	require.NotEqual(t, start.SpanContext.SpanID(), before.SpanID())
	require.NotEqual(t, before.SpanID(), after.SpanID())
}
