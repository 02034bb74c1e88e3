package pgconn

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestDeadlineOfAllocatesNothing pins that reading a WithDeadline deadline,
// which every statement does, allocates nothing (a time.Time given as a
// context value is boxed at each read), and that a context without one
// has none.
func TestDeadlineOfAllocatesNothing(t *testing.T) {
	at := time.Now().Add(time.Minute)
	ctx, cancel := WithDeadline(context.Background(), at)
	defer cancel()
	var got time.Time
	allocs := testing.AllocsPerRun(100, func() { got = deadlineOf(ctx).at })
	require.True(t, got.Equal(at))
	require.Zero(t, allocs)
	require.Nil(t, deadlineOf(context.Background()))
	type key struct{}
	parent := context.WithValue(context.Background(), key{}, "v")
	withParent, cancel2 := WithDeadline(parent, at)
	defer cancel2()
	require.Equal(t, "v", withParent.Value(key{}), "the parent's values stay")
}

// TestWithDeadlineOfABackgroundCostsNoTimer pins what a bounded statement's
// context costs under a parent that never ends (every one of the engine's
// commits makes one): the context, its cancel function and the Done
// channel database/sql asks for before it takes a connection, with no
// timer of its own (context.WithDeadline's made and stopped one each time,
// seven allocations in all).
func TestWithDeadlineOfABackgroundCostsNoTimer(t *testing.T) {
	at := time.Now().Add(time.Minute)
	allocs := testing.AllocsPerRun(100, func() {
		ctx, cancel := WithDeadline(context.Background(), at)
		_ = ctx.Done()         // as database/sql's check, before it takes a free connection
		deadlineOf(ctx).hold() // the call took a connection
		cancel()
	})
	require.LessOrEqual(t, allocs, float64(3))
}

// TestWithDeadlineEndsLikeContextWithDeadline pins that a WithDeadline
// context under a parent that never ends ends as context.WithDeadline's
// does: Done closes at the deadline (or at cancel) with Err
// DeadlineExceeded (Canceled), a context derived from it ends with it,
// Err reports the deadline once it has passed even when no Done was asked
// for, and contexts given in any order each end at their own deadline
// while the others wait on.
func TestWithDeadlineEndsLikeContextWithDeadline(t *testing.T) {
	wait := func(ctx context.Context) {
		t.Helper()
		select {
		case <-ctx.Done():
		case <-time.After(time.Minute):
			t.Fatal("the context did not end")
		}
	}
	now := time.Now()
	far, cancelFar := WithDeadline(context.Background(), now.Add(time.Hour))
	defer cancelFar()
	late, cancelLate := WithDeadline(context.Background(), now.Add(300*time.Millisecond))
	defer cancelLate()
	early, cancelEarly := WithDeadline(context.Background(), now.Add(50*time.Millisecond))
	defer cancelEarly()
	d, ok := late.Deadline()
	require.True(t, ok)
	require.True(t, d.Equal(now.Add(300*time.Millisecond)))
	require.NotNil(t, far.Done())
	require.NotNil(t, late.Done())
	child, cancelChild := context.WithCancel(early)
	defer cancelChild()
	require.NoError(t, early.Err())
	wait(early)
	require.ErrorIs(t, early.Err(), context.DeadlineExceeded)
	wait(child)
	require.ErrorIs(t, child.Err(), context.DeadlineExceeded)
	wait(late)
	require.False(t, time.Now().Before(now.Add(300*time.Millisecond)), "ended before its deadline")
	require.ErrorIs(t, late.Err(), context.DeadlineExceeded)
	require.NoError(t, far.Err())
	select {
	case <-far.Done():
		t.Fatal("a context ended before its deadline")
	default:
	}

	// Cancelled: Done closes, Err is Canceled, a derived context ends.
	derived, cancelDerived := context.WithCancel(far)
	defer cancelDerived()
	cancelFar()
	wait(far)
	require.ErrorIs(t, far.Err(), context.Canceled)
	wait(derived)
	cancelFar() // twice: no effect
	require.ErrorIs(t, far.Err(), context.Canceled)

	// No Done asked for: Err still reports the deadline once past.
	past, cancelPast := WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancelPast()
	require.ErrorIs(t, past.Err(), context.DeadlineExceeded)
	wait(past)

	// A parent that ends keeps context.WithDeadline's context.
	parent, cancelParent := context.WithCancel(context.Background())
	wrapped, cancelWrapped := WithDeadline(parent, time.Now().Add(time.Hour))
	defer cancelWrapped()
	require.False(t, deadlineOf(wrapped).own)
	cancelParent()
	wait(wrapped)
	require.ErrorIs(t, wrapped.Err(), context.Canceled)
	alarm.mu.Lock()
	defer alarm.mu.Unlock()
	require.Empty(t, alarm.waiting, "ended contexts left in the alarm")
}
