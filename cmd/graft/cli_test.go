package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
	"github.com/graftdev/graft/tasks/api"
)

// run runs the CLI with args and returns its output.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(io.Discard)
	root.SetArgs(args)
	err := root.ExecuteContext(testenv.Ctx(t, time.Minute))
	return out.String(), err
}

// TestCLIAgainstAServer bootstraps an admin token in the database, then
// drives a server through every ops and tokens command, as tables and as
// JSON.
func TestCLIAgainstAServer(t *testing.T) {
	e := testenv.Engine(t, nil)
	failing := engine.NewActivity("charge", func(context.Context, string) (string, error) {
		return "", engine.NewNonRetryableError("CardDeclined", "declined", nil)
	})
	type approval struct {
		OK bool `json:"ok"`
	}
	order := engine.NewWorkflow("order", func(ctx engine.Context, in string) (string, error) {
		if in == "wait" {
			if _, err := engine.GetSignalChannel[approval](ctx, "approve").Receive(ctx); err != nil {
				return "", err
			}
			return "approved", nil
		}
		return failing.Run(ctx, in)
	}).WithSignals(engine.DeclareSignal[approval]("approve", "go ahead"))
	require.NoError(t, e.Register(failing, order))
	testenv.Worker(t, e, engine.WorkerConfig{})

	out, err := run(t, "tokens", "create", "--direct", "--schema", e.Schema(), "--name", "root", "--role", "admin", "-o", "json")
	require.NoError(t, err, out)
	var tok api.CreatedToken
	require.NoError(t, json.Unmarshal([]byte(out), &tok), out)
	require.Equal(t, api.RoleAdmin, tok.Role)

	srv, err := api.New(api.Config{Engine: e})
	require.NoError(t, err)
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	cli := func(args ...string) (string, error) {
		return run(t, append(args, "--server", hs.URL, "--token", tok.Secret)...)
	}

	ctx := testenv.Ctx(t, time.Minute)
	_, err = order.Start(ctx, e.Client(), "x", &engine.StartOptions{ID: "op-fail"})
	require.NoError(t, err)
	_, err = order.Start(ctx, e.Client(), "wait", &engine.StartOptions{ID: "op-wait"})
	require.NoError(t, err)
	testenv.Eventually(t, 20*time.Second, func() bool {
		info, err := e.Client().Describe(ctx, "op-fail")
		return err == nil && info.Status == engine.StatusFailed
	}, "op-fail fails")

	out, err = cli("ops", "list", "--status", "failed")
	require.NoError(t, err)
	require.Regexp(t, `(?m)^op-fail\s+order\s+failed\s+.*\[charge\] CardDeclined: declined`, out)
	require.NotContains(t, out, "op-wait")
	require.Regexp(t, `(?m)^matching the other filters, per status: failed=1 \S+=1$`, out)
	out, err = cli("ops", "list")
	require.NoError(t, err)
	require.Regexp(t, `(?m)^matching: failed=1 \S+=1$`, out)
	out, err = cli("ops", "list", "--kind", "nosuch")
	require.NoError(t, err)
	require.Regexp(t, `(?m)^matching: none$`, out)

	out, err = cli("ops", "list", "-o", "json")
	require.NoError(t, err)
	var page api.OperationPage
	require.NoError(t, json.Unmarshal([]byte(out), &page), out)
	require.Len(t, page.Items, 2)

	out, err = cli("ops", "show", "op-fail")
	require.NoError(t, err)
	require.Regexp(t, `(?m)^Status:\s+failed`, out)
	require.Regexp(t, `(?m)^Signals:\s+approve`, out)
	require.Regexp(t, `(?m)^Run:\s+\S+ \(1 run, started by start\)$`, out)

	out, err = cli("ops", "history", "op-fail")
	require.NoError(t, err)
	require.Regexp(t, `(?m)step\s+#\d+ activity charge\s+failed`, out)
	require.Regexp(t, `(?m)run_closed\s+failed`, out)
	require.NotRegexp(t, `(?m)run_started\s+order\s+failed`, out, "the start row is not the run's end")

	out, err = cli("ops", "relaunch", "op-fail", "--reason", "retry", "--dry-run")
	require.NoError(t, err)
	require.Contains(t, out, "dry run")
	require.Regexp(t, `(?m)charge\s+failed\s+run again`, out)

	// A relaunch leaves Created at the operation's creation and shows apart.
	out, err = cli("ops", "show", "op-fail")
	require.NoError(t, err)
	created := regexp.MustCompile(`(?m)^Created:.*$`).FindString(out)
	require.NotEmpty(t, created, out)
	require.NotContains(t, out, "Relaunched:")
	_, err = cli("ops", "relaunch", "op-fail", "--reason", "retry")
	require.NoError(t, err)
	testenv.Eventually(t, 20*time.Second, func() bool {
		info, err := e.Client().Describe(ctx, "op-fail")
		return err == nil && info.Status == engine.StatusFailed && info.PreviousRunID != ""
	}, "op-fail relaunched, and failed again")
	out, err = cli("ops", "show", "op-fail")
	require.NoError(t, err)
	require.Contains(t, out, created+"\n")
	require.Regexp(t, `(?m)^Relaunched:\s+\S+ \S+ \(1 relaunch\)$`, out)
	require.Regexp(t, `(?m)^Run:\s+\S+ \(2 runs, started by reset\)$`, out)
	out, err = cli("ops", "list", "--kind", "order")
	require.NoError(t, err)
	require.Regexp(t, `(?m)^ID\s+KIND\s+STATUS\s+CUSTOMER\s+KEY\s+CREATED\s+RELAUNCHED\s+LAST ERROR$`, out)
	require.Regexp(t, `(?m)^op-fail\s+order\s+failed\s+(\S+ \S+)\s+\S+ \S+\s+\[charge\]`, out)

	// A missing flag the server would refuse is named as a flag, before any
	// request.
	for _, args := range [][]string{
		{"ops", "relaunch", "op-fail"}, {"ops", "cancel", "op-wait", "--dry-run"}, {"ops", "signal", "op-wait", "approve", `{"ok":true}`},
		{"bulk", "relaunch", "--status", "failed", "--dry-run"}, {"bulk", "cancel", "--status", "running"},
		{"bulk", "signal", "approve", `{"ok":true}`, "--id", "op-wait"}, {"flags", "set", "renewal", "--default-percent", "10"},
	} {
		_, err = cli(args...)
		require.EqualError(t, err, `required flag(s) "reason" not set`, args)
	}
	_, err = cli("tokens", "create", "--role", "viewer")
	require.EqualError(t, err, `required flag(s) "name" not set`)
	_, err = run(t, "tokens", "create", "--direct", "--schema", e.Schema(), "--name", "x")
	require.EqualError(t, err, `required flag(s) "role" not set`)

	_, err = cli("ops", "signal", "op-wait", "approve", `{"ok":"yes"}`, "--reason", "r")
	require.ErrorContains(t, err, "400 Invalid request: PAYLOAD-JSON: ")
	// The field a refusal names is named as the command calls it: its flag
	// or its argument, not the API's JSON name.
	_, err = cli("ops", "relaunch", "op-fail", "--from-step", "nope", "--reason", "r", "--dry-run")
	require.ErrorContains(t, err, `400 Invalid request: --from-step: the operation's latest run has no step named "nope" (its steps: charge)`)
	// The API lists engine runs only: a legacy-routed operation is a row of
	// the legacy table, and --route legacy says so instead of matching none.
	_, err = cli("ops", "list", "--route", "legacy")
	require.EqualError(t, err, "400 Invalid request: --route: legacy-routed operations are not listed here: they are rows of the legacy table, not engine runs (graft is the only route listed)")
	_, err = cli("ops", "list", "--limit", "1000")
	require.ErrorContains(t, err, "400 Invalid request: --limit: ")
	_, err = cli("bulk", "relaunch", "--status", "nosuch", "--reason", "r", "--dry-run")
	require.ErrorContains(t, err, "400 Invalid request: --status: ")
	_, err = cli("bulk", "signal", "", "--id", "op-wait", "--reason", "r", "--dry-run")
	require.ErrorContains(t, err, "400 Invalid request: NAME: ")
	// A payload left out is refused when the signal carries one: null would
	// reach the workflow as {"ok":false}.
	_, err = cli("ops", "signal", "op-wait", "approve", "--reason", "forgot the payload")
	require.EqualError(t, err, `400 Invalid request: PAYLOAD-JSON: signal "approve" carries a JSON object, and none was given`)
	out, err = cli("ops", "signal", "op-wait", "approve", `{"ok":true}`, "--reason", "customer called")
	require.NoError(t, err)
	require.Contains(t, out, "signal approve sent to op-wait")
	testenv.Eventually(t, 20*time.Second, func() bool {
		info, err := e.Client().Describe(ctx, "op-wait")
		return err == nil && info.Status == engine.StatusCompleted
	}, "op-wait completes")
	// Nothing failed: the refusal names the flag to give, and the steps.
	_, err = cli("ops", "relaunch", "op-wait", "--reason", "again", "--dry-run")
	require.EqualError(t, err, `409 Conflict: --from-step: operation "op-wait" has no failed activity to relaunch before; name the step to relaunch from (its steps: approve)`)
	// A relaunch before a signal it received delivers that signal again: it
	// does not wait for a new one.
	out, err = cli("ops", "relaunch", "op-wait", "--from-step", "approve", "--reason", "again", "--dry-run")
	require.NoError(t, err)
	require.Regexp(t, `(?m)^#1\s+signal\s+approve\s+completed\s+received again, same payload$`, out)
	require.Contains(t, out, "\nA signal received again is not waited for: the new run gets the earlier run's signal, with its payload.\n")

	_, err = cli("ops", "show")
	require.EqualError(t, err, "accepts 1 arg(s), received 0; usage: graft ops show ID [flags]")
	_, err = cli("ops", "signal", "op-wait", "--reason", "r")
	require.EqualError(t, err, "accepts between 2 and 3 arg(s), received 1; usage: graft ops signal ID NAME [PAYLOAD-JSON] --reason TEXT [flags]")
	_, err = cli("ops", "show", "nope")
	require.ErrorContains(t, err, `404 Not found: operation "nope" does not exist`)

	_, err = order.Start(ctx, e.Client(), "wait", &engine.StartOptions{ID: "op-cancel"})
	require.NoError(t, err)
	out, err = cli("ops", "cancel", "op-cancel", "--reason", "customer asked", "--dry-run")
	require.NoError(t, err)
	require.Contains(t, out, "dry run: cancelling op-cancel")
	info, err := e.Client().Describe(ctx, "op-cancel")
	require.NoError(t, err)
	require.False(t, info.CancelRequested, "a dry run cancels nothing")
	out, err = cli("ops", "cancel", "op-cancel", "--reason", "customer asked")
	require.NoError(t, err)
	require.Contains(t, out, "cancellation of op-cancel requested")

	out, err = cli("tokens", "create", "--name", "grafana", "--role", "viewer")
	require.NoError(t, err)
	require.Regexp(t, `(?m)^graft_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$`, out)
	id := regexp.MustCompile(`token ([0-9a-f]{16})`).FindStringSubmatch(out)[1]
	out, err = cli("tokens", "list")
	require.NoError(t, err)
	require.Contains(t, out, "grafana")
	_, err = cli("tokens", "revoke", id)
	require.NoError(t, err)

	// GRAFT_TOKEN stands in for --token, and --help does not print it.
	t.Setenv("GRAFT_TOKEN", tok.Secret)
	out, err = run(t, "ops", "list", "--server", hs.URL)
	require.NoError(t, err)
	require.Contains(t, out, "op-fail")
	for _, args := range [][]string{{"--help"}, {"ops", "list", "--help"}, {"server", "--help"}} {
		t.Setenv("GRAFT_UI_SECRET", "a-ui-secret-of-at-least-thirty-two-characters")
		out, err = run(t, args...)
		require.NoError(t, err)
		require.Contains(t, out, "bearer token (GRAFT_TOKEN)", args)
		require.NotContains(t, out, tok.Secret, "graft %v prints the token", args)
		require.NotContains(t, out, "a-ui-secret-of", "graft %v prints the UI secret", args)
	}
	t.Setenv("GRAFT_TOKEN", "")
	_, err = run(t, "ops", "list", "--server", hs.URL)
	require.ErrorContains(t, err, "no token")
	_, err = run(t, "ops", "list", "--server", hs.URL, "--token", "graft_nope")
	require.ErrorContains(t, err, "401 Unauthenticated")
}

