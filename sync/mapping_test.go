package graftsync_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/grafttest"
	graftsync "github.com/graftdev/graft/sync"
)

const mappingYAML = `
table: legacy.operations
workflows: [renewal]
key: {column: id}
status:
  column: status
  values: {pending: todo, running: doing, waiting: waiting, completed: done, failed: error, cancelled: cancelled, needs_operator: problem}
step:
  column: step
  labels: {renew.check: checking, renew.charge: charging}
error: {column: last_error, clear_on_success: true}
attempts: attempts
updated_at: updated_at
progress: {column: progress, activities: {renew.check: 25}, completed: 100}
extra:
  - {column: expires_at, activity: renew.register, func: newExpiry}
  - {column: provider_ref, activity: renew.register, field: ref}
version: row_version
missing_row: fail
actions:
  on:
    cancel_requested: {cancel: true, reason: back office, ack: cancelling}
`

const mappingJSON = `{
  "table": "legacy.operations",
  "workflows": ["renewal"],
  "key": {"column": "id"},
  "status": {"column": "status", "values": {"pending": "todo", "running": "doing", "waiting": "waiting",
    "completed": "done", "failed": "error", "cancelled": "cancelled", "needs_operator": "problem"}},
  "step": {"column": "step", "labels": {"renew.check": "checking", "renew.charge": "charging"}},
  "error": {"column": "last_error", "clear_on_success": true},
  "attempts": "attempts",
  "updated_at": "updated_at",
  "progress": {"column": "progress", "activities": {"renew.check": 25}, "completed": 100},
  "extra": [{"column": "expires_at", "activity": "renew.register", "func": "newExpiry"},
            {"column": "provider_ref", "activity": "renew.register", "field": "ref"}],
  "version": "row_version",
  "missing_row": "fail",
  "actions": {"on": {"cancel_requested": {"cancel": true, "reason": "back office", "ack": "cancelling"}}}
}`

// TestLoadMapping loads the same mapping from YAML and JSON files.
func TestLoadMapping(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var got []*graftsync.Mapping
	for name, body := range map[string]string{"m.yaml": mappingYAML, "m.json": mappingJSON} {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(body), 0o600))
		m, err := graftsync.LoadMapping(p)
		require.NoError(t, err, name)
		got = append(got, m)
	}
	require.Equal(t, got[0], got[1])
	m := got[0]
	require.Equal(t, "legacy.operations", m.Table)
	require.Equal(t, "problem", m.Status.Values[graftsync.StateNeedsOperator])
	require.Equal(t, "charging", m.Step.Labels["renew.charge"])
	require.Equal(t, 100.0, *m.Progress.Completed)
	require.Equal(t, "newExpiry", m.Extra[0].Func)
	require.Equal(t, graftsync.MissingFail, m.MissingRow)
	require.Equal(t, "cancelling", m.Actions.On["cancel_requested"].Ack)
}

// TestParseMappingErrors: unknown fields and shape errors are caught at
// load, with the field named.
func TestParseMappingErrors(t *testing.T) {
	t.Parallel()
	cases := []struct{ name, yaml, want string }{
		{"unknown field", "table: a.b\nkey: {column: id}\nstatuz: {column: s}\n", "statuz"},
		{"no table", "key: {column: id}\nattempts: n\n", "graftsync: mapping: table: "},
		{"three parts", "table: a.b.c\nkey: {column: id}\nattempts: n\n", "want schema.table"},
		{"injection in table", "table: 'ops; DROP TABLE x'\nkey: {column: id}\nattempts: n\n", "not a valid table name"},
		{"injection in column", "table: a.b\nkey: {column: 'id\" OR 1=1'}\nattempts: n\n", `key.column "id\" OR 1=1" is not a valid column name`},
		{"no key", "table: a.b\nattempts: n\n", "key.column is required"},
		{"header without name", "table: a.b\nkey: {column: id, from: header}\nattempts: n\n", "key.name is required"},
		{"bad source", "table: a.b\nkey: {column: id, from: body}\nattempts: n\n", `key.from "body"`},
		{"nothing to write", "table: a.b\nkey: {column: id}\n", "names no column to write"},
		{"unknown state", "table: a.b\nkey: {column: id}\nstatus: {column: s, values: {done: ok}}\n", `"done" is not a state`},
		{"column twice", "table: a.b\nkey: {column: id}\nattempts: s\nstatus: {column: s, values: {running: r}}\n", `attempts "s" is also status.column`},
		{"extra without source", "table: a.b\nkey: {column: id}\nextra: [{column: x, activity: a}]\n", "set exactly one of field, func and Compute"},
		{"bad policy", "table: a.b\nkey: {column: id}\nattempts: n\nmissing_row: ignore\n", `missing_row "ignore"`},
		{"action both", "table: a.b\nkey: {column: id}\nstatus: {column: s, values: {running: r}}\nactions: {on: {x: {cancel: true, signal: y, ack: z}}}\n", "exactly one of cancel and signal"},
		{"action value is a status", "table: a.b\nkey: {column: id}\nstatus: {column: s, values: {running: r}}\nactions: {on: {r: {cancel: true, ack: z}}}\n", `"r" is also the status value of state running`},
		{"ack needs coverage", "table: a.b\nkey: {column: id}\nstatus: {column: s, values: {running: r}}\nactions: {on: {x: {cancel: true}}}\n", "status.values has no value for pending"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := graftsync.ParseMappingYAML([]byte(tc.yaml))
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.want)
		})
	}
}

