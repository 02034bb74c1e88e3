package cancel_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/cancel"
	"github.com/graftdev/graft/engine"
)

// New rejects nonsense with a message naming the field.
func TestConfigValidation(t *testing.T) {
	t.Parallel()
	charge := engine.NewActivity("charge", func(context.Context, int) (int, error) { return 0, nil })
	refund := engine.NewActivity("refund", func(context.Context, int) (int, error) { return 0, nil })
	same := func(in, out int) int { return out }
	negative := engine.ActivityOptions{RetryPolicy: &engine.RetryPolicy{MaximumAttempts: -1}}
	cases := []struct {
		name string
		cfg  cancel.Config
		want string
	}{
		{"nil undo", cancel.Config{Compensations: []cancel.Compensation{cancel.Undo[int, int, int, int](charge, nil, same)}},
			`Config.Compensations[0]: the undo activity of "charge" is nil`},
		{"nil activity", cancel.Config{Compensations: []cancel.Compensation{cancel.Undo[int, int](nil, refund, same)}},
			`Config.Compensations[0]: the activity to undo is nil`},
		{"nil input", cancel.Config{Compensations: []cancel.Compensation{cancel.Undo[int, int, int, int](charge, refund, nil)}},
			`Config.Compensations[0]: the input function of "charge" is nil`},
		{"zero value", cancel.Config{Compensations: []cancel.Compensation{{}}},
			`Config.Compensations[0] is empty`},
		{"twice", cancel.Config{Compensations: []cancel.Compensation{cancel.Undo(charge, refund, same), cancel.Undo(charge, refund, same)}},
			`Config.Compensations[1]: "charge" already has a compensation`},
		{"itself", cancel.Config{Compensations: []cancel.Compensation{cancel.Undo(charge, charge, same)}},
			`cannot undo itself`},
		{"negative attempts", cancel.Config{Compensations: []cancel.Compensation{cancel.Undo(charge, refund, same).WithOptions(negative)}},
			`Config.Compensations[0]: RetryPolicy.MaximumAttempts`},
		{"default options", cancel.Config{ActivityOptions: &negative}, `Config.ActivityOptions: RetryPolicy.MaximumAttempts`},
		{"empty type", cancel.Config{CompensateOnFailure: []string{""}}, `Config.CompensateOnFailure[0] is empty`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := cancel.New(tc.cfg)
			require.ErrorContains(t, err, tc.want)
		})
	}
	_, err := cancel.New(cancel.Config{Compensations: []cancel.Compensation{cancel.Undo(charge, refund, same)}})
	require.NoError(t, err)
}
