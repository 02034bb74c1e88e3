package engine

import (
	"context"
	"embed"

	"github.com/graftdev/graft/internal/migrate"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// Migrate creates or upgrades graft's schema. It is safe to call from many
// processes at once: a transaction-scoped advisory lock keyed by the schema
// name serialises them, and applied versions are recorded.
func (e *Engine) Migrate(ctx context.Context) error {
	return migrate.Apply(ctx, e.db.DB, e.cfg.Schema, migrate.Set{
		Pkg: "engine", FS: migrationFS, Table: "schema_migrations", Lock: "graft-migrate", CreateSchema: true,
	})
}
