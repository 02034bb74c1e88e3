package engine

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestAttemptCtxReadsAsTheContextsItStandsFor: an attempt's lazy context
// answers as the timeout contexts it replaces would, whether or not its
// Done was asked for first.
func TestAttemptCtxReadsAsTheContextsItStandsFor(t *testing.T) {
	t.Parallel()
	type key struct{}
	base, cancelBase := context.WithCancel(context.WithValue(context.Background(), key{}, "v"))
	defer cancelBase()

	t.Run("live", func(t *testing.T) {
		c := newAttemptCtx(base, time.Now().Add(time.Hour), TimeoutStartToClose)
		require.NoError(t, c.Err())
		require.Equal(t, "v", c.Value(key{}))
		require.Same(t, &c.st, c.Value(activityCtxKey{}))
		d, ok := c.Deadline()
		require.True(t, ok)
		require.Equal(t, c.deadline, d)
		require.Nil(t, c.armed.Load(), "nothing made before Done")
		derived, cancel := context.WithCancel(c)
		defer cancel()
		require.NotNil(t, c.armed.Load(), "a derived context makes it")
		c.end()
		<-derived.Done()
		require.ErrorIs(t, c.Err(), context.Canceled)
	})
	t.Run("overdue without Done", func(t *testing.T) {
		c := newAttemptCtx(base, time.Now().Add(-time.Millisecond), TimeoutScheduleToClose)
		defer c.end()
		require.ErrorIs(t, c.Err(), context.DeadlineExceeded)
		var to *TimeoutError
		require.True(t, errors.As(context.Cause(c), &to), "cause %v", context.Cause(c))
		require.Equal(t, TimeoutScheduleToClose, to.Kind)
		select {
		case <-c.Done():
		default:
			t.Fatal("an overdue attempt's Done is open")
		}
	})
	t.Run("ended without Done", func(t *testing.T) {
		c := newAttemptCtx(base, time.Now().Add(time.Hour), TimeoutStartToClose)
		c.end()
		require.ErrorIs(t, c.Err(), context.Canceled)
		require.ErrorIs(t, context.Cause(c), context.Canceled)
		<-c.Done()
	})
	t.Run("base cancelled", func(t *testing.T) {
		b, cancel := context.WithCancelCause(base)
		c := newAttemptCtx(b, time.Now().Add(time.Hour), TimeoutStartToClose)
		defer c.end()
		cause := errors.New("run cancelled")
		cancel(cause)
		require.ErrorIs(t, c.Err(), context.Canceled)
		require.Equal(t, cause, context.Cause(c))
		<-c.Done()
	})
	t.Run("earlier base deadline", func(t *testing.T) {
		at := time.Now().Add(time.Minute)
		b, cancel := context.WithDeadline(base, at)
		defer cancel()
		c := newAttemptCtx(b, time.Now().Add(time.Hour), TimeoutStartToClose)
		defer c.end()
		d, ok := c.Deadline()
		require.True(t, ok)
		require.Equal(t, at, d)
	})
}
