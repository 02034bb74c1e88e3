// Package testenv gives tests a real PostgreSQL and Redis on loopback, each
// test isolated in its own schema or key prefix so tests run in parallel.
// It may import engine; nothing outside tests imports it.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
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

// DatabaseURL is GRAFT_DATABASE_URL or the local default.
func DatabaseURL() string { return devenv.DatabaseURL() }

// RedisURL is GRAFT_REDIS_URL or the local default.
func RedisURL() string { return devenv.RedisURL() }

var (
	dbOnce sync.Once
	db     *sqlx.DB
	dbErr  error
)

// DB returns a pool shared by the tests of one package.
func DB(t testing.TB) *sqlx.DB {
	dbOnce.Do(func() {
		db, dbErr = sqlx.Open("postgres", DatabaseURL())
		if dbErr == nil {
			db.SetMaxOpenConns(20)
			db.SetMaxIdleConns(20)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			dbErr = db.PingContext(ctx)
		}
	})
	require.NoError(t, dbErr, "PostgreSQL at %s (run scripts/services.sh)", DatabaseURL())
	return db
}

// Name returns a unique lower-case identifier derived from the test name.
func Name(t testing.TB) string {
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

// Schema creates a fresh schema name for the test and drops it at cleanup.
func Schema(t testing.TB) string {
	name := Name(t)
	d := DB(t)
	t.Cleanup(func() {
		_, _ = d.Exec(fmt.Sprintf(`DROP SCHEMA IF EXISTS %q CASCADE`, name))
	})
	return name
}

// Engine returns a migrated engine in its own schema; cfg may be nil. The
// engine is closed at cleanup.
func Engine(t testing.TB, cfg *engine.Config) *engine.Engine {
	c := engine.Config{}
	if cfg != nil {
		c = *cfg
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
		c.PollInterval = 100 * time.Millisecond
	}
	e, err := engine.New(c)
	require.NoError(t, err)
	require.NoError(t, e.Migrate(context.Background()))
	t.Cleanup(func() { _ = e.Close() })
	return e
}

// Worker creates and starts a worker, stopped at cleanup.
func Worker(t testing.TB, e *engine.Engine, cfg engine.WorkerConfig) *engine.Worker {
	w, err := e.NewWorker(cfg)
	require.NoError(t, err)
	require.NoError(t, w.Start(context.Background()))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = w.Stop(ctx)
	})
	return w
}

// Eventually polls cond every 20ms until it holds or the deadline passes.
func Eventually(t testing.TB, deadline time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	end := time.Now().Add(deadline)
	for time.Now().Before(end) {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("condition not met within %v: "+msg, append([]any{deadline}, args...)...)
}

// Ctx returns a context that ends with the test or after d.
func Ctx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
