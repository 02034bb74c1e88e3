package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
	"github.com/graftdev/graft/tasks/api"
)

// startServer runs graft server with args (after --addr and --schema) until
// the test ends, and returns the base URL it prints.
func startServer(t *testing.T, schema string, args ...string) string {
	t.Helper()
	base, _ := startServerSaying(t, schema, args...)
	return base
}

// startServerSaying is startServer, and returns what the server printed
// before it listened too.
func startServerSaying(t *testing.T, schema string, args ...string) (string, []string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	root := newRootCmd()
	pr, pw := io.Pipe()
	root.SetOut(pw)
	root.SetArgs(append([]string{"server", "--addr", "127.0.0.1:0", "--schema", schema}, args...))
	var wg sync.WaitGroup
	var runErr error
	wg.Go(func() { runErr = root.ExecuteContext(ctx); pw.Close() })
	t.Cleanup(func() { cancel(); wg.Wait(); require.NoError(t, runErr) })
	lines := bufio.NewScanner(pr)
	var base string
	var said []string
	for base == "" && lines.Scan() {
		if u, ok := strings.CutPrefix(lines.Text(), "graft server listening on "); ok {
			base = u
		} else {
			said = append(said, lines.Text())
		}
	}
	require.NotEmpty(t, base, "the server did not start: %s", said)
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	return base, said
}

// startUIServer runs graft server with its web UI on schema, and returns
// its base URL, an operator's token (ops-lead) and an HTTP client that
// keeps the session's cookie.
func startUIServer(t *testing.T, schema string) (string, api.CreatedToken, *http.Client) {
	t.Helper()
	base := startServer(t, schema, "--no-redis", "--ui-secret", strings.Repeat("s", 32))
	out, err := run(t, "tokens", "create", "--direct", "--schema", schema, "--name", "ops-lead", "--role", "operator", "-o", "json")
	require.NoError(t, err, out)
	var tok api.CreatedToken
	require.NoError(t, json.Unmarshal([]byte(out), &tok), out)
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	return base, tok, &http.Client{Jar: jar}
}

// TestServerServesTheUI signs in to graft server's web UI with a real
// token, through the form, and sees an operation listed; a form posted with
// the page's CSRF token acts, one without it does not.
func TestServerServesTheUI(t *testing.T) {
	schema := testenv.Schema(t)
	e := testenv.Engine(t, &engine.Config{Schema: schema})
	wf := engine.NewWorkflow("renewal", func(engine.Context, string) (string, error) { return "", nil })
	require.NoError(t, e.Register(wf))
	ctx := testenv.Ctx(t, time.Minute)
	_, err := wf.Start(ctx, e.Client(), "a.com", &engine.StartOptions{ID: "op-ui-1"})
	require.NoError(t, err)

	base, tok, c := startUIServer(t, schema)
	get := func(res *http.Response, err error) (*http.Response, string) {
		t.Helper()
		require.NoError(t, err)
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		require.NoError(t, err)
		return res, string(b)
	}

	res, body := get(c.Get(base + "/"))
	require.Equal(t, 200, res.StatusCode)
	require.Equal(t, "/ui/signin", res.Request.URL.Path, "/ leads to the sign-in page")
	require.Contains(t, body, `action="/ui/signin"`)

	res, body = get(c.PostForm(base+"/ui/signin", url.Values{"token": {tok.Secret}}))
	require.Equal(t, 200, res.StatusCode, body)
	require.Equal(t, "/ui/operations", res.Request.URL.Path)
	require.Contains(t, body, "op-ui-1")
	require.Contains(t, body, "ops-lead")
	csrf := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(body)
	require.NotNil(t, csrf, "the page carries a CSRF token")

	res, _ = get(c.PostForm(base+"/ui/signout", url.Values{"csrf": {"forged"}}))
	require.Equal(t, http.StatusForbidden, res.StatusCode, "a form without the session's CSRF token is refused")
	res, _ = get(c.PostForm(base+"/ui/signout", url.Values{"csrf": {csrf[1]}}))
	require.Equal(t, "/ui/signin", res.Request.URL.Path)
	res, _ = get(c.Get(base + "/ui/operations"))
	require.Equal(t, "/ui/signin", res.Request.URL.Path, "signed out")

	// The API is still served beside the UI.
	res, _ = get(c.Get(base + "/healthz"))
	require.Equal(t, 200, res.StatusCode)
}

// TestServerWithoutUI: with --ui=false nothing is served under /ui/.
func TestServerWithoutUI(t *testing.T) {
	base := startServer(t, testenv.Schema(t), "--no-redis", "--ui=false")
	for _, path := range []string{"/ui/signin", "/ui/operations", "/"} {
		res, err := http.Get(base + path)
		require.NoError(t, err)
		res.Body.Close()
		require.Equal(t, http.StatusNotFound, res.StatusCode, path)
	}
}

