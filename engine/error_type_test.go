package engine_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/grafttest"
)

type cardDeclinedError struct{ Code string }

func (e *cardDeclinedError) Error() string { return "card declined: " + e.Code }

type valueError struct{}

func (valueError) Error() string { return "value error" }

// A plain Go error is recorded with a type a retry policy can name: the
// outermost type in its chain that is not errors.New's, fmt.Errorf's or
// errors.Join's.
func TestErrorTypeOf(t *testing.T) {
	t.Parallel()
	declined := &cardDeclinedError{Code: "51"}
	for _, tc := range []struct {
		err  error
		want string
	}{
		{errors.New("boom"), engine.ErrorTypeUntyped},
		{fmt.Errorf("charge: %w", errors.New("boom")), engine.ErrorTypeUntyped},
		{declined, "cardDeclinedError"},
		{fmt.Errorf("charge: %w", declined), "cardDeclinedError"},
		{fmt.Errorf("charge: %w: %w", declined, errors.New("x")), "cardDeclinedError"},
		{errors.Join(fmt.Errorf("a: %w", valueError{}), declined), "valueError"},
		{errors.Join(errors.New("a"), declined), "cardDeclinedError"},
		{fmt.Errorf("wrapped: %w", engine.NewApplicationError("Declined", "no", nil)), "Declined"},
		{nil, ""},
	} {
		require.Equal(t, tc.want, engine.ErrorTypeOf(tc.err), "%v", tc.err)
	}
}

// NonRetryableErrorTypes names a plain Go error type, even wrapped with
// fmt.Errorf: the first attempt's error stops the retries, and the
// workflow reads it back with that type.
func TestNonRetryableErrorTypesMatchPlainErrors(t *testing.T) {
	t.Parallel()
	var attempts atomic.Int32
	charge := engine.NewActivity("errtype.charge", func(context.Context, string) (string, error) {
		attempts.Add(1)
		return "", fmt.Errorf("charge: %w", &cardDeclinedError{Code: "51"})
	}).WithOptions(engine.ActivityOptions{RetryPolicy: &engine.RetryPolicy{
		InitialInterval: 10 * time.Millisecond, MaximumAttempts: 5, NonRetryableErrorTypes: []string{"cardDeclinedError"}}})
	wf := engine.NewWorkflow("errtype.renew", func(ctx engine.Context, d string) (string, error) {
		return charge.Run(ctx, d)
	})
	e := grafttest.NewEngine(t)
	require.NoError(t, e.Register(wf, charge))
	grafttest.StartWorker(t, e)
	ctx := grafttest.Context(t, time.Minute)
	run, err := wf.Start(ctx, e.Client(), "example.org", nil)
	require.NoError(t, err)
	_, err = run.Result(ctx)
	var app *engine.ApplicationError
	require.ErrorAs(t, err, &app)
	require.Equal(t, "cardDeclinedError", app.Type)
	require.Equal(t, "charge: card declined: 51", app.Message)
	require.Equal(t, int32(1), attempts.Load(), "a listed type is not retried")
}
