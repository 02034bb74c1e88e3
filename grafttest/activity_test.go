package grafttest_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/grafttest"
)

type flaky struct{ failures int }

func (f *flaky) Error() string { return "flaky" }

// One activity runs alone with its info and headers in its context; the
// retry policy applies only when asked.
func TestRunActivity(t *testing.T) {
	t.Parallel()
	type seen struct {
		Key, Tenant string
		Attempt     int
		Resumed     int
	}
	act := engine.NewActivity("grafttest.charge", func(ctx context.Context, amount int) (seen, error) {
		info := engine.ActivityInfoOf(ctx)
		if info.Attempt < 3 {
			return seen{}, errors.Join(errors.New("try again"), &flaky{})
		}
		resumed, _ := engine.HeartbeatDetails[int](ctx)
		engine.Heartbeat(ctx, amount)
		return seen{Key: info.IdempotencyKey, Tenant: engine.ActivityHeadersOf(ctx)["tenant"], Attempt: info.Attempt, Resumed: resumed}, nil
	}).WithOptions(engine.ActivityOptions{RetryPolicy: &engine.RetryPolicy{InitialInterval: time.Millisecond}})

	// One attempt by default: the first one's error.
	_, err := grafttest.RunActivity(t, act, 10, nil)
	var f *flaky
	require.ErrorAs(t, err, &f)

	// With Retry, the definition's policy: the third attempt succeeds.
	got, err := grafttest.RunActivity(t, act, 10, &grafttest.ActivityOptions{Retry: true,
		Headers: engine.Headers{"tenant": "acme"}, HeartbeatDetails: 7})
	require.NoError(t, err)
	require.Equal(t, seen{Key: "grafttest/TestRunActivity/grafttest.charge", Tenant: "acme", Attempt: 3, Resumed: 7}, got)

	// A policy that lists the error's type stops at once.
	_, err = grafttest.RunActivity(t, act, 10, &grafttest.ActivityOptions{Retry: true,
		RetryPolicy: &engine.RetryPolicy{NonRetryableErrorTypes: []string{"flaky"}}})
	require.ErrorAs(t, err, &f)

	// Info given by the test.
	got, err = grafttest.RunActivity(t, act, 10, &grafttest.ActivityOptions{Info: engine.ActivityInfo{Attempt: 3, IdempotencyKey: "k"}})
	require.NoError(t, err)
	require.Equal(t, "k", got.Key)

	// A panic is an error, not a crashed test.
	boom := engine.NewActivity("grafttest.boom", func(context.Context, int) (int, error) { panic("boom") })
	_, err = grafttest.RunActivity(t, boom, 1, nil)
	var pe *engine.PanicError
	require.ErrorAs(t, err, &pe)
	require.Equal(t, "boom", pe.Value)
}
