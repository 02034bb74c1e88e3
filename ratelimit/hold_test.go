package ratelimit

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
)

// gatedRenewals lets renewals through only when the test opens the gate, so
// a test decides whether a renewal comes before or after another call.
type gatedRenewals struct {
	Limiter
	gate chan struct{}
}

func (g *gatedRenewals) Renew(ctx context.Context, lease Lease) (Lease, error) {
	select {
	case <-g.gate:
	case <-ctx.Done():
		return Lease{}, &UnavailableError{Op: "renew", Key: lease.Key, Err: ctx.Err()}
	}
	return g.Limiter.Renew(ctx, lease)
}

// failingRenewals is a limiter whose store goes away after the grant.
type failingRenewals struct{ Limiter }

func (failingRenewals) Renew(_ context.Context, lease Lease) (Lease, error) {
	return Lease{}, &UnavailableError{Op: "renew", Key: lease.Key, Err: errors.New("connection refused")}
}

// requireLost waits until ctx is cancelled because its lease was lost.
func requireLost(t *testing.T, ctx context.Context) {
	t.Helper()
	select {
	case <-ctx.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("the call's context was not cancelled after its lease was lost")
	}
	require.ErrorIs(t, context.Cause(ctx), ErrLeaseLost)
}

// TestHoldCancelsTheCallWhenItsSlotIsGiven away: a holder paused past its
// TTL (the fake clock jumps) finds its slot taken by another caller. Its
// renewal is refused and its call's context is cancelled, and the key never
// counts more than its Concurrency.
func TestHoldCancelsTheCallWhenItsSlotIsGivenAway(t *testing.T) {
	t.Parallel()
	for name, newLimiter := range limiterKinds() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			clock := newFakeClock()
			l := newLimiter(t, StaticLimits(Limits{Concurrency: 1, LeaseTTL: 3 * time.Second}), clock)
			g := &gatedRenewals{Limiter: l, gate: make(chan struct{})}
			ctx := context.Background()
			h, err := Hold(ctx, g, "registry", "a", 0)
			require.NoError(t, err)
			require.NoError(t, h.Context().Err())

			clock.Advance(10 * time.Second) // a's process was paused
			b, err := l.Acquire(ctx, "registry", "b")
			require.NoError(t, err, "a's lease ran out, so its slot is free")
			close(g.gate)
			requireLost(t, h.Context())
			_, err = l.Acquire(ctx, "registry", "c")
			require.Equal(t, 1, requireDenied(t, err, ReasonConcurrency).InUse, "a's lost lease is not counted again")

			require.NoError(t, h.Release(ctx))
			require.NoError(t, l.Release(ctx, b))
		})
	}
}

// TestHoldEndsWithItsLimiter: a Held never released (a caller's bug, or a
// call abandoned at shutdown) does not outlive its limiter: closing the
// limiter stops its renewals (their goroutine ends) and cancels its call,
// since nothing renews the lease any more. Release afterwards is harmless.
func TestHoldEndsWithItsLimiter(t *testing.T) {
	t.Parallel()
	for name, newLimiter := range limiterKinds() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			// A long TTL: no renewal is due while the test runs, so only the
			// close can end the renewals.
			l := newLimiter(t, StaticLimits(Limits{Concurrency: 1, LeaseTTL: time.Hour}), nil)
			ctx := context.Background()
			h, err := Hold(ctx, l, "registry", "a", 0)
			require.NoError(t, err)

			require.NoError(t, l.(io.Closer).Close())
			select {
			case <-h.done:
			case <-time.After(30 * time.Second):
				t.Fatal("the Held kept renewing after its limiter was closed: its goroutine leaks")
			}
			requireLost(t, h.Context())
			require.ErrorIs(t, h.Lost(), ErrLeaseLost)
			require.ErrorContains(t, h.Lost(), "limiter was closed")
			require.NoError(t, h.Release(ctx))
		})
	}
}

// TestHoldCancelsTheCallWhenItCannotRenew: renewals that fail for a whole TTL
// may have let the lease run out and its slot go to another process, so the
// call is stopped rather than left running beyond its lease.
func TestHoldCancelsTheCallWhenItCannotRenew(t *testing.T) {
	t.Parallel()
	l := newTestLocalLimiter(t, LocalConfig{Limits: StaticLimits(Limits{Concurrency: 1, LeaseTTL: 300 * time.Millisecond})})
	ctx := context.Background()
	h, err := Hold(ctx, failingRenewals{l}, "registry", "a", 0)
	require.NoError(t, err)
	requireLost(t, h.Context())
	require.NoError(t, h.Release(ctx))
	_, err = l.Acquire(ctx, "registry", "b")
	require.NoError(t, err, "released after the loss")
}

// TestHoldContextEndsWithTheCall: the context handed to the call ends at
// Release, and with the caller's own context.
func TestHoldContextEndsWithTheCall(t *testing.T) {
	t.Parallel()
	l := newTestLocalLimiter(t, LocalConfig{Limits: StaticLimits(Limits{Concurrency: 2})})
	ctx, cancel := context.WithCancel(context.Background())
	a, err := Hold(ctx, l, "registry", "a", 0)
	require.NoError(t, err)
	b, err := Hold(context.Background(), l, "registry", "b", 0)
	require.NoError(t, err)
	cancel()
	<-a.Context().Done()
	require.ErrorIs(t, context.Cause(a.Context()), context.Canceled)
	require.NoError(t, b.Context().Err())
	require.NoError(t, b.Release(context.Background()))
	require.Error(t, b.Context().Err())
	require.NoError(t, a.Release(context.Background()))
}

// TestInterceptorSnoozesACallWhoseLeaseWasLost: the activity sees its context
// cancelled and, if it fails, the attempt goes back to the engine without
// counting a retry; a call that finishes anyway keeps its result.
func TestInterceptorSnoozesACallWhoseLeaseWasLost(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		end  func(ctx context.Context) (any, error)
	}{
		{"fails", func(ctx context.Context) (any, error) { return nil, ctx.Err() }},
		{"finishes", func(context.Context) (any, error) { return "done", nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			clock := newFakeClock()
			l := newTestLocalLimiter(t, LocalConfig{Limits: StaticLimits(Limits{Concurrency: 1, LeaseTTL: 3 * time.Second}), Clock: clock})
			g := &gatedRenewals{Limiter: l, gate: make(chan struct{})}
			i := newTestInterceptor(t, InterceptorConfig{Limiter: g, MaxWait: -1})
			running := make(chan struct{})
			type result struct {
				out any
				err error
			}
			done := make(chan result, 1)
			go func() {
				out, err := i.ExecuteActivity(context.Background(), activityInput("registry", "1"), func(ctx context.Context, _ *engine.ActivityInput) (any, error) {
					close(running)
					<-ctx.Done()
					return tc.end(ctx)
				})
				done <- result{out, err}
			}()
			<-running
			clock.Advance(10 * time.Second) // the worker was paused
			_, err := l.Acquire(context.Background(), "registry", "other")
			require.NoError(t, err)
			close(g.gate)
			var r result
			select {
			case r = <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("the call was not stopped after its lease was lost")
			}
			if tc.name == "finishes" {
				require.NoError(t, r.err)
				require.Equal(t, "done", r.out)
				return
			}
			sn := requireEngineSnooze(t, r.err)
			require.Contains(t, sn.Reason, "lease lost")
		})
	}
}
