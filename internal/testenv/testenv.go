// Package testenv gives tests a real PostgreSQL and Redis on loopback, each
// test isolated in its own schema or key prefix so tests run in parallel.
// What a user's tests need too (an engine on a throwaway schema, workers,
// waits) lives in the public grafttest package; these are thin shims over
// it for graft's own tests, plus Redis and the helpers for subprocesses and
// private PostgreSQL servers. It may import engine and grafttest; nothing
// outside tests imports it.
package testenv

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/grafttest"
	"github.com/graftdev/graft/internal/devenv"
)

// DatabaseURL is GRAFT_DATABASE_URL or the local default.
func DatabaseURL() string { return grafttest.DatabaseURL() }

// RedisURL is GRAFT_REDIS_URL or the local default.
func RedisURL() string { return devenv.RedisURL() }

// DB returns a pool shared by the tests of one package.
func DB(t testing.TB) *sqlx.DB { return grafttest.DB(t) }

// Name returns a unique lower-case identifier derived from the test name.
func Name(t testing.TB) string { return grafttest.SchemaName(t) }

// Schema creates a fresh schema name for the test and drops it at cleanup.
func Schema(t testing.TB) string { return grafttest.Schema(t) }

// Engine returns a migrated engine in its own schema; cfg may be nil. The
// engine is closed at cleanup.
func Engine(t testing.TB, cfg *engine.Config) *engine.Engine {
	if cfg == nil {
		return grafttest.NewEngine(t)
	}
	return grafttest.NewEngine(t, *cfg)
}

// Worker creates and starts a worker, stopped at cleanup.
func Worker(t testing.TB, e *engine.Engine, cfg engine.WorkerConfig) *engine.Worker {
	return grafttest.StartWorker(t, e, cfg)
}

// Eventually polls cond until it holds or the deadline passes.
func Eventually(t testing.TB, deadline time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	grafttest.Eventually(t, cond, fmt.Sprintf(msg, args...), deadline)
}

// Ctx returns a context that ends with the test or after d.
func Ctx(t testing.TB, d time.Duration) context.Context { return grafttest.Context(t, d) }
