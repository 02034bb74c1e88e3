package interceptors_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// newEngine returns a migrated engine in its own schema with interceptors
// and a started worker. UnloadAfter is short so a run waiting for a signal
// is unloaded at once and resumed by replay.
func newEngine(t *testing.T, interceptors []engine.Interceptor, defs ...engine.Definition) *engine.Engine {
	t.Helper()
	e := testenv.Engine(t, &engine.Config{Interceptors: interceptors, UnloadAfter: 30 * time.Millisecond})
	require.NoError(t, e.Register(defs...))
	testenv.Worker(t, e, engine.WorkerConfig{})
	return e
}

// waitUnloaded waits until the latest run of id has been unloaded (it
// waits for an event in the database, holding no goroutine), so the next
// event resumes it by replay.
func waitUnloaded(t *testing.T, e *engine.Engine, id string) {
	t.Helper()
	testenv.Eventually(t, 20*time.Second, func() bool {
		info, err := e.Client().Describe(context.Background(), id)
		return err == nil && info.Status == engine.StatusWaiting
	}, "run %s not unloaded", id)
}

// resumeWorkflow runs step, waits for the "go" signal (the run unloads and
// is resumed by replay when the signal comes), and runs step with the
// signal's payload. It answers the "state" query with the steps done.
func resumeWorkflow(name string, step *engine.Activity[string, string]) *engine.Workflow[string, string] {
	return engine.NewWorkflow(name, func(ctx engine.Context, in string) (string, error) {
		var done []string
		engine.SetQueryHandler(ctx, "state", func(struct{}) ([]string, error) { return done, nil })
		a, err := step.Run(ctx, in)
		if err != nil {
			return "", err
		}
		done = append(done, a)
		sig, err := engine.GetSignalChannel[string](ctx, "go").Receive(ctx)
		if err != nil {
			return "", err
		}
		b, err := step.Run(ctx, sig)
		if err != nil {
			return "", err
		}
		done = append(done, b)
		return a + "," + b, nil
	})
}

// runResume starts a resumeWorkflow, waits for its unload, signals it and
// returns its result.
func runResume(t *testing.T, ctx context.Context, e *engine.Engine, wf *engine.Workflow[string, string], id string) string {
	t.Helper()
	run, err := wf.Start(ctx, e.Client(), "a", &engine.StartOptions{ID: id})
	require.NoError(t, err)
	waitUnloaded(t, e, id)
	require.NoError(t, e.Client().Signal(ctx, id, "go", "b"))
	out, err := run.Result(ctx)
	require.NoError(t, err)
	return out
}

// recordHandler keeps slog records in memory.
type recordHandler struct {
	mu      *sync.Mutex
	records *[]record
	attrs   []slog.Attr
}

// record is a captured log record with its attributes flattened.
type record struct {
	Level slog.Level
	Msg   string
	Attrs map[string]any
}

func newRecordHandler() *recordHandler {
	return &recordHandler{mu: &sync.Mutex{}, records: &[]record{}}
}

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	rec := record{Level: r.Level, Msg: r.Message, Attrs: map[string]any{}}
	for _, a := range h.attrs {
		rec.Attrs[a.Key] = a.Value.Any()
	}
	r.Attrs(func(a slog.Attr) bool {
		rec.Attrs[a.Key] = a.Value.Any()
		return true
	})
	h.mu.Lock()
	defer h.mu.Unlock()
	*h.records = append(*h.records, rec)
	return nil
}

func (h *recordHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &recordHandler{mu: h.mu, records: h.records, attrs: append(append([]slog.Attr(nil), h.attrs...), as...)}
}

func (h *recordHandler) WithGroup(string) slog.Handler { return h }

// find returns the records with message msg whose attribute key equals val.
func (h *recordHandler) find(msg, key string, val any) []record {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []record
	for _, r := range *h.records {
		if r.Msg == msg && r.Attrs[key] == val {
			out = append(out, r)
		}
	}
	return out
}
