/*
Package engine runs durable workflows on PostgreSQL: plain Go functions whose
every completed step (an activity's result, a timer, a signal received, a side
effect) is a row in graft's own schema, so a run survives crashes, deploys and
waits of months, and resumes on any worker that shares the database.

A complete program: one activity, one workflow, a worker and a start.

	package main

	import (
		"context"
		"fmt"
		"log"
		"os"

		"github.com/graftdev/graft/engine"
	)

	func main() {
		ctx := context.Background()
		url := os.Getenv("GRAFT_DATABASE_URL")
		db, err := engine.OpenDB(url)
		if err != nil {
			log.Fatal(err)
		}
		e, err := engine.New(engine.Config{DB: db, DatabaseURL: url})
		if err != nil {
			log.Fatal(err)
		}
		defer e.Close()
		if err := e.Migrate(ctx); err != nil { // graft's tables, in schema "graft"
			log.Fatal(err)
		}

		charge := engine.NewActivity("charge", func(ctx context.Context, cents int) (string, error) {
			// I/O goes here; give the provider engine.ActivityInfoOf(ctx).IdempotencyKey.
			return fmt.Sprintf("charged %d", cents), nil
		})
		order := engine.NewWorkflow("order", func(ctx engine.Context, cents int) (string, error) {
			return charge.Run(ctx, cents) // recorded: a replay returns it without charging again
		})
		if err := e.Register(charge, order); err != nil {
			log.Fatal(err)
		}

		w, err := e.NewWorker(engine.WorkerConfig{})
		if err != nil {
			log.Fatal(err)
		}
		if err := w.Start(ctx); err != nil {
			log.Fatal(err)
		}
		defer w.Stop(ctx)

		run, err := order.Start(ctx, e.Client(), 1250, &engine.StartOptions{ID: "order-42"})
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(run.Result(ctx)) // charged 1250 <nil>
	}

# Workflows and replay

A workflow is func(engine.Context, In) (Out, error), registered under a stable
name with NewWorkflow; an activity is func(context.Context, In) (Out, error),
registered with NewActivity. Inputs and results travel as JSON. When a run is
resumed it executes its function again from the top: recorded steps return
their records at once, and execution goes live at the first step without one.
Workflow code must therefore be deterministic: time (Now, Sleep, NewTimer),
randomness (Rand, SideEffect) and I/O (activities) go through the package. A
replay that asks for another step than the record holds fails the run with a
*NonDeterminismError naming the step; check a new version of a workflow
against recorded runs before a deploy with a Replayer (grafttest.Replay).

Activities run at least once: the attempt in flight when a worker dies runs
again, with the same ActivityInfo.IdempotencyKey. Retries follow the
RetryPolicy in ActivityOptions; errors keep their type through the database
(ApplicationError, ErrorTypeOf, TimeoutError, CanceledError).

# Control

A Client (Engine.Client, or NewClient in a process that runs no workers)
starts runs idempotently by workflow ID, sends signals (GetSignalChannel,
ReceiveWithTimeout), answers queries (SetQueryHandler, SetQueryFunc), cancels
(the workflow's context is cancelled; cleanup runs under Disconnected), resets
a run to before a step, and reads Describe, List and History. A run that loops
for ever continues as new (ContinueAsNew); a workflow starts children with
Workflow.StartChild. The examples show each.

# Interceptors

Config.Interceptors and WorkerConfig wrap every workflow, activity, signal,
query, outbound and client call, and CheckpointInterceptor writes in the
transaction that records each step (see Interceptor).

# Imports

engine imports none of graft's other packages; they all build on it.
Tests use the grafttest package: an engine on a throwaway schema, waits on a
run's status, one activity run alone, and the replayer.
*/
package engine
