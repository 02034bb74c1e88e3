package tasks

import (
	"context"
	"embed"
	"fmt"
	"hash/fnv"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/jmoiron/sqlx"

	"github.com/graftdev/graft/internal/pgident"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// Migrate creates or upgrades the tables and functions of the tasks package
// in graft's schema (which engine.Engine.Migrate must have created). It is
// safe to call from many processes at once: a transaction-scoped advisory
// lock serialises them, and applied versions are recorded in
// tasks_migrations.
func Migrate(ctx context.Context, db *sqlx.DB, schema string) error {
	if !pgident.Valid(schema) {
		return fmt.Errorf("tasks: migrate: schema %q is not a valid identifier", schema)
	}
	entries, err := migrationFS.ReadDir("migrations")
	if err != nil {
		return err
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name() < entries[j].Name() })
	q := pgident.Quote(schema)
	h := fnv.New64a()
	h.Write([]byte("graft-tasks-migrate:" + schema))

	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("tasks: migrate: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(h.Sum64())); err != nil {
		return fmt.Errorf("tasks: migrate lock: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS `+q+`.tasks_migrations (version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("tasks: migrate (has engine.Migrate run?): %w", err)
	}
	var applied []int
	if err := tx.SelectContext(ctx, &applied, `SELECT version FROM `+q+`.tasks_migrations`); err != nil {
		return fmt.Errorf("tasks: migrate: %w", err)
	}
	for _, ent := range entries {
		v, err := strconv.Atoi(strings.SplitN(ent.Name(), "_", 2)[0])
		if err != nil {
			return fmt.Errorf("tasks: migration file %s has no version prefix", ent.Name())
		}
		if slices.Contains(applied, v) {
			continue
		}
		body, err := migrationFS.ReadFile("migrations/" + ent.Name())
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, strings.ReplaceAll(string(body), "{{schema}}", q)); err != nil {
			return fmt.Errorf("tasks: migration %s: %w", ent.Name(), err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO `+q+`.tasks_migrations (version) VALUES ($1)`, v); err != nil {
			return fmt.Errorf("tasks: migration %s: %w", ent.Name(), err)
		}
	}
	return tx.Commit()
}
