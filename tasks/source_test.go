package tasks_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/internal/testenv"
	"github.com/graftdev/graft/tasks"
)

// The same source in YAML and JSON; unknown fields are refused.
func TestParseSource(t *testing.T) {
	t.Parallel()
	y := `
table: legacy.operations
id: id
kind: kind
kinds:
  renew: {workflow: renew, queue: renewals}
key: {column: domain, transform: tld}
status: {column: status, pending: pending, graft: graft, legacy: running}
customer: customer
error: last_error
input: {domain: domain, years: years}
`
	j := `{"table": "legacy.operations", "id": "id", "kind": "kind", "kinds": {"renew": {"workflow": "renew", "queue": "renewals"}},
		"key": {"column": "domain", "transform": "tld"}, "status": {"column": "status", "pending": "pending", "graft": "graft", "legacy": "running"},
		"customer": "customer", "error": "last_error", "input": {"domain": "domain", "years": "years"}}`
	a, err := tasks.ParseSourceYAML([]byte(y))
	require.NoError(t, err)
	b, err := tasks.ParseSourceJSON([]byte(j))
	require.NoError(t, err)
	require.Equal(t, a, b)
	require.Equal(t, "renewals", a.Kinds["renew"].Queue)
	_, err = tasks.ParseSourceYAML([]byte(y + "colour: red\n"))
	require.ErrorContains(t, err, "colour")
}

// Shape errors and errors against the database name the field and column.
func TestSourceValidation(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	requireSourceErrors(t, v, "", []sourceCase{
		{"bad table", func(s *tasks.Source) { s.Table = "a.b.c" }, "source: table"},
		{"missing ID", func(s *tasks.Source) { s.ID = "" }, "id is required"},
		{"bad identifier", func(s *tasks.Source) { s.Kind = "kind; drop table" }, `kind "kind; drop table" is not a valid column name`},
		{"no kinds", func(s *tasks.Source) { s.Kinds = nil }, "kinds is required"},
		{"kind without workflow", func(s *tasks.Source) { s.Kinds = map[string]tasks.KindSpec{"renew": {}} }, `kinds.renew.workflow is required`},
		{"two keys", func(s *tasks.Source) { s.Key.Func = "tld" }, "exactly one of key.column and key.func"},
		{"unknown transform", func(s *tasks.Source) { s.Key.Transform = "upper" }, `key.transform "upper" is unknown`},
		{"same statuses", func(s *tasks.Source) { s.Status.Graft = "pending" }, "must differ"},
		{"no input", func(s *tasks.Source) { s.Input = nil }, "set input"},
		{"missing table", func(s *tasks.Source) { s.Table = v.schema + ".nope" }, "does not exist"},
		{"missing ID column", func(s *tasks.Source) { s.ID = "op_id" }, `id: column "op_id" does not exist`},
		{"missing status column", func(s *tasks.Source) { s.Status.Column = "state" }, `status.column: column "state" does not exist`},
		{"status not text", func(s *tasks.Source) { s.Status.Column = "created_at" }, `status.column: column "created_at" is timestamp with time zone`},
		{"missing key column", func(s *tasks.Source) { s.Key.Column = "fqdn" }, `key.column: column "fqdn" does not exist`},
		{"missing input column", func(s *tasks.Source) { s.Input["term"] = "term_years" }, `input.term: column "term_years" does not exist`},
		{"created_at not a time", func(s *tasks.Source) { s.CreatedAt = "domain" }, `created_at: column "domain" is text`},
		{"unknown key func", func(s *tasks.Source) { s.Key = tasks.KeySpec{Func: "tld"} }, `key.func "tld" is not in IntakeConfig.KeyFuncs`},
	})
}

// sourceCase is a change to the test source and the error NewIntake gives.
type sourceCase struct {
	name string
	mut  func(*tasks.Source)
	want string
}

// requireSourceErrors checks each case on v's source declared at at.
func requireSourceErrors(t *testing.T, v *env, at string, cases []sourceCase) {
	t.Helper()
	for _, tc := range cases {
		src := v.source()
		src.DeclaredAt = at
		tc.mut(src)
		_, err := tasks.NewIntake(context.Background(), tasks.IntakeConfig{Engine: v.e, DatabaseURL: testenv.DatabaseURL(), Source: src})
		require.ErrorContains(t, err, tc.want, tc.name)
	}
}

// A source declared inside a larger file (graft server's --config, under
// source:) has its shape and table errors name each field by its whole
// path in that file, as strictdecode names a refused document's.
func TestSourceErrorsNameTheDeclarationsPath(t *testing.T) {
	t.Parallel()
	requireSourceErrors(t, newEnv(t), "source", []sourceCase{
		{"bad table", func(s *tasks.Source) { s.Table = "a.b.c" }, "tasks: source: source.table: "},
		{"missing ID", func(s *tasks.Source) { s.ID = "" }, ": source.id is required"},
		{"no statuses", func(s *tasks.Source) { s.Status.Graft = "" }, ": source.status.pending and source.status.graft are required"},
		{"same statuses", func(s *tasks.Source) { s.Status.Graft = "pending" },
			": source.status.pending, source.status.graft and source.status.legacy must differ"},
		{"no kinds", func(s *tasks.Source) { s.Kinds = nil }, ": source.kinds is required"},
		{"kind without workflow", func(s *tasks.Source) { s.Kinds = map[string]tasks.KindSpec{"renew": {}} }, ": source.kinds.renew.workflow is required"},
		{"two keys", func(s *tasks.Source) { s.Key.Func = "tld" }, "set exactly one of source.key.column and source.key.func"},
		{"transform without column", func(s *tasks.Source) { s.Key = tasks.KeySpec{Func: "tld", Transform: "lower"} },
			": source.key.transform needs source.key.column"},
		{"no input", func(s *tasks.Source) { s.Input = nil }, ": set source.input (field: column)"},
		{"bad input column", func(s *tasks.Source) { s.Input["term"] = "a b" }, `: source.input.term "a b" is not a valid column name`},
		{"missing status column", func(s *tasks.Source) { s.Status.Column = "state" }, `: source.status.column: column "state" does not exist`},
		{"missing input column", func(s *tasks.Source) { s.Input["term"] = "term_years" }, `: source.input.term: column "term_years" does not exist`},
		{"created_at not a time", func(s *tasks.Source) { s.CreatedAt = "domain" }, `: source.created_at: column "domain" is text`},
		{"unknown key func", func(s *tasks.Source) { s.Key = tasks.KeySpec{Func: "tld"} }, `: source.key.func "tld" is not in IntakeConfig.KeyFuncs`},
	})
}
