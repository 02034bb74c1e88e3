package api

import (
	"context"
	"embed"
	"fmt"
	"hash/fnv"
	"sort"
	"strconv"
	"strings"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// Migrate creates or upgrades the API's tables in schema (graft's schema,
// which engine.Engine.Migrate creates). It is safe to run from many processes
// at once: a transaction-scoped advisory lock serialises them, and applied
// versions are recorded in api_migrations, apart from the engine's.
func Migrate(ctx context.Context, db *sqlx.DB, schema string) error {
	entries, err := migrationFS.ReadDir("migrations")
	if err != nil {
		return err
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name() < entries[j].Name() })
	q := pq.QuoteIdentifier(schema)
	h := fnv.New64a()
	h.Write([]byte("graft-api-migrate:" + schema))
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("api: migrate: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(h.Sum64())); err != nil {
		return fmt.Errorf("api: migrate lock: %w", err)
	}
	for _, s := range []string{
		`CREATE SCHEMA IF NOT EXISTS ` + q,
		`CREATE TABLE IF NOT EXISTS ` + q + `.api_migrations (version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`,
	} {
		if _, err := tx.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("api: migrate: %w", err)
		}
	}
	var applied []int
	if err := tx.SelectContext(ctx, &applied, `SELECT version FROM `+q+`.api_migrations`); err != nil {
		return fmt.Errorf("api: migrate: %w", err)
	}
	done := map[int]bool{}
	for _, v := range applied {
		done[v] = true
	}
	for _, ent := range entries {
		v, err := strconv.Atoi(strings.SplitN(ent.Name(), "_", 2)[0])
		if err != nil {
			return fmt.Errorf("api: migration file %s has no version prefix", ent.Name())
		}
		if done[v] {
			continue
		}
		body, err := migrationFS.ReadFile("migrations/" + ent.Name())
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, strings.ReplaceAll(string(body), "{{schema}}", q)); err != nil {
			return fmt.Errorf("api: migration %s: %w", ent.Name(), err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO `+q+`.api_migrations (version) VALUES ($1)`, v); err != nil {
			return fmt.Errorf("api: migration %s: %w", ent.Name(), err)
		}
	}
	return tx.Commit()
}
