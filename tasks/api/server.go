package api

import (
	"cmp"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/metric"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/ratelimit"
	"github.com/graftdev/graft/tasks"
)

//go:embed openapi.yaml
var openAPIDocument []byte

// OpenAPI returns the API's OpenAPI 3 document, the source the server and
// client code are generated from.
func OpenAPI() []byte { return openAPIDocument }

// Defaults of Config.
const (
	// DefaultMaxBodyBytes bounds a request body.
	DefaultMaxBodyBytes = 1 << 20
	// DefaultCustomerHeader is the run header that names an operation's
	// customer: the one intake sets (tasks.CustomerHeader).
	DefaultCustomerHeader = tasks.CustomerHeader
	// DefaultKeyHeader is the run header that holds an operation's routing
	// key: the one intake sets (tasks.KeyHeader).
	DefaultKeyHeader = tasks.KeyHeader
)

// Legacy is the legacy side of operations, read through a source's mapping.
// A server without one shows engine state only.
type Legacy interface {
	// Row returns the legacy row of operation id, column by column as the
	// mapping names them; ok is false when the table has no such row.
	Row(ctx context.Context, id string) (row map[string]any, ok bool, err error)
}

// Config configures a Server. Zero values take the documented defaults.
type Config struct {
	// Engine is the engine whose runs are the operations; its client starts,
	// cancels, resets and signals them. Workflows registered on it have their
	// inputs and declared signals checked. Required.
	Engine *engine.Engine
	// Redis, when set, is checked by /readyz.
	Redis redis.UniversalClient
	// Legacy, when set, adds each operation's legacy row to GET responses.
	Legacy Legacy
	// Flags, when set, serves the intake's routing flags under /v1/flags.
	Flags *tasks.Flags
	// Providers, when set, serves the rate-limit keys of the limiters
	// sharing its prefix under /v1/providers, and lets admins override
	// their limits.
	Providers *ratelimit.Inspector
	// Intakes, when set, are the intake sources whose pending rows a flag
	// preview (POST /v1/flags/{kind}/preview) counts.
	Intakes []*tasks.Intake
	// Metrics serves /metrics (see NewPrometheus). nil: /metrics is 404.
	Metrics http.Handler
	// MeterProvider, when set, records the server's request metrics
	// (MetricRequests, MetricRequestDuration).
	MeterProvider metric.MeterProvider
	// CustomerHeader is the run header naming an operation's customer; a
	// customer token sees the operations whose header equals its customer.
	// Default DefaultCustomerHeader.
	CustomerHeader string
	// KeyHeader is the run header holding an operation's routing key.
	// Default DefaultKeyHeader.
	KeyHeader string
	// CustomerMayCancel lets customer tokens cancel their own operations.
	CustomerMayCancel bool
	// MaxBodyBytes bounds a request body. Default DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// Logger receives request errors. Default slog.Default().
	Logger *slog.Logger
	// BulkConcurrency bounds the operations one bulk job acts on at once
	// (its rate bounds how many a second). Default DefaultBulkConcurrency.
	BulkConcurrency int
}

// Server is graft's operations API: it implements the generated
// StrictServerInterface over the engine's runs.
type Server struct {
	cfg    Config
	db     *sqlx.DB
	schema string // quoted
	// customerKey and keyKey are the header names as SQL literals.
	customerKey, keyKey string
	tokens              *Tokens
	client              *engine.Client
	metrics             *requestMetrics // nil without Config.MeterProvider
	// bulkBatchesPerRun is how many batches a bulk job's run takes before
	// it continues as new (bulkRunsPerWorkflow; tests lower it).
	bulkBatchesPerRun int
	// bulkPace paces a job's batches from the previous one's plan.
	bulkPace bulkPace
	// published holds the kinds' published signal declarations read
	// lately, for publishedTTL (tests lower it).
	published    publishedCache
	publishedTTL time.Duration
}

var _ StrictServerInterface = (*Server)(nil)

