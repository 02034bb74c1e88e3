package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
	"github.com/graftdev/graft/tasks"
	"github.com/graftdev/graft/tasks/api"
)

// TestServerRunsIntakeFromConfig starts graft server with a configuration
// file naming a legacy source: a pending row the flags route to graft is
// taken and its workflow started, and the API shows its legacy row.
func TestServerRunsIntakeFromConfig(t *testing.T) {
	schema, legacy := testenv.Schema(t), testenv.Schema(t)
	db := testenv.DB(t)
	table := pq.QuoteIdentifier(legacy) + ".operations"
	_, err := db.Exec(`CREATE SCHEMA ` + pq.QuoteIdentifier(legacy) + `; CREATE TABLE ` + table + ` (id bigint PRIMARY KEY,
		kind text NOT NULL, domain text NOT NULL, status text NOT NULL DEFAULT 'pending')`)
	require.NoError(t, err)
	cfg := filepath.Join(t.TempDir(), "graft.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(fmt.Sprintf(`source:
  table: %s.operations
  id: id
  kind: kind
  kinds: {renew: {workflow: renewal}}
  key: {column: domain, transform: tld}
  status: {column: status, pending: pending, graft: queued, legacy: running}
  input: {domain: domain}
intake:
  batch_size: 50
  poll_interval: 50ms
`, legacy)), 0o600))

	url := startServer(t, schema, "--no-redis", "--config", cfg)
	ctx := testenv.Ctx(t, time.Minute)

	flags, err := tasks.NewFlags(tasks.FlagsConfig{DB: db, DatabaseURL: testenv.DatabaseURL(), Schema: schema})
	require.NoError(t, err)
	defer flags.Close()
	_, err = flags.Set(ctx, tasks.Change{Flag: tasks.Flag{Kind: "renew", KeyRules: []tasks.KeyRule{{Keys: []string{"info"}, Percent: 100}}},
		Actor: "test", Reason: "test"})
	require.NoError(t, err, "the server's intake records the source's kinds")
	_, err = db.Exec(`INSERT INTO ` + table + ` (id, kind, domain) VALUES (1, 'renew', 'a.info'), (2, 'renew', 'b.com'),
		(9007199254740993, 'renew', 'c.info')`)
	require.NoError(t, err)
	status := func(id int) string {
		var s string
		require.NoError(t, db.Get(&s, `SELECT status FROM `+table+` WHERE id = $1`, id))
		return s
	}
	testenv.Eventually(t, 30*time.Second, func() bool { return status(1) == "queued" && status(9007199254740993) == "queued" },
		"the server's intake did not take rows 1 and 2^53+1")
	require.Equal(t, "pending", status(2), "legacy's row is left alone")
	var runs int
	require.NoError(t, db.Get(&runs, `SELECT count(*) FROM `+pq.QuoteIdentifier(schema)+`.runs WHERE workflow_id = '1' AND workflow_type = 'renewal'`))
	require.Equal(t, 1, runs)

	// The API shows the operation's legacy row.
	out, err := run(t, "tokens", "create", "--direct", "--schema", schema, "--name", "root", "--role", "viewer", "-o", "json")
	require.NoError(t, err, out)
	var tok api.CreatedToken
	require.NoError(t, json.Unmarshal([]byte(out), &tok), out)
	req, _ := http.NewRequest("GET", url+"/v1/operations/1", nil)
	req.Header.Set("Authorization", "Bearer "+tok.Secret)
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	var op api.Operation
	require.NoError(t, json.NewDecoder(res.Body).Decode(&op))
	require.Equal(t, 200, res.StatusCode)
	require.NotNil(t, op.Legacy)
	require.Equal(t, api.LegacyRow{"id": json.Number("1"), "kind": "renew", "domain": "a.info", "status": "queued"}, *op.Legacy)
	require.Equal(t, "info", *op.Key)
	// graft server registers none of the workflows: it says so, and offers
	// only cancel's operator signal.
	require.NotNil(t, op.KindRegistered)
	require.False(t, *op.KindRegistered)
	require.Len(t, *op.Signals, 1)
	require.Equal(t, "graft.cancel.operator", (*op.Signals)[0].Name)
	require.Equal(t, api.SignalsNone, *op.SignalsSource)

	// An admin previews a flag change over the source's pending rows.
	out, err = run(t, "tokens", "create", "--direct", "--schema", schema, "--name", "boss", "--role", "admin", "-o", "json")
	require.NoError(t, err, out)
	require.NoError(t, json.Unmarshal([]byte(out), &tok), out)
	req, _ = http.NewRequest("POST", url+"/v1/flags/renew/preview", strings.NewReader(`{"default_percent":100}`))
	req.Header.Set("Authorization", "Bearer "+tok.Secret)
	req.Header.Set("Content-Type", "application/json")
	pres, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer pres.Body.Close()
	var pv api.FlagPreview
	require.NoError(t, json.NewDecoder(pres.Body).Decode(&pv))
	require.Equal(t, 200, pres.StatusCode)
	require.EqualValues(t, 1, pv.Scanned, "row 2, the one pending")
	require.Equal(t, api.RouteCounts{Graft: 0, Legacy: 1}, pv.Before)
	require.Equal(t, api.RouteCounts{Graft: 1, Legacy: 0}, pv.After)

	// graft flags set changes what it is given and keeps the rest: the kill
	// switch alone keeps the rules, and lifting it finds them there.
	cli := func(args ...string) (string, error) {
		return run(t, append(args, "--server", url, "--token", tok.Secret)...)
	}
	// A bigint beyond 2^53 survives: the server writes it exactly, the CLI
	// reads it exactly.
	out, err = cli("ops", "show", "9007199254740993")
	require.NoError(t, err)
	require.Regexp(t, `(?m)^Signals:\s+graft.cancel.operator \(this server does not register renewal and no worker of it published its signals; start one, or send them from a server that registers it\)$`, out)
	require.Regexp(t, `(?m)^Legacy row:\s+\{.*"id":9007199254740993[,}]`, out)
	out, err = cli("flags", "set", "renew", "--version", "1", "--default-percent", "5", "--reason", "a little .com")
	require.NoError(t, err)
	require.Equal(t, "renew is at version 2: killed=false default=5% info=100%\n", out)
	out, err = cli("flags", "set", "renew", "--version", "2", "--killed", "--reason", "incident")
	require.NoError(t, err)
	require.Equal(t, "renew is at version 3: killed=true default=5% info=100%\n", out)
	out, err = cli("flags", "set", "renew", "--version", "3", "--killed=false", "--reason", "over")
	require.NoError(t, err)
	require.Equal(t, "renew is at version 4: killed=false default=5% info=100%\n", out)
	out, err = cli("flags", "set", "renew", "--version", "4", "--key-rule", "fr=50", "--reason", "fr instead")
	require.NoError(t, err)
	require.Equal(t, "renew is at version 5: killed=false default=5% fr=50%\n", out)
	_, err = cli("flags", "set", "renew", "--version", "4", "--killed", "--reason", "stale")
	require.ErrorContains(t, err, "409 Conflict")
	// A value out of range is named as the command's flag, not the Go
	// field (DefaultPercent, KeyRules[0].Percent), and changes nothing.
	_, err = cli("flags", "set", "renew", "--version", "5", "--default-percent", "150", "--reason", "typo")
	require.EqualError(t, err, "400 Invalid request: --default-percent: 150 is outside 0-100")
	_, err = cli("flags", "set", "renew", "--version", "5", "--key-rule", "com=5", "--key-rule", "fr,net=200", "--reason", "typo")
	require.EqualError(t, err, "400 Invalid request: --key-rule: rule 2 (fr,net=200): the percent 200 is outside 0-100")
	_, err = cli("flags", "set", "renew", "--version", "5", "--key-rule", "fr=5", "--key-rule", "fr=10", "--reason", "twice")
	require.EqualError(t, err, `400 Invalid request: --key-rule: rule 2 (fr=10): key "fr" is in rule 1 too`)
	// A key the source's transform (tld) would change never matches: it
	// is refused, naming what to write, by a change and by a dry run.
	_, err = cli("flags", "set", "renew", "--version", "5", "--key-rule", "fr=5", "--key-rule", "example.COM=10", "--reason", "typo")
	require.EqualError(t, err, `400 Invalid request: --key-rule: rule 2 (example.COM=10): key "example.COM" never matches: kind renew keys on the last dot-separated label, lower-cased (transform tld); write "com"`)
	_, err = cli("flags", "set", "renew", "--version", "5", "--key-rule", "FR=5", "--reason", "typo", "--dry-run")
	require.EqualError(t, err, `400 Invalid request: --key-rule: rule 1 (FR=5): key "FR" never matches: kind renew keys on the last dot-separated label, lower-cased (transform tld); write "fr"`)
	// One stored before the check is listed with a warning, and kept.
	setRules := func(rules string) {
		_, err := db.Exec(`UPDATE `+pq.QuoteIdentifier(schema)+`.flags SET key_rules = $1 WHERE kind = 'renew'`, rules)
		require.NoError(t, err)
		_, err = db.Exec(`SELECT pg_notify($1, 'renew')`, schema+"_flags")
		require.NoError(t, err)
	}
	setRules(`[{"keys": ["FR"], "percent": 50}]`)
	testenv.Eventually(t, 30*time.Second, func() bool {
		out, err = cli("flags", "get")
		return err == nil && strings.Contains(out, "FR=50%")
	}, "graft flags get did not show the stored rule: %s", out)
	require.Regexp(t, `(?m)^renew\s+5\s+false\s+5%\s+FR=50%$`, out)
	require.Contains(t, out, "\nwarning: renew: rule 1 (FR=50): key \"FR\" never matches: kind renew keys on the last dot-separated label, lower-cased (transform tld); write \"fr\"\n")
	setRules(`[{"keys": ["fr"], "percent": 50}]`)
	testenv.Eventually(t, 30*time.Second, func() bool {
		out, err = cli("flags", "get")
		return err == nil && strings.Contains(out, "fr=50%")
	}, "graft flags get did not show the restored rule: %s", out)
	require.NotContains(t, out, "warning")
	out, err = cli("flags", "get")
	require.NoError(t, err)
	require.Regexp(t, `(?m)^renew\s+5\s+false\s+5%\s+fr=50%$`, out)
	// --dry-run previews the change over the pending rows (row 2, b.com,
	// bucket 6782: legacy at 5%, graft at 100%) and changes nothing.
	out, err = cli("flags", "set", "renew", "--version", "5", "--default-percent", "100", "--reason", "all in", "--dry-run")
	require.NoError(t, err)
	require.Regexp(t, `(?m)^dry run: of renew's 1 pending rows, graft would take 1 \(now 0\) and legacy 0 \(now 1\): 1 move to graft, 0 to legacy$`, out)
	require.Regexp(t, `(?m)^com\s+1\s+0\s+1$`, out)
	_, err = cli("flags", "set", "renew", "--version", "4", "--default-percent", "100", "--reason", "stale", "--dry-run")
	require.EqualError(t, err, "--version: renew is at version 5, the change was made against version 4")
	out, err = cli("flags", "get")
	require.NoError(t, err)
	require.Regexp(t, `(?m)^renew\s+5\s+false\s+5%\s+fr=50%$`, out, "a dry run changes nothing")
	require.Equal(t, "pending", status(2))
	// An operation the flags left to legacy is not said to be missing.
	_, err = cli("ops", "show", "2")
	require.EqualError(t, err, `404 Not found: operation "2" has no graft run; the legacy table has its row (the flags left it to the legacy runner, or intake has not claimed it yet)`)
	_, err = cli("ops", "history", "2")
	require.ErrorContains(t, err, `has no graft run; the legacy table has its row`)
	_, err = cli("ops", "show", "3")
	require.EqualError(t, err, `404 Not found: operation "3" does not exist`)
	// The refund plan of a kind this server does not register is unknown,
	// said in the API's words, not the engine's.
	out, err = cli("ops", "cancel", "1", "--reason", "look", "--dry-run")
	require.NoError(t, err)
	require.Equal(t, "dry run: cancelling 1 (status pending): the refund plan is unknown: the kind \"renewal\" is not registered in this server, so its refund plan cannot be read (the cancellation itself is not affected)\n", out,
		"one message: not \"would run this refund plan\" followed by none")
	// A change that changes nothing is refused before it makes a version.
	_, err = cli("flags", "set", "renew", "--version", "5", "--reason", "nothing")
	require.EqualError(t, err, "nothing to change: give --killed, --default-percent or --key-rule")
	out, err = cli("flags", "get")
	require.NoError(t, err)
	require.Regexp(t, `(?m)^renew\s+5\s`, out)
	// A customer is told nothing more than for another's operation.
	out, err = run(t, "tokens", "create", "--direct", "--schema", schema, "--name", "portal", "--role", "customer", "--customer", "acme", "-o", "json")
	require.NoError(t, err, out)
	var ctok api.CreatedToken
	require.NoError(t, json.Unmarshal([]byte(out), &ctok), out)
	_, err = run(t, "ops", "show", "2", "--server", url, "--token", ctok.Secret)
	require.EqualError(t, err, `404 Not found: operation "2" does not exist`)

	// A worker of renewal starts (on a queue of its own, so that it runs
	// none of these): it publishes the signals renewal declares, which
	// the server then offers and checks.
	type renewConfirm struct {
		Approved bool `json:"approved"`
	}
	we := testenv.Engine(t, &engine.Config{Schema: schema})
	require.NoError(t, we.Register(engine.NewWorkflow("renewal", func(ctx engine.Context, in map[string]any) (string, error) {
		return "", nil
	}).WithSignals(engine.DeclareSignal[renewConfirm]("confirm", "the registrant confirms the renewal"))))
	testenv.Worker(t, we, engine.WorkerConfig{Queues: []string{"publish-only"}})
	testenv.Eventually(t, 30*time.Second, func() bool {
		out, err = cli("ops", "show", "1")
		return err == nil && strings.Contains(out, "confirm, graft.cancel.operator")
	}, "graft ops show did not list the published signals: %s", out)
	require.Regexp(t, `(?m)^Signals:\s+confirm, graft.cancel.operator \(this server does not register renewal; its workers published these: \S+ \(.*\) at \d{4}-\d\d-\d\dT\S+Z\)$`, out)
	_, err = cli("ops", "signal", "1", "confirm", `{"approved":"yes"}`, "--reason", "phoned")
	require.ErrorContains(t, err, "payload of signal confirm: at /approved: got string, want boolean")
	_, err = cli("ops", "signal", "1", "graft.cancel.operator", `{"action":"retyr"}`, "--reason", "phoned")
	require.ErrorContains(t, err, `payload of signal graft.cancel.operator: at /action: got "retyr", want one of "retry", "resolve"`)
	_, err = cli("ops", "signal", "1", "renew", `{}`, "--reason", "phoned")
	require.ErrorContains(t, err, `the kind "renewal" declares no signal "renew" (its workers published declared: confirm; and every kind takes graft.cancel.operator)`)
	out, err = cli("ops", "signal", "1", "confirm", `{"approved":true}`, "--reason", "phoned")
	require.NoError(t, err)
	require.Equal(t, "signal confirm sent to 1\n", out)
}

// A configuration file with a mistake is refused at start-up, naming it.
func TestServerConfigBadInput(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ name, body, want string }{
		{"unknown field", "source:\n  tabel: x.y\n", "tabel"},
		// A source's checks name its fields by their path in the file.
		{"bad source", "source:\n  table: x.y\n  id: id\n", "tasks: source x.y: source.kind is required"},
		{"source statuses", "source: {table: x.y, id: id, kind: k, kinds: {a: {workflow: w}}, key: {column: c}, status: {column: s, pending: p}, input: {a: a}}\n",
			"tasks: source x.y: source.status.pending and source.status.graft are required"},
		{"go key func", "source: {table: x.y, id: id, kind: k, kinds: {a: {workflow: w}}, key: {func: tld}, status: {column: s, pending: p, graft: g}, input: {a: a}}\n",
			`source.key.func "tld" names Go code, which graft server cannot run; use source.key.column`},
		{"bad poll interval", "intake: {poll_interval: soon}\n", "intake.poll_interval"},
		{"unknown intake field", "intake: {batch_sise: 5}\n", `intake.batch_sise (line 1, column 10): unknown field "batch_sise" (known here: batch_size, poll_interval)`},
		{"unknown tls field", "tls: {certificate: a.pem}\n", `tls.certificate (line 1, column 7): unknown field "certificate" (known here: cert, key)`},
		// The path the user wrote, not Go's struct fields (main.intakeSection,
		// tasks.Source.Kinds).
		{"wrong type", "intake:\n  batch_size: lots\n", `bad.yaml: intake.batch_size (line 2, column 15): want an integer, got "lots"`},
		{"wrong type in a map", "source:\n  kinds:\n    renew: {workflow: [renewal]}\n", `bad.yaml: source.kinds.renew.workflow (line 3, column 23): want a string, got a list`},
		{"json wrong type", `{"intake": {"batch_size": "5"}}`, `bad.json: intake.batch_size (line 1, column 27): want an integer, got "5"`},
		{"json unknown field", "{\"source\": {\"table\": \"x.y\",\n  \"kinds\": {\"renew\": {\"workfow\": \"renewal\"}}}}", `bad.json: source.kinds.renew.workfow (line 2, column 23): unknown field "workfow" (known here: queue, workflow)`},
		{"json syntax", "{\"intake\": {\n  \"batch_size\": 5,\n}}", `bad.json: line 3, column 1: invalid JSON: invalid character '}' looking for beginning of object key string`},
		{"empty", "", "bad.yaml: no YAML document (the input is empty or only comments)"},
	} {
		name := strings.ReplaceAll(tc.name, " ", "_") + ".yaml"
		if strings.HasPrefix(tc.name, "json") {
			name = strings.ReplaceAll(tc.name, " ", "_") + ".json"
		}
		if strings.HasPrefix(tc.want, "bad.") {
			name = "bad" + filepath.Ext(name)
		}
		path := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(path, []byte(tc.body), 0o600))
		_, err := run(t, "server", "--addr", "127.0.0.1:0", "--no-redis", "--config", path)
		require.ErrorContains(t, err, tc.want, tc.name)
	}
	_, err := run(t, "server", "--config", filepath.Join(dir, "missing.yaml"))
	require.ErrorContains(t, err, "missing.yaml")
}
