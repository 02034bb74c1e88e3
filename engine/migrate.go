package engine

import (
	"context"
	"embed"
	"fmt"
	"hash/fnv"
	"sort"
	"strconv"
	"strings"

	"github.com/lib/pq"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// Migrate creates or upgrades graft's schema. It is safe to call from many
// processes at once: a transaction-scoped advisory lock keyed by the schema
// name serialises them, and applied versions are recorded.
func (e *Engine) Migrate(ctx context.Context) error {
	entries, err := migrationFS.ReadDir("migrations")
	if err != nil {
		return err
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name() < entries[j].Name() })
	schema := pq.QuoteIdentifier(e.cfg.Schema)
	h := fnv.New64a()
	h.Write([]byte("graft-migrate:" + e.cfg.Schema))
	lockKey := int64(h.Sum64())

	tx, err := e.db.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("engine: migrate: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, lockKey); err != nil {
		return fmt.Errorf("engine: migrate lock: %w", err)
	}
	stmts := []string{
		`CREATE SCHEMA IF NOT EXISTS ` + schema,
		`CREATE TABLE IF NOT EXISTS ` + schema + `.schema_migrations (version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`,
	}
	for _, s := range stmts {
		if _, err := tx.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("engine: migrate: %w", err)
		}
	}
	applied := map[int]bool{}
	rows, err := tx.QueryContext(ctx, `SELECT version FROM `+schema+`.schema_migrations`)
	if err != nil {
		return fmt.Errorf("engine: migrate: %w", err)
	}
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			rows.Close()
			return err
		}
		applied[v] = true
	}
	rows.Close()
	for _, ent := range entries {
		v, err := strconv.Atoi(strings.SplitN(ent.Name(), "_", 2)[0])
		if err != nil {
			return fmt.Errorf("engine: migration file %s has no version prefix", ent.Name())
		}
		if applied[v] {
			continue
		}
		body, err := migrationFS.ReadFile("migrations/" + ent.Name())
		if err != nil {
			return err
		}
		sqlText := strings.ReplaceAll(string(body), "{{schema}}", schema)
		if _, err := tx.ExecContext(ctx, sqlText); err != nil {
			return fmt.Errorf("engine: migration %s: %w", ent.Name(), err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO `+schema+`.schema_migrations (version) VALUES ($1)`, v); err != nil {
			return fmt.Errorf("engine: migration %s: %w", ent.Name(), err)
		}
	}
	return tx.Commit()
}
