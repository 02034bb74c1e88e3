package graftsync

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"unicode/utf8"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/graftdev/graft/internal/pgident"
)

// PostgreSQL type OIDs the checks need.
const (
	oidBool        = 16
	oidName        = 19
	oidInt8        = 20
	oidInt2        = 21
	oidInt4        = 23
	oidText        = 25
	oidJSON        = 114
	oidFloat4      = 700
	oidFloat8      = 701
	oidBpchar      = 1042
	oidVarchar     = 1043
	oidDate        = 1082
	oidTimestamp   = 1114
	oidTimestamptz = 1184
	oidNumeric     = 1700
	oidUUID        = 2950
	oidJSONB       = 3802
)

// valueKind says how a Go value is rendered for a column.
type valueKind int

const (
	kindText valueKind = iota
	kindInt
	kindNum
	kindBool
	kindTime
	kindJSON
	kindUUID
)

// column is what the catalog says about one legacy column.
type column struct {
	name     string
	attnum   int
	typ      string // format_type, used in casts
	base     int64  // the type's OID, domains resolved to their base
	category string // pg_type.typcategory of the base type
	labels   []string
	enum     bool
	maxLen   int // varchar(n) and char(n); 0 when unbounded
	notNull  bool
	defaults bool   // has a default, identity or generation expression
	defExpr  string // the default expression, "" when none
	computed bool   // generated or identity ALWAYS: not writable
}

func (c *column) kind() valueKind {
	switch {
	case c.base == oidInt2 || c.base == oidInt4 || c.base == oidInt8:
		return kindInt
	case c.category == "N":
		return kindNum
	case c.base == oidBool:
		return kindBool
	case c.category == "D":
		return kindTime
	case c.base == oidJSON || c.base == oidJSONB:
		return kindJSON
	case c.base == oidUUID:
		return kindUUID
	}
	return kindText
}

func (c *column) isString() bool { return c.category == "S" }

// accepts checks a configured value (a status, label or request value).
func (c *column) accepts(v string) error {
	if c.enum && !slices.Contains(c.labels, v) {
		return fmt.Errorf("%q is not a label of the column's enum type %s", v, c.typ)
	}
	if c.maxLen > 0 && utf8.RuneCountInString(v) > c.maxLen {
		return fmt.Errorf("%q is longer than the column's %d characters", v, c.maxLen)
	}
	return nil
}

// table is what the catalog says about the legacy table.
type table struct {
	name    tableName
	oid     int64
	cols    map[string]*column
	unique  map[int]bool // columns that alone make a unique index
	indexed map[int]bool // columns that lead an index
}

// inspect reads the table's columns and indexes from the catalog.
func inspect(ctx context.Context, db sqlx.QueryerContext, t tableName) (*table, error) {
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
	out := &table{name: t, oid: oid, cols: map[string]*column{}, unique: map[int]bool{}, indexed: map[int]bool{}}
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
		c := &column{}
		if err := rows.Scan(&c.attnum, &c.name, &c.typ, &c.base, &c.category, &c.enum, pq.Array(&c.labels), &c.maxLen, &c.notNull, &c.defaults, &c.defExpr, &c.computed); err != nil {
			return nil, err
		}
		if !pgident.ValidType(c.typ) {
			return nil, fmt.Errorf("column %s of %s has a type name graft will not use in SQL: %q", c.name, t, c.typ)
		}
		out.cols[c.name] = c
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
		out.indexed[att] = true
		if uniq {
			out.unique[att] = true
		}
	}
	return out, idx.Err()
}

