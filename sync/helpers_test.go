package graftsync_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/grafttest"
	"github.com/graftdev/graft/internal/testenv"
	graftsync "github.com/graftdev/graft/sync"
)

// legacyDDL is the legacy fixture: an operations table the way a
// back-office application has it, with its own defaults, an index on status
// and columns graft knows nothing about.
const legacyDDL = `CREATE SCHEMA IF NOT EXISTS %[1]s;
CREATE TABLE %[1]s.operations (
	id           text PRIMARY KEY,
	kind         text NOT NULL DEFAULT 'renewal',
	customer     text,
	status       varchar(20) NOT NULL DEFAULT 'todo',
	step         text,
	last_error   varchar(60),
	attempts     int NOT NULL DEFAULT 0,
	progress     numeric(5,1),
	expires_at   date,
	provider_ref text,
	updated_at   timestamptz NOT NULL DEFAULT now(),
	row_version  bigint
);
CREATE INDEX ON %[1]s.operations (status);`

// statuses is the legacy vocabulary of the fixture.
var statuses = map[graftsync.State]string{
	graftsync.StatePending:       "todo",
	graftsync.StateRunning:       "doing",
	graftsync.StateWaiting:       "waiting",
	graftsync.StateCompleted:     "done",
	graftsync.StateFailed:        "error",
	graftsync.StateCancelled:     "cancelled",
	graftsync.StateNeedsOperator: "problem",
}

// fullMapping uses every feature of a mapping on the fixture.
func fullMapping(table string) graftsync.Mapping {
	done := 100.0
	values := map[graftsync.State]string{}
	for k, v := range statuses {
		values[k] = v
	}
	return graftsync.Mapping{
		Table:     table,
		Workflows: []string{"renewal"},
		Key:       graftsync.Key{Column: "id"},
		Status:    &graftsync.StatusColumn{Column: "status", Values: values},
		Step: &graftsync.StepColumn{Column: "step", Labels: map[string]string{
			"renew.check": "checking", "renew.charge": "charging", "renew.register": "registering"}},
		Error:     &graftsync.ErrorColumn{Column: "last_error", ClearOnSuccess: true},
		Attempts:  "attempts",
		UpdatedAt: "updated_at",
		Progress: &graftsync.ProgressColumn{Column: "progress", Completed: &done,
			Activities: map[string]float64{"renew.check": 25, "renew.charge": 50, "renew.register": 90}},
		Extra: []graftsync.ExtraColumn{
			{Column: "expires_at", Activity: "renew.register", Func: "newExpiry"},
			{Column: "provider_ref", Activity: "renew.register", Field: "ref"},
		},
	}
}

// funcs are the Go functions mappings name.
var funcs = map[string]graftsync.ExtraFunc{
	"newExpiry": func(ev *engine.CheckpointEvent) (any, error) {
		return ev.Result.(registered).Expires, nil
	},
}

// ---- the workflow the tests mirror ---------------------------------------

type renewal struct {
	Domain string `json:"domain"`
	Years  int    `json:"years"`
	// Order carries the key for mappings keyed by an input field.
	Order struct {
		ID string `json:"id"`
	} `json:"order"`
	// ChargeFailures makes the charge fail this many times first (retried).
	ChargeFailures int `json:"charge_failures,omitempty"`
	// Operator makes the charge fail with a NeedsOperator error; the
	// workflow then waits for the "fixed" signal and charges again.
	Operator bool `json:"operator,omitempty"`
	// Fatal makes the charge fail for good.
	Fatal bool `json:"fatal,omitempty"`
	// Confirm makes the workflow wait for the "confirm" signal first.
	Confirm bool `json:"confirm,omitempty"`
}

type registered struct {
	Expires time.Time `json:"expires"`
	Ref     string    `json:"ref"`
}

// calls counts activity attempts by idempotency key, across tests.
var calls sync.Map

func attempt(ctx context.Context) int {
	v, _ := calls.LoadOrStore(engine.ActivityInfoOf(ctx).IdempotencyKey, new(int64))
	p := v.(*int64)
	mu.Lock()
	defer mu.Unlock()
	*p++
	return int(*p)
}

var mu sync.Mutex

// heal makes a Fatal charge of the workflow succeed from now on.
var healedIDs sync.Map

func healed(workflowID string) bool { _, ok := healedIDs.Load(workflowID); return ok }

var seenIDs sync.Map

