package main

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/graftdev/graft/cancel"
	"github.com/graftdev/graft/engine"
)

// registryKey is the rate limiter's key for every call to the registry.
const registryKey = "registry"

// Renewal is the workflow's input, built by intake from the legacy row.
type Renewal struct {
	Domain   string
	Customer string
}

// Premium is the registry's price check.
type Premium struct {
	Premium bool  `json:"premium"`
	Price   int64 `json:"price"`
}

// Charge is a payment to take for an operation.
type Charge struct {
	Operation string
	Amount    int64
}

// Receipt is what a renewal returns.
type Receipt struct {
	ChargeID string
	Expires  string
}

// renewals declares the renewal workflow on a registry and a payments
// table. The workflow reads as the business does; the interceptors around
// it add the tracing, the registry's limits, the refund on cancellation
// and the legacy row's status.
type renewals struct {
	db       *sqlx.DB
	payments string // the legacy schema's payments table
	registry string
	hc       *http.Client
}

func (r *renewals) definitions() (*engine.Workflow[Renewal, Receipt], []cancel.Compensation, []engine.Definition) {
	retry := engine.ActivityOptions{StartToCloseTimeout: 30 * time.Second,
		RetryPolicy: &engine.RetryPolicy{InitialInterval: 100 * time.Millisecond, MaximumInterval: 2 * time.Second, MaximumAttempts: 20}}
	check := engine.NewActivity("registry.check", func(ctx context.Context, domain string) (string, error) {
		var out map[string]string
		return out["status"], r.post(ctx, domain, "check", &out)
	}).WithOptions(retry)
	premium := engine.NewActivity("registry.premium", func(ctx context.Context, domain string) (Premium, error) {
		var out Premium
		return out, r.post(ctx, domain, "premium", &out)
	}).WithOptions(retry)
	renew := engine.NewActivity("registry.renew", func(ctx context.Context, domain string) (string, error) {
		var out map[string]string
		return out["expires"], r.post(ctx, domain, "renew", &out)
	}).WithOptions(retry)
	charge := engine.NewActivity("billing.charge", func(ctx context.Context, c Charge) (string, error) {
		id := "ch_" + engine.ActivityInfoOf(ctx).IdempotencyKey // charged once, whatever runs again
		_, err := r.db.ExecContext(ctx, `INSERT INTO `+r.payments+` (id, operation, amount) VALUES ($1, $2, $3)
			ON CONFLICT (id) DO NOTHING`, id, c.Operation, c.Amount)
		return id, err
	}).WithOptions(retry)
	refund := engine.NewActivity("billing.refund", func(ctx context.Context, chargeID string) (string, error) {
		id := "re_" + cancel.IdempotencyKey(ctx)
		_, err := r.db.ExecContext(ctx, `UPDATE `+r.payments+` SET refund_id = $2, refunded_at = now()
			WHERE id = $1 AND refund_id IS NULL`, chargeID, id)
		return id, err
	})
	notify := engine.NewActivity("customer.notify", func(ctx context.Context, msg string) (struct{}, error) {
		return struct{}{}, nil // an email, in real life
	}).WithOptions(retry)

	wf := engine.NewWorkflow("renewal", func(ctx engine.Context, in Renewal) (Receipt, error) {
		if _, err := check.Run(ctx, in.Domain); err != nil {
			return Receipt{}, err
		}
		price, err := premium.Run(ctx, in.Domain)
		if err != nil {
			return Receipt{}, err
		}
		chargeID, err := charge.Run(ctx, Charge{Operation: engine.WorkflowInfoOf(ctx).WorkflowID, Amount: price.Price})
		if err != nil {
			return Receipt{}, err
		}
		if price.Premium {
			// A premium price needs the customer's yes. The wait costs a
			// row, not a goroutine; a cancellation ends it, and the cancel
			// interceptor refunds the charge.
			ok, err := engine.GetSignalChannel[bool](ctx, "confirm").Receive(ctx)
			if err != nil {
				return Receipt{}, err
			}
			if !ok {
				return Receipt{}, cancel.Abort(ctx, "the customer declined the premium price")
			}
		}
		expires, err := renew.Run(ctx, in.Domain)
		if err != nil {
			return Receipt{}, err
		}
		if _, err := notify.Run(ctx, in.Domain+" renewed until "+expires); err != nil {
			return Receipt{}, err
		}
		return Receipt{ChargeID: chargeID, Expires: expires}, nil
	}).WithSignals(engine.DeclareSignal[bool]("confirm", "the customer's answer to a premium price: true renews, false cancels with a refund"))
	undo := []cancel.Compensation{cancel.Undo(charge, refund, func(_ Charge, chargeID string) string { return chargeID })}
	return wf, undo, []engine.Definition{check, premium, renew, charge, refund, notify, wf}
}

// post calls the registry. A 429 gives the attempt back to the engine for
// the Retry-After without counting a retry (it should not happen: the rate
// limiter keeps calls within the limits); other failures are retried.
func (r *renewals) post(ctx context.Context, domain, op string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.registry+"/v1/domains/"+url.PathEscape(domain)+"/"+op, nil)
	if err != nil {
		return err
	}
	err = call(r.hc, req, out)
	var re *registryError
	if errors.As(err, &re) && re.Status == http.StatusTooManyRequests {
		return engine.Snooze(max(re.RetryAfter, 100*time.Millisecond), re.Error())
	}
	return err
}

func paymentsTable(schema string) string { return pq.QuoteIdentifier(schema) + ".payments" }
