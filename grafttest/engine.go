package grafttest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq" // PostgreSQL driver
	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/devenv"
)

// DefaultPollInterval is the engine's Config.PollInterval in NewEngine
// when the test leaves it zero: tests should not wait a second for work
// whose wake-up notification they raced.
const DefaultPollInterval = 100 * time.Millisecond

// DefaultDatabaseURL is the PostgreSQL the project's Makefile and
// scripts/services.sh set up on loopback, used when GRAFT_DATABASE_URL is
// not set.
const DefaultDatabaseURL = devenv.DefaultDatabaseURL

// DatabaseURL is GRAFT_DATABASE_URL, or DefaultDatabaseURL.
func DatabaseURL() string { return devenv.DatabaseURL() }

// pools holds one pool per database URL for the whole test binary, so
// parallel tests share connections instead of each opening its own.
var pools sync.Map // URL -> *pool

type pool struct {
	once sync.Once
	db   *sqlx.DB
	err  error
}

// DB returns a pool on DatabaseURL shared by the test binary; the test
// fails at once, with the URL, when PostgreSQL does not answer.
func DB(t testing.TB) *sqlx.DB {
	t.Helper()
	url := DatabaseURL()
	v, _ := pools.LoadOrStore(url, &pool{})
	p := v.(*pool)
	p.once.Do(func() {
		p.db, p.err = engine.OpenDB(url)
		if p.err == nil {
			p.db.SetMaxOpenConns(20)
			p.db.SetMaxIdleConns(20)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			p.err = p.db.PingContext(ctx)
		}
	})
	require.NoError(t, p.err, "grafttest: PostgreSQL at %s (set GRAFT_DATABASE_URL)", url)
	return p.db
}

// CloseDB closes the pools DB has opened, for a TestMain to call after
// m.Run: a pool's goroutines would otherwise outlive the tests and show as
// leaks to a goroutine-leak check such as go.uber.org/goleak. A later DB
// opens a fresh pool.
func CloseDB() error {
	var errs []error
	pools.Range(func(url, v any) bool {
		pools.Delete(url)
		if p := v.(*pool); p.db != nil {
			errs = append(errs, p.db.Close())
		}
		return true
	})
	return errors.Join(errs...)
}

// SchemaName returns a fresh schema name derived from the test's name.
func SchemaName(t testing.TB) string {
	var b strings.Builder
	for _, r := range strings.ToLower(t.Name()) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	s := b.String()
	if len(s) > 40 {
		s = s[:40]
	}
	buf := make([]byte, 4)
	_, _ = rand.Read(buf)
	return "t_" + s + "_" + hex.EncodeToString(buf)
}

// Schema returns a fresh schema name that is dropped (with everything in
// it) when the test ends.
func Schema(t testing.TB) string {
	t.Helper()
	name := SchemaName(t)
	db := DB(t)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := db.ExecContext(ctx, fmt.Sprintf(`DROP SCHEMA IF EXISTS %q CASCADE`, name)); err != nil {
			t.Logf("grafttest: drop schema %s: %v", name, err)
		}
	})
	return name
}

// NewEngine returns a migrated engine in a schema of its own, closed and
// dropped when the test ends. cfg is optional; its zero fields are filled:
// DB with the shared pool (DB), DatabaseURL with DatabaseURL(), Schema
// with a fresh schema, PollInterval with DefaultPollInterval. Register the
// definitions and start a worker (StartWorker) next.
func NewEngine(t testing.TB, cfg ...engine.Config) *engine.Engine {
	t.Helper()
	var c engine.Config
	switch len(cfg) {
	case 0:
	case 1:
		c = cfg[0]
	default:
		t.Fatalf("grafttest: NewEngine takes at most one Config, got %d", len(cfg))
	}
	if c.DB == nil {
		c.DB = DB(t)
	}
	if c.DatabaseURL == "" {
		c.DatabaseURL = DatabaseURL()
	}
	if c.Schema == "" {
		c.Schema = Schema(t)
	}
	if c.PollInterval == 0 {
		c.PollInterval = DefaultPollInterval
	}
	e, err := engine.New(c)
	require.NoError(t, err, "grafttest: engine.New")
	t.Cleanup(func() { _ = e.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(t, e.Migrate(ctx), "grafttest: migrate schema %s", c.Schema)
	return e
}

// StartWorker creates and starts a worker, stopped when the test ends
// (before the engine closes). cfg is optional.
func StartWorker(t testing.TB, e *engine.Engine, cfg ...engine.WorkerConfig) *engine.Worker {
	t.Helper()
	var c engine.WorkerConfig
	if len(cfg) > 1 {
		t.Fatalf("grafttest: StartWorker takes at most one WorkerConfig, got %d", len(cfg))
	} else if len(cfg) == 1 {
		c = cfg[0]
	}
	w, err := e.NewWorker(c)
	require.NoError(t, err, "grafttest: NewWorker")
	require.NoError(t, w.Start(context.Background()), "grafttest: start worker")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = w.Stop(ctx)
	})
	return w
}

// Context returns a context that ends when the test does or after d,
// whichever comes first.
func Context(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// NewClient returns a client on schema for a test that only looks at runs
// (or starts and signals them) while other code, such as the program under
// test, runs the workers: engine.NewClient on the shared pool, closed when
// the test ends.
func NewClient(t testing.TB, schema string) *engine.Client {
	t.Helper()
	c, err := engine.NewClient(engine.ClientConfig{DatabaseURL: DatabaseURL(), DB: DB(t), Schema: schema})
	require.NoError(t, err, "grafttest: engine.NewClient")
	t.Cleanup(func() { _ = c.Close() })
	return c
}
