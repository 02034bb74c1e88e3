package main

import (
	"context"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/graftdev/graft/engine"
)

// Subscription is the workflow's input: one billing period of one
// customer's subscription. Each period's run continues as new with the
// next, so a subscription that lasts ten years keeps a record of two steps.
type Subscription struct {
	Customer string
	Email    string
	Price    int64         // cents per period
	Every    time.Duration // the period: 30 days in production
	Period   int           // 1 for the first
	Date     time.Time     // when this period starts
}

// Invoice is one charge, as the billing table holds it.
type Invoice struct {
	Customer string    `db:"customer"`
	Period   int       `db:"period"`
	Amount   int64     `db:"amount"`
	Date     time.Time `db:"date"`
}

// billing holds the tables the activities write: invoices (one per customer
// and period, whatever runs again) and an outbox of emails.
type billing struct {
	db     *sqlx.DB
	schema string
}

func (b *billing) table(name string) string { return pq.QuoteIdentifier(b.schema) + "." + name }

func (b *billing) create(ctx context.Context) error {
	_, err := b.db.ExecContext(ctx, `
		CREATE TABLE `+b.table("invoices")+` (
			customer text NOT NULL,
			period   int NOT NULL,
			amount   bigint NOT NULL,
			date     timestamptz NOT NULL,
			PRIMARY KEY (customer, period));
		CREATE TABLE `+b.table("outbox")+` (
			key      text PRIMARY KEY,
			email    text NOT NULL,
			subject  text NOT NULL)`)
	return err
}

func (b *billing) invoices(ctx context.Context, customer string) ([]Invoice, error) {
	var out []Invoice
	err := b.db.SelectContext(ctx, &out, `SELECT customer, period, amount, date FROM `+b.table("invoices")+`
		WHERE customer = $1 ORDER BY period`, customer)
	return out, err
}

func (b *billing) emails(ctx context.Context, email string) ([]string, error) {
	var out []string
	err := b.db.SelectContext(ctx, &out, `SELECT subject FROM `+b.table("outbox")+` WHERE email = $1 ORDER BY subject`, email)
	return out, err
}

// definitions returns the subscription workflow and everything to register.
func (b *billing) definitions() (*engine.Workflow[Subscription, struct{}], []engine.Definition) {
	charge := engine.NewActivity("subscription.charge", func(ctx context.Context, s Subscription) (struct{}, error) {
		// One invoice per customer and period: a charge run again is a no-op.
		_, err := b.db.ExecContext(ctx, `INSERT INTO `+b.table("invoices")+` (customer, period, amount, date)
			VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING`, s.Customer, s.Period, s.Price, s.Date)
		return struct{}{}, err
	})
	sorry := engine.NewActivity("subscription.sorry_email", func(ctx context.Context, s Subscription) (struct{}, error) {
		_, err := b.db.ExecContext(ctx, `INSERT INTO `+b.table("outbox")+` (key, email, subject) VALUES ($1, $2, $3)
			ON CONFLICT DO NOTHING`, engine.ActivityInfoOf(ctx).IdempotencyKey, s.Email, "Sorry to see you go, "+s.Customer)
		return struct{}{}, err
	})

	var monthly *engine.Workflow[Subscription, struct{}]
	monthly = engine.NewWorkflow("subscription.monthly", func(ctx engine.Context, s Subscription) (struct{}, error) {
		engine.SetQueryHandler(ctx, "period", func(struct{}) (int, error) { return s.Period, nil })
		if _, err := charge.Run(ctx, s); err != nil {
			return struct{}{}, err
		}
		// A durable timer: the run is unloaded while it sleeps (a row, no
		// goroutine), survives restarts, and wakes on any worker.
		if err := engine.Sleep(ctx, s.Every); err != nil {
			// Cancelled during the period. The cleanup runs in a context
			// the cancellation does not touch, then the run ends cancelled.
			if _, serr := sorry.Run(engine.Disconnected(ctx), s); serr != nil {
				return struct{}{}, fmt.Errorf("%w (and the sorry email failed: %v)", err, serr)
			}
			return struct{}{}, err
		}
		next := s
		next.Period, next.Date = s.Period+1, s.Date.Add(s.Every)
		return struct{}{}, engine.ContinueAsNew(ctx, monthly, next)
	})
	return monthly, []engine.Definition{charge, sorry, monthly}
}
