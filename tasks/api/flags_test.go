package api_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/internal/testenv"
	"github.com/graftdev/graft/tasks"
	"github.com/graftdev/graft/tasks/api"
)

// TestFlags: read the flags, change one against its version (a stale
// version is a 409 that changes nothing), flip the global kill switch, read
// the audit log; only admins change flags.
func TestFlags(t *testing.T) {
	e := testenv.Engine(t, nil)
	ctx := context.Background()
	require.NoError(t, tasks.Migrate(ctx, e.DB(), e.Schema()))
	_, err := e.DB().Exec(`INSERT INTO ` + e.Schema() + `.intake_kinds (source, kind, workflow) VALUES ('legacy', 'order', 'order')`)
	require.NoError(t, err)
	fl, err := tasks.NewFlags(tasks.FlagsConfig{DB: e.DB(), DatabaseURL: testenv.DatabaseURL(), Schema: e.Schema()})
	require.NoError(t, err)
	t.Cleanup(func() { _ = fl.Close() })
	ev := newEnvOn(t, e, api.Config{Flags: fl})

	code, body := ev.do(t, "operator", "PUT", "/v1/flags/order", `{"version":0,"default_percent":10,"reason":"start"}`)
	require.Equal(t, 403, code, body)
	code, body = ev.do(t, "admin", "PUT", "/v1/flags/order", `{"version":0,"default_percent":10,"key_rules":[{"keys":["com"],"percent":100}],"reason":"start the move"}`)
	require.Equal(t, 200, code, body)
	var f api.Flag
	require.NoError(t, json.Unmarshal([]byte(body), &f))
	require.EqualValues(t, 1, f.Version)
	require.Equal(t, 10.0, f.DefaultPercent)

	code, body = ev.do(t, "admin", "PUT", "/v1/flags/order", `{"version":0,"default_percent":50,"reason":"stale"}`)
	require.Equal(t, 409, code, body)
	code, body = ev.do(t, "admin", "PUT", "/v1/flags/order", `{"version":1,"default_percent":150,"reason":"too much"}`)
	require.Equal(t, 400, code, body)
	code, body = ev.do(t, "admin", "PUT", "/v1/flags/refund", `{"version":0,"reason":"unknown kind"}`)
	require.Equal(t, 400, code, body)
	require.Contains(t, body, `"field":"kind"`)
	code, body = ev.do(t, "admin", "PUT", "/v1/flags/order", `{"version":1,"reason":"r","percent":5}`)
	require.Equal(t, 400, code, body)
	require.Contains(t, body, `"field":"percent"`)

	code, body = ev.do(t, "viewer", "GET", "/v1/flags", "")
	require.Equal(t, 200, code, body)
	var set api.FlagSet
	require.NoError(t, json.Unmarshal([]byte(body), &set))
	require.Len(t, set.Flags, 1)
	require.Equal(t, 10.0, set.Flags[0].DefaultPercent, "the refused changes changed nothing")
	code, _ = ev.do(t, "customer", "GET", "/v1/flags", "")
	require.Equal(t, 403, code)

	code, body = ev.do(t, "admin", "PUT", "/v1/flags/*", `{"version":`+jsonInt(set.Version)+`,"killed":true,"reason":"incident"}`)
	require.Equal(t, 200, code, body)
	code, body = ev.do(t, "viewer", "GET", "/v1/flags", "")
	require.Equal(t, 200, code)
	require.NoError(t, json.Unmarshal([]byte(body), &set))
	require.True(t, set.Killed)

	code, body = ev.do(t, "viewer", "GET", "/v1/flags/audit", "")
	require.Equal(t, 200, code, body)
	var audit struct{ Items []api.FlagAuditEntry }
	require.NoError(t, json.Unmarshal([]byte(body), &audit))
	require.Len(t, audit.Items, 2)
	require.Equal(t, "*", audit.Items[0].Kind)
	require.Equal(t, "ada", audit.Items[0].Actor)
	require.Equal(t, "start the move", audit.Items[1].Reason)
}

func jsonInt(v int64) string { b, _ := json.Marshal(v); return string(b) }

// TestFlagKeyRuleTheTransformChanges: a key rule naming a key the kind's
// key transform would change (its source lower-cases keys; "EU" never
// matches) is a 400 naming key_rules, the key, the kind, the transform and
// what to write; it changes nothing. A rule stored before the check is
// shown with a warning.
func TestFlagKeyRuleTheTransformChanges(t *testing.T) {
	e := testenv.Engine(t, nil)
	ctx := context.Background()
	require.NoError(t, tasks.Migrate(ctx, e.DB(), e.Schema()))
	_, err := e.DB().Exec(`INSERT INTO ` + e.Schema() + `.intake_kinds (source, kind, workflow, key_transform) VALUES ('legacy', 'order', 'order', 'lower')`)
	require.NoError(t, err)
	fl, err := tasks.NewFlags(tasks.FlagsConfig{DB: e.DB(), DatabaseURL: testenv.DatabaseURL(), Schema: e.Schema()})
	require.NoError(t, err)
	t.Cleanup(func() { _ = fl.Close() })
	ev := newEnvOn(t, e, api.Config{Flags: fl})

	code, body := ev.do(t, "admin", "PUT", "/v1/flags/order", `{"version":0,"key_rules":[{"keys":["EU"],"percent":50}],"reason":"europe"}`)
	require.Equal(t, 400, code, body)
	require.Contains(t, body, `"field":"key_rules"`)
	require.Contains(t, body, `rule 1 (EU=50): key \"EU\" never matches: kind order lower-cases its keys (transform lower); write \"eu\"`)
	var n int
	require.NoError(t, e.DB().Get(&n, `SELECT count(*) FROM `+e.Schema()+`.flags`))
	require.Zero(t, n)

	code, body = ev.do(t, "admin", "PUT", "/v1/flags/order", `{"version":0,"key_rules":[{"keys":["eu"],"percent":50}],"reason":"europe"}`)
	require.Equal(t, 200, code, body)
	_, err = e.DB().Exec(`UPDATE ` + e.Schema() + `.flags SET key_rules = '[{"keys": ["EU"], "percent": 50}]'`)
	require.NoError(t, err)
	code, body = ev.do(t, "viewer", "GET", "/v1/flags", "")
	require.Equal(t, 200, code, body)
	var set api.FlagSet
	require.NoError(t, json.Unmarshal([]byte(body), &set))
	require.Len(t, set.Flags, 1)
	require.NotNil(t, set.Flags[0].Warning)
	require.Contains(t, *set.Flags[0].Warning, `key "EU" never matches`)
}
