package tasks

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"

	"github.com/jmoiron/sqlx"

	"github.com/graftdev/graft/internal/pgcatalog"
	"github.com/graftdev/graft/internal/pgident"
	"github.com/graftdev/graft/internal/strictdecode"
)

// Row is a legacy row as intake reads it.
type Row struct {
	// ID is the operation ID (the ID column as text); it becomes the
	// workflow ID.
	ID string
	// Kind is the kind column's value.
	Kind string
	// Customer is the customer column's value ("" without one).
	Customer string
	// Columns holds every column of the row, as PostgreSQL's to_jsonb
	// renders them (numbers are json.Number).
	Columns map[string]any
}

// String returns a column's value as text ("" for NULL or a missing column).
func (r Row) String(column string) string {
	switch v := r.Columns[column].(type) {
	case nil:
		return ""
	case string:
		return v
	default:
		return fmt.Sprint(v)
	}
}

// KeyFunc derives an operation's routing key from its row.
type KeyFunc func(Row) (string, error)

// InputFunc builds a workflow's input from its row.
type InputFunc func(Row) (any, error)

// Key transforms of a key column, computed identically in Go and SQL.
const (
	// TransformNone uses the column's text as it is.
	TransformNone = ""
	// TransformLower lower-cases it.
	TransformLower = "lower"
	// TransformTLD takes the last dot-separated label, lower-cased: the TLD
	// of a domain ("Example.INFO" -> "info"). SQL:
	// lower(substring(col from '[^.]+$')).
	TransformTLD = "tld"
)

// KeySpec says how an operation's routing key is derived. Set Column
// (optionally with a Transform), or Func.
type KeySpec struct {
	// Column holds the key (any type; read as text).
	Column string `json:"column,omitempty" yaml:"column,omitempty"`
	// Transform applies to Column: TransformNone, TransformLower or
	// TransformTLD.
	Transform string `json:"transform,omitempty" yaml:"transform,omitempty"`
	// Func names a KeyFunc in IntakeConfig.KeyFuncs (from YAML or JSON).
	Func string `json:"func,omitempty" yaml:"func,omitempty"`
	// Fn is the KeyFunc itself (from Go); it overrides Func.
	Fn KeyFunc `json:"-" yaml:"-"`
}

// StatusSpec names the status column and its values.
type StatusSpec struct {
	// Column is the status column (text or an enum). Required.
	Column string `json:"column" yaml:"column"`
	// Pending is the value of a row waiting to be processed. Required.
	Pending string `json:"pending" yaml:"pending"`
	// Graft is the value intake writes when it claims a row. Required.
	Graft string `json:"graft" yaml:"graft"`
	// Legacy is the value the legacy runner writes when it takes a row
	// (used by reports and tests; intake never writes it).
	Legacy string `json:"legacy,omitempty" yaml:"legacy,omitempty"`
}

// KindSpec routes one kind to a workflow.
type KindSpec struct {
	// Workflow is the registered workflow name. Required.
	Workflow string `json:"workflow" yaml:"workflow"`
	// Queue is the workflows' queue. Default "default".
	Queue string `json:"queue,omitempty" yaml:"queue,omitempty"`
}

// Source declares a legacy table whose rows intake migrates onto workflows.
type Source struct {
	// Name identifies the source in claims and metrics. Default: Table.
	Name string `json:"name,omitempty" yaml:"name,omitempty"`
	// Table is the legacy table, "schema.table". Required.
	Table string `json:"table" yaml:"table"`
	// ID is the operation ID column (text, integer or uuid), which should be
	// unique; its text becomes the workflow ID. Required.
	ID string `json:"id" yaml:"id"`
	// Kind is the column holding the operation's kind. Required.
	Kind string `json:"kind" yaml:"kind"`
	// Kinds maps each kind intake may take to its workflow. Rows of other
	// kinds are never touched. Required.
	Kinds map[string]KindSpec `json:"kinds" yaml:"kinds"`
	// Key derives the routing key the flags' key rules match. Required.
	Key KeySpec `json:"key" yaml:"key"`
	// Status names the status column and its values. Required.
	Status StatusSpec `json:"status" yaml:"status"`
	// Customer, when set, is a column whose value becomes the run's
	// CustomerHeader and is recorded with the claim. (The routing key
	// becomes its KeyHeader.)
	Customer string `json:"customer,omitempty" yaml:"customer,omitempty"`
	// Error, when set, is a text column that receives why a row could not
	// be started (its input does not decode, say); the row stays pending.
	Error string `json:"error,omitempty" yaml:"error,omitempty"`
	// CreatedAt, when set, is a timestamp column used for the intake lag
	// (the age of the oldest pending row), read with a query each time
	// the metrics are read (an index on the status column keeps it cheap).
	CreatedAt string `json:"created_at,omitempty" yaml:"created_at,omitempty"`
	// Input maps workflow input fields to columns: the input is the JSON
	// object {field: column value}. Set Input or InputFn.
	Input map[string]string `json:"input,omitempty" yaml:"input,omitempty"`
	// InputFn builds the input in Go; it overrides Input.
	InputFn InputFunc `json:"-" yaml:"-"`
	// Notify, when set, is a channel the legacy application notifies
	// (NOTIFY channel) when it inserts rows; intake then claims at once
	// instead of at its next poll.
	Notify string `json:"notify,omitempty" yaml:"notify,omitempty"`
	// DeclaredAt, when set, is the source's path in the file that
	// declares it ("source" in graft server's --config): errors name its
	// fields under it (source.status.pending), as that file spells them.
	// A file LoadSource reads is the source itself: none.
	DeclaredAt string `json:"-" yaml:"-"`
}

