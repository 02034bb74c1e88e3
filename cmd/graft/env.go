package main

import (
	"context"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/devenv"
	"github.com/graftdev/graft/tasks/api"
)

func databaseURL() string { return devenv.DatabaseURL() }

func redisURL() string { return devenv.RedisURL() }

func openDB(maxConns int) (*sqlx.DB, error) {
	if err := checkDatabaseURL(databaseURL()); err != nil {
		return nil, err
	}
	db, err := engine.OpenDB(databaseURL())
	if err != nil {
		return nil, fmt.Errorf("GRAFT_DATABASE_URL %s: %w", redactURL(databaseURL()), err)
	}
	db.SetMaxOpenConns(maxConns)
	db.SetMaxIdleConns(maxConns)
	if err := db.Ping(); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("connect to GRAFT_DATABASE_URL %s: %w", redactURL(databaseURL()), err)
	}
	return db, nil
}

// checkDatabaseURL refuses a URL that names another database system, whose
// error from lib/pq ("missing \"=\" after ... in connection info string")
// does not say what is wrong. A DSN of key=value pairs is left to lib/pq.
func checkDatabaseURL(s string) error {
	scheme, _, ok := strings.Cut(s, "://")
	if !ok || scheme == "postgres" || scheme == "postgresql" {
		return nil
	}
	return fmt.Errorf("GRAFT_DATABASE_URL %s is not a PostgreSQL URL: it starts %s:// where postgres:// is needed, as in %s",
		redactURL(s), scheme, devenv.DefaultDatabaseURL)
}

// redactURL is a database or Redis URL fit for an error message: its
// password (in the URL's user part, or a password=... pair of a key=value
// DSN) replaced by xxxxx.
func redactURL(s string) string {
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil {
			return "(a URL that does not parse)"
		}
		if q := u.Query(); q.Has("password") {
			q.Set("password", "xxxxx")
			u.RawQuery = q.Encode()
		}
		return u.Redacted()
	}
	// The value of a key=value DSN's password, quoted or not.
	password := regexp.MustCompile(`(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S*)`)
	return password.ReplaceAllString(s, "${1}xxxxx")
}

// migrateAPI creates or upgrades the engine's and the API's tables in e's
// schema.
func migrateAPI(ctx context.Context, e *engine.Engine) error {
	if err := e.Migrate(ctx); err != nil {
		return err
	}
	return api.Migrate(ctx, e.DB(), e.Schema())
}

// startBulkWorker starts srv's bulk worker and returns what stops it,
// waiting up to ten seconds for the items in hand.
func startBulkWorker(ctx context.Context, srv *api.Server) (func(), error) {
	bw, err := srv.StartBulkWorker(ctx)
	if err != nil {
		return nil, err
	}
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = bw.Stop(sctx)
	}, nil
}

func runMigrate(ctx context.Context, schema string) error {
	db, err := openDB(2)
	if err != nil {
		return err
	}
	defer db.Close()
	e, err := engine.New(engine.Config{DB: db, DatabaseURL: databaseURL(), Schema: schema})
	if err != nil {
		return err
	}
	defer e.Close()
	if err := migrateAPI(ctx, e); err != nil {
		return err
	}
	fmt.Printf("schema %s is up to date\n", schema)
	return nil
}
