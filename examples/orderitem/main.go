// Command orderitem processes order items as durable workflows of three
// activities: initialise, fulfil, archive, each with the retry policy
// "1 s, doubling, 5 attempts". The warehouse is busy for each item's first
// fulfilment attempt, so that attempt is retried a second later; a
// declined card fails at once with a non-retryable PaymentFailed error,
// which the caller finds with errors.As, details included, after it has
// gone through the database. With -outage, a third item meets a warehouse
// that never answers and fails after its 5 attempts (15 s of waits).
//
// Run it with `go run ./examples/orderitem` (PostgreSQL from
// GRAFT_DATABASE_URL). It works in a schema of its own, dropped at the end
// unless -keep is given.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/examples/exampleenv"
)

// options are the command line's settings.
type options struct {
	DatabaseURL string
	Schema      string
	Keep        bool
	Outage      bool
}

func main() {
	o := options{DatabaseURL: exampleenv.DatabaseURL()}
	flag.StringVar(&o.Schema, "schema", "graft_example_orderitem", "schema for graft's tables and the shop's")
	flag.BoolVar(&o.Keep, "keep", false, "keep the schema at the end, to look at graft's tables")
	flag.BoolVar(&o.Outage, "outage", false, "add an item whose fulfilment fails until the retry policy gives up")
	flag.Parse()
	if err := run(context.Background(), o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "orderitem:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options, out io.Writer) (err error) {
	env, err := exampleenv.Setup(ctx, exampleenv.Options{Owner: "orderitem", DatabaseURL: o.DatabaseURL, Schema: o.Schema, Keep: o.Keep})
	if err != nil {
		return err
	}
	defer env.Close(&err)
	s := &shop{db: env.DB, schema: o.Schema, busy: true, down: map[string]bool{"order-3": true}}
	if err := s.create(ctx); err != nil {
		return err
	}
	process, defs := s.definitions()

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	e, err := engine.New(engine.Config{DB: env.DB, DatabaseURL: o.DatabaseURL, Schema: o.Schema, Logger: logger})
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
	w, err := e.NewWorker(engine.WorkerConfig{})
	if err != nil {
		return err
	}
	if err := w.Start(ctx); err != nil {
		return err
	}
	defer func() { _ = w.Stop(context.Background()) }() // at exit; a run it could not hand back resumes elsewhere

	items := []Item{
		{OrderID: "order-1", Product: "espresso machine", Card: "4242424242424242"},
		{OrderID: "order-2", Product: "grinder", Card: "4000000000000002"},
	}
	if o.Outage {
		items = append(items, Item{OrderID: "order-3", Product: "kettle", Card: "4242424242424242"})
	}
	c := e.Client()
	runs := make([]*engine.Run[string], len(items))
	for i, it := range items {
		if runs[i], err = process.Start(ctx, c, it, &engine.StartOptions{ID: it.OrderID}); err != nil {
			return err
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for i, it := range items {
		_, err := runs[i].Result(wctx)
		status, serr := s.status(ctx, it.OrderID)
		if serr != nil {
			return serr
		}
		fulfil, herr := fulfilment(ctx, c, it.OrderID)
		if herr != nil {
			return herr
		}
		fmt.Fprintf(out, "%s %s: ", it.OrderID, it.Product)
		var app *engine.ApplicationError
		switch {
		case err == nil:
			fmt.Fprintf(out, "%s, fulfilled in %s\n", status, fulfil)
		case errors.As(err, &app) && app.Type == "PaymentFailed":
			var d PaymentFailed
			if err := json.Unmarshal(app.Details, &d); err != nil {
				return fmt.Errorf("PaymentFailed details: %w", err)
			}
			fmt.Fprintf(out, "PaymentFailed after %s, not retried: card %s, %s (item %s)\n", fulfil, d.Card, d.Reason, status)
		case errors.As(err, &app):
			fmt.Fprintf(out, "%s after %s: %s (item %s)\n", app.Type, fulfil, app.Message, status)
		default:
			return fmt.Errorf("%s: %w", it.OrderID, err)
		}
	}
	return nil
}

// fulfilment says how many attempts the run's fulfil step took, from its
// history.
func fulfilment(ctx context.Context, c *engine.Client, id string) (string, error) {
	h, err := c.History(ctx, id)
	if err != nil {
		return "", err
	}
	for _, st := range h[len(h)-1].Steps {
		if st.Name == "orderitem.fulfil" {
			if st.Attempts == 1 {
				return "1 attempt", nil
			}
			return fmt.Sprintf("%d attempts", st.Attempts), nil
		}
	}
	return "", fmt.Errorf("%s: no fulfil step in the history", id)
}
