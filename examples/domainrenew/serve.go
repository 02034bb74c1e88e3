package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/ratelimit"
	"github.com/graftdev/graft/tasks"
	"github.com/graftdev/graft/tasks/api"
	"github.com/graftdev/graft/tasks/ui"
)

// serve keeps graft's operations API and web UI up over the demo's engine
// until ctx ends (Ctrl-C), with an operator and an admin token made for
// the occasion. onServe, when set, is told the base URL and the operator
// token once the server answers.
func serve(ctx context.Context, addr string, e *engine.Engine, flags *tasks.Flags, rc redis.UniversalClient, prefix string, intake *tasks.Intake,
	p func(string, ...any), onServe func(base, token string)) error {
	if err := api.Migrate(ctx, e.DB(), e.Schema()); err != nil {
		return err
	}
	// The providers page reads the demo's registry limiter, the flags
	// (page and graft flags) preview changes over the legacy table's
	// pending rows, and each operation shows its legacy row.
	inspector, err := ratelimit.NewInspector(rc, prefix)
	if err != nil {
		return err
	}
	srv, err := api.New(api.Config{Engine: e, Redis: rc, Providers: inspector, Flags: flags, Legacy: intake, Intakes: []*tasks.Intake{intake}})
	if err != nil {
		return err
	}
	bw, err := srv.StartBulkWorker(ctx)
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = bw.Stop(sctx)
	}()
	u, err := ui.New(ui.Config{API: srv.Handler(), Flags: flags})
	if err != nil {
		return err
	}
	_, operator, err := srv.Tokens().Create(ctx, api.NewToken{Name: "demo-operator", Role: api.RoleOperator, Lifetime: 24 * time.Hour, CreatedBy: "demo"})
	if err != nil {
		return err
	}
	_, admin, err := srv.Tokens().Create(ctx, api.NewToken{Name: "demo-admin", Role: api.RoleAdmin, Lifetime: 24 * time.Hour, CreatedBy: "demo"})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("-serve %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/", srv.Handler())
	mux.Handle(ui.Prefix, u.Handler())
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, ui.Prefix+"signin", http.StatusSeeOther) // as graft server does
	})
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	base := "http://" + ln.Addr().String()
	p("serving the operations API on %s/v1/ and the web UI on %s/ui/", base, base)
	p("  operator token: %s", operator)
	p("  admin token:    %s (flags and tokens)", admin)
	p("  press Ctrl-C to stop")
	if onServe != nil {
		onServe(base, operator)
	}
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = hs.Shutdown(sctx)
	if serr := <-served; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}