// firstTime reports whether this is the first call for the run.
func firstTime(runID string) bool {
	_, seen := seenIDs.LoadOrStore(runID, true)
	return !seen
}

var fast = &engine.RetryPolicy{InitialInterval: 5 * time.Millisecond, MaximumInterval: 20 * time.Millisecond}

var (
	checkAct  = engine.NewActivity("renew.check", func(ctx context.Context, in renewal) (renewal, error) { return in, nil })
	chargeAct = engine.NewActivity("renew.charge", func(ctx context.Context, in renewal) (int, error) {
		if os.Getenv(helperBlockEnv) != "" {
			// The worker process of the kill tests: stop here until killed.
			fmt.Println("blocked")
			select {}
		}
		n := attempt(ctx)
		switch {
		case in.Fatal && !healed(engine.ActivityInfoOf(ctx).Workflow.WorkflowID):
			return 0, engine.NewNonRetryableError("CardDeclined", "card declined for "+in.Domain, nil)
		case in.Operator && firstTime(engine.ActivityInfoOf(ctx).Workflow.RunID):
			return 0, engine.NewNeedsOperatorError("registry account suspended", nil)
		case n <= in.ChargeFailures:
			return 0, fmt.Errorf("payment provider timeout (attempt %d)", n)
		}
		return 100 * in.Years, nil
	}).WithOptions(engine.ActivityOptions{RetryPolicy: fast})
	registerAct = engine.NewActivity("renew.register", func(ctx context.Context, in renewal) (registered, error) {
		return registered{Expires: time.Date(2030+in.Years, 3, 1, 0, 0, 0, 0, time.UTC), Ref: "R-" + in.Domain}, nil
	})
	renewalWf = engine.NewWorkflow("renewal", func(ctx engine.Context, in renewal) (string, error) {
		if in.Confirm {
			if _, err := engine.GetSignalChannel[bool](ctx, "confirm").Receive(ctx); err != nil {
				return "", err
			}
		}
		if _, err := checkAct.Run(ctx, in); err != nil {
			return "", err
		}
		if _, err := chargeAct.Run(ctx, in); err != nil {
			if !errors.Is(err, engine.ErrNeedsOperator) {
				return "", err
			}
			if _, err := engine.GetSignalChannel[graftsync.Request](ctx, "fixed").Receive(ctx); err != nil {
				return "", err
			}
			if _, err := chargeAct.Run(ctx, in); err != nil {
				return "", err
			}
		}
		r, err := registerAct.Run(ctx, in)
		if err != nil {
			return "", err
		}
		return r.Ref, nil
	})
	// otherWf is a workflow type the mappings do not name.
	otherWf = engine.NewWorkflow("other", func(ctx engine.Context, in renewal) (string, error) {
		_, err := checkAct.Run(ctx, in)
		return "ok", err
	})
	defs = []engine.Definition{checkAct, chargeAct, registerAct, renewalWf, otherWf}
)

// ---- environment -----------------------------------------------------------

// env is one test's world: a legacy schema with the fixture table, graft in
// its own schema, a mirror and (unless asked otherwise) a worker.
type env struct {
	t      *testing.T
	db     *sqlx.DB // graft's database
	ldb    *sqlx.DB // the legacy database (== db in same-database mode)
	graft  string   // graft's schema
	legacy string   // the legacy schema
	table  string   // "legacy.operations"
	mr     *graftsync.Mirror
	e      *engine.Engine
	c      *engine.Client
}

