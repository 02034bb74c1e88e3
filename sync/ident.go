package graftsync

import "github.com/graftdev/graft/internal/pgident"

// tableName is a validated, schema-qualified table name.
type tableName = pgident.Table

func parseTable(s string) (tableName, error) { return pgident.ParseTable(s) }

func qi(s string) string { return pgident.Quote(s) }
