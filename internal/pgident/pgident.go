// Package pgident validates and quotes the PostgreSQL identifiers that come
// from configuration (table and column names in a sync mapping or a tasks
// source), so that no configured name is ever put into SQL raw. It imports
// nothing of graft.
package pgident

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/lib/pq"
)

// identRe accepts the identifiers a configuration may name: letters, digits,
// _ and $, not starting with a digit, at most 63 bytes (PostgreSQL's limit).
// Upper case is allowed; every identifier is quoted, so case is kept.
var identRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_$]{0,62}$`)

// typeRe bounds what a type name from the catalog may look like before it is
// used in a cast: format_type's output, quoted where needed.
var typeRe = regexp.MustCompile(`^[A-Za-z0-9_$ ."(),\[\]]+$`)

// Valid reports whether s is an identifier a configuration may name.
func Valid(s string) bool { return identRe.MatchString(s) }

// ValidType reports whether s (a type name read from the catalog) is safe to
// use in a cast.
func ValidType(s string) bool { return typeRe.MatchString(s) }

// Quote quotes an identifier for SQL.
func Quote(s string) string { return pq.QuoteIdentifier(s) }

// Table is a validated, schema-qualified table name.
type Table struct {
	Schema, Name string
}

// ParseTable parses "schema.table" (or "table", in public) and validates
// both parts.
func ParseTable(s string) (Table, error) {
	parts := strings.Split(s, ".")
	var t Table
	switch len(parts) {
	case 1:
		t = Table{"public", parts[0]}
	case 2:
		t = Table{parts[0], parts[1]}
	default:
		return t, fmt.Errorf("%q is not a table name (want schema.table)", s)
	}
	if !Valid(t.Schema) || !Valid(t.Name) {
		return t, fmt.Errorf("%q is not a valid table name (want schema.table, each a plain identifier)", s)
	}
	return t, nil
}

// String is the unquoted "schema.table".
func (t Table) String() string { return t.Schema + "." + t.Name }

// Quoted is the table as SQL.
func (t Table) Quoted() string { return Quote(t.Schema) + "." + Quote(t.Name) }
