// Command subscription bills a customer once a period with a durable timer
// between charges: each period's run charges, sleeps (unloaded: a row in
// the database, no goroutine), and continues as new with the next period,
// so the record never grows. Cancelled mid-period, the workflow sends a
// sorry email from a disconnected context, which the cancellation does not
// touch, and ends cancelled.
//
// In production the period is 30 days; `go run ./examples/subscription`
// uses 3 seconds (-every) on the wall clock, and its test uses 30 days on
// the engine's fake clock (engine.NewFakeClock). PostgreSQL comes from
// GRAFT_DATABASE_URL; the example works in a schema of its own, dropped at
// the end unless -keep is given.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/examples/exampleenv"
)

// options are the command line's settings; the test sets Clock and Advance.
type options struct {
	DatabaseURL string
	Schema      string
	Keep        bool
	Every       time.Duration
	Periods     int
	// Clock is the engine's clock; nil means the wall clock.
	Clock engine.Clock
	// Advance moves Clock forward. nil when time passes by itself.
	Advance func(time.Duration)
}

func main() {
	o := options{DatabaseURL: exampleenv.DatabaseURL()}
	flag.StringVar(&o.Schema, "schema", "graft_example_subscription", "schema for graft's tables and the billing tables")
	flag.BoolVar(&o.Keep, "keep", false, "keep the schema at the end, to look at graft's tables")
	flag.DurationVar(&o.Every, "every", 3*time.Second, "billing period (30 days in production)")
	flag.IntVar(&o.Periods, "periods", 3, "periods to bill before the customer cancels")
	flag.Parse()
	if err := run(context.Background(), o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "subscription:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options, out io.Writer) (err error) {
	if o.Every <= 0 || o.Periods < 1 {
		return fmt.Errorf("-every must be positive and -periods at least 1 (got %v and %d)", o.Every, o.Periods)
	}
	if o.Clock == nil {
		o.Clock = engine.SystemClock{}
	}
	env, err := exampleenv.Setup(ctx, exampleenv.Options{Owner: "subscription", DatabaseURL: o.DatabaseURL, Schema: o.Schema, Keep: o.Keep})
	if err != nil {
		return err
	}
	defer env.Close(&err)
	db := env.DB
	b := &billing{db: db, schema: o.Schema}
	if err := b.create(ctx); err != nil {
		return err
	}
	monthly, defs := b.definitions()

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	e, err := engine.New(engine.Config{DB: db, DatabaseURL: o.DatabaseURL, Schema: o.Schema, Logger: logger, Clock: o.Clock,
		// A wait longer than this unloads the run; short enough here that
		// a 3-second period shows it.
		UnloadAfter: 500 * time.Millisecond})
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

	c := e.Client()
	sub := Subscription{Customer: "acme", Email: "billing@acme.example", Price: 9_99, Every: o.Every, Period: 1, Date: o.Clock.Now()}
	run, err := monthly.Start(ctx, c, sub, &engine.StartOptions{ID: "subscription-acme"})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "acme subscribes: %d.%02d every %v\n", sub.Price/100, sub.Price%100, o.Every)

	wctx, cancelWait := context.WithTimeout(ctx, time.Minute+time.Duration(o.Periods)*(o.Every%time.Hour))
	defer cancelWait()
	for p := 1; p <= o.Periods; p++ {
		// Each period ends with its run asleep until the next one.
		info, err := waitFor(wctx, func() (*engine.RunInfo, bool, error) {
			info, err := c.Describe(wctx, run.WorkflowID)
			if err != nil || info.Status != engine.StatusWaiting {
				return info, false, err
			}
			period, err := engine.QueryAs[int](wctx, c, run.WorkflowID, "period", nil)
			return info, err == nil && period == p, err
		})
		if err != nil {
			return fmt.Errorf("period %d never went to sleep: %w", p, err)
		}
		invoices, err := b.invoices(wctx, sub.Customer)
		if err != nil {
			return err
		}
		inv := invoices[len(invoices)-1]
		fmt.Fprintf(out, "period %d: invoice %d.%02d dated %s; run %s until %s\n",
			inv.Period, inv.Amount/100, inv.Amount%100, stamp(inv.Date, o.Every), info.Status, stamp(info.WakeAt, o.Every))
		if p < o.Periods && o.Advance != nil {
			o.Advance(o.Every)
		}
	}
	if o.Advance != nil {
		o.Advance(o.Every / 2)
	}
	if err := c.Cancel(ctx, run.WorkflowID, "customer closed the account"); err != nil {
		return err
	}
	_, err = run.Result(wctx) // follows the chain of continued runs to its end
	var ce *engine.CanceledError
	if !errors.As(err, &ce) {
		return fmt.Errorf("the subscription should end cancelled, got %v", err)
	}
	fmt.Fprintf(out, "cancelled mid-period: %s\n", ce.Reason)

	emails, err := b.emails(ctx, sub.Email)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "emails to %s: %q\n", sub.Email, emails)
	invoices, err := b.invoices(ctx, sub.Customer)
	if err != nil {
		return err
	}
	hist, err := c.History(ctx, run.WorkflowID)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "%d invoices; %d runs chained by continue-as-new, each with a short record:\n", len(invoices), len(hist))
	for i, h := range hist {
		steps := make([]string, len(h.Steps))
		for j, st := range h.Steps {
			steps[j] = st.Kind
			if st.Name != st.Kind {
				steps[j] += " " + st.Name
			}
		}
		fmt.Fprintf(out, "  run %d %-9s %s\n", i+1, h.Run.Status, strings.Join(steps, ", "))
	}
	return nil
}

// waitFor polls cond until it holds or ctx ends.
func waitFor[T any](ctx context.Context, cond func() (T, bool, error)) (T, error) {
	for {
		v, ok, err := cond()
		if ok {
			return v, nil
		}
		select {
		case <-ctx.Done():
			return v, errors.Join(ctx.Err(), err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// stamp formats t as a date for periods of a day or more, else as a time.
func stamp(t time.Time, every time.Duration) string {
	if every >= 24*time.Hour {
		return t.UTC().Format("2006-01-02")
	}
	return t.Format("15:04:05.0")
}
