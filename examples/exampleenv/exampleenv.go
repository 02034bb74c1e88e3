// Package exampleenv is what every graft example does before and after its
// story: it reads the connection settings the Makefile exports, opens
// PostgreSQL with a clear error when it does not answer, and gives the
// example a schema of its own that it drops again at the end.
//
// It uses nothing of graft's but the default URLs (internal/devenv, the one
// place they are written); copy it, or do the same in a few lines, in your
// own program.
package exampleenv

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/devenv"
)

// DefaultDatabaseURL is used when GRAFT_DATABASE_URL is not set.
const DefaultDatabaseURL = devenv.DefaultDatabaseURL

// DefaultRedisURL is used when GRAFT_REDIS_URL is not set.
const DefaultRedisURL = devenv.DefaultRedisURL

// DatabaseURL is GRAFT_DATABASE_URL, or DefaultDatabaseURL.
func DatabaseURL() string { return devenv.DatabaseURL() }

// RedisURL is GRAFT_REDIS_URL, or DefaultRedisURL.
func RedisURL() string { return devenv.RedisURL() }

// Open opens the database at url and checks that it answers within ten
// seconds. The error says how to start one when it does not.
func Open(ctx context.Context, url string) (*sqlx.DB, error) {
	db, err := engine.OpenDB(url)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", url, err)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := db.PingContext(pctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("PostgreSQL at %s does not answer (%w); start one with scripts/services.sh, or set GRAFT_DATABASE_URL", url, err)
	}
	return db, nil
}

var schemaRe = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// marker is the comment an example puts on the schemas it creates, so that
// it only ever drops a schema it made.
func marker(owner string) string { return "created by the graft example " + owner }

// Schema creates the schema name for the example owner (its program name)
// and returns a function that drops it. A schema of that name left behind
// by an earlier run of the same example is dropped and created again
// empty, or kept as it is when reuse is set (a server whose state must
// survive its restarts); a schema that exists for any other reason is
// refused, and nothing is changed.
func Schema(ctx context.Context, db *sqlx.DB, owner, name string, reuse bool) (drop func(context.Context) error, err error) {
	if !schemaRe.MatchString(name) {
		return nil, fmt.Errorf("schema %q is not a lower-case SQL identifier", name)
	}
	q := pq.QuoteIdentifier(name)
	drop = func(ctx context.Context) error {
		if _, err := db.ExecContext(ctx, `DROP SCHEMA IF EXISTS `+q+` CASCADE`); err != nil {
			return fmt.Errorf("drop schema %s: %w", name, err)
		}
		return nil
	}
	var comment sql.NullString
	err = db.QueryRowContext(ctx, `SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = $1`, name).Scan(&comment)
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return nil, fmt.Errorf("look for schema %s: %w", name, err)
	case comment.String != marker(owner):
		return nil, fmt.Errorf("schema %s exists and was not created by this example; choose another with -schema", name)
	case reuse:
		return drop, nil
	default:
		if _, err := db.ExecContext(ctx, `DROP SCHEMA `+q+` CASCADE`); err != nil {
			return nil, fmt.Errorf("drop schema %s left by an earlier run: %w", name, err)
		}
	}
	if _, err := db.ExecContext(ctx, `CREATE SCHEMA `+q); err != nil {
		return nil, fmt.Errorf("create schema %s: %w", name, err)
	}
	if _, err := db.ExecContext(ctx, `COMMENT ON SCHEMA `+q+` IS `+pq.QuoteLiteral(marker(owner))); err != nil {
		return nil, fmt.Errorf("mark schema %s: %w", name, err)
	}
	return drop, nil
}

// Env is an example's database and schema.
type Env struct {
	// DB is the open pool.
	DB *sqlx.DB
	// Schema is the example's own schema, created empty.
	Schema string

	drop func(context.Context) error
	keep bool
}

// Options say where an example keeps its state.
type Options struct {
	// Owner is the example's name; its schemas are marked with it.
	Owner string
	// DatabaseURL is the database to open.
	DatabaseURL string
	// Schema is the example's own schema.
	Schema string
	// Keep leaves the schema when the example ends, for a look at its tables.
	Keep bool
	// Reuse keeps a schema the same example left, instead of starting empty.
	Reuse bool
}

// Setup opens the database (see Open) and creates the example's schema
// (see Schema). Close undoes both, but for a kept schema.
func Setup(ctx context.Context, o Options) (*Env, error) {
	db, err := Open(ctx, o.DatabaseURL)
	if err != nil {
		return nil, err
	}
	drop, err := Schema(ctx, db, o.Owner, o.Schema, o.Reuse)
	if err != nil {
		db.Close()
		return nil, err
	}
	return &Env{DB: db, Schema: o.Schema, drop: drop, keep: o.Keep}, nil
}

// Close drops the schema (unless kept) and closes the pool, adding what
// fails to *errp. Defer it after stopping everything that uses the schema.
func (e *Env) Close(errp *error) {
	if !e.keep {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		*errp = errors.Join(*errp, e.drop(ctx))
	}
	*errp = errors.Join(*errp, e.DB.Close())
}
