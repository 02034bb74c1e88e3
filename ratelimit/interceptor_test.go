package ratelimit

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
)

// These tests drive ExecuteActivity directly with a LocalLimiter; the ones in
// interceptor_engine_test.go run it inside the engine against Redis.

func newTestInterceptor(t *testing.T, cfg InterceptorConfig) *ActivityInterceptor {
	t.Helper()
	if cfg.Key == nil {
		cfg.Key = KeyFromHeader("provider")
	}
	i, err := NewActivityInterceptor(cfg)
	require.NoError(t, err)
	return i
}

func activityInput(provider, step string) *engine.ActivityInput {
	return &engine.ActivityInput{
		Info: engine.ActivityInfo{
			ActivityName: "call", ActivityID: step, Attempt: 1, IdempotencyKey: "wf/run/" + step,
			Workflow: engine.WorkflowInfo{WorkflowID: "wf", RunID: "run"},
		},
		Headers: engine.Headers{"provider": provider},
	}
}

func requireEngineSnooze(t *testing.T, err error) *engine.SnoozeError {
	t.Helper()
	var sn *engine.SnoozeError
	require.ErrorAs(t, err, &sn)
	require.GreaterOrEqual(t, sn.After, minSnooze)
	return sn
}

func TestInterceptorConfigValidate(t *testing.T) {
	t.Parallel()
	l := newTestLocalLimiter(t, LocalConfig{Limits: StaticLimits(Limits{})})
	key := KeyConst("k")
	for _, tc := range []struct {
		name string
		cfg  InterceptorConfig
		want string
	}{
		{"no limiter", InterceptorConfig{Key: key}, "InterceptorConfig.Limiter"},
		{"no key", InterceptorConfig{Limiter: l}, "InterceptorConfig.Key"},
		{"negative release timeout", InterceptorConfig{Limiter: l, Key: key, ReleaseTimeout: -time.Second}, "InterceptorConfig.ReleaseTimeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewActivityInterceptor(tc.cfg)
			require.ErrorContains(t, err, tc.want)
		})
	}
	_, err := NewActivityInterceptor(InterceptorConfig{Limiter: l, Key: key, MaxWait: -1, MaxWaiters: -1})
	require.NoError(t, err)
}

func TestKeyFuncs(t *testing.T) {
	t.Parallel()
	type order struct{ Registry string }
	in := activityInput("registry-a", "1")
	in.Info.ActivityName = "renew"
	in.Args = order{Registry: "registry-b"}

	for _, tc := range []struct {
		name string
		f    KeyFunc
		in   *engine.ActivityInput
		key  string
		ok   bool
	}{
		{"header", KeyFromHeader("provider"), in, "registry-a", true},
		{"header missing", KeyFromHeader("tenant"), in, "", false},
		{"activity", KeyByActivity(map[string]string{"renew": "registry-c"}), in, "registry-c", true},
		{"other activity", KeyByActivity(map[string]string{"transfer": "registry-c"}), in, "", false},
		{"input", KeyFromInput(func(o order) (string, bool) { return o.Registry, true }), in, "registry-b", true},
		{"input of another type", KeyFromInput(func(s string) (string, bool) { return s, true }), in, "", false},
		{"input says no", KeyFromInput(func(o order) (string, bool) { return o.Registry, false }), in, "", false},
		{"const", KeyConst(WorkerKey), in, WorkerKey, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key, ok := tc.f(tc.in)
			require.Equal(t, tc.ok, ok)
			if ok {
				require.Equal(t, tc.key, key)
			}
		})
	}
}

