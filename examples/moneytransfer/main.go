// Command moneytransfer moves money between two accounts as a durable
// workflow: withdraw, then deposit. A deposit that fails for a moment is
// retried; a withdrawal beyond the balance fails at once with a
// non-retryable InsufficientFunds error; a deposit that can never succeed
// (the account is closed) fails the transfer, and the cancel package's
// interceptor compensates the withdrawal with a refund, exactly once.
//
// Run it with `go run ./examples/moneytransfer` (PostgreSQL from
// GRAFT_DATABASE_URL; see scripts/services.sh). It works in a schema of its
// own, dropped at the end unless -keep is given.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/graftdev/graft/cancel"
	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/examples/exampleenv"
)

// Transfer is the workflow's input.
type Transfer struct {
	From, To string
	Amount   int64 // cents
}

// Receipt is what a completed transfer returns: the bank's references of
// both movements.
type Receipt struct {
	Withdrawal, Deposit string
}

// options are the command line's settings.
type options struct {
	DatabaseURL string
	Schema      string
	Keep        bool
}

func main() {
	o := options{DatabaseURL: exampleenv.DatabaseURL()}
	flag.StringVar(&o.Schema, "schema", "graft_example_moneytransfer", "schema for graft's tables and the bank's")
	flag.BoolVar(&o.Keep, "keep", false, "keep the schema at the end, to look at graft's tables")
	flag.Parse()
	if err := run(context.Background(), o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "moneytransfer:", err)
		os.Exit(1)
	}
}

// definitions declares the transfer workflow on the bank's activities.
func definitions(b *bank) (*engine.Workflow[Transfer, Receipt], *cancel.Interceptor, []engine.Definition, error) {
	withdraw, deposit, refund := b.activities()
	retry := engine.ActivityOptions{RetryPolicy: &engine.RetryPolicy{InitialInterval: 100 * time.Millisecond, MaximumAttempts: 5}}
	withdraw, deposit = withdraw.WithOptions(retry), deposit.WithOptions(retry)

	transfer := engine.NewWorkflow("moneytransfer.transfer", func(ctx engine.Context, t Transfer) (Receipt, error) {
		w, err := withdraw.Run(ctx, Movement{Account: t.From, Amount: t.Amount})
		if err != nil {
			return Receipt{}, err
		}
		// If this fails for good, the workflow fails and the interceptor
		// below refunds the withdrawal: the workflow says nothing about it.
		d, err := deposit.Run(ctx, Movement{Account: t.To, Amount: t.Amount})
		if err != nil {
			return Receipt{}, err
		}
		return Receipt{Withdrawal: w, Deposit: d}, nil
	})

	// A withdrawal is undone by a refund of the same amount to the same account.
	ic, err := cancel.New(cancel.Config{
		Compensations:       []cancel.Compensation{cancel.Undo(withdraw, refund, func(m Movement, _ string) Movement { return m })},
		CompensateOnFailure: []string{transfer.Name()},
	})
	if err != nil {
		return nil, nil, nil, err
	}
	return transfer, ic, []engine.Definition{withdraw, deposit, refund, transfer}, nil
}