// A mapping file's shape errors name its fields as the file spells them
// (status.column, extra[0].field), in YAML and JSON, not as Go does
// (Status.Column, Extra[0].Field).
func TestLoadMappingErrorsNameTheFileSpelling(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cases := []struct{ name, yaml, json, want string }{
		{"column twice", "table: a.b\nkey: {column: id}\nattempts: s\nstatus: {column: s, values: {running: r}}\n",
			`{"table": "a.b", "key": {"column": "id"}, "attempts": "s", "status": {"column": "s", "values": {"running": "r"}}}`,
			`attempts "s" is also status.column`},
		{"empty status value", "table: a.b\nkey: {column: id}\nstatus: {column: s, values: {running: ''}}\n",
			`{"table": "a.b", "key": {"column": "id"}, "status": {"column": "s", "values": {"running": ""}}}`,
			`status.values.running is empty`},
		{"extra field path", "table: a.b\nkey: {column: id}\nextra: [{column: x, activity: a, field: 'a..b'}]\n",
			`{"table": "a.b", "key": {"column": "id"}, "extra": [{"column": "x", "activity": "a", "field": "a..b"}]}`,
			`extra[0].field: "a..b" has an empty part`},
		{"header key", "table: a.b\nkey: {column: id, from: header}\nattempts: n\n",
			`{"table": "a.b", "key": {"column": "id", "from": "header"}, "attempts": "n"}`,
			`key.name is required when key.from is "header"`},
		{"request value", "table: a.b\nkey: {column: id}\nstatus: {column: s, values: {running: r}}\nactions: {on: {stop now: {cancel: true}}}\n",
			`{"table": "a.b", "key": {"column": "id"}, "status": {"column": "s", "values": {"running": "r"}}, "actions": {"on": {"stop now": {"cancel": true}}}}`,
			`actions.on["stop now"].ack is empty, so it writes the status of the run's state, but status.values has no value for pending`},
		{"policy", "table: a.b\nkey: {column: id}\nattempts: n\nmissing_row: ignore\n",
			`{"table": "a.b", "key": {"column": "id"}, "attempts": "n", "missing_row": "ignore"}`,
			`missing_row "ignore" is not one of skip, create, fail`},
	}
	for _, tc := range cases {
		for ext, text := range map[string]string{"yaml": tc.yaml, "json": tc.json} {
			path := filepath.Join(dir, tc.name+"."+ext)
			require.NoError(t, os.WriteFile(path, []byte(text), 0o600))
			_, err := graftsync.LoadMapping(path)
			require.ErrorContains(t, err, tc.want, "%s (%s)", tc.name, ext)
		}
	}
}

// A mapping declared in Go gets the same names (the Go field's path, in
// the declaration's spelling), and its Go-only fields are named as Go's.
func TestMappingValidateNamesGoOnlyFields(t *testing.T) {
	t.Parallel()
	m := graftsync.Mapping{Table: "a.b", Key: graftsync.Key{Column: "id"}, Extra: []graftsync.ExtraColumn{{
		Column: "x", Activity: "a", Func: "f",
		Compute: func(*engine.CheckpointEvent) (any, error) { return nil, nil },
	}}}
	require.ErrorContains(t, m.Validate(), `extra[0] (column "x"): set exactly one of field, func and Compute`)
	m = graftsync.Mapping{Key: graftsync.Key{Column: "id"}, Attempts: "n"}
	require.ErrorContains(t, m.Validate(), "graftsync: mapping: table: ")
}

