package tasks

import (
	"context"
	"embed"

	"github.com/jmoiron/sqlx"

	"github.com/graftdev/graft/internal/migrate"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// Migrate creates or upgrades the tables and functions of the tasks package
// in graft's schema (which engine.Engine.Migrate must have created). It is
// safe to call from many processes at once: a transaction-scoped advisory
// lock serialises them, and applied versions are recorded in
// tasks_migrations.
func Migrate(ctx context.Context, db *sqlx.DB, schema string) error {
	return migrate.Apply(ctx, db.DB, schema, migrate.Set{
		Pkg: "tasks", FS: migrationFS, Table: "tasks_migrations", Lock: "graft-tasks-migrate",
	})
}
