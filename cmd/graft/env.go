package main

import (
	"context"
	"fmt"
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
	db, err := engine.OpenDB(databaseURL())
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(maxConns)
	db.SetMaxIdleConns(maxConns)
	if err := db.Ping(); err != nil {
		return nil, fmt.Errorf("connect to %s: %w", databaseURL(), err)
	}
	return db, nil
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
