package engine_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/devenv"
)

// Interceptors wrap each call in the order they are listed, the engine's
// (every worker) outside the worker's: the first registered is the outermost.
// A client interceptor adds a header on start; it travels with the run into
// the activity. The example needs PostgreSQL (GRAFT_DATABASE_URL or the
// local default) and works in a schema of its own, dropped at the end.
func Example_interceptorOrder() {
	ctx := context.Background()
	url := devenv.DatabaseURL()
	db, err := sqlx.Open("postgres", url)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer db.Close()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	schema := "example_order_" + hex.EncodeToString(b)
	defer db.Exec(`DROP SCHEMA IF EXISTS ` + pq.QuoteIdentifier(schema) + ` CASCADE`)

	// around returns an activity interceptor that announces itself before
	// and after the rest of the chain.
	around := func(name string) engine.ActivityInterceptorFunc {
		return func(ctx context.Context, in *engine.ActivityInput, next engine.ActivityNext) (any, error) {
			fmt.Printf("%s: before %s\n", name, in.Info.ActivityName)
			out, err := next(ctx, in)
			fmt.Printf("%s: after %s\n", name, in.Info.ActivityName)
			return out, err
		}
	}
	customer := engine.ClientInterceptorFunc(func(ctx context.Context, in *engine.ClientCallInput,
		next engine.ClientNext) (any, error) {
		if in.Kind == engine.ClientStart {
			if in.Headers == nil {
				in.Headers = engine.Headers{}
			}
			in.Headers["customer"] = "c-42"
		}
		return next(ctx, in)
	})

	e, err := engine.New(engine.Config{DB: db, DatabaseURL: url, Schema: schema,
		Interceptors: []engine.Interceptor{around("engine A"), around("engine B"), customer}})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer e.Close()
	if err := e.Migrate(ctx); err != nil {
		fmt.Println(err)
		return
	}
	greet := engine.NewActivity("example.greet", func(ctx context.Context, name string) (string, error) {
		fmt.Printf("    greet runs for customer %s\n", engine.ActivityHeadersOf(ctx)["customer"])
		return "hello, " + name, nil
	})
	hello := engine.NewWorkflow("example.hello", func(ctx engine.Context, name string) (string, error) {
		return greet.Run(ctx, name)
	})
	if err := e.Register(greet, hello); err != nil {
		fmt.Println(err)
		return
	}
	w, err := e.NewWorker(engine.WorkerConfig{Interceptors: []engine.Interceptor{around("worker C")}})
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := w.Start(ctx); err != nil {
		fmt.Println(err)
		return
	}
	defer func() {
		stop, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_ = w.Stop(stop)
	}()

	run, err := hello.Start(ctx, e.Client(), "graft", nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	out, err := run.Result(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(out)
	// Output:
	// engine A: before example.greet
	// engine B: before example.greet
	// worker C: before example.greet
	//     greet runs for customer c-42
	// worker C: after example.greet
	// engine B: after example.greet
	// engine A: after example.greet
	// hello, graft
}
