// Command phoneverify is the coffee shop's phone verification as an HTTP
// service on a durable workflow. POST /v1/customers starts a verification
// (the workflow sends an SMS with the code 1234 and waits, at most two
// minutes, for the customer to type it); POST /v1/customers/{id}:verify
// signals a typed code and answers with the workflow's verdict: VERIFIED,
// WRONG_CODE with the attempts left, then MAX_ATTEMPTS_REACHED after the
// third wrong code, or CODE_EXPIRED. GET /v1/customers/{id} queries the
// state. The server keeps nothing in memory: kill it at any moment
// (kill -9), start it again, and the next code is counted with the ones
// before.
//
//	go run ./examples/phoneverify -addr 127.0.0.1:8080
//	curl -s -XPOST localhost:8080/v1/customers -d '{"phone":"+33612345678"}'
//	curl -s -XPOST localhost:8080/v1/customers/cus_…:verify -d '{"code":"0000"}'
//
// PostgreSQL comes from GRAFT_DATABASE_URL. The state lives in the schema
// graft_example_phoneverify, kept across restarts; -drop removes it when
// the server stops (Ctrl-C).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/examples/exampleenv"
)

// options are the command line's settings; tests set the engine's too.
type options struct {
	DatabaseURL string
	Schema      string
	Addr        string
	// Expiry is how long a code is valid. Default 2 minutes.
	Expiry time.Duration
	// Drop removes the schema when the server stops.
	Drop bool
	// Engine settings: zero values take the engine's defaults.
	Clock       engine.Clock
	LeaseTTL    time.Duration
	UnloadAfter time.Duration
	// Listening is called with the bound address once the server accepts
	// requests. Default: print the URL.
	Listening func(addr string)
	Log       io.Writer
}

func main() {
	o := options{DatabaseURL: exampleenv.DatabaseURL(), Log: os.Stderr}
	flag.StringVar(&o.Schema, "schema", "graft_example_phoneverify", "schema for graft's tables (kept across restarts)")
	flag.StringVar(&o.Addr, "addr", "127.0.0.1:8080", "listen address")
	flag.DurationVar(&o.Expiry, "expiry", 2*time.Minute, "how long a code is valid")
	flag.BoolVar(&o.Drop, "drop", false, "drop the schema when the server stops")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "phoneverify:", err)
		os.Exit(1)
	}
}

// serve runs the worker and the HTTP server until ctx ends.
func serve(ctx context.Context, o options) (err error) {
	if o.Expiry == 0 {
		o.Expiry = 2 * time.Minute
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.Listening == nil {
		o.Listening = func(addr string) { fmt.Fprintf(o.Log, "phoneverify: listening on http://%s\n", addr) }
	}
	env, err := exampleenv.Setup(ctx, exampleenv.Options{Owner: "phoneverify", DatabaseURL: o.DatabaseURL, Schema: o.Schema,
		Keep: !o.Drop, Reuse: true})
	if err != nil {
		return err
	}
	defer env.Close(&err)

	logger := slog.New(slog.NewTextHandler(o.Log, nil))
	verify, defs := definitions(logger)
	e, err := engine.New(engine.Config{DB: env.DB, DatabaseURL: o.DatabaseURL, Schema: o.Schema, Logger: logger,
		Clock: o.Clock, LeaseTTL: o.LeaseTTL, UnloadAfter: o.UnloadAfter})
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
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err = errors.Join(err, w.Stop(sctx))
	}()

	s := &server{c: e.Client(), verify: verify, expiry: o.Expiry, answerWait: 30 * time.Second}
	ln, err := net.Listen("tcp", o.Addr)
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: s.routes(), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() { done <- hs.Serve(ln) }()
	o.Listening(ln.Addr().String())
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return hs.Shutdown(sctx)
}
