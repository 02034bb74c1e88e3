package engine_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/grafttest"
)

// The examples need PostgreSQL (GRAFT_DATABASE_URL, or the local default);
// each runs in a schema of its own, dropped at its end.

// exampleEngine is the setup the examples share: an engine on a fresh
// schema with defs registered and one worker running. stop undoes it all.
func exampleEngine(defs ...engine.Definition) (e *engine.Engine, stop func()) {
	ctx := context.Background()
	url := grafttest.DatabaseURL()
	db := sqlx.MustOpen("postgres", url)
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	schema := "example_" + hex.EncodeToString(b)
	e, err := engine.New(engine.Config{DB: db, DatabaseURL: url, Schema: schema, PollInterval: 100 * time.Millisecond})
	if err != nil {
		log.Fatal(err)
	}
	if err := e.Migrate(ctx); err != nil {
		log.Fatal(err)
	}
	if err := e.Register(defs...); err != nil {
		log.Fatal(err)
	}
	w, err := e.NewWorker(engine.WorkerConfig{})
	if err != nil {
		log.Fatal(err)
	}
	if err := w.Start(ctx); err != nil {
		log.Fatal(err)
	}
	return e, func() {
		_ = w.Stop(ctx)
		_ = e.Close()
		_, _ = db.Exec(`DROP SCHEMA ` + schema + ` CASCADE`)
		_ = db.Close()
	}
}

// A workflow waits for a signal: durable and buffered, so one sent before
// the workflow reads it is not lost, and a long wait holds no goroutine.
func ExampleSignalChannel_Receive() {
	approval := engine.NewWorkflow("example.approval", func(ctx engine.Context, doc string) (string, error) {
		by, err := engine.GetSignalChannel[string](ctx, "approve").Receive(ctx)
		return doc + " approved by " + by, err
	})
	e, stop := exampleEngine(approval)
	defer stop()
	ctx := context.Background()

	run, err := approval.Start(ctx, e.Client(), "contract.pdf", &engine.StartOptions{ID: "approval-1"})
	if err != nil {
		log.Fatal(err)
	}
	if err := e.Client().Signal(ctx, "approval-1", "approve", "ada"); err != nil {
		log.Fatal(err)
	}
	fmt.Println(run.Result(ctx))
	// Output: contract.pdf approved by ada <nil>
}