// check validates the mapping against the table and returns the columns it
// names, by field. Errors name the field and the column.
func (m *Mapping) check(t *table) (map[string]*column, error) {
	p := fieldPrefix(t.name.String())
	cols := map[string]*column{}
	get := func(field, name string) (*column, error) {
		c := t.cols[name]
		if c == nil {
			return nil, fmt.Errorf("%s%s: column %q does not exist in %s", p, field, name, t.name)
		}
		if c.computed && field != "Key.Column" {
			return nil, fmt.Errorf("%s%s: column %q is generated, so graft cannot write it", p, field, name)
		}
		cols[field] = c
		return c, nil
	}
	bad := func(field string, c *column, want string) error {
		return fmt.Errorf("%s%s: column %q is %s; it needs %s", p, field, c.name, c.typ, want)
	}
	key, err := get("Key.Column", m.Key.Column)
	if err != nil {
		return nil, err
	}
	if k := key.kind(); !key.isString() && k != kindInt && k != kindUUID {
		return nil, bad("Key.Column", key, "a text, integer or uuid type")
	}
	label := func(field, name string, values map[string]string) error {
		c, err := get(field, name)
		if err != nil {
			return err
		}
		if !c.isString() && !c.enum {
			return bad(field, c, "a text, varchar or enum type")
		}
		for _, k := range sortedKeys(values) {
			if err := c.accepts(values[k]); err != nil {
				return fmt.Errorf("%s%s (column %q): value for %s: %v", p, field, name, k, err)
			}
		}
		return nil
	}
	if s := m.Status; s != nil {
		vals := map[string]string{}
		for st, v := range s.Values {
			vals[string(st)] = v
		}
		if err := label("Status.Column", s.Column, vals); err != nil {
			return nil, err
		}
	}
	if s := m.Step; s != nil {
		if err := label("Step.Column", s.Column, s.Labels); err != nil {
			return nil, err
		}
	}
	if m.Error != nil {
		c, err := get("Error.Column", m.Error.Column)
		if err != nil {
			return nil, err
		}
		if !c.isString() {
			return nil, bad("Error.Column", c, "a text or varchar type")
		}
	}
	if m.Attempts != "" {
		c, err := get("Attempts", m.Attempts)
		if err != nil {
			return nil, err
		}
		if k := c.kind(); k != kindInt && k != kindNum {
			return nil, bad("Attempts", c, "an integer or numeric type")
		}
	}
	if m.UpdatedAt != "" {
		c, err := get("UpdatedAt", m.UpdatedAt)
		if err != nil {
			return nil, err
		}
		if c.base != oidTimestamptz && c.base != oidTimestamp {
			return nil, bad("UpdatedAt", c, "timestamptz or timestamp")
		}
	}
	if m.Progress != nil {
		c, err := get("Progress.Column", m.Progress.Column)
		if err != nil {
			return nil, err
		}
		if k := c.kind(); k != kindInt && k != kindNum {
			return nil, bad("Progress.Column", c, "a numeric type")
		}
	}
	for i, x := range m.Extra {
		if _, err := get(fmt.Sprintf("Extra[%d].Column", i), x.Column); err != nil {
			return nil, err
		}
	}
	if m.Version != "" {
		c, err := get("Version", m.Version)
		if err != nil {
			return nil, err
		}
		if c.base != oidInt8 && c.base != oidNumeric {
			return nil, bad("Version", c, "bigint or numeric (positions do not fit in an integer)")
		}
	}
	if a := m.Actions; a != nil {
		column := m.actionColumn()
		vals := map[string]string{}
		for v, act := range a.On {
			vals[v] = v
			if act.Ack != "" {
				vals[v+".Ack"] = act.Ack
			}
		}
		if err := label("Actions.Column", column, vals); err != nil {
			return nil, err
		}
	}
	if m.missingRow() == MissingCreate {
		if !t.unique[key.attnum] {
			return nil, fmt.Errorf("%sMissingRow is create, but key column %q has no unique index of its own (needed to insert rows safely)", p, key.name)
		}
		// A created row gets a value in each column the mapping names when the
		// change has one, the column's default otherwise. Columns NOT NULL
		// without a default must therefore be ones every change fills.
		always := map[string]bool{key.name: true}
		if c := cols["UpdatedAt"]; c != nil {
			always[c.name] = true
		}
		if c := cols["Version"]; c != nil {
			always[c.name] = true
		}
		if c := cols["Status.Column"]; c != nil && len(m.Status.Values) == len(States) {
			always[c.name] = true
		}
		for _, name := range sortedKeys(t.cols) {
			c := t.cols[name]
			if c.notNull && !c.defaults && !always[name] {
				return nil, fmt.Errorf("%sMissingRow is create, but column %q is NOT NULL without a default and not every change gives it a value", p, name)
			}
		}
	}
	return cols, nil
}