// Run headers intake sets on the runs it starts. They are the headers the
// operations API (tasks/api) reads by default, so its customer scoping and
// key filter cover operations intake started.
const (
	// CustomerHeader carries the customer column's value (when the source
	// names one and the row has a value).
	CustomerHeader = "customer"
	// KeyHeader carries the operation's routing key (when it has one).
	KeyHeader = "key"
)

func (s *Source) name() string { return cmp.Or(s.Name, s.Table) }

func (s *Source) prefix() string { return "tasks: source " + s.name() + ": " }

// field names a field of the source as its declaration spells it (see
// DeclaredAt).
func (s *Source) field(name string) string {
	if s.DeclaredAt == "" {
		return name
	}
	return s.DeclaredAt + "." + name
}

// Validate checks the source's shape without a database: required fields,
// identifiers, kinds. NewIntake also checks it against the table. Errors
// name a field as a YAML or JSON declaration spells it (status.pending,
// kinds.renew.workflow), which is also the Go field's path (Status.Pending,
// Kinds["renew"].Workflow), under DeclaredAt when set.
func (s *Source) Validate() error {
	if _, err := pgident.ParseTable(s.Table); err != nil {
		return fmt.Errorf("tasks: source: %s: %w", s.field("table"), err)
	}
	p := s.prefix()
	col := func(field, name string, required bool) error {
		if name == "" {
			if required {
				return fmt.Errorf("%s%s is required", p, s.field(field))
			}
			return nil
		}
		if !pgident.Valid(name) {
			return fmt.Errorf("%s%s %q is not a valid column name", p, s.field(field), name)
		}
		return nil
	}
	for _, c := range []struct {
		field, name string
		required    bool
	}{
		{"id", s.ID, true}, {"kind", s.Kind, true}, {"status.column", s.Status.Column, true},
		{"key.column", s.Key.Column, false}, {"customer", s.Customer, false}, {"error", s.Error, false}, {"created_at", s.CreatedAt, false},
	} {
		if err := col(c.field, c.name, c.required); err != nil {
			return err
		}
	}
	switch {
	case s.Status.Pending == "" || s.Status.Graft == "":
		return fmt.Errorf("%s%s and %s are required", p, s.field("status.pending"), s.field("status.graft"))
	case s.Status.Pending == s.Status.Graft || s.Status.Pending == s.Status.Legacy || (s.Status.Legacy != "" && s.Status.Graft == s.Status.Legacy):
		return fmt.Errorf("%s%s, %s and %s must differ", p, s.field("status.pending"), s.field("status.graft"), s.field("status.legacy"))
	case len(s.Kinds) == 0:
		return fmt.Errorf("%s%s is required", p, s.field("kinds"))
	case (s.Key.Column == "") == (s.Key.Func == "" && s.Key.Fn == nil):
		return fmt.Errorf("%sset exactly one of %s and %s", p, s.field("key.column"), s.field("key.func"))
	case s.Key.Column == "" && s.Key.Transform != "":
		return fmt.Errorf("%s%s needs %s", p, s.field("key.transform"), s.field("key.column"))
	case !slices.Contains([]string{TransformNone, TransformLower, TransformTLD}, s.Key.Transform):
		return fmt.Errorf("%s%s %q is unknown (want %q or %q)", p, s.field("key.transform"), s.Key.Transform, TransformLower, TransformTLD)
	case len(s.Input) == 0 && s.InputFn == nil:
		return fmt.Errorf("%sset %s (field: column), or InputFn in Go", p, s.field("input"))
	case s.Notify != "" && !pgident.Valid(s.Notify):
		return fmt.Errorf("%s%s %q is not a valid channel name", p, s.field("notify"), s.Notify)
	}
	for kind, k := range s.Kinds {
		if kind == "" {
			return fmt.Errorf("%s%s has an empty kind", p, s.field("kinds"))
		}
		if k.Workflow == "" {
			return fmt.Errorf("%s%s.workflow is required", p, s.field(strictdecode.Join("kinds", kind)))
		}
	}
	for f, c := range s.Input {
		if err := col(strictdecode.Join("input", f), c, true); err != nil {
			return err
		}
	}
	return nil
}