type envOpts struct {
	separate bool                                 // separate-database mode
	mapping  func(table string) graftsync.Mapping // default fullMapping
	noWorker bool
	noStart  bool   // do not Start the mirror (no relay, no polling)
	graft    string // reuse this graft schema (subprocess tests)
	legacy   string // reuse this legacy schema
	config   func(*graftsync.Config)
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newEnv(t *testing.T, o envOpts) *env {
	t.Helper()
	ev := &env{t: t, db: grafttest.DB(t)}
	ev.ldb = ev.db
	if o.separate {
		ev.ldb = legacyDB(t)
	}
	ev.graft, ev.legacy = o.graft, o.legacy
	if ev.graft == "" {
		ev.graft = grafttest.Schema(t)
	}
	if ev.legacy == "" {
		ev.legacy = testenv.Name(t)
		_, err := ev.ldb.Exec(fmt.Sprintf(legacyDDL, pq.QuoteIdentifier(ev.legacy)))
		require.NoError(t, err)
		ldb, schema := ev.ldb, ev.legacy
		t.Cleanup(func() { _, _ = ldb.Exec(`DROP SCHEMA IF EXISTS ` + pq.QuoteIdentifier(schema) + ` CASCADE`) })
		if o.separate {
			// mirror_state lives next to the legacy table, in a schema
			// named like graft's.
			g := ev.graft
			t.Cleanup(func() { _, _ = ldb.Exec(`DROP SCHEMA IF EXISTS ` + pq.QuoteIdentifier(g) + ` CASCADE`) })
		}
	}
	ev.table = ev.legacy + ".operations"
	mf := o.mapping
	if mf == nil {
		mf = fullMapping
	}
	cfg := graftsync.Config{Mapping: mf(ev.table), DB: ev.db, Schema: ev.graft, Funcs: funcs, Logger: quietLogger(),
		RelayInterval: 20 * time.Millisecond, ActionInterval: 50 * time.Millisecond, RetryMin: 10 * time.Millisecond, RetryMax: 200 * time.Millisecond}
	if o.separate {
		cfg.LegacyDB = ev.ldb
	}
	if o.config != nil {
		o.config(&cfg)
	}
	mr, err := graftsync.New(context.Background(), cfg)
	require.NoError(t, err)
	ev.mr = mr
	t.Cleanup(func() { _ = mr.Close() })
	ev.e = grafttest.NewEngine(t, engine.Config{Schema: ev.graft, Interceptors: []engine.Interceptor{mr}, Logger: quietLogger(),
		LeaseTTL: time.Second, UnloadAfter: 50 * time.Millisecond})
	require.NoError(t, ev.e.Register(defs...))
	ev.c = ev.e.Client()
	if !o.noWorker {
		grafttest.StartWorker(t, ev.e, engine.WorkerConfig{})
	}
	if !o.noStart {
		require.NoError(t, mr.Start(context.Background(), ev.c))
	}
	return ev
}

var (
	legacyOnce sync.Once
	legacyPool *sqlx.DB
	legacyErr  error
)

// legacyDB is a second database on the same server, standing for the
// legacy application's own database in separate-database mode.
func legacyDB(t *testing.T) *sqlx.DB {
	t.Helper()
	legacyOnce.Do(func() {
		_, err := grafttest.DB(t).Exec(`CREATE DATABASE graft_sync_legacy`)
		if pe, ok := err.(*pq.Error); err != nil && !(ok && (pe.Code == "42P04" || pe.Code == "23505")) {
			legacyErr = err
			return
		}
		u, err := url.Parse(grafttest.DatabaseURL())
		if err == nil && u.Scheme != "postgres" && u.Scheme != "postgresql" {
			err = fmt.Errorf("scheme %q is not postgres://", u.Scheme)
		}
		if err != nil {
			legacyErr = fmt.Errorf("GRAFT_DATABASE_URL must be a postgres:// URL for the separate-database tests: %w", err)
			return
		}
		if u.Path == "/graft_sync_legacy" {
			legacyErr = fmt.Errorf("GRAFT_DATABASE_URL names graft_sync_legacy, the legacy database of these tests")
			return
		}
		u.Path = "/graft_sync_legacy"
		if legacyPool, legacyErr = sqlx.Open("postgres", u.String()); legacyErr == nil {
			legacyPool.SetMaxOpenConns(10)
			legacyErr = legacyPool.Ping()
		}
	})
	require.NoError(t, legacyErr)
	return legacyPool
}

// insertRow creates a legacy row the way the legacy application would.
func (ev *env) insertRow(id string) {
	ev.t.Helper()
	_, err := ev.ldb.Exec(`INSERT INTO `+ev.qtable()+` (id, customer) VALUES ($1, 'acme')`, id)
	require.NoError(ev.t, err)
}

// exec runs SQL on the legacy database.
func (ev *env) exec(q string, args ...any) {
	ev.t.Helper()
	_, err := ev.ldb.Exec(q, args...)
	require.NoError(ev.t, err)
}

// qtable is the legacy table, quoted.
func (ev *env) qtable() string { return pq.QuoteIdentifier(ev.legacy) + ".operations" }

// opRow is a legacy row as the legacy API reads it.
type opRow struct {
	ID         string          `db:"id"`
	Kind       string          `db:"kind"`
	Customer   sql.NullString  `db:"customer"`
	Status     string          `db:"status"`
	Step       sql.NullString  `db:"step"`
	LastError  sql.NullString  `db:"last_error"`
	Attempts   int             `db:"attempts"`
	Progress   sql.NullFloat64 `db:"progress"`
	ExpiresAt  sql.NullTime    `db:"expires_at"`
	Ref        sql.NullString  `db:"provider_ref"`
	UpdatedAt  time.Time       `db:"updated_at"`
	RowVersion sql.NullInt64   `db:"row_version"`
}

func (ev *env) row(id string) (*opRow, bool) {
	ev.t.Helper()
	var r opRow
	err := ev.ldb.Get(&r, `SELECT * FROM `+ev.qtable()+` WHERE id = $1`, id)
	if err == sql.ErrNoRows {
		return nil, false
	}
	require.NoError(ev.t, err)
	return &r, true
}

// waitRow waits until the row satisfies cond.
func (ev *env) waitRow(id string, cond func(*opRow) bool, what string) *opRow {
	ev.t.Helper()
	var last *opRow
	testenv.Eventually(ev.t, 20*time.Second, func() bool {
		r, ok := ev.row(id)
		last = r
		return ok && cond(r)
	}, "row %s: %s (last: %+v)", id, what, last)
	return last
}

func (ev *env) waitStatus(id, status string) *opRow {
	ev.t.Helper()
	return ev.waitRow(id, func(r *opRow) bool { return r.Status == status }, "status "+status)
}

func (ev *env) start(id string, in renewal, opts *engine.StartOptions) *engine.Run[string] {
	ev.t.Helper()
	if opts == nil {
		opts = &engine.StartOptions{}
	}
	opts.ID = id
	run, err := renewalWf.Start(context.Background(), ev.c, in, opts)
	require.NoError(ev.t, err)
	return run
}

func (ev *env) result(run *engine.Run[string]) (string, error) {
	ev.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return run.Result(ctx)
}

// waitEngine waits until the workflow's latest run has the status.
func (ev *env) waitEngine(id string, status engine.Status) {
	ev.t.Helper()
	testenv.Eventually(ev.t, 20*time.Second, func() bool {
		info, err := ev.c.Describe(context.Background(), id)
		return err == nil && info.Status == status
	}, "workflow %s never reached %s", id, status)
}

// guards are the two ways graft keeps a row from regressing: mirror_state,
// or the mapping's version column.
var guards = []string{"mirror_state", "version"}

// mode is one way to run the mirror: same or separate database, guarded
// by mirror_state or a version column.
type mode struct {
	name     string
	separate bool
	guard    string
}

func modes() []mode {
	var out []mode
	for _, sep := range []bool{false, true} {
		for _, g := range guards {
			out = append(out, mode{map[bool]string{false: "same_database", true: "separate_database"}[sep] + "/" + g, sep, g})
		}
	}
	return out
}

// guarded returns the mapping with the guard named g.
func guarded(g string, mf func(string) graftsync.Mapping) func(string) graftsync.Mapping {
	if mf == nil {
		mf = fullMapping
	}
	return func(table string) graftsync.Mapping {
		m := mf(table)
		if g == "version" {
			m.Version = "row_version"
		}
		return m
	}
}

// position reads a row's applied position: from mirror_state, or (with a
// version column) from the row.
func (ev *env) position(id string) int64 {
	ev.t.Helper()
	if ord, _, ok := ev.state(id); ok {
		return ord
	}
	r, _ := ev.row(id)
	require.NotNil(ev.t, r)
	return r.RowVersion.Int64
}

// state reads mirror_state for a row.
func (ev *env) state(id string) (ord int64, state string, ok bool) {
	ev.t.Helper()
	var exists bool
	require.NoError(ev.t, ev.ldb.QueryRow(`SELECT to_regclass($1) IS NOT NULL`, pq.QuoteIdentifier(ev.graft)+".mirror_state").Scan(&exists))
	if !exists {
		return 0, "", false
	}
	err := ev.ldb.QueryRow(`SELECT ord, state FROM `+pq.QuoteIdentifier(ev.graft)+`.mirror_state WHERE row_key = $1`, id).Scan(&ord, &state)
	if err == sql.ErrNoRows {
		return 0, "", false
	}
	require.NoError(ev.t, err)
	return ord, state, true
}