// TestDatabaseURLErrors: a GRAFT_DATABASE_URL that cannot be used is named in
// the error, with its password left out.
func TestDatabaseURLErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closed := ln.Addr().String() // nothing answers there once ln is closed
	require.NoError(t, ln.Close())
	for _, c := range []struct{ url, want string }{
		{"postgres://postgres:s3cret@" + closed + "/postgres?sslmode=disable",
			"connect to GRAFT_DATABASE_URL postgres://postgres:xxxxx@" + closed + "/postgres?sslmode=disable: dial tcp"},
		{"postgres://postgres@" + closed + "/postgres?sslmode=disable&password=s3cret",
			"connect to GRAFT_DATABASE_URL postgres://postgres@" + closed + "/postgres?password=xxxxx&sslmode=disable: dial tcp"},
		{"host=127.0.0.1 port=" + strings.Split(closed, ":")[1] + " user=postgres password='s3 cret' sslmode=disable",
			"connect to GRAFT_DATABASE_URL host=127.0.0.1 port=" + strings.Split(closed, ":")[1] + " user=postgres password=xxxxx sslmode=disable: dial tcp"},
		{"mysql://root:s3cret@127.0.0.1/ops",
			"GRAFT_DATABASE_URL mysql://root:xxxxx@127.0.0.1/ops is not a PostgreSQL URL: it starts mysql:// where postgres:// is needed"},
	} {
		t.Setenv("GRAFT_DATABASE_URL", c.url)
		_, err := run(t, "migrate", "--schema", "graft_never_made")
		require.ErrorContains(t, err, c.want)
		require.NotContains(t, err.Error(), "s3", "the password stays out of the error")
	}
}

