// Package migrate applies a package's embedded SQL migrations to graft's
// schema. engine, tasks and tasks/api each keep their own numbered files
// and their own table of applied versions; the runner is this one. It
// imports nothing of graft but internal/pgident.
package migrate

import (
	"context"
	"database/sql"
	"fmt"
	"hash/fnv"
	"io/fs"
	"slices"
	"strconv"
	"strings"

	"github.com/graftdev/graft/internal/pgident"
)

// Set is one package's migrations.
type Set struct {
	// Pkg prefixes error messages ("engine", "tasks", "api").
	Pkg string
	// FS holds the files as migrations/NNN_name.sql; {{schema}} in a file
	// stands for the quoted schema.
	FS fs.FS
	// Table records the applied versions, in the schema.
	Table string
	// Lock names the advisory lock, with the schema; it must stay the same
	// from release to release, so that old and new processes exclude each
	// other.
	Lock string
	// CreateSchema creates the schema when it is missing; without it, the
	// schema must exist (engine.Engine.Migrate creates it).
	CreateSchema bool
}

// Apply runs the set's migrations that schema has not had, in version
// order, in one transaction. It is safe to call from many processes at
// once: a transaction-scoped advisory lock keyed by set.Lock and the schema
// serialises them.
func Apply(ctx context.Context, db *sql.DB, schema string, set Set) error {
	p := set.Pkg + ": "
	if !pgident.Valid(schema) {
		return fmt.Errorf("%smigrate: schema %q is not a valid identifier", p, schema)
	}
	entries, err := fs.ReadDir(set.FS, "migrations")
	if err != nil {
		return fmt.Errorf("%smigrate: %w", p, err)
	}
	q := pgident.Quote(schema)
	h := fnv.New64a()
	h.Write([]byte(set.Lock + ":" + schema))

	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("%smigrate: %w", p, err)
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(h.Sum64())); err != nil {
		return fmt.Errorf("%smigrate lock: %w", p, err)
	}
	if set.CreateSchema {
		if _, err := tx.ExecContext(ctx, `CREATE SCHEMA IF NOT EXISTS `+q); err != nil {
			return fmt.Errorf("%smigrate: %w", p, err)
		}
	}
	table := q + "." + pgident.Quote(set.Table)
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS `+table+` (version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		if !set.CreateSchema {
			return fmt.Errorf("%smigrate (has engine.Migrate run?): %w", p, err)
		}
		return fmt.Errorf("%smigrate: %w", p, err)
	}
	applied, err := versions(ctx, tx, table)
	if err != nil {
		return fmt.Errorf("%smigrate: %w", p, err)
	}
	seen := map[int]string{}
	for _, ent := range entries { // fs.ReadDir sorts by name
		v, err := strconv.Atoi(strings.SplitN(ent.Name(), "_", 2)[0])
		if err != nil {
			return fmt.Errorf("%smigration file %s has no version prefix", p, ent.Name())
		}
		// Two files of one version (two branches that took the same
		// number) would apply one and skip the other wherever the first
		// had run.
		if other, dup := seen[v]; dup {
			return fmt.Errorf("%smigration files %s and %s have the same version %d", p, other, ent.Name(), v)
		}
		seen[v] = ent.Name()
		if slices.Contains(applied, v) {
			continue
		}
		body, err := fs.ReadFile(set.FS, "migrations/"+ent.Name())
		if err != nil {
			return fmt.Errorf("%smigration %s: %w", p, ent.Name(), err)
		}
		if _, err := tx.ExecContext(ctx, strings.ReplaceAll(string(body), "{{schema}}", q)); err != nil {
			return fmt.Errorf("%smigration %s: %w", p, ent.Name(), err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO `+table+` (version) VALUES ($1)`, v); err != nil {
			return fmt.Errorf("%smigration %s: %w", p, ent.Name(), err)
		}
	}
	return tx.Commit()
}

func versions(ctx context.Context, tx *sql.Tx, table string) ([]int, error) {
	rows, err := tx.QueryContext(ctx, `SELECT version FROM `+table)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []int
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}
