package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/interceptors"
	"github.com/graftdev/graft/internal/redislog"
	"github.com/graftdev/graft/ratelimit"
	"github.com/graftdev/graft/tasks"
	"github.com/graftdev/graft/tasks/api"
	"github.com/graftdev/graft/tasks/ui"
)

// serverOpts are graft server's flags.
type serverOpts struct {
	addr              string
	schema            string
	customerMayCancel bool
	maxBody           int64
	noRedis           bool
	ratelimitPrefix   string
	config            string
	ui                bool
	uiSecret          string
	tlsCert, tlsKey   string
	behindTLSProxy    bool
}

func newServerCmd() *cobra.Command {
	o := &serverOpts{}
	cmd := &cobra.Command{
		Use:   "server",
		Short: "serve the operations API (migrating graft's schema first)",
		Long: `graft server serves the operations API on --addr: /v1 (bearer tokens),
/openapi.yaml, /healthz, /readyz and /metrics. It migrates graft's schema first,
and runs bulk jobs (POST /v1/bulk); a job left by a server that died is
taken up by the next one.

This binary registers no workflows of yours: listing, history, cancel and
relaunch work on any operation, while starting one and sending it one of
your workflow's signals need the workflow registered (a signal's payload is
checked against its declared type, and refused when it cannot be), so serve
the API from your own worker binary (api.New with your engine) to have those
too.

With --config FILE (YAML, or JSON by extension) naming a legacy source, the
server also runs the intake: it claims the source's pending rows that the
flags route to graft and starts their workflows (which run on your workers),
and GET /v1/operations/{id} shows each operation's legacy row.

The operator web UI is served under /ui/ (/ redirects to its sign-in page;
sign in with an API token) unless --ui=false. --ui-secret (GRAFT_UI_SECRET)
keys its forms' CSRF tokens; give every server behind one address the same
secret, or forms open across a restart or a switch of server must be
reloaded.

With --tls-cert and --tls-key (PEM files) the server serves HTTPS only, and
the web UI's session cookie is Secure. Behind a proxy that ends TLS and
talks plain HTTP to the server, set --behind-tls-proxy so the cookie is
Secure all the same. The configuration file can say the same (tls.cert,
tls.key, behind_tls_proxy); the flags win.

Create the first admin token with: graft tokens create --direct --name NAME --role admin`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runServer(ctx, o, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&o.addr, "addr", envOr("GRAFT_ADDR", "127.0.0.1:8080"), "listen address (GRAFT_ADDR)")
	cmd.Flags().StringVar(&o.schema, "schema", "graft", "graft's schema")
	cmd.Flags().BoolVar(&o.customerMayCancel, "customer-may-cancel", false, "let customer tokens cancel their own operations")
	cmd.Flags().Int64Var(&o.maxBody, "max-body-bytes", api.DefaultMaxBodyBytes, "largest request body accepted")
	cmd.Flags().BoolVar(&o.noRedis, "no-redis", false, "do not use Redis (no /readyz check, no /v1/providers)")
	cmd.Flags().StringVar(&o.ratelimitPrefix, "ratelimit-prefix", ratelimit.DefaultPrefix, "the workers' rate-limit key prefix, for /v1/providers")
	cmd.Flags().StringVar(&o.config, "config", "", "configuration file (YAML or JSON): a legacy source runs the intake")
	cmd.Flags().BoolVar(&o.ui, "ui", true, "serve the operator web UI under /ui/")
	secretFlag(cmd.Flags(), &o.uiSecret, "ui-secret", "GRAFT_UI_SECRET", "key of the web UI's CSRF tokens, at least 32 characters (GRAFT_UI_SECRET; default random per process)")
	cmd.Flags().StringVar(&o.tlsCert, "tls-cert", "", "serve HTTPS with this certificate (PEM, with its chain); needs --tls-key")
	cmd.Flags().StringVar(&o.tlsKey, "tls-key", "", "the private key of --tls-cert (PEM)")
	cmd.Flags().BoolVar(&o.behindTLSProxy, "behind-tls-proxy", false, "a proxy in front ends TLS: mark the web UI's session cookie Secure on plain HTTP too")
	return cmd
}

func runServer(ctx context.Context, o *serverOpts, out io.Writer) error {
	if o.ui && o.uiSecret != "" && len(o.uiSecret) < minUISecret {
		return fmt.Errorf("graft server: --ui-secret (GRAFT_UI_SECRET) has %d characters; it needs at least %d", len(o.uiSecret), minUISecret)
	}
	var file *serverFile
	if o.config != "" {
		var err error
		if file, err = loadServerFile(o.config); err != nil {
			return err
		}
		o.tlsCert, o.tlsKey = cmp.Or(o.tlsCert, file.TLS.Cert), cmp.Or(o.tlsKey, file.TLS.Key)
		o.behindTLSProxy = o.behindTLSProxy || file.BehindTLSProxy
	}
	tlsCfg, err := o.tlsConfig()
	if err != nil {
		return err
	}
	db, err := openDB(20)
	if err != nil {
		return err
	}
	defer db.Close()
	prom, err := api.NewPrometheus()
	if err != nil {
		return err
	}
	defer func() { _ = prom.Provider.Shutdown(context.Background()) }()
	ics, err := interceptors.All(interceptors.Config{MeterProvider: prom.Provider})
	if err != nil {
		return err
	}
	e, err := engine.New(engine.Config{DB: db, DatabaseURL: databaseURL(), Schema: o.schema, Interceptors: ics})
	if err != nil {
		return err
	}
	defer e.Close()
	if err := migrateAPI(ctx, e); err != nil {
		return err
	}
	if err := tasks.Migrate(ctx, db, o.schema); err != nil {
		return err
	}
	flags, err := tasks.NewFlags(tasks.FlagsConfig{DB: db, DatabaseURL: databaseURL(), Schema: o.schema})
	if err != nil {
		return err
	}
	defer flags.Close()
	cfg := api.Config{Engine: e, Flags: flags, Metrics: prom.Handler, MeterProvider: prom.Provider,
		CustomerMayCancel: o.customerMayCancel, MaxBodyBytes: o.maxBody}
	if !o.noRedis {
		opt, err := redis.ParseURL(redisURL())
		if err != nil {
			return fmt.Errorf("GRAFT_REDIS_URL: %w", err)
		}
		rdb := redis.NewClient(opt)
		defer rdb.Close()
		cfg.Redis = rdb
		// go-redis would print a line for every failed dial while Redis
		// is down; the server logs each outage and its end once instead.
		redislog.Quiet(slog.Default())
		watch := redislog.NewWatch(slog.Default(), redactURL(redisURL()))
		// A Redis that does not answer does not stop the server (the API
		// needs it only for the providers), but it is said at once rather
		// than left for /readyz to find; the log then says when it answers.
		pctx, cancelPing := context.WithTimeout(ctx, 2*time.Second)
		if err := rdb.Ping(pctx).Err(); err != nil {
			fmt.Fprintf(out, "graft server: Redis at GRAFT_REDIS_URL %s does not answer (%v): /readyz says unavailable and /v1/providers answers 503 until it does; --no-redis serves without it\n",
				redactURL(redisURL()), err)
			watch.Down()
		}
		watch.AddTo(rdb)
		cancelPing()
		if cfg.Providers, err = ratelimit.NewInspector(rdb, o.ratelimitPrefix); err != nil {
			return err
		}
	}
	if file != nil && file.Source != nil {
		in, ie, err := file.startIntake(ctx, db, o.schema, slog.Default())
		if err != nil {
			return err
		}
		defer ie.Close()
		defer in.Close()
		cfg.Legacy = in
		cfg.Intakes = []*tasks.Intake{in}
		ictx, stopIntake := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- in.Run(ictx) }()
		defer func() {
			stopIntake()
			if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
				fmt.Fprintf(out, "graft server: intake stopped: %v\n", err)
			}
		}()
		fmt.Fprintf(out, "graft server: intake of %s running\n", file.Source.Table)
	}
	srv, err := api.New(cfg)
	if err != nil {
		return err
	}
	stopBulk, err := startBulkWorker(ctx, srv)
	if err != nil {
		return err
	}
	defer stopBulk()
	h := srv.Handler()
	if o.ui {
		if h, err = withUI(h, ui.Config{Flags: flags, BehindTLSProxy: o.behindTLSProxy}, o.uiSecret); err != nil {
			return err
		}
	}
	return serve(ctx, o.addr, h, tlsCfg, out)
}