// New returns a server. Run Migrate (and the engine's) first. It registers
// the bulk job workflow (BulkWorkflow) on Config.Engine: call it before
// creating workers, and run bulk jobs with StartBulkWorker.
func New(cfg Config) (*Server, error) {
	if cfg.Engine == nil {
		return nil, errors.New("api: Config.Engine is required")
	}
	cfg.CustomerHeader = cmp.Or(cfg.CustomerHeader, DefaultCustomerHeader)
	cfg.KeyHeader = cmp.Or(cfg.KeyHeader, DefaultKeyHeader)
	cfg.MaxBodyBytes = cmp.Or(cfg.MaxBodyBytes, DefaultMaxBodyBytes)
	if cfg.MaxBodyBytes < 0 {
		return nil, fmt.Errorf("api: Config.MaxBodyBytes %d is negative", cfg.MaxBodyBytes)
	}
	cfg.BulkConcurrency = cmp.Or(cfg.BulkConcurrency, DefaultBulkConcurrency)
	if cfg.BulkConcurrency < 0 {
		return nil, fmt.Errorf("api: Config.BulkConcurrency %d is negative", cfg.BulkConcurrency)
	}
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	var m *requestMetrics
	if cfg.MeterProvider != nil {
		var err error
		if m, err = newRequestMetrics(cfg.MeterProvider); err != nil {
			return nil, fmt.Errorf("api: metrics: %w", err)
		}
	}
	db := cfg.Engine.DB()
	s := &Server{cfg: cfg, metrics: m, db: db, schema: pq.QuoteIdentifier(cfg.Engine.Schema()),
		customerKey: pq.QuoteLiteral(cfg.CustomerHeader), keyKey: pq.QuoteLiteral(cfg.KeyHeader),
		tokens: NewTokens(db, cfg.Engine.Schema()), client: cfg.Engine.Client(), bulkBatchesPerRun: bulkRunsPerWorkflow,
		publishedTTL: publishedTTL}
	if err := s.registerBulk(); err != nil {
		return nil, fmt.Errorf("api: bulk jobs: %w", err)
	}
	return s, nil
}

// Tokens returns the server's token store.
func (s *Server) Tokens() *Tokens { return s.tokens }

// Handler returns the HTTP handler: the generated routes under /v1 behind
// bearer authentication and role checks, and /openapi.yaml, /healthz,
// /readyz and /metrics without a token.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	strict := NewStrictHandlerWithOptions(s, []StrictMiddlewareFunc{s.authorize}, StrictHTTPServerOptions{
		RequestErrorHandlerFunc: func(w http.ResponseWriter, r *http.Request, err error) {
			writeProblem(w, r, badRequest("", "%v", err))
		},
		ResponseErrorHandlerFunc: s.writeError,
	})
	HandlerWithOptions(strict, StdHTTPServerOptions{
		BaseRouter:  mux,
		Middlewares: []MiddlewareFunc{strictBody(s.cfg.MaxBodyBytes)},
		ErrorHandlerFunc: func(w http.ResponseWriter, r *http.Request, err error) {
			writeProblem(w, r, paramProblem(err))
		},
	})
	mux.HandleFunc("GET /openapi.yaml", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/yaml")
		_, _ = w.Write(openAPIDocument)
	})
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	if s.cfg.Metrics != nil {
		mux.Handle("GET /metrics", s.cfg.Metrics)
	}
	return s.authenticate(s.metrics.wrap(mux))
}

// writeError answers a handler's error as a problem; unexpected errors are
// logged and answered as a 500 without their detail.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	p, known := toProblem(err)
	if !known {
		s.cfg.Logger.Error("api: request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	writeProblem(w, r, p)
}

type principalKey struct{}

func principalOf(ctx context.Context) Principal {
	p, _ := ctx.Value(principalKey{}).(Principal)
	return p
}

// authenticate requires a valid bearer token on every /v1 request and puts
// its principal in the request's context. Routes outside /v1 need none.
func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/v1/") {
			next.ServeHTTP(w, r)
			return
		}
		auth := r.Header.Get("Authorization")
		scheme, tok, ok := strings.Cut(auth, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			writeProblem(w, r, errUnauthenticatedProblem)
			return
		}
		p, err := s.tokens.Authenticate(r.Context(), strings.TrimSpace(tok))
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
	})
}