func TestInterceptorHoldsAndReleases(t *testing.T) {
	t.Parallel()
	l := newTestLocalLimiter(t, LocalConfig{Limits: StaticLimits(Limits{Concurrency: 1})})
	var snoozed []*engine.SnoozeError
	i := newTestInterceptor(t, InterceptorConfig{
		Limiter: l, MaxWait: 10 * time.Millisecond,
		OnSnooze: func(_ context.Context, _ *engine.ActivityInput, err *engine.SnoozeError) {
			snoozed = append(snoozed, err)
		},
	})
	ctx := context.Background()

	// Inside the call the step holds the key's one slot, under its
	// idempotency key.
	out, err := i.ExecuteActivity(ctx, activityInput("registry", "1"), func(ctx context.Context, in *engine.ActivityInput) (any, error) {
		_, err := l.Acquire(ctx, "registry", "intruder")
		requireDenied(t, err, ReasonConcurrency)
		lease, err := l.Acquire(ctx, "registry", in.Info.IdempotencyKey)
		require.NoError(t, err, "the step's own lease")
		require.Equal(t, "wf/run/1", lease.ID)

		// Another step finds no slot and is given back to the engine.
		_, err = i.ExecuteActivity(ctx, activityInput("registry", "2"), func(context.Context, *engine.ActivityInput) (any, error) {
			t.Fatal("ran without a slot")
			return nil, nil
		})
		sn := requireEngineSnooze(t, err)
		require.Contains(t, sn.Reason, `key "registry": concurrency limit (1 in use)`)
		return "done", nil
	})
	require.NoError(t, err)
	require.Equal(t, "done", out)
	require.Len(t, snoozed, 1)
	requireDenied(t, snoozed[0].Err, ReasonConcurrency)

	// Released after the call.
	lease, err := l.Acquire(ctx, "registry", "next")
	require.NoError(t, err)
	require.NoError(t, l.Release(ctx, lease))

	// Attempts whose key function says no are not limited.
	out, err = i.ExecuteActivity(ctx, activityInput("", "3"), func(context.Context, *engine.ActivityInput) (any, error) { return 3, nil })
	require.NoError(t, err)
	require.Equal(t, 3, out)
}

// The slot comes back however the call ends: an error, a panic, or a
// cancelled context (whose cancellation must not stop the release).
func TestInterceptorReleasesWhateverTheOutcome(t *testing.T) {
	t.Parallel()
	boom := errors.New("provider said no")
	for _, tc := range []struct {
		name string
		call func(cancel context.CancelFunc) (any, error)
	}{
		{"error", func(context.CancelFunc) (any, error) { return nil, boom }},
		{"panic", func(context.CancelFunc) (any, error) { panic("activity bug") }},
		{"cancelled", func(cancel context.CancelFunc) (any, error) { cancel(); return nil, context.Canceled }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := newTestLocalLimiter(t, LocalConfig{Limits: StaticLimits(Limits{Concurrency: 1})})
			i := newTestInterceptor(t, InterceptorConfig{Limiter: l, MaxWait: -1})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			func() {
				defer func() { _ = recover() }()
				_, _ = i.ExecuteActivity(ctx, activityInput("registry", "1"), func(context.Context, *engine.ActivityInput) (any, error) {
					return tc.call(cancel)
				})
			}()
			lease, err := l.Acquire(context.Background(), "registry", "next")
			require.NoError(t, err, "the slot was not released")
			require.NoError(t, l.Release(context.Background(), lease))
		})
	}
}

// A limiter error that waiting cannot cure fails the attempt (the engine
// retries it under its policy) instead of snoozing it forever.
func TestInterceptorConfigurationErrorFailsTheAttempt(t *testing.T) {
	t.Parallel()
	var limits LimitsTable
	limits.Set("registry", Limits{Concurrency: 1})
	l := newTestLocalLimiter(t, LocalConfig{Limits: &limits})
	i := newTestInterceptor(t, InterceptorConfig{Limiter: l})
	_, err := i.ExecuteActivity(context.Background(), activityInput("regsitry", "1"), func(context.Context, *engine.ActivityInput) (any, error) {
		t.Fatal("ran without limits")
		return nil, nil
	})
	require.ErrorIs(t, err, ErrNoLimits)
	var sn *engine.SnoozeError
	require.False(t, errors.As(err, &sn))
}

