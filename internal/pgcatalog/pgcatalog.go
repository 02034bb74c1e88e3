// Package pgcatalog reads what PostgreSQL's catalog says about a legacy
// table (its columns, their types, enum labels and lengths, and the indexes
// they lead), so that a sync mapping and a tasks source are checked against
// their table the same way at start-up, with errors that name the
// configuration's field and the column. It imports nothing of graft but
// internal/pgident.
package pgcatalog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"slices"
	"unicode/utf8"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/graftdev/graft/internal/pgident"
)

// Column is what the catalog says about one column.
type Column struct {
	Name   string
	Attnum int
	// Type is format_type's name for the column's type, checked with
	// pgident.ValidType: safe to use in a cast.
	Type string
	// Base is the type's OID, a domain resolved to its base type.
	Base int64
	// Category is pg_type.typcategory of the base type ("S" string, "N"
	// numeric, "D" date and time, ...).
	Category string
	// Enum is set for an enum type, whose labels (in their sort order) are
	// Labels.
	Enum   bool
	Labels []string
	// MaxLen is the length of a varchar(n) or char(n); 0 when unbounded.
	MaxLen  int
	NotNull bool
	// Defaults is set when the column has a default, identity or generation
	// expression; DefExpr is the default expression ("" when none).
	Defaults bool
	DefExpr  string
	// Computed is set for a generated column or one that is identity
	// ALWAYS: not writable.
	Computed bool
}

// IsString reports whether the column's base type is a string type (text,
// varchar, char, name).
func (c *Column) IsString() bool { return c.Category == "S" }

// Needs is the error for the column named for field whose type is not the
// one wanted.
func (c *Column) Needs(field, want string) error {
	return fmt.Errorf("%s: column %q is %s; it needs %s", field, c.Name, c.Type, want)
}

// Accepts checks a configured value (a status, a label, a request value)
// that graft writes into the column or compares it with: an enum's label,
// and no longer than a varchar(n) or char(n).
func (c *Column) Accepts(v string) error {
	if c.Enum && !slices.Contains(c.Labels, v) {
		return fmt.Errorf("%q is not a label of the column's enum type %s", v, c.Type)
	}
	if c.MaxLen > 0 && utf8.RuneCountInString(v) > c.MaxLen {
		return fmt.Errorf("%q is longer than the column's %d characters", v, c.MaxLen)
	}
	return nil
}

// TakesLabels checks that the column named for field holds text or an enum
// and accepts each of values, which are keyed by what names them (the error
// says which).
func (c *Column) TakesLabels(field string, values map[string]string) error {
	if !c.IsString() && !c.Enum {
		return c.Needs(field, "a text, varchar or enum type")
	}
	for _, k := range slices.Sorted(maps.Keys(values)) {
		if err := c.Accepts(values[k]); err != nil {
			return fmt.Errorf("%s (column %q): value for %s: %w", field, c.Name, k, err)
		}
	}
	return nil
}

// Table is what the catalog says about a table.
type Table struct {
	Name    pgident.Table
	OID     int64
	Columns map[string]*Column
	// Unique holds the columns (by Attnum) that alone make a unique index
	// (not partial, not on an expression).
	Unique map[int]bool
	// Indexed holds the columns (by Attnum) that lead an index.
	Indexed map[int]bool
}

// Column returns the column that the configuration's field names, or an
// error naming both when the table has no such column.
func (t *Table) Column(field, name string) (*Column, error) {
	c := t.Columns[name]
	if c == nil {
		return nil, fmt.Errorf("%s: column %q does not exist in %s", field, name, t.Name)
	}
	return c, nil
}

// Inspect reads a table's columns and indexes from the catalog. It refuses
// a relation that is not a table, and a column whose type name is not one
// graft would put in SQL.
func Inspect(ctx context.Context, db sqlx.QueryerContext, t pgident.Table) (*Table, error) {
	var oid int64
	var kind string
	err := db.QueryRowxContext(ctx, `SELECT c.oid::int8, c.relkind::text FROM pg_class c
		JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2`, t.Schema, t.Name).Scan(&oid, &kind)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("table %s does not exist", t)
	}
	if err != nil {
		return nil, fmt.Errorf("inspect table %s: %w", t, err)
	}
	if kind != "r" && kind != "p" {
		return nil, fmt.Errorf("%s is not a table (relkind %q)", t, kind)
	}
	out := &Table{Name: t, OID: oid, Columns: map[string]*Column{}, Unique: map[int]bool{}, Indexed: map[int]bool{}}
	rows, err := db.QueryxContext(ctx, `SELECT a.attnum, a.attname::text, format_type(a.atttypid, a.atttypmod),
			bt.oid::int8, bt.typcategory::text, bt.typtype = 'e',
			COALESCE((SELECT array_agg(e.enumlabel::text ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = bt.oid), '{}'),
			CASE WHEN bt.oid IN (1042, 1043) THEN GREATEST(COALESCE(NULLIF(t.typtypmod, -1), a.atttypmod) - 4, 0) ELSE 0 END,
			a.attnotnull, a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> '',
			COALESCE(pg_get_expr(d.adbin, d.adrelid), ''), a.attidentity = 'a' OR a.attgenerated <> ''
		FROM pg_attribute a
		JOIN pg_type t ON t.oid = a.atttypid
		LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
		JOIN pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
		WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped`, oid)
	if err != nil {
		return nil, fmt.Errorf("inspect columns of %s: %w", t, err)
	}
	defer rows.Close()
	for rows.Next() {
		c := &Column{}
		if err := rows.Scan(&c.Attnum, &c.Name, &c.Type, &c.Base, &c.Category, &c.Enum, pq.Array(&c.Labels), &c.MaxLen,
			&c.NotNull, &c.Defaults, &c.DefExpr, &c.Computed); err != nil {
			return nil, err
		}
		if !pgident.ValidType(c.Type) {
			return nil, fmt.Errorf("column %s of %s has a type name graft will not use in SQL: %q", c.Name, t, c.Type)
		}
		out.Columns[c.Name] = c
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	idx, err := db.QueryxContext(ctx, `SELECT i.indkey[0]::int, i.indisunique AND i.indnkeyatts = 1 AND i.indpred IS NULL AND i.indexprs IS NULL
		FROM pg_index i WHERE i.indrelid = $1`, oid)
	if err != nil {
		return nil, fmt.Errorf("inspect indexes of %s: %w", t, err)
	}
	defer idx.Close()
	for idx.Next() {
		var att int
		var uniq bool
		if err := idx.Scan(&att, &uniq); err != nil {
			return nil, err
		}
		out.Indexed[att] = true
		if uniq {
			out.Unique[att] = true
		}
	}
	return out, idx.Err()
}