// TestNewValidatesAgainstTheTable: New refuses a mapping that does not fit
// the table, naming the field and the column, and changes nothing.
func TestNewValidatesAgainstTheTable(t *testing.T) {
	t.Parallel()
	db := grafttest.DB(t)
	legacy := grafttest.Schema(t)
	_, err := db.Exec(fmt.Sprintf(legacyDDL, pq.QuoteIdentifier(legacy)))
	require.NoError(t, err)
	_, err = db.Exec(`CREATE TYPE ` + pq.QuoteIdentifier(legacy) + `.op_status AS ENUM ('todo', 'doing', 'done');
		ALTER TABLE ` + pq.QuoteIdentifier(legacy) + `.operations ADD COLUMN enum_status ` + pq.QuoteIdentifier(legacy) + `.op_status,
			ADD COLUMN total numeric GENERATED ALWAYS AS (attempts * 2) STORED, ADD COLUMN small int, ADD COLUMN region text NOT NULL`)
	require.NoError(t, err)
	table := legacy + ".operations"
	cases := []struct {
		name string
		edit func(*graftsync.Mapping)
		cfg  func(*graftsync.Config)
		want string
	}{
		{"no table", func(m *graftsync.Mapping) { m.Table = legacy + ".nope" }, nil, "table " + legacy + ".nope does not exist"},
		{"no column", func(m *graftsync.Mapping) { m.Step.Column = "stage" }, nil, `step.column: column "stage" does not exist`},
		{"no key column", func(m *graftsync.Mapping) { m.Key.Column = "op_id" }, nil, `key.column: column "op_id" does not exist`},
		{"attempts not a number", func(m *graftsync.Mapping) { m.Attempts = "customer" }, nil, `attempts: column "customer" is text; it needs an integer or numeric type`},
		{"updated_at not a time", func(m *graftsync.Mapping) { m.UpdatedAt = "kind" }, nil, `updated_at: column "kind" is text; it needs timestamptz or timestamp`},
		{"status not text", func(m *graftsync.Mapping) { m.Status.Column = "small" }, nil, `status.column: column "small" is integer; it needs a text, varchar or enum type`},
		{"status value too long", func(m *graftsync.Mapping) {
			m.Status.Values[graftsync.StateNeedsOperator] = "needs-an-operator-right-now"
		}, nil, `value for status.values.needs_operator: "needs-an-operator-right-now" is longer than the column's 20 characters`},
		{"enum label", func(m *graftsync.Mapping) { m.Status.Column = "enum_status" }, nil, `is not a label of the column's enum type`},
		{"version int", func(m *graftsync.Mapping) { m.Version = "small" }, nil, `version: column "small" is integer; it needs bigint or numeric`},
		{"generated", func(m *graftsync.Mapping) { m.Progress.Column = "total" }, nil, `progress.column: column "total" is generated`},
		{"progress not a number", func(m *graftsync.Mapping) { m.Progress.Column = "customer" }, nil, `progress.column: column "customer" is text; it needs a numeric type`},
		{"unknown func", func(m *graftsync.Mapping) { m.Extra[0].Func = "nope" }, nil, `extra[0].func "nope" is not in Config.Funcs`},
		{"create needs not null values", func(m *graftsync.Mapping) { m.MissingRow = graftsync.MissingCreate },
			nil, `missing_row is create, but column "region" is NOT NULL without a default`},
		{"bad schema", nil, func(c *graftsync.Config) { c.Schema = "graft; drop" }, `Config.Schema "graft; drop" is not a valid identifier`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := fullMapping(table)
			if tc.edit != nil {
				tc.edit(&m)
			}
			cfg := graftsync.Config{Mapping: m, DB: db, Schema: grafttest.Schema(t), Funcs: funcs, Logger: quietLogger()}
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			_, err := graftsync.New(context.Background(), cfg)
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.want)
		})
	}
	// The legacy table is as it was: graft altered nothing.
	var cols int
	require.NoError(t, db.QueryRow(`SELECT count(*) FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'operations'`, legacy).Scan(&cols))
	require.Equal(t, 16, cols)
	// And the full mapping does fit.
	mr, err := graftsync.New(context.Background(), graftsync.Config{Mapping: fullMapping(table), DB: db, Schema: grafttest.Schema(t), Funcs: funcs})
	require.NoError(t, err)
	require.NoError(t, mr.Close())
}

// ExampleParseMappingYAML declares a mapping in YAML.
func ExampleParseMappingYAML() {
	m, err := graftsync.ParseMappingYAML([]byte(`
table: legacy.operations
key: {column: id}
status:
  column: status
  values: {pending: todo, running: doing, completed: done, failed: error}
step: {column: step, labels: {renew.register: registering}}
missing_row: create
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(m.Table, m.Key.Column, m.Status.Values[graftsync.StateCompleted], m.Step.Labels["renew.register"], m.MissingRow)
	// Output: legacy.operations id done registering create
}

var _ = engine.StatusCompleted
