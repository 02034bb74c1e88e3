package main

import (
	"context"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/graftdev/graft/engine"
)

// Item is one order item, the workflow's input.
type Item struct {
	OrderID string
	Product string
	Card    string // the card number; one ending in 0002 is declined
}

// PaymentFailed is the Details of a PaymentFailed error.
type PaymentFailed struct {
	Card   string `json:"card"`
	Reason string `json:"reason"`
}

// retry is the policy of all three activities: 1 s before the first retry,
// doubling, at most 5 attempts (waits of 1, 2, 4 and 8 s).
var retry = engine.RetryPolicy{InitialInterval: time.Second, BackoffCoefficient: 2, MaximumAttempts: 5}

// shop holds the items table the activities move through its states:
// initialised, fulfilled, archived.
type shop struct {
	db     *sqlx.DB
	schema string
	// busy makes the first fulfilment attempt of every item fail, as if the
	// warehouse was busy; for the orders in down, every attempt fails.
	busy bool
	down map[string]bool
}

func (s *shop) table() string { return pq.QuoteIdentifier(s.schema) + ".items" }

func (s *shop) create(ctx context.Context) error {
	_, err := s.db.ExecContext(ctx, `CREATE TABLE `+s.table()+` (
		order_id text PRIMARY KEY,
		product  text NOT NULL,
		status   text NOT NULL,
		payment  text)`)
	return err
}

func (s *shop) status(ctx context.Context, orderID string) (string, error) {
	var st string
	err := s.db.GetContext(ctx, &st, `SELECT status FROM `+s.table()+` WHERE order_id = $1`, orderID)
	return st, err
}

// definitions returns the order item workflow and its activities. Each
// activity is safe to run again: it moves the row only from the state
// before it.
func (s *shop) definitions() (*engine.Workflow[Item, string], []engine.Definition) {
	opts := engine.ActivityOptions{StartToCloseTimeout: 10 * time.Second, RetryPolicy: &retry}
	initialise := engine.NewActivity("orderitem.initialise", func(ctx context.Context, it Item) (struct{}, error) {
		_, err := s.db.ExecContext(ctx, `INSERT INTO `+s.table()+` (order_id, product, status) VALUES ($1, $2, 'initialised')
			ON CONFLICT (order_id) DO NOTHING`, it.OrderID, it.Product)
		return struct{}{}, err
	}).WithOptions(opts)
	fulfil := engine.NewActivity("orderitem.fulfil", func(ctx context.Context, it Item) (string, error) {
		if strings.HasSuffix(it.Card, "0002") {
			// Retrying cannot make the bank accept the card.
			return "", engine.NewNonRetryableError("PaymentFailed", "the card was declined",
				PaymentFailed{Card: "…" + it.Card[len(it.Card)-4:], Reason: "insufficient funds"})
		}
		if s.down[it.OrderID] || (s.busy && engine.ActivityInfoOf(ctx).Attempt == 1) {
			return "", engine.NewApplicationError("WarehouseUnavailable", "the warehouse did not answer", nil)
		}
		payment := "pay_" + engine.ActivityInfoOf(ctx).IdempotencyKey
		_, err := s.db.ExecContext(ctx, `UPDATE `+s.table()+` SET status = 'fulfilled', payment = $2
			WHERE order_id = $1 AND status = 'initialised'`, it.OrderID, payment)
		return payment, err
	}).WithOptions(opts)
	archive := engine.NewActivity("orderitem.archive", func(ctx context.Context, it Item) (struct{}, error) {
		_, err := s.db.ExecContext(ctx, `UPDATE `+s.table()+` SET status = 'archived'
			WHERE order_id = $1 AND status = 'fulfilled'`, it.OrderID)
		return struct{}{}, err
	}).WithOptions(opts)

	process := engine.NewWorkflow("orderitem.process", func(ctx engine.Context, it Item) (string, error) {
		if _, err := initialise.Run(ctx, it); err != nil {
			return "", err
		}
		payment, err := fulfil.Run(ctx, it)
		if err != nil {
			return "", err // typed: the caller finds it with errors.As
		}
		if _, err := archive.Run(ctx, it); err != nil {
			return "", err
		}
		return payment, nil
	})
	return process, []engine.Definition{initialise, fulfil, archive, process}
}
