package main

import (
	"context"
	"fmt"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/devenv"
	"github.com/graftdev/graft/tasks/api"
)

func databaseURL() string { return devenv.DatabaseURL() }

func redisURL() string { return devenv.RedisURL() }

func openDB(maxConns int) (*sqlx.DB, error) {
	db, err := sqlx.Open("postgres", databaseURL())
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
	if err := e.Migrate(ctx); err != nil {
		return err
	}
	if err := api.Migrate(ctx, db, schema); err != nil {
		return err
	}
	fmt.Printf("schema %s is up to date\n", schema)
	return nil
}
