package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/graftdev/graft/cancel"
	"github.com/graftdev/graft/engine"
)

// Movement moves Amount (in cents) into or out of Account.
type Movement struct {
	Account string
	Amount  int64
}

// bank is the system of record the activities change: a table of accounts
// and a journal of movements keyed by idempotency key, so that an activity
// run again (a retry, or a worker that died after the commit) moves money
// once.
type bank struct {
	db     *sqlx.DB
	schema string
	// flaky makes the first attempt of every deposit fail, as if the core
	// banking system timed out, to show a retry.
	flaky bool
}

func (b *bank) table(name string) string { return pq.QuoteIdentifier(b.schema) + "." + name }

func (b *bank) create(ctx context.Context) error {
	_, err := b.db.ExecContext(ctx, `
		CREATE TABLE `+b.table("accounts")+` (
			id      text PRIMARY KEY,
			balance bigint NOT NULL CHECK (balance >= 0),
			closed  boolean NOT NULL DEFAULT false);
		CREATE TABLE `+b.table("movements")+` (
			key     text PRIMARY KEY,
			account text NOT NULL,
			amount  bigint NOT NULL,
			at      timestamptz NOT NULL DEFAULT now())`)
	return err
}

func (b *bank) open(ctx context.Context, id string, balance int64, closed bool) error {
	_, err := b.db.ExecContext(ctx, `INSERT INTO `+b.table("accounts")+` (id, balance, closed) VALUES ($1, $2, $3)`, id, balance, closed)
	return err
}

func (b *bank) balances(ctx context.Context) (map[string]int64, error) {
	rows, err := b.db.QueryContext(ctx, `SELECT id, balance FROM `+b.table("accounts"))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var id string
		var bal int64
		if err := rows.Scan(&id, &bal); err != nil {
			return nil, err
		}
		out[id] = bal
	}
	return out, rows.Err()
}

// move applies delta to the account once per key: the journal row and the
// balance change commit together, and a key seen before changes nothing.
// A withdrawal beyond the balance and any movement on a closed account are
// refused with non-retryable errors: trying again cannot help.
func (b *bank) move(ctx context.Context, key, account string, delta int64) error {
	tx, err := b.db.BeginTxx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, `INSERT INTO `+b.table("movements")+` (key, account, amount) VALUES ($1, $2, $3)
		ON CONFLICT (key) DO NOTHING`, key, account, delta)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return nil // done before, by an earlier attempt
	}
	var balance int64
	var closed bool
	err = tx.QueryRowContext(ctx, `SELECT balance, closed FROM `+b.table("accounts")+` WHERE id = $1 FOR UPDATE`, account).Scan(&balance, &closed)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return engine.NewNonRetryableError("NoSuchAccount", "no account "+account, nil)
	case err != nil:
		return err
	case closed:
		return engine.NewNonRetryableError("AccountClosed", "account "+account+" is closed", nil)
	case balance+delta < 0:
		return engine.NewNonRetryableError("InsufficientFunds",
			fmt.Sprintf("account %s holds less than %s", account, cents(-delta)), map[string]int64{"balance": balance})
	}
	if _, err := tx.ExecContext(ctx, `UPDATE `+b.table("accounts")+` SET balance = balance + $2 WHERE id = $1`, account, delta); err != nil {
		return err
	}
	return tx.Commit()
}

// activities returns the bank's three activities. Each passes the
// idempotency key the engine (or, for the refund, the cancel package) gives
// it, stable across retries and re-execution after a crash.
func (b *bank) activities() (withdraw, deposit, refund *engine.Activity[Movement, string]) {
	withdraw = engine.NewActivity("bank.withdraw", func(ctx context.Context, m Movement) (string, error) {
		key := engine.ActivityInfoOf(ctx).IdempotencyKey
		return key, b.move(ctx, key, m.Account, -m.Amount)
	})
	deposit = engine.NewActivity("bank.deposit", func(ctx context.Context, m Movement) (string, error) {
		if b.flaky && engine.ActivityInfoOf(ctx).Attempt == 1 {
			return "", errors.New("core banking timed out")
		}
		key := engine.ActivityInfoOf(ctx).IdempotencyKey
		return key, b.move(ctx, key, m.Account, m.Amount)
	})
	refund = engine.NewActivity("bank.refund", func(ctx context.Context, m Movement) (string, error) {
		key := cancel.IdempotencyKey(ctx)
		return key, b.move(ctx, key, m.Account, m.Amount)
	})
	return withdraw, deposit, refund
}

func cents(c int64) string { return fmt.Sprintf("%d.%02d", c/100, c%100) }