func run(ctx context.Context, o options, out io.Writer) (err error) {
	env, err := exampleenv.Setup(ctx, exampleenv.Options{Owner: "moneytransfer", DatabaseURL: o.DatabaseURL, Schema: o.Schema, Keep: o.Keep})
	if err != nil {
		return err
	}
	defer env.Close(&err)
	db := env.DB

	b := &bank{db: db, schema: o.Schema, flaky: true}
	if err := b.create(ctx); err != nil {
		return err
	}
	for _, a := range []struct {
		id      string
		balance int64
		closed  bool
	}{{"alice", 100_00, false}, {"bob", 50_00, false}, {"carol", 0, true}} {
		if err := b.open(ctx, a.id, a.balance, a.closed); err != nil {
			return err
		}
	}

	transfer, ic, defs, err := definitions(b)
	if err != nil {
		return err
	}
	// Warnings only: the story is in what run prints.
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	e, err := engine.New(engine.Config{DB: db, DatabaseURL: o.DatabaseURL, Schema: o.Schema, Logger: logger,
		Interceptors: []engine.Interceptor{ic}})
	if err != nil {
		return err
	}
	defer e.Close()
	if err := e.Migrate(ctx); err != nil {
		return err
	}
	if err := e.Register(defs...); err != nil {
		return err
	}
	if err := ic.Register(e); err != nil {
		return err
	}
	w, err := e.NewWorker(engine.WorkerConfig{})
	if err != nil {
		return err
	}
	if err := w.Start(ctx); err != nil {
		return err
	}
	defer func() { _ = w.Stop(context.Background()) }() // at exit; a run it could not hand back resumes elsewhere

	before, err := b.balances(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "before: alice %s, bob %s, carol %s (closed)\n", cents(before["alice"]), cents(before["bob"]), cents(before["carol"]))

	c := e.Client()
	transfers := []struct {
		id string
		t  Transfer
	}{
		{"transfer-1", Transfer{From: "alice", To: "bob", Amount: 30_00}},
		{"transfer-2", Transfer{From: "bob", To: "alice", Amount: 500_00}},
		{"transfer-3", Transfer{From: "alice", To: "carol", Amount: 20_00}},
	}
	runs := make([]*engine.Run[Receipt], len(transfers))
	for i, tr := range transfers {
		// The workflow ID is the transfer's own ID: starting it twice
		// cannot move the money twice.
		if runs[i], err = transfer.Start(ctx, c, tr.t, &engine.StartOptions{ID: tr.id}); err != nil {
			return err
		}
	}
	wctx, cancelWait := context.WithTimeout(ctx, time.Minute)
	defer cancelWait()
	for i, tr := range transfers {
		fmt.Fprintf(out, "%s %s -> %s %s: ", tr.id, tr.t.From, tr.t.To, cents(tr.t.Amount))
		_, err := runs[i].Result(wctx)
		var app *engine.ApplicationError
		switch {
		case err == nil:
			fmt.Fprintf(out, "done (deposit %s)\n", attempts(ctx, c, tr.id, "bank.deposit"))
		case errors.As(err, &app) && app.Type == "InsufficientFunds":
			fmt.Fprintf(out, "refused, %s (withdrawal %s)\n", app.Message, attempts(ctx, c, tr.id, "bank.withdraw"))
		case errors.As(err, &app):
			rep, serr := cancel.Status(ctx, c, tr.id)
			if serr != nil {
				return serr
			}
			fmt.Fprintf(out, "failed, %s; withdrawal compensated: %s\n", app.Message, describe(rep))
		default:
			return fmt.Errorf("%s: %w", tr.id, err)
		}
	}

	after, err := b.balances(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "after:  alice %s, bob %s, carol %s\n", cents(after["alice"]), cents(after["bob"]), cents(after["carol"]))
	var sumBefore, sumAfter int64
	for id := range before {
		sumBefore, sumAfter = sumBefore+before[id], sumAfter+after[id]
	}
	if sumBefore != sumAfter {
		return fmt.Errorf("money was created or lost: %s before, %s after", cents(sumBefore), cents(sumAfter))
	}
	fmt.Fprintf(out, "total %s before and after\n", cents(sumAfter))
	return nil
}

// attempts says how many attempts the named activity of the run took,
// read from the run's history.
func attempts(ctx context.Context, c *engine.Client, id, activity string) string {
	h, err := c.History(ctx, id)
	if err != nil {
		return "attempts unknown: " + err.Error()
	}
	for _, st := range h[len(h)-1].Steps {
		if st.Name == activity {
			if st.Attempts == 1 {
				return "1 attempt"
			}
			return fmt.Sprintf("%d attempts", st.Attempts)
		}
	}
	return "not run"
}

// describe summarises a compensation report.
func describe(r cancel.Report) string {
	if len(r.Steps) == 0 {
		return "nothing to compensate"
	}
	s := ""
	for i, st := range r.Steps {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%s by %s (%s)", st.Activity, st.Undo, st.Status)
	}
	return s
}