// TestServerSaysRedisDoesNotAnswer: graft server starts without the Redis
// it was given, and says so at start-up (password left out), instead of
// leaving it for /readyz to find.
func TestServerSaysRedisDoesNotAnswer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closed := ln.Addr().String()
	require.NoError(t, ln.Close())
	t.Setenv("GRAFT_REDIS_URL", "redis://:s3cret@"+closed+"/0")
	url, said := startServerSaying(t, testenv.Schema(t))
	require.Len(t, said, 1, "%q", said)
	require.Contains(t, said[0], "graft server: Redis at GRAFT_REDIS_URL redis://:xxxxx@"+closed+"/0 does not answer")
	require.Contains(t, said[0], "--no-redis serves without it")
	res, err := http.Get(url + "/readyz")
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusServiceUnavailable, res.StatusCode)
}

// TestServerCommand starts graft server on a free port, reads the address
// it prints, checks /healthz and /readyz, and stops it.
func TestServerCommand(t *testing.T) {
	schema := testenv.Schema(t)
	url := startServer(t, schema)
	for _, path := range []string{"/healthz", "/readyz", "/openapi.yaml", "/metrics"} {
		res, err := http.Get(url + path)
		require.NoError(t, err)
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		require.Equal(t, 200, res.StatusCode, "%s: %s", path, b)
	}
	res, err := http.Get(url + "/v1/operations")
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, 401, res.StatusCode)

	// The flags commands, on the server's own flags store.
	out, err := run(t, "tokens", "create", "--direct", "--schema", schema, "--name", "root", "--role", "admin", "-o", "json")
	require.NoError(t, err, out)
	var tok api.CreatedToken
	require.NoError(t, json.Unmarshal([]byte(out), &tok), out)
	flags := func(args ...string) (string, error) {
		return run(t, append(append([]string{"flags"}, args...), "--server", url, "--token", tok.Secret)...)
	}
	out, err = flags("get")
	require.NoError(t, err)
	require.Contains(t, out, "flag set version 1, global kill switch: false")
	_, err = flags("set", "renewal", "--default-percent", "10", "--reason", "start")
	require.ErrorContains(t, err, "400 Invalid request: KIND: ")
	out, err = flags("set", "*", "--version", "1", "--killed", "--reason", "incident")
	require.NoError(t, err)
	require.Equal(t, "the global kill switch is at version 2: killed=true\n", out)
	out, err = flags("audit")
	require.NoError(t, err)
	require.Regexp(t, `(?m)\*\s+2\s+root\s+incident`, out)
}

// TestBenchCommandKeepsItsFlags: graft bench hands its arguments to the
// flag-based benchmark, unparsed by cobra.
func TestBenchCommandKeepsItsFlags(t *testing.T) {
	_, err := run(t, "bench", "-scenario", "no-such", "-n", "1")
	require.ErrorContains(t, err, `unknown -scenario "no-such"`)
}
