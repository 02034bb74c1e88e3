// Command quickstart is the README's first example: a workflow of two
// activities, a worker and a start.
package main

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/graftdev/graft/engine"
)

// Renewal is the workflow's input.
type Renewal struct {
	Domain string
	Years  int
}

func main() {
	ctx := context.Background()
	url := os.Getenv("GRAFT_DATABASE_URL") // make exports postgres://postgres@127.0.0.1:5432/...
	if url == "" {
		log.Fatal("set GRAFT_DATABASE_URL, e.g. postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable")
	}
	// A lib/pq pool whose connections a stalled database cannot hold.
	db, err := engine.OpenDB(url)
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	e, err := engine.New(engine.Config{DB: db, DatabaseURL: url, Schema: "graft_quickstart"})
	if err != nil {
		log.Fatal(err)
	}
	defer e.Close()
	if err := e.Migrate(ctx); err != nil { // graft's tables, in their own schema
		log.Fatal(err)
	}

	// Activities do the I/O; each completed one is a durable record.
	charge := engine.NewActivity("charge", func(ctx context.Context, r Renewal) (string, error) {
		// Give the provider engine.ActivityInfoOf(ctx).IdempotencyKey.
		return "ch_42", nil
	})
	renew := engine.NewActivity("registry.renew", func(ctx context.Context, r Renewal) (string, error) {
		return "2028-01-01", nil // an error here is retried (1 s, doubling)
	})
	// The workflow is plain Go; after a crash it replays: charge returns its
	// recorded result and is not run again.
	renewal := engine.NewWorkflow("renewal", func(ctx engine.Context, r Renewal) (string, error) {
		if _, err := charge.Run(ctx, r); err != nil {
			return "", err
		}
		return renew.Run(ctx, r)
	})
	if err := e.Register(charge, renew, renewal); err != nil {
		log.Fatal(err)
	}

	w, err := e.NewWorker(engine.WorkerConfig{}) // any number, in any number of processes
	if err != nil {
		log.Fatal(err)
	}
	if err := w.Start(ctx); err != nil {
		log.Fatal(err)
	}
	defer func() { _ = w.Stop(ctx) }() // at exit; a run it could not hand back resumes elsewhere

	// The ID makes the start idempotent: while the run is open, starting
	// it again is refused (once it has closed, a new run may take the ID).
	run, err := renewal.Start(ctx, e.Client(), Renewal{Domain: "example.com", Years: 1},
		&engine.StartOptions{ID: "renew-example.com"})
	if err != nil {
		log.Fatal(err)
	}
	expiry, err := run.Result(ctx)
	fmt.Println(expiry, err) // 2028-01-01 <nil>
}
