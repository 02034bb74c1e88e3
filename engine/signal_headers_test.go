package engine_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// signalSeen is what a workflow interceptor saw of one signal.
type signalSeen struct {
	payload   string
	sender    string
	replaying bool
}

// signalRecorder records the headers each signal reaches the workflow with.
type signalRecorder struct {
	engine.InterceptorBase
	mu   sync.Mutex
	seen []signalSeen
}

func (r *signalRecorder) HandleSignal(ctx engine.Context, in *engine.HandleSignalInput, next engine.SignalNext) error {
	r.mu.Lock()
	r.seen = append(r.seen, signalSeen{payload: string(in.Payload), sender: in.Headers["sender"], replaying: in.Replaying})
	r.mu.Unlock()
	return next(ctx, in)
}

func (r *signalRecorder) snapshot() []signalSeen {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]signalSeen(nil), r.seen...)
}

// A signal carries the headers of the client call that sent it (not the
// run's) to the workflow's signal interceptors, whether sent by Signal or
// by SignalWithStart, on either of its paths; replayed signals carry none.
func TestSignalCarriesSenderHeaders(t *testing.T) {
	t.Parallel()
	// The client interceptor names the sender of each signal from the
	// caller's context; starts get a run header that must not leak into
	// the signals.
	type senderKey struct{}
	stamp := engine.ClientInterceptorFunc(func(ctx context.Context, in *engine.ClientCallInput,
		next engine.ClientNext) (any, error) {
		if in.Headers == nil {
			in.Headers = engine.Headers{}
		}
		switch in.Kind {
		case engine.ClientSignal:
			if who, ok := ctx.Value(senderKey{}).(string); ok {
				in.Headers["sender"] = who
			}
		case engine.ClientStart:
			in.Headers["sender"] = "run-header"
		}
		return next(ctx, in)
	})
	rec := &signalRecorder{}
	wf := engine.NewWorkflow("sig.headers", func(ctx engine.Context, _ struct{}) (int, error) {
		ch := engine.GetSignalChannel[string](ctx, "note")
		for i := 0; i < 3; i++ {
			if _, err := ch.Receive(ctx); err != nil {
				return 0, err
			}
		}
		return 3, nil
	})
	_, c := ftEnv(t, &engine.Config{UnloadAfter: 50 * time.Millisecond, Interceptors: []engine.Interceptor{stamp, rec}}, wf)
	ctx := testenv.Ctx(t, 30*time.Second)
	as := func(who string) context.Context { return context.WithValue(ctx, senderKey{}, who) }

	// SignalWithStart that starts the run, then one that finds it open.
	run, err := wf.SignalWithStart(as("alice"), c, struct{}{}, &engine.StartOptions{ID: "sh"}, "note", "1")
	require.NoError(t, err)
	_, err = wf.SignalWithStart(as("bob"), c, struct{}{}, &engine.StartOptions{ID: "sh"}, "note", "2")
	require.NoError(t, err)
	// Let the run unload waiting for the third, so it is resumed by replay.
	testenv.Eventually(t, 10*time.Second, func() bool { return ftDescribe(t, c, "sh").Status == engine.StatusWaiting },
		"the run unloads while it waits for the third signal")
	require.NoError(t, c.Signal(as("carol"), "sh", "note", "3"))
	n, err := run.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, 3, n)

	var live, replayed []signalSeen
	for _, s := range rec.snapshot() {
		if s.replaying {
			require.Empty(t, s.sender, "a replayed signal carries no headers")
			replayed = append(replayed, s)
		} else {
			live = append(live, s)
		}
	}
	require.Equal(t, []signalSeen{{`"1"`, "alice", false}, {`"2"`, "bob", false}, {`"3"`, "carol", false}}, live)
	require.NotEmpty(t, replayed, "the resumed run replayed the signals it had read")
	h, err := c.Describe(ctx, "sh")
	require.NoError(t, err)
	require.Equal(t, "run-header", h.Headers["sender"], "the run keeps its own headers")
}