// Waiting for "a signal or a timeout": the timer and the choice are
// recorded, so a replay takes the same branch.
func ExampleSignalChannel_ReceiveWithTimeout() {
	reminder := engine.NewWorkflow("example.reminder", func(ctx engine.Context, wait time.Duration) (string, error) {
		answer, ok, err := engine.GetSignalChannel[string](ctx, "answer").ReceiveWithTimeout(ctx, wait)
		if err != nil || !ok {
			return "no answer: reminder sent", err
		}
		return "answered " + answer, nil
	})
	e, stop := exampleEngine(reminder)
	defer stop()
	ctx := context.Background()

	run, err := reminder.Start(ctx, e.Client(), 100*time.Millisecond, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(run.Result(ctx))
	// Output: no answer: reminder sent <nil>
}

// Timers are workflow time: the fire time is recorded, and a run sleeping
// longer than Config.UnloadAfter is unloaded and resumed when it is due.
func ExampleSleep() {
	cooldown := engine.NewWorkflow("example.cooldown", func(ctx engine.Context, d time.Duration) (bool, error) {
		start := engine.Now(ctx)
		if err := engine.Sleep(ctx, d); err != nil {
			return false, err
		}
		return engine.Now(ctx).Sub(start) >= d, nil
	})
	e, stop := exampleEngine(cooldown)
	defer stop()
	ctx := context.Background()

	run, err := cooldown.Start(ctx, e.Client(), 50*time.Millisecond, nil)
	if err != nil {
		log.Fatal(err)
	}
	slept, err := run.Result(ctx)
	fmt.Println("slept the whole time:", slept, err)
	// Output: slept the whole time: true <nil>
}

// Queries read a run's state by replaying its record in the caller's
// process: they work while it runs, sleeps, or after it closed.
func ExampleSetQueryHandler() {
	pack := engine.NewActivity("example.pack", func(_ context.Context, item string) (string, error) {
		return "box(" + item + ")", nil
	})
	order := engine.NewWorkflow("example.packing", func(ctx engine.Context, items []string) (int, error) {
		packed := map[string]bool{}
		engine.SetQueryFunc(ctx, "progress", func() (string, error) {
			return fmt.Sprintf("%d of %d packed", len(packed), len(items)), nil
		})
		engine.SetQueryHandler(ctx, "packed", func(item string) (bool, error) { return packed[item], nil })
		for _, it := range items {
			if _, err := pack.Run(ctx, it); err != nil {
				return len(packed), err
			}
			packed[it] = true
		}
		return len(packed), nil
	})
	e, stop := exampleEngine(order, pack)
	defer stop()
	ctx := context.Background()
	c := e.Client()

	run, err := order.Start(ctx, c, []string{"lamp", "desk"}, &engine.StartOptions{ID: "order-7"})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := run.Result(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println(engine.QueryAs[string](ctx, c, "order-7", "progress", nil))
	fmt.Println(engine.QueryAs[bool](ctx, c, "order-7", "packed", "chair"))
	// Output:
	// 2 of 2 packed <nil>
	// false <nil>
}

// Cancelling a run cancels its context; the workflow's cleanup runs under
// Disconnected, which a cancellation does not reach.
func ExampleClient_Cancel() {
	var once sync.Once
	reserved := make(chan struct{})
	released := make(chan string, 1)
	reserve := engine.NewActivity("example.reserve", func(_ context.Context, seat string) (string, error) {
		once.Do(func() { close(reserved) })
		return seat, nil
	})
	release := engine.NewActivity("example.release", func(_ context.Context, seat string) (string, error) {
		released <- seat
		return seat, nil
	})
	booking := engine.NewWorkflow("example.booking", func(ctx engine.Context, seat string) (string, error) {
		if _, err := reserve.Run(ctx, seat); err != nil {
			return "", err
		}
		if _, err := engine.GetSignalChannel[string](ctx, "paid").Receive(ctx); err != nil {
			// Cancelled while waiting: give the seat back, then end as cancelled.
			if _, cerr := release.Run(engine.Disconnected(ctx), seat); cerr != nil {
				return "", cerr
			}
			return "", err
		}
		return "booked " + seat, nil
	})
	e, stop := exampleEngine(booking, reserve, release)
	defer stop()
	ctx := context.Background()
	c := e.Client()

	run, err := booking.Start(ctx, c, "14C", &engine.StartOptions{ID: "booking-14C"})
	if err != nil {
		log.Fatal(err)
	}
	<-reserved
	if err := c.Cancel(ctx, "booking-14C", "customer left"); err != nil {
		log.Fatal(err)
	}
	_, err = run.Result(ctx)
	var ce *engine.CanceledError
	fmt.Println(errors.As(err, &ce), ce.Reason)
	fmt.Println("released", <-released)
	info, _ := c.Describe(ctx, "booking-14C")
	fmt.Println(info.Status)
	// Output:
	// true customer left
	// released 14C
	// cancelled
}

// Reset starts a new run that reuses the record up to a chosen step: after
// the cause of a failure is fixed, the run goes on from the failed step
// without repeating the steps before it.
func ExampleClient_Reset() {
	var fixed atomic.Bool
	var reserved atomic.Int32
	reserve := engine.NewActivity("example.reserve-domain", func(_ context.Context, d string) (string, error) {
		reserved.Add(1)
		return d, nil
	})
	charge := engine.NewActivity("example.charge", func(_ context.Context, d string) (string, error) {
		if !fixed.Load() {
			return "", engine.NewNonRetryableError("CardDeclined", "card data is wrong", nil)
		}
		return "charged for " + d, nil
	})
	renew := engine.NewWorkflow("example.renew", func(ctx engine.Context, d string) (string, error) {
		if _, err := reserve.Run(ctx, d); err != nil {
			return "", err
		}
		return charge.Run(ctx, d)
	})
	e, stop := exampleEngine(renew, reserve, charge)
	defer stop()
	ctx := context.Background()
	c := e.Client()

	run, err := renew.Start(ctx, c, "example.org", &engine.StartOptions{ID: "renew-example.org"})
	if err != nil {
		log.Fatal(err)
	}
	_, err = run.Result(ctx)
	fmt.Println("first run:", err)

	fixed.Store(true) // an operator corrected the card
	h, err := c.Reset(ctx, "renew-example.org", engine.ResetOptions{BeforeLastFailedActivity: true, Reason: "card fixed"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(engine.Typed[string](h).Result(ctx))
	fmt.Println("reserved", reserved.Load(), "time")
	// Output:
	// first run: CardDeclined: card data is wrong
	// charged for example.org <nil>
	// reserved 1 time
}

// A loop that would grow its record without bound continues as new: the
// run closes and a fresh one of the same workflow ID starts with an empty
// record. Result follows the chain to the run that finally closes.
func ExampleContinueAsNew() {
	var poll *engine.Workflow[int, int]
	poll = engine.NewWorkflow("example.poll", func(ctx engine.Context, round int) (int, error) {
		if err := engine.Sleep(ctx, 10*time.Millisecond); err != nil {
			return 0, err
		}
		if round < 3 {
			return 0, engine.ContinueAsNew(ctx, poll, round+1)
		}
		return round, nil
	})
	e, stop := exampleEngine(poll)
	defer stop()
	ctx := context.Background()
	c := e.Client()

	run, err := poll.Start(ctx, c, 1, &engine.StartOptions{ID: "poll"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(run.Result(ctx))
	runs, err := c.History(ctx, "poll")
	if err != nil {
		log.Fatal(err)
	}
	for _, r := range runs {
		fmt.Println(r.Run.Status, len(r.Steps), "step")
	}
	// Output:
	// 3 <nil>
	// continued 1 step
	// continued 1 step
	// completed 1 step
}

// A workflow starts children, each a run of its own with its own record;
// starting one is a step of the parent, so a replay does not start it twice.
func ExampleWorkflow_RunChild() {
	renewOne := engine.NewWorkflow("example.renew-one", func(ctx engine.Context, d string) (string, error) {
		return strings.ToUpper(d), nil
	})
	renewAll := engine.NewWorkflow("example.renew-all", func(ctx engine.Context, ds []string) (string, error) {
		var futures []engine.Future[string]
		for _, d := range ds {
			futures = append(futures, renewOne.StartChild(ctx, d, &engine.ChildOptions{ID: "renew/" + d}))
		}
		var out []string
		for _, f := range futures {
			r, err := f.Get(ctx)
			if err != nil {
				return "", err
			}
			out = append(out, r)
		}
		return strings.Join(out, " "), nil
	})
	e, stop := exampleEngine(renewAll, renewOne)
	defer stop()
	ctx := context.Background()
	c := e.Client()

	run, err := renewAll.Start(ctx, c, []string{"a.org", "b.net"}, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(run.Result(ctx))
	child, err := c.Describe(ctx, "renew/b.net")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(child.Status, child.ParentRunID == run.RunID)
	// Output:
	// A.ORG B.NET <nil>
	// completed true
}