// tlsConfig loads --tls-cert and --tls-key, or returns nil to serve plain
// HTTP when neither is given.
func (o *serverOpts) tlsConfig() (*tls.Config, error) {
	if o.tlsCert == "" && o.tlsKey == "" {
		return nil, nil
	}
	if o.tlsCert == "" || o.tlsKey == "" {
		return nil, errors.New("graft server: --tls-cert and --tls-key (tls.cert and tls.key in --config) go together; give both or neither")
	}
	pair, err := tls.LoadX509KeyPair(o.tlsCert, o.tlsKey)
	if err != nil {
		return nil, fmt.Errorf("graft server: --tls-cert %s / --tls-key %s: %w", o.tlsCert, o.tlsKey, err)
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}, nil
}

// minUISecret is the shortest --ui-secret accepted.
const minUISecret = 32

// withUI mounts the operator web UI configured by cfg over the API handler
// apiH at ui.Prefix, and sends / to its sign-in page. The UI reaches the
// providers inspector and the intakes' flag previews through the API, so it
// needs only the flags for its flags page. Its session cookie is Secure
// whenever the request came over TLS, or always with cfg.BehindTLSProxy.
func withUI(apiH http.Handler, cfg ui.Config, secret string) (http.Handler, error) {
	cfg.API = apiH
	if secret != "" {
		cfg.Secret = []byte(secret)
	} else {
		slog.Warn("graft server: no --ui-secret (GRAFT_UI_SECRET): the web UI's CSRF key is random per process, so forms open at a restart must be reloaded (sessions survive: the cookie is the API token)")
	}
	u, err := ui.New(cfg)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/", apiH)
	mux.Handle(ui.Prefix, u.Handler())
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, ui.Prefix+"signin", http.StatusSeeOther)
	})
	return mux, nil
}

// serve serves h on addr, over TLS with tlsCfg if it is not nil, until ctx
// ends, then drains requests for up to ten seconds. It prints the URL it
// listens on.
func serve(ctx context.Context, addr string, h http.Handler, tlsCfg *tls.Config, out io.Writer) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, TLSConfig: tlsCfg}
	scheme, run := "http", func() error { return hs.Serve(ln) }
	if tlsCfg != nil {
		scheme, run = "https", func() error { return hs.ServeTLS(ln, "", "") }
	}
	fmt.Fprintf(out, "graft server listening on %s://%s\n", scheme, ln.Addr())
	errc := make(chan error, 1)
	go func() { errc <- run() }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		slog.Warn("graft server: shutdown", "err", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
