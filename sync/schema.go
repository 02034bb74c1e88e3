package graftsync

import (
	"fmt"

	"github.com/graftdev/graft/internal/pgcatalog"
	"github.com/graftdev/graft/internal/strictdecode"
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
type column = pgcatalog.Column

// kindOf says how a Go value is rendered for the column.
func kindOf(c *column) valueKind {
	switch {
	case c.Base == oidInt2 || c.Base == oidInt4 || c.Base == oidInt8:
		return kindInt
	case c.Category == "N":
		return kindNum
	case c.Base == oidBool:
		return kindBool
	case c.Category == "D":
		return kindTime
	case c.Base == oidJSON || c.Base == oidJSONB:
		return kindJSON
	case c.Base == oidUUID:
		return kindUUID
	}
	return kindText
}

// check validates the mapping against the table and returns the columns it
// names, by field. Errors name the field and the column.
func (m *Mapping) check(t *pgcatalog.Table) (map[string]*column, error) {
	p := fieldPrefix(t.Name.String())
	cols := map[string]*column{}
	get := func(field, name string) (*column, error) {
		c, err := t.Column(field, name)
		if err != nil {
			return nil, fmt.Errorf("%s%w", p, err)
		}
		if c.Computed && field != "key.column" {
			return nil, fmt.Errorf("%s%s: column %q is generated, so graft cannot write it", p, field, name)
		}
		cols[field] = c
		return c, nil
	}
	bad := func(field string, c *column, want string) error {
		return fmt.Errorf("%s%w", p, c.Needs(field, want))
	}
	key, err := get("key.column", m.Key.Column)
	if err != nil {
		return nil, err
	}
	if k := kindOf(key); !key.IsString() && k != kindInt && k != kindUUID {
		return nil, bad("key.column", key, "a text, integer or uuid type")
	}
	label := func(field, name string, values map[string]string) error {
		c, err := get(field, name)
		if err != nil {
			return err
		}
		if err := c.TakesLabels(field, values); err != nil {
			return fmt.Errorf("%s%w", p, err)
		}
		return nil
	}
	if s := m.Status; s != nil {
		vals := map[string]string{}
		for st, v := range s.Values {
			vals[strictdecode.Join("status.values", string(st))] = v
		}
		if err := label("status.column", s.Column, vals); err != nil {
			return nil, err
		}
	}
	if s := m.Step; s != nil {
		vals := map[string]string{}
		for a, v := range s.Labels {
			vals[strictdecode.Join("step.labels", a)] = v
		}
		if err := label("step.column", s.Column, vals); err != nil {
			return nil, err
		}
	}
	if m.Error != nil {
		c, err := get("error.column", m.Error.Column)
		if err != nil {
			return nil, err
		}
		if !c.IsString() {
			return nil, bad("error.column", c, "a text or varchar type")
		}
	}
	if m.Attempts != "" {
		c, err := get("attempts", m.Attempts)
		if err != nil {
			return nil, err
		}
		if k := kindOf(c); k != kindInt && k != kindNum {
			return nil, bad("attempts", c, "an integer or numeric type")
		}
	}
	if m.UpdatedAt != "" {
		c, err := get("updated_at", m.UpdatedAt)
		if err != nil {
			return nil, err
		}
		if c.Base != oidTimestamptz && c.Base != oidTimestamp {
			return nil, bad("updated_at", c, "timestamptz or timestamp")
		}
	}
	if m.Progress != nil {
		c, err := get("progress.column", m.Progress.Column)
		if err != nil {
			return nil, err
		}
		if k := kindOf(c); k != kindInt && k != kindNum {
			return nil, bad("progress.column", c, "a numeric type")
		}
	}
	for i, x := range m.Extra {
		if _, err := get(fmt.Sprintf("extra[%d].column", i), x.Column); err != nil {
			return nil, err
		}
	}
	if m.Version != "" {
		c, err := get("version", m.Version)
		if err != nil {
			return nil, err
		}
		if c.Base != oidInt8 && c.Base != oidNumeric {
			return nil, bad("version", c, "bigint or numeric (positions do not fit in an integer)")
		}
	}
	if a := m.Actions; a != nil {
		column := m.actionColumn()
		vals := map[string]string{}
		for v, act := range a.On {
			f := strictdecode.Join("actions.on", v)
			vals[f] = v
			if act.Ack != "" {
				vals[f+".ack"] = act.Ack
			}
		}
		if err := label("actions.column", column, vals); err != nil {
			return nil, err
		}
	}
	if m.missingRow() == MissingCreate {
		if !t.Unique[key.Attnum] {
			return nil, fmt.Errorf("%smissing_row is create, but key column %q has no unique index of its own (needed to insert rows safely)", p, key.Name)
		}
		// A created row gets a value in each column the mapping names when the
		// change has one, the column's default otherwise. Columns NOT NULL
		// without a default must therefore be ones every change fills.
		always := map[string]bool{key.Name: true}
		if c := cols["updated_at"]; c != nil {
			always[c.Name] = true
		}
		if c := cols["version"]; c != nil {
			always[c.Name] = true
		}
		if c := cols["status.column"]; c != nil && len(m.Status.Values) == len(States) {
			always[c.Name] = true
		}
		for _, name := range sortedKeys(t.Columns) {
			c := t.Columns[name]
			if c.NotNull && !c.Defaults && !always[name] {
				return nil, fmt.Errorf("%smissing_row is create, but column %q is NOT NULL without a default and not every change gives it a value", p, name)
			}
		}
	}
	return cols, nil
}
