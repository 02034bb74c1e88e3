package api

import (
	"context"
	"embed"

	"github.com/jmoiron/sqlx"

	"github.com/graftdev/graft/internal/migrate"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// Migrate creates or upgrades the API's tables in schema (graft's schema,
// which engine.Engine.Migrate creates). It is safe to run from many processes
// at once: a transaction-scoped advisory lock serialises them, and applied
// versions are recorded in api_migrations, apart from the engine's.
func Migrate(ctx context.Context, db *sqlx.DB, schema string) error {
	return migrate.Apply(ctx, db.DB, schema, migrate.Set{
		Pkg: "api", FS: migrationFS, Table: "api_migrations", Lock: "graft-api-migrate", CreateSchema: true,
	})
}
