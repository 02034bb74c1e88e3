// Command domainrenew is graft's headline demo: domain renewals run as
// durable workflows (charge -> renew at the registry -> notify), with retries,
// a signal-driven confirmation and an operator cancellation, against the
// configured PostgreSQL. Run it with `make demo`.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/interceptors"
	"github.com/graftdev/graft/internal/otelsum"
)

// Renewal is one operation of the legacy operations table.
type Renewal struct {
	Domain string
	Years  int
	// Confirm makes the workflow wait for a customer confirmation signal.
	Confirm bool
}

// Receipt is what a renewal returns.
type Receipt struct {
	Domain    string
	ChargeID  string
	NewExpiry string
}

func main() {
	if err := run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func databaseURL() string {
	if u := os.Getenv("GRAFT_DATABASE_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable&binary_parameters=yes"
}

func run(ctx context.Context) error {
	db, err := sqlx.Open("postgres", databaseURL())
	if err != nil {
		return err
	}
	defer db.Close()
	const schema = "graft_demo"
	if _, err := db.ExecContext(ctx, `DROP SCHEMA IF EXISTS `+pq.QuoteIdentifier(schema)+` CASCADE`); err != nil {
		return fmt.Errorf("reset demo schema: %w", err)
	}
	logger := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{Level: slog.LevelWarn}))
	// The interceptor chain: structured logs (warnings and errors only, to
	// keep the output short: a failed attempt is one line), metrics read at
	// the end, panic recovery. Tracing is in the chain too, with the OTel
	// global provider, which discards spans until an exporter is set up.
	reader := sdkmetric.NewManualReader()
	chain, err := interceptors.All(interceptors.Config{Logger: logger,
		MeterProvider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))})
	if err != nil {
		return err
	}
	e, err := engine.New(engine.Config{DB: db, DatabaseURL: databaseURL(), Schema: schema, Logger: logger, Interceptors: chain})
	if err != nil {
		return err
	}
	defer e.Close()
	if err := e.Migrate(ctx); err != nil {
		return err
	}

	var registryCalls atomic.Int64
	charge := engine.NewActivity("charge", func(ctx context.Context, r Renewal) (string, error) {
		return "ch_" + engine.GetActivityInfo(ctx).IdempotencyKey, nil
	})
	renew := engine.NewActivity("registry.renew", func(ctx context.Context, r Renewal) (string, error) {
		// The registry is flaky: the first call for each domain times out.
		if engine.GetActivityInfo(ctx).Attempt == 1 {
			registryCalls.Add(1)
			return "", errors.New("registry timeout")
		}
		registryCalls.Add(1)
		return time.Date(2027+r.Years, 1, 1, 0, 0, 0, 0, time.UTC).Format("2006-01-02"), nil
	}).WithOptions(engine.ActivityOptions{RetryPolicy: &engine.RetryPolicy{InitialInterval: 50 * time.Millisecond, MaximumAttempts: 5}})
	notify := engine.NewActivity("notify", func(ctx context.Context, msg string) (struct{}, error) { return struct{}{}, nil })

	renewal := engine.NewWorkflow("renewal", func(ctx engine.Context, r Renewal) (Receipt, error) {
		if r.Confirm {
			ok, err := engine.GetSignalChannel[bool](ctx, "confirm").Receive(ctx)
			if err != nil {
				return Receipt{}, err
			}
			if !ok {
				return Receipt{}, engine.NewNonRetryableError("Declined", "customer declined", nil)
			}
		}
		chargeID, err := charge.Run(ctx, r)
		if err != nil {
			return Receipt{}, err
		}
		expiry, err := renew.Run(ctx, r)
		if err != nil {
			return Receipt{}, err
		}
		if _, err := notify.Run(ctx, "renewed "+r.Domain); err != nil {
			return Receipt{}, err
		}
		return Receipt{Domain: r.Domain, ChargeID: chargeID, NewExpiry: expiry}, nil
	})
	if err := e.Register(charge, renew, notify, renewal); err != nil {
		return err
	}
	w, err := e.NewWorker(engine.WorkerConfig{})
	if err != nil {
		return err
	}
	if err := w.Start(ctx); err != nil {
		return err
	}
	defer w.Stop(context.Background())

	c := e.Client()
	domains := []Renewal{{Domain: "example.com", Years: 1}, {Domain: "graft.dev", Years: 2}, {Domain: "legacy.org", Years: 1, Confirm: true}, {Domain: "oops.net", Years: 1, Confirm: true}}
	runs := map[string]*engine.Run[Receipt]{}
	for _, d := range domains {
		run, err := renewal.Start(ctx, c, d, &engine.StartOptions{ID: "renew-" + d.Domain})
		if err != nil {
			return err
		}
		runs[d.Domain] = run
	}
	// Starting the same operation again, while it is open (this one waits
	// for its confirmation), is refused.
	if _, err := renewal.Start(ctx, c, domains[2], &engine.StartOptions{ID: "renew-legacy.org"}); !errors.Is(err, engine.ErrAlreadyStarted) {
		return fmt.Errorf("duplicate start: got %v, want ErrAlreadyStarted", err)
	}
	if err := c.Signal(ctx, "renew-legacy.org", "confirm", true); err != nil {
		return err
	}
	if err := c.Cancel(ctx, "renew-oops.net", "customer changed their mind"); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, d := range domains {
		rec, err := runs[d.Domain].Result(wctx)
		var ce *engine.CanceledError
		switch {
		case errors.As(err, &ce):
			fmt.Printf("%-12s cancelled (%s)\n", d.Domain, ce.Reason)
		case err != nil:
			fmt.Printf("%-12s failed: %v\n", d.Domain, err)
		default:
			fmt.Printf("%-12s renewed until %s (charge %s)\n", d.Domain, rec.NewExpiry, rec.ChargeID)
		}
	}
	hist, err := c.History(ctx, "renew-graft.dev")
	if err != nil {
		return err
	}
	fmt.Println("\nhistory of renew-graft.dev:")
	for _, st := range hist[0].Steps {
		fmt.Printf("  #%d %-8s %-15s %-9s attempts=%d\n", st.Seq, st.Kind, st.Name, st.Status, st.Attempts)
	}
	fmt.Printf("\nregistry calls: %d (each domain's first call timed out and was retried)\n", registryCalls.Load())
	return printMetrics(ctx, reader)
}

// printMetrics prints the interceptors' counters, summed over attributes.
func printMetrics(ctx context.Context, reader *sdkmetric.ManualReader) error {
	sums, err := otelsum.Counters(ctx, reader)
	if err != nil {
		return err
	}
	fmt.Println("\nmetrics:")
	for _, name := range []string{interceptors.MetricWorkflowStarted, interceptors.MetricWorkflowCompleted,
		interceptors.MetricWorkflowFailed, interceptors.MetricActivityCompleted, interceptors.MetricActivityFailed,
		interceptors.MetricActivityRetried} {
		fmt.Printf("  %-26s %d\n", name, sums[name])
	}
	return nil
}