// kinds returns the source's kinds, sorted.
func (s *Source) kinds() []string {
	out := make([]string, 0, len(s.Kinds))
	for k := range s.Kinds {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// check validates the source against the table's columns; errors name the
// field and the column. It returns the table as the catalog describes it.
func (s *Source) check(ctx context.Context, db sqlx.QueryerContext) (*pgcatalog.Table, error) {
	p := s.prefix()
	t, _ := pgident.ParseTable(s.Table)
	tbl, err := pgcatalog.Inspect(ctx, db, t)
	if err != nil {
		return nil, fmt.Errorf("%s%w", p, err)
	}
	get := func(field, name string) (*pgcatalog.Column, error) {
		c, err := tbl.Column(s.field(field), name)
		if err != nil {
			return nil, fmt.Errorf("%s%w", p, err)
		}
		return c, nil
	}
	id, err := get("id", s.ID)
	if err != nil {
		return nil, err
	}
	if !id.IsString() && id.Category != "N" && id.Type != "uuid" {
		return nil, fmt.Errorf("%s%w", p, id.Needs(s.field("id"), "a text, integer or uuid type"))
	}
	// The status and kind columns hold the values intake compares and
	// writes; the error column receives text.
	labels := func(field, name string, values map[string]string) error {
		if name == "" {
			return nil
		}
		c, err := get(field, name)
		if err != nil {
			return err
		}
		if err := c.TakesLabels(s.field(field), values); err != nil {
			return fmt.Errorf("%s%w", p, err)
		}
		return nil
	}
	status := map[string]string{s.field("status.pending"): s.Status.Pending, s.field("status.graft"): s.Status.Graft}
	if s.Status.Legacy != "" {
		status[s.field("status.legacy")] = s.Status.Legacy
	}
	kinds := map[string]string{}
	for _, k := range s.kinds() {
		kinds[s.field(strictdecode.Join("kinds", k))] = k
	}
	for _, l := range []struct {
		field, name string
		values      map[string]string
	}{{"status.column", s.Status.Column, status}, {"kind", s.Kind, kinds}, {"error", s.Error, nil}} {
		if err := labels(l.field, l.name, l.values); err != nil {
			return nil, err
		}
	}
	for field, name := range map[string]string{"key.column": s.Key.Column, "customer": s.Customer} {
		if name != "" {
			if _, err := get(field, name); err != nil {
				return nil, err
			}
		}
	}
	if s.CreatedAt != "" {
		c, err := get("created_at", s.CreatedAt)
		if err != nil {
			return nil, err
		}
		if c.Category != "D" {
			return nil, fmt.Errorf("%s%w", p, c.Needs(s.field("created_at"), "a timestamp type"))
		}
	}
	for _, f := range sortedKeys(s.Input) {
		if _, err := get(strictdecode.Join("input", f), s.Input[f]); err != nil {
			return nil, err
		}
	}
	return tbl, nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// keySQL is the routing key as SQL over the row alias t, or "" when the key
// comes from a Go function (no SQL form).
func (s *Source) keySQL() string {
	if s.Key.Column == "" || s.Key.Fn != nil {
		return ""
	}
	c := "t." + pgident.Quote(s.Key.Column) + "::text"
	switch s.Key.Transform {
	case TransformLower:
		return "lower(" + c + ")"
	case TransformTLD:
		return "lower(substring(" + c + " from '[^.]+$'))"
	}
	return c
}

// key derives a row's routing key in Go.
func (s *Source) key(r Row) (string, error) {
	if s.Key.Fn != nil {
		return s.Key.Fn(r)
	}
	v, present := r.Columns[s.Key.Column]
	if !present || v == nil {
		return "", nil
	}
	return transformKey(s.Key.Transform, r.String(s.Key.Column)), nil
}

// input builds a row's workflow input as JSON.
func (s *Source) input(r Row) (json.RawMessage, error) {
	if s.InputFn != nil {
		v, err := s.InputFn(r)
		if err != nil {
			return nil, err
		}
		return json.Marshal(v)
	}
	obj := make(map[string]any, len(s.Input))
	for field, col := range s.Input {
		obj[field] = r.Columns[col]
	}
	return json.Marshal(obj)
}

// LoadSource reads a source from a YAML or JSON file (by extension: .json is
// JSON, anything else YAML) and validates its shape. Unknown fields are
// errors. A key function is named (Key.Func) and resolved from
// IntakeConfig.KeyFuncs.
func LoadSource(path string) (*Source, error) {
	b, isJSON, err := strictdecode.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tasks: %w", err)
	}
	if isJSON {
		return ParseSourceJSON(b)
	}
	return ParseSourceYAML(b)
}

// ParseSourceYAML parses and validates a YAML source.
func ParseSourceYAML(b []byte) (*Source, error) { return parseSource(strictdecode.YAML, "YAML", b) }

// ParseSourceJSON parses and validates a JSON source.
func ParseSourceJSON(b []byte) (*Source, error) { return parseSource(strictdecode.JSON, "JSON", b) }

func parseSource(decode func([]byte, any) error, format string, b []byte) (*Source, error) {
	var s Source
	if err := decode(b, &s); err != nil {
		return nil, fmt.Errorf("tasks: parse %s source: %w", format, err)
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return &s, nil
}
