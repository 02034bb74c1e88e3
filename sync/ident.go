package graftsync

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/lib/pq"
)

// identRe accepts the identifiers a mapping may name: letters, digits, _ and
// $, not starting with a digit, at most 63 bytes (PostgreSQL's limit).
// Upper case is allowed; every identifier is quoted, so case is kept.
var identRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_$]{0,62}$`)

// tableName is a validated, schema-qualified table name.
type tableName struct {
	schema, name string
}

func parseTable(s string) (tableName, error) {
	parts := strings.Split(s, ".")
	var t tableName
	switch len(parts) {
	case 1:
		t = tableName{"public", parts[0]}
	case 2:
		t = tableName{parts[0], parts[1]}
	default:
		return t, fmt.Errorf("%q is not a table name (want schema.table)", s)
	}
	if !identRe.MatchString(t.schema) || !identRe.MatchString(t.name) {
		return t, fmt.Errorf("%q is not a valid table name (want schema.table, each a plain identifier)", s)
	}
	return t, nil
}

// String is the unquoted "schema.table", used as the mapping's ID.
func (t tableName) String() string { return t.schema + "." + t.name }

// quoted is the table as SQL.
func (t tableName) quoted() string {
	return pq.QuoteIdentifier(t.schema) + "." + pq.QuoteIdentifier(t.name)
}

func qi(s string) string { return pq.QuoteIdentifier(s) }

// typeRe bounds what a type name from the catalog may look like before it is
// used in a cast: format_type's output, quoted where needed.
var typeRe = regexp.MustCompile(`^[A-Za-z0-9_$ ."(),\[\]]+$`)