// Past MaxWaiters, attempts for a key are snoozed at once, without holding a
// worker slot for MaxWait; other keys are not affected.
func TestInterceptorMaxWaiters(t *testing.T) {
	t.Parallel()
	l := newTestLocalLimiter(t, LocalConfig{Limits: StaticLimits(Limits{Concurrency: 1})})
	var snoozes atomic.Int64
	i := newTestInterceptor(t, InterceptorConfig{
		Limiter: l, MaxWait: time.Hour, MaxWaiters: 1,
		OnSnooze: func(context.Context, *engine.ActivityInput, *engine.SnoozeError) { snoozes.Add(1) },
	})
	ctx := context.Background()
	blocker, err := l.Acquire(ctx, "registry", "blocker")
	require.NoError(t, err)

	waited := make(chan error, 1)
	go func() {
		_, err := i.ExecuteActivity(ctx, activityInput("registry", "1"), func(context.Context, *engine.ActivityInput) (any, error) {
			return nil, nil
		})
		waited <- err
	}()
	eventually(t, 5*time.Second, func() bool { return i.backlog.waitingFor("registry") == 1 },
		"the first attempt never started waiting")

	// MaxWait is an hour: a second attempt that waited would end with
	// this context instead of a snooze.
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	_, err = i.ExecuteActivity(wctx, activityInput("registry", "2"), func(context.Context, *engine.ActivityInput) (any, error) {
		t.Fatal("ran without a slot")
		return nil, nil
	})
	sn := requireEngineSnooze(t, err)
	require.Contains(t, sn.Reason, "too many attempts of this process waiting")
	require.GreaterOrEqual(t, sn.After, DefaultMaxWait, "snoozed about as long as the others wait")
	require.EqualValues(t, 1, snoozes.Load())

	// Another key has its own waiters.
	_, err = i.ExecuteActivity(ctx, activityInput("other", "3"), func(context.Context, *engine.ActivityInput) (any, error) { return nil, nil })
	require.NoError(t, err)

	require.NoError(t, l.Release(ctx, blocker))
	select {
	case err := <-waited:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("the waiting attempt did not get the released slot")
	}
	require.Zero(t, i.backlog.waitingFor("registry"))
}

// Waiting never eats the attempt's own deadline: an attempt with little time
// left waits half of it at most, then snoozes rather than times out.
func TestInterceptorWaitFitsTheDeadline(t *testing.T) {
	t.Parallel()
	l := newTestLocalLimiter(t, LocalConfig{Limits: StaticLimits(Limits{Concurrency: 1})})
	i := newTestInterceptor(t, InterceptorConfig{Limiter: l, MaxWait: time.Minute})
	blocker, err := l.Acquire(context.Background(), "registry", "blocker")
	require.NoError(t, err)
	defer l.Release(context.Background(), blocker)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err = i.ExecuteActivity(ctx, activityInput("registry", "1"), func(context.Context, *engine.ActivityInput) (any, error) {
		return nil, nil
	})
	requireEngineSnooze(t, err)
	require.NoError(t, ctx.Err(), "waited past the attempt's deadline")
}

func TestSnoozeReason(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&DeniedError{Key: "k", Reason: ReasonRate, InUse: 3}, `ratelimit: key "k": rate limit (3 in use)`},
		{&UnavailableError{Op: "acquire", Key: "k", Err: errors.New("connection refused")}, `ratelimit: key "k": limiter unavailable: connection refused`},
		{errTooManyWaiters, `ratelimit: key "k": too many attempts of this process waiting`},
		{errQueued, `ratelimit: key "k": queued behind other attempts of this process`},
		{nil, `ratelimit: key "k": no slot within the wait`},
	} {
		require.Equal(t, tc.want, snoozeReason("k", tc.err))
	}
}