// TestServerUISecretTooShort: a short --ui-secret is refused at start-up.
func TestServerUISecretTooShort(t *testing.T) {
	_, err := run(t, "server", "--addr", "127.0.0.1:0", "--schema", testenv.Schema(t), "--no-redis", "--ui-secret", "short")
	require.ErrorContains(t, err, "graft server: --ui-secret (GRAFT_UI_SECRET) has 5 characters; it needs at least 32")
}

// TestServerUISendsPublishedSignals: graft server registers none of the
// workflows, yet an operator in its web UI confirms a renewal by signal:
// the renewal's worker published the signal's declaration when it
// started, the signal box offers it and says so, a payload that is not of
// its type is refused naming the field, and a good one reaches the run.
func TestServerUISendsPublishedSignals(t *testing.T) {
	type confirm struct {
		Approved bool `json:"approved"`
	}
	schema := testenv.Schema(t)
	e := testenv.Engine(t, &engine.Config{Schema: schema})
	wf := engine.NewWorkflow("renewal", func(ctx engine.Context, domain string) (string, error) {
		c, err := engine.GetSignalChannel[confirm](ctx, "confirm").Receive(ctx)
		if err != nil || !c.Approved {
			return "refused", err
		}
		return "renewed " + domain, nil
	}).WithSignals(engine.DeclareSignal[confirm]("confirm", "the registrant confirms the renewal"))
	require.NoError(t, e.Register(wf))
	testenv.Worker(t, e, engine.WorkerConfig{})
	ctx := testenv.Ctx(t, time.Minute)
	renewal, err := wf.Start(ctx, e.Client(), "a.com", &engine.StartOptions{ID: "op-sig-1"})
	require.NoError(t, err)

	base, tok, c := startUIServer(t, schema)
	read := func(res *http.Response, err error) (int, string) {
		t.Helper()
		require.NoError(t, err)
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		require.NoError(t, err)
		return res.StatusCode, string(b)
	}
	get := func(res *http.Response, err error) string {
		t.Helper()
		code, body := read(res, err)
		require.Equal(t, 200, code, body)
		return body
	}
	get(c.PostForm(base+"/ui/signin", url.Values{"token": {tok.Secret}}))

	var page string
	testenv.Eventually(t, 30*time.Second, func() bool {
		page = get(c.Get(base + "/ui/operations/op-sig-1?live=0"))
		return strings.Contains(page, `id="signal-form"`)
	}, "the operation's page has no signal box")
	require.Contains(t, page, `<option value="confirm" selected>confirm — the registrant confirms the renewal</option>`)
	// Each signal's payload shape, from the published JSON Schema, and
	// its template, one link away.
	require.Contains(t, page, `<tr data-signal="confirm" class="selected"><th><code>confirm</code></th>`)
	require.Contains(t, page, `<code class="shape">{&#34;approved&#34;?: boolean}</code>`)
	require.Contains(t, page, `<code class="shape">{&#34;action&#34;?: &#34;retry&#34; | &#34;resolve&#34;, &#34;note&#34;?: string, &#34;step&#34;?: string}</code>`)
	filled := get(c.Get(base + "/ui/operations/op-sig-1?live=0&signal=confirm"))
	require.Contains(t, filled, `>{&#34;approved&#34;:false}</textarea>`)
	require.Contains(t, page, "This server does not register the workflow <code>renewal</code>: it offers the signals its workers published (by ")
	csrf := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(page)
	require.NotNil(t, csrf)

	send := func(payload string) (int, string) {
		return read(c.PostForm(base+"/ui/operations/op-sig-1/signal", url.Values{"csrf": {csrf[1]}, "name": {"confirm"},
			"payload": {payload}, "reason": {"registrant phoned"}}))
	}
	code, body := send(`{"approved":"yes"}`)
	require.Equal(t, http.StatusBadRequest, code)
	require.Contains(t, body, `id="action-error">Invalid request: payload of signal confirm: at /approved: got string, want boolean (field payload)`)
	require.Contains(t, body, `>{&#34;approved&#34;:&#34;yes&#34;}</textarea>`, "the refused payload stays in the box")
	require.Contains(t, body, `value="registrant phoned"`, "the reason stays too")
	code, body = send(`{"approved":true,"urgent":true}`)
	require.Equal(t, http.StatusBadRequest, code)
	require.Contains(t, body, "additional properties &#39;urgent&#39; not allowed")
	info, err := e.Client().Describe(ctx, "op-sig-1")
	require.NoError(t, err)
	require.NotEqual(t, engine.StatusCompleted, info.Status, "a refused signal reached the run")

	code, body = send(`{"approved":true}`)
	require.Equal(t, http.StatusOK, code, body)
	require.Contains(t, body, "signal confirm sent")
	got, err := renewal.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, "renewed a.com", got)
}
