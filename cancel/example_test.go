package cancel_test

import (
	"context"
	"errors"

	"github.com/graftdev/graft/cancel"
	"github.com/graftdev/graft/engine"
)

// Declare once that a charge is undone by a refund; the renewal workflow
// then says nothing about refunds. Cancelling the operation (Client.Cancel),
// or the workflow aborting it, refunds the charge exactly once.
func Example() {
	charge := engine.NewActivity("payments.charge", func(ctx context.Context, amount int) (string, error) {
		// Call the provider with engine.ActivityInfoOf(ctx).IdempotencyKey.
		return "ch_123", nil
	})
	refund := engine.NewActivity("payments.refund", func(ctx context.Context, chargeID string) (string, error) {
		// Call the provider with cancel.IdempotencyKey(ctx): stable across
		// retries, crashes and operator retries.
		return "re_456", nil
	})
	register := engine.NewActivity("registry.renew", func(ctx context.Context, domain string) (string, error) {
		return "", engine.NewNonRetryableError("Rejected", "the registry refuses "+domain, nil)
	})
	renew := engine.NewWorkflow("renew", func(ctx engine.Context, domain string) (string, error) {
		if _, err := charge.Run(ctx, 1200); err != nil {
			return "", err
		}
		reg, err := register.Run(ctx, domain)
		var app *engine.ApplicationError
		if errors.As(err, &app) && app.Type == "Rejected" {
			return "", cancel.Abort(ctx, "registry rejected "+domain) // ends cancelled, refunded
		}
		return reg, err
	})

	ic, err := cancel.New(cancel.Config{
		Compensations: []cancel.Compensation{
			cancel.Undo(charge, refund, func(amount int, chargeID string) string { return chargeID }),
		},
	})
	if err != nil {
		panic(err)
	}
	e, err := engine.New(engine.Config{ /* DB, DatabaseURL, ... */ Interceptors: []engine.Interceptor{ic}})
	if err != nil {
		return // no database in this example
	}
	_ = e.Register(charge, refund, register, renew)
	_ = ic.Register(e)
}
