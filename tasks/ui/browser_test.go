package ui_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/lib/pq"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/cancel"
	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
	"github.com/graftdev/graft/ratelimit"
	"github.com/graftdev/graft/tasks"
	"github.com/graftdev/graft/tasks/api"
	"github.com/graftdev/graft/tasks/ui"
)

type renewIn struct {
	Domain string `json:"domain"`
	Fail   bool   `json:"fail,omitempty"`
	Wait   bool   `json:"wait,omitempty"`
	// Flaky makes the check fail on its first attempt (and pass on the
	// retry).
	Flaky bool `json:"flaky,omitempty"`
}

type confirm struct {
	Approved bool `json:"approved"`
}

// site is an engine running renewals, the API and the UI on one test
// server, and a token per role.
type site struct {
	e        *engine.Engine
	url      string
	tokens   map[string]string
	flags    *tasks.Flags
	refunded atomic.Int64
	// redis and prefix are where the site's rate limiters keep their state.
	redis  *redis.Client
	prefix string
}

// legacySource declares a legacy operations table whose "renewal" kind
// intake may route, so that flags may name it, and returns the flag store
// and the (not running) intake, whose pending rows flag previews count.
func legacySource(t *testing.T, e *engine.Engine) (*tasks.Flags, *tasks.Intake) {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, tasks.Migrate(ctx, e.DB(), e.Schema()))
	_, err := e.DB().Exec(`CREATE TABLE ` + pq.QuoteIdentifier(e.Schema()) + `.operations (
		id text PRIMARY KEY, kind text NOT NULL, domain text, customer text, status text NOT NULL DEFAULT 'pending', ref bigint)`)
	require.NoError(t, err)
	in, err := tasks.NewIntake(ctx, tasks.IntakeConfig{Engine: e, DatabaseURL: testenv.DatabaseURL(), Source: &tasks.Source{
		Table: e.Schema() + ".operations", ID: "id", Kind: "kind", Kinds: map[string]tasks.KindSpec{"renewal": {Workflow: "renewal"}},
		Key:    tasks.KeySpec{Column: "domain", Transform: tasks.TransformTLD},
		Status: tasks.StatusSpec{Column: "status", Pending: "pending", Graft: "graft", Legacy: "legacy"}, Customer: "customer",
		Input: map[string]string{"domain": "domain"}}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = in.Close() })
	f, err := tasks.NewFlags(tasks.FlagsConfig{DB: e.DB(), DatabaseURL: testenv.DatabaseURL(), Schema: e.Schema()})
	require.NoError(t, err)
	t.Cleanup(func() { _ = f.Close() })
	_, err = f.Set(ctx, tasks.Change{Flag: tasks.Flag{Kind: "renewal", DefaultPercent: 0, KeyRules: []tasks.KeyRule{{Keys: []string{"info"}, Percent: 100}}},
		Actor: "setup", Reason: "start the migration with .info"})
	require.NoError(t, err)
	return f, in
}

func newSite(t *testing.T) *site {
	t.Helper()
	s := &site{tokens: map[string]string{}}
	check := engine.NewActivity("check", func(ctx context.Context, in renewIn) (string, error) {
		if in.Flaky && engine.ActivityInfoOf(ctx).Attempt == 1 {
			return "", engine.NewApplicationError("RegistryBusy", "the registry is busy", nil)
		}
		return "ok " + in.Domain, nil
	}).WithOptions(engine.ActivityOptions{RetryPolicy: &engine.RetryPolicy{InitialInterval: 50 * time.Millisecond}})
	charge := engine.NewActivity("charge", func(_ context.Context, in renewIn) (string, error) { return "ch-" + in.Domain, nil })
	refund := engine.NewActivity("refund", func(_ context.Context, chargeID string) (string, error) {
		s.refunded.Add(1)
		return "refunded " + chargeID, nil
	})
	renew := engine.NewActivity("renew", func(_ context.Context, in renewIn) (string, error) {
		if in.Fail {
			return "", engine.NewNonRetryableError("RegistryRefused", "the registry refused "+in.Domain, nil)
		}
		return "renewed " + in.Domain, nil
	})
	renewal := engine.NewWorkflow("renewal", func(ctx engine.Context, in renewIn) (string, error) {
		if _, err := check.Run(ctx, in); err != nil {
			return "", err
		}
		if _, err := charge.Run(ctx, in); err != nil {
			return "", err
		}
		if in.Wait {
			if _, err := engine.GetSignalChannel[confirm](ctx, "confirm").Receive(ctx); err != nil {
				return "", err
			}
		}
		return renew.Run(ctx, in)
	}).WithSignals(engine.DeclareSignal[confirm]("confirm", "the customer confirms the renewal"))
	ic, err := cancel.New(cancel.Config{Compensations: []cancel.Compensation{
		cancel.Undo(charge, refund, func(_ renewIn, chargeID string) string { return chargeID }),
	}})
	require.NoError(t, err)
	s.e = testenv.Engine(t, &engine.Config{Interceptors: []engine.Interceptor{ic}})
	require.NoError(t, s.e.Register(check, charge, refund, renew, renewal))
	require.NoError(t, ic.Register(s.e))
	testenv.Worker(t, s.e, engine.WorkerConfig{})
	require.NoError(t, api.Migrate(context.Background(), s.e.DB(), s.e.Schema()))
	var intake *tasks.Intake
	s.flags, intake = legacySource(t, s.e)
	s.redis, s.prefix = testenv.RedisPrefix(t)
	inspector, err := ratelimit.NewInspector(s.redis, s.prefix)
	require.NoError(t, err)
	srv, err := api.New(api.Config{Engine: s.e, Intakes: []*tasks.Intake{intake}, Legacy: intake, Providers: inspector})
	require.NoError(t, err)
	bw, err := srv.StartBulkWorker(context.Background()) // bulk jobs run in the site
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = bw.Stop(ctx)
	})
	s.url = serveUI(t, srv, ui.Config{Flags: s.flags, PollInterval: time.Second})
	for _, n := range []api.NewToken{
		{Name: "ada", Role: api.RoleAdmin}, {Name: "oscar", Role: api.RoleOperator}, {Name: "vera", Role: api.RoleViewer},
		{Name: "acme-portal", Role: api.RoleCustomer, Customer: "acme"},
		{Name: "globex-portal", Role: api.RoleCustomer, Customer: "globex"},
	} {
		_, secret, err := srv.Tokens().Create(context.Background(), n)
		require.NoError(t, err)
		s.tokens[n.Name] = secret
	}
	return s
}

// serveUI serves srv's API and a UI in front of it (cfg with API set to
// srv's handler) on one test server, and returns its URL.
func serveUI(t *testing.T, srv *api.Server, cfg ui.Config) string {
	t.Helper()
	cfg.API = srv.Handler()
	u, err := ui.New(cfg)
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.Handle("/", srv.Handler())
	mux.Handle(ui.Prefix, u.Handler())
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	return hs.URL
}

// start starts a renewal through the API as the operator.
func (s *site) start(t *testing.T, id, customer string, in renewIn) {
	t.Helper()
	c, err := api.NewClientWithResponses(s.url, api.WithRequestEditorFn(func(_ context.Context, r *http.Request) error {
		r.Header.Set("Authorization", "Bearer "+s.tokens["oscar"])
		return nil
	}))
	require.NoError(t, err)
	b, _ := json.Marshal(in)
	reason := "test"
	res, err := c.StartOperationWithResponse(testenv.Ctx(t, 10*time.Second), api.StartRequest{Kind: "renewal", Id: &id, Input: b, Customer: &customer, Reason: &reason})
	require.NoError(t, err)
	require.Equal(t, http.StatusCreated, res.StatusCode(), string(res.Body))
}

func (s *site) waitStatus(t *testing.T, id, status string) {
	t.Helper()
	testenv.Eventually(t, 30*time.Second, func() bool {
		info, err := s.e.Client().Describe(context.Background(), id)
		return err == nil && string(info.Status) == status
	}, "%s to be %s", id, status)
}

// browserPath finds Debian's headless Chromium (.ci/run installs it).
func browserPath(t *testing.T) string {
	for _, p := range []string{os.Getenv("GRAFT_CHROMIUM"), "chromium-headless-shell", "/usr/lib/chromium/headless_shell", "chromium", "chromium-browser"} {
		if p == "" {
			continue
		}
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	if os.Getenv("GRAFT_SKIP_BROWSER") != "" {
		t.Skip("GRAFT_SKIP_BROWSER is set and no Chromium is installed")
	}
	t.Fatal("no headless Chromium found: install Debian's chromium-headless-shell (.ci/run does), or set GRAFT_CHROMIUM to a Chromium binary")
	return ""
}

// screenshotDir is where the walk leaves a screenshot of each page
// (GRAFT_ARTIFACTS, default artifacts/ at the repository's root).
func screenshotDir(t *testing.T) string {
	dir := os.Getenv("GRAFT_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join("..", "..", "artifacts")
	}
	dir = filepath.Join(dir, "ui-screenshots")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	return dir
}

func newBrowser(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browserPath(t)), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-quic", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 900))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelBrowser(); cancelAlloc() })
	require.NoError(t, chromedp.Do(bctx)) // start the browser now: a missing library fails here, clearly
	return bctx
}

// run runs browser actions with a deadline. An action on a node (Click,
// SetValue, Submit) finds its node ID and then acts on it in another round
// trip, so the walks never aim one at a node inside a section that a live
// page's htmx poll swaps: they act on such nodes on the paused page
// (?live=0), and read live sections with text, which does not keep a node.
func run(t *testing.T, bctx context.Context, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(bctx, 30*time.Second)
	defer cancel()
	require.NoError(t, chromedp.Do(ctx, steps...))
}

// value runs one browser action that returns a value, with a deadline.
func value[T any](t *testing.T, bctx context.Context, a chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(bctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	require.NoError(t, err)
	return v
}

func shot(t *testing.T, bctx context.Context, name string) {
	t.Helper()
	png := value(t, bctx, chromedp.FullScreenshot(100))
	require.NoError(t, os.WriteFile(filepath.Join(screenshotDir(t), name+".png"), png, 0o644))
}

// text returns the text content of the first element matching sel,
// waiting until there is one.
func text(t *testing.T, bctx context.Context, sel string) string {
	t.Helper()
	return value(t, bctx, textOf(sel))
}

// textOf reads the text content of the first element matching sel, waiting
// (polling in the page) until there is one. It finds the element and reads
// it in one JavaScript call, which the page's scripts cannot interleave
// with. chromedp.TextContent instead queries a node ID and then resolves
// it in a second round trip; a live page's htmx poll swaps its section
// (hx-swap="outerHTML") every PollInterval, and on a loaded machine the
// swap can land between the two, failing the read with "No node with given
// id found".
func textOf(sel string) chromedp.Action[string] {
	type found struct {
		Text string `json:"text"`
	}
	poll := chromedp.PollFunction[found](`(sel) => { const e = document.querySelector(sel); return e && {text: e.textContent}; }`,
		chromedp.WithPollingArgs(sel), chromedp.WithPollingInterval(10*time.Millisecond))
	return func(ctx context.Context, tgt *chromedp.Target) (string, error) {
		f, err := poll(ctx, tgt)
		if err != nil {
			return "", fmt.Errorf("reading the text of %s: %w", sel, err)
		}
		return f.Text, nil
	}
}

// formValue returns the value of the form control sel, waiting until there
// is one.
func formValue(t *testing.T, bctx context.Context, sel string) string {
	t.Helper()
	type found struct {
		Value string `json:"value"`
	}
	return value(t, bctx, chromedp.PollFunction[found](`(sel) => { const e = document.querySelector(sel); return e && {value: e.value}; }`,
		chromedp.WithPollingArgs(sel), chromedp.WithPollingInterval(10*time.Millisecond))).Value
}

// waitFormValue waits until the form control sel holds want, in a form
// that htmx has settled: htmx swaps the signal form in and then, a settle
// delay later, gives the new form's controls their triggers, so an action
// on them before that would do nothing.
func waitFormValue(t *testing.T, bctx context.Context, sel, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(bctx, 30*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.PollFunction[bool](`(sel, want) => { const e = document.querySelector(sel); const f = e && e.closest("form");
		return e && e.value === want && !f.classList.contains("htmx-added") && !f.classList.contains("htmx-settling"); }`,
		chromedp.WithPollingArgs(sel, want), chromedp.WithPollingInterval(10*time.Millisecond)))
	require.NoError(t, err, "%s to hold %q (it holds %q)", sel, want, formValue(t, bctx, sel))
}

func signIn(t *testing.T, bctx context.Context, base, token string) {
	t.Helper()
	run(t, bctx, chromedp.Navigate(base+"/ui/signin"), chromedp.WaitVisible(chromedp.CSS("#token")),
		chromedp.SendKeys(chromedp.CSS("#token"), token), chromedp.Submit(chromedp.CSS("#token")),
		chromedp.WaitVisible(chromedp.CSS("table.ops")))
}

// eventuallyText reloads url until the element sel contains want.
func eventuallyText(t *testing.T, bctx context.Context, url, sel, want string) {
	t.Helper()
	testenv.Eventually(t, 30*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(bctx, 10*time.Second)
		defer cancel()
		if chromedp.Do(ctx, chromedp.Navigate(url)) != nil {
			return false
		}
		s, err := chromedp.Run(ctx, textOf(sel))
		return err == nil && strings.Contains(s, want)
	}, "%s on %s to contain %q", sel, url, want)
}

// TestOperatorWalk walks the UI in a real browser as an operator would:
// sign in, filter, open an operation, cancel it and see the refund in its
// timeline, preview and run a relaunch, send a signal (a bad payload
// first), then as a customer who sees only its own operations.
func TestOperatorWalk(t *testing.T) {
	s := newSite(t)
	bctx := newBrowser(t)
	s.start(t, "renew-acme-wait", "acme", renewIn{Domain: "acme.info", Wait: true})
	s.start(t, "renew-acme-fail", "acme", renewIn{Domain: "acme.fr", Fail: true})
	s.start(t, "renew-globex-ok", "globex", renewIn{Domain: "globex.com"})
	s.start(t, "renew-globex-wait", "globex", renewIn{Domain: "globex.info", Wait: true})
	s.start(t, "renew-globex-flaky", "globex", renewIn{Domain: "globex.net", Flaky: true})
	s.waitStatus(t, "renew-acme-fail", "failed")
	s.waitStatus(t, "renew-globex-ok", "completed")
	s.waitStatus(t, "renew-globex-flaky", "completed")
	_, err := s.e.DB().Exec(`INSERT INTO ` + pq.QuoteIdentifier(s.e.Schema()) + `.operations (id, kind, domain, customer, status, ref)
		VALUES ('renew-globex-ok', 'renewal', 'globex.com', 'globex', 'graft', 9007199254740993)`)
	require.NoError(t, err)

	signIn(t, bctx, s.url, s.tokens["oscar"])
	all := text(t, bctx, "table.ops")
	for _, id := range []string{"renew-acme-wait", "renew-acme-fail", "renew-globex-ok", "renew-globex-wait"} {
		require.Contains(t, all, id)
	}
	require.Contains(t, text(t, bctx, "ul.counts"), "failed")
	statuses := value(t, bctx, chromedp.Evaluate[int](`document.querySelectorAll('#statuses option[value="retrying"], #statuses option[value="throttled"]').length`))
	require.Equal(t, 2, statuses, "the status filter offers retrying and throttled")
	shot(t, bctx, "operations")

	// A step that failed once and then succeeded is drawn as two bars, the
	// failed attempt in the failure colour.
	run(t, bctx, chromedp.Navigate(s.url+"/ui/operations/renew-globex-flaky?live=0"), chromedp.WaitVisible(chromedp.CSS("#timeline")))
	checkBars := value(t, bctx, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll('#timeline rect.bar[data-step="check"]')).map(r => r.getAttribute("class"))`))
	require.Equal(t, []string{"bar failed", "bar ok"}, checkBars, "one bar per attempt of check")
	require.Contains(t, text(t, bctx, "#events"), "RegistryBusy")
	shot(t, bctx, "operation-retried")

	// Filter by status with the form: the URL keeps the filter.
	run(t, bctx, chromedp.Navigate(s.url+"/ui/operations"), chromedp.WaitVisible(chromedp.CSS("table.ops")),
		chromedp.SetValue(chromedp.CSS(`input[name="status"]`), "failed"),
		chromedp.Submit(chromedp.CSS(`input[name="status"]`)), chromedp.WaitVisible(chromedp.CSS("table.ops")))
	loc := value(t, bctx, chromedp.Location())
	require.Contains(t, loc, "status=failed")
	failed := text(t, bctx, "table.ops")
	require.Contains(t, failed, "renew-acme-fail")
	require.Contains(t, failed, "RegistryRefused")
	require.NotContains(t, failed, "renew-globex-ok")
	shot(t, bctx, "operations-filtered")

	// The payload box starts empty (a placeholder shows the shape): sent
	// as it is, the server refuses a signal that carries a payload, instead
	// of a pre-filled {} delivering the zero value unsaid.
	opURL := s.url + "/ui/operations/renew-globex-wait"
	run(t, bctx, chromedp.Navigate(opURL+"?live=0"), chromedp.WaitVisible(chromedp.CSS("#signal-form")))
	box := value(t, bctx, chromedp.Evaluate[[]string](`(t => [t.value, t.placeholder])(document.querySelector('#signal-form textarea[name="payload"]'))`))
	require.Equal(t, "", box[0], "the payload box is empty")
	require.NotEmpty(t, box[1], "the payload box has a placeholder")
	// Each offered signal shows its description and its payload's shape:
	// the declared one with a struct payload, and cancel's operator signal.
	confirmHint := text(t, bctx, `#signal-hints tr[data-signal="confirm"]`)
	require.Contains(t, confirmHint, "the customer confirms the renewal")
	require.Equal(t, `{"approved"?: boolean}`, text(t, bctx, `#signal-hints tr[data-signal="confirm"] .shape`))
	require.Contains(t, text(t, bctx, `#signal-hints tr[data-signal="graft.cancel.operator"]`), "an operator's decision on a failed compensation")
	require.Equal(t, `{"action"?: "retry" | "resolve", "note"?: string, "step"?: string}`, text(t, bctx, `#signal-hints tr[data-signal="graft.cancel.operator"] .shape`))
	shot(t, bctx, "operation-signal-hints")
	run(t, bctx, chromedp.SetValue(chromedp.CSS(`#signal-form input[name="reason"]`), "customer phoned"),
		chromedp.Submit(chromedp.CSS(`#signal-form button`)), chromedp.WaitVisible(chromedp.CSS("#action-error")))
	require.Contains(t, text(t, bctx, "#action-error"), "none was given")
	require.Equal(t, "customer phoned", formValue(t, bctx, "#signal-reason"), "a refusal keeps the reason typed")

	// A bad signal payload is refused with the field named, and stays in
	// the box to be corrected.
	run(t, bctx, chromedp.Navigate(opURL+"?live=0"), chromedp.WaitVisible(chromedp.CSS("#signal-form")),
		chromedp.SetValue(chromedp.CSS(`#signal-form textarea[name="payload"]`), `{"approved":`),
		chromedp.SetValue(chromedp.CSS(`#signal-form input[name="reason"]`), "customer phoned"),
		chromedp.Submit(chromedp.CSS(`#signal-form button`)), chromedp.WaitVisible(chromedp.CSS("#action-error")))
	require.Contains(t, text(t, bctx, "#action-error"), "payload")
	require.Equal(t, `{"approved":`, formValue(t, bctx, "#signal-payload"), "a refusal keeps the payload typed")
	run(t, bctx, chromedp.SetValue(chromedp.CSS(`#signal-form textarea[name="payload"]`), `{"approved":"yes"}`),
		chromedp.Submit(chromedp.CSS(`#signal-form button`)), chromedp.WaitVisible(chromedp.CSS("#action-error")))
	require.Contains(t, text(t, bctx, "#action-error"), "approved")
	require.Equal(t, `{"approved":"yes"}`, formValue(t, bctx, "#signal-payload"), "a refusal keeps the payload typed")

	// "Use template" fills in the signal's template payload (htmx swaps the
	// form, keeping the reason); changing the select swaps in the other
	// signal's template in place of an untouched one. Without JavaScript
	// the link loads the page with the form filled in.
	run(t, bctx, chromedp.Click(chromedp.CSS(`#signal-hints tr[data-signal="confirm"] a.use-template`)))
	waitFormValue(t, bctx, "#signal-payload", `{"approved":false}`)
	require.Equal(t, "customer phoned", formValue(t, bctx, "#signal-reason"))
	shot(t, bctx, "operation-signal-template")
	run(t, bctx, chromedp.Evaluate[chromedp.Void](`(s => { s.value = "graft.cancel.operator"; s.dispatchEvent(new Event("change", {bubbles: true})); })(document.querySelector("#signal-name"))`))
	waitFormValue(t, bctx, "#signal-payload", `{"action":"retry","note":"","step":""}`)
	require.Equal(t, "graft.cancel.operator", formValue(t, bctx, "#signal-name"))
	require.Equal(t, "graft.cancel.operator", value(t, bctx, chromedp.Evaluate[string](`document.querySelector('#signal-hints tr.selected').dataset.signal`)))
	// A payload the operator typed is kept through a change of the select
	// (htmx sends it with the reason), the new signal selected.
	run(t, bctx, chromedp.SetValue(chromedp.CSS(`#signal-payload`), `{"action":"retry"}`),
		chromedp.Evaluate[chromedp.Void](`(s => { s.value = "confirm"; s.dispatchEvent(new Event("change", {bubbles: true})); })(document.querySelector("#signal-name"))`))
	value(t, bctx, chromedp.PollFunction[bool](`() => document.querySelector('#signal-hints tr.selected[data-signal="confirm"]') !== null`,
		chromedp.WithPollingInterval(10*time.Millisecond))) // the server's form, with confirm selected
	waitFormValue(t, bctx, "#signal-payload", `{"action":"retry"}`)
	require.Equal(t, "customer phoned", formValue(t, bctx, "#signal-reason"))
	run(t, bctx, chromedp.Navigate(opURL+"?live=0&signal=confirm"), chromedp.WaitVisible(chromedp.CSS("#signal-form")))
	require.Equal(t, `{"approved":false}`, formValue(t, bctx, "#signal-payload"))
	require.Equal(t, "confirm", formValue(t, bctx, "#signal-name"))

	// The template, edited, is sent.
	run(t, bctx, chromedp.SetValue(chromedp.CSS(`#signal-form textarea[name="payload"]`), `{"approved":true}`),
		chromedp.SetValue(chromedp.CSS(`#signal-form input[name="reason"]`), "customer phoned"),
		chromedp.Submit(chromedp.CSS(`#signal-form button`)), chromedp.WaitVisible(chromedp.CSS(".flash")))
	require.Contains(t, text(t, bctx, ".flash"), "signal confirm sent")
	s.waitStatus(t, "renew-globex-wait", "completed")

	// Cancel a waiting operation: the refund plan is shown, and the refund
	// appears in the timeline once it has run.
	opURL = s.url + "/ui/operations/renew-acme-wait"
	run(t, bctx, chromedp.Navigate(opURL+"?live=0"), chromedp.WaitVisible(chromedp.CSS("#cancel-form")))
	require.Contains(t, text(t, bctx, "#now"), "renewal")
	// First the preview: the refund plan, and nothing changed yet.
	run(t, bctx, chromedp.SetValue(chromedp.CSS(`#cancel-form input[name="reason"]`), "customer asked"),
		chromedp.Submit(chromedp.CSS(`#cancel-form button`)), chromedp.WaitVisible(chromedp.CSS("#cancel-preview")))
	plan := text(t, bctx, "#cancel-plan")
	require.Contains(t, plan, "refund undoes charge")
	require.Contains(t, plan, "completed, will be undone")
	info, err := s.e.Client().Describe(context.Background(), "renew-acme-wait")
	require.NoError(t, err)
	require.False(t, info.CancelRequested, "a preview cancels nothing")
	require.Zero(t, s.refunded.Load())
	shot(t, bctx, "operation-cancel-preview")
	// Then the confirmation.
	run(t, bctx, chromedp.Submit(chromedp.CSS(`#cancel-confirm button`)), chromedp.WaitVisible(chromedp.CSS("#refund-plan")))
	require.Contains(t, text(t, bctx, "#refund-plan"), "refund undoes charge")
	s.waitStatus(t, "renew-acme-wait", "cancelled")
	eventuallyText(t, bctx, opURL+"?live=0", "#events", "refund")
	require.Contains(t, text(t, bctx, "#events"), "customer asked")
	bars := value(t, bctx, chromedp.Evaluate[int](`document.querySelectorAll("#timeline rect.bar").length`))
	require.GreaterOrEqual(t, bars, 3) // check, charge, refund
	require.EqualValues(t, 1, s.refunded.Load())
	shot(t, bctx, "operation-cancelled")

	// Relaunch a failed operation: the preview names reused and re-run steps.
	opURL = s.url + "/ui/operations/renew-acme-fail"
	run(t, bctx, chromedp.Navigate(opURL), chromedp.WaitVisible(chromedp.CSS("#relaunch-form")))
	preview := text(t, bctx, "#relaunch-form")
	require.Contains(t, preview, "runs again")
	require.Contains(t, preview, "renew")
	shot(t, bctx, "operation-failed")
	run(t, bctx, chromedp.SetValue(chromedp.CSS(`#relaunch-form input[name="reason"]`), "registry is back"),
		chromedp.Submit(chromedp.CSS(`#relaunch-form button`)), chromedp.WaitVisible(chromedp.CSS(".flash")))
	require.Contains(t, text(t, bctx, ".flash"), "relaunched")
	testenv.Eventually(t, 30*time.Second, func() bool {
		info, err := s.e.Client().Describe(context.Background(), "renew-acme-fail")
		return err == nil && info.PreviousRunID != ""
	}, "the relaunch to start a new run")
	// Created stays the operation's creation; the relaunch is shown apart.
	var first, latest time.Time
	require.NoError(t, s.e.DB().QueryRow(`SELECT min(created_at), max(created_at) FROM `+s.e.Schema()+`.runs
		WHERE workflow_id = 'renew-acme-fail'`).Scan(&first, &latest))
	run(t, bctx, chromedp.Navigate(opURL+"?live=0"), chromedp.WaitVisible(chromedp.CSS("#relaunched-at")))
	require.Equal(t, first.UTC().Format("2006-01-02 15:04:05"), text(t, bctx, "#created-at"))
	require.Equal(t, latest.UTC().Format("2006-01-02 15:04:05")+" (1 relaunch)", text(t, bctx, "#relaunched-at"))
	shot(t, bctx, "operation-relaunched")

	// A completed operation has nothing failed to relaunch before: the form
	// says to name a step, not "Conflict: ... from_step".
	run(t, bctx, chromedp.Navigate(s.url+"/ui/operations/renew-globex-ok"), chromedp.WaitVisible(chromedp.CSS("#relaunch-form")))
	require.Contains(t, text(t, bctx, "#relaunch-note"), "Nothing failed in its latest run")
	require.NotContains(t, text(t, bctx, "#relaunch-form"), "Conflict")

	// Its legacy row's bigint beyond 2^53 is shown exactly, not rounded
	// (9007199254740992) as a float64 would.
	require.Contains(t, text(t, bctx, "#legacy"), "9007199254740993")

	// A relaunch from a named step is previewed too, and one from the signal
	// the operation received says that signal is received again (same
	// payload, not waited for), which the relaunch then does.
	opURL = s.url + "/ui/operations/renew-globex-wait"
	run(t, bctx, chromedp.Navigate(opURL+"?live=0"), chromedp.WaitVisible(chromedp.CSS("#relaunch-form")),
		chromedp.SetValue(chromedp.CSS(`#relaunch-form input[name="from_step"]`), "confirm"),
		chromedp.SetValue(chromedp.CSS(`#relaunch-form input[name="reason"]`), "renew again"),
		chromedp.Click(chromedp.CSS(`#relaunch-preview-button`)), chromedp.WaitVisible(chromedp.CSS("#relaunch-preview")))
	require.Equal(t, "From step confirm: reuses 2 step(s) check charge; runs again 1 renew; receives again 1 signal(s) confirm, "+
		"with the payload the earlier run received: the new run does not wait for a new one.", text(t, bctx, "#relaunch-preview"))
	kept := value(t, bctx, chromedp.Evaluate[[]string](`['from_step', 'reason'].map(n => document.querySelector('#relaunch-form input[name="' + n + '"]').value)`))
	require.Equal(t, []string{"confirm", "renew again"}, kept, "the preview keeps what was typed")
	info, err = s.e.Client().Describe(context.Background(), "renew-globex-wait")
	require.NoError(t, err)
	require.Empty(t, info.PreviousRunID, "a preview relaunches nothing")
	shot(t, bctx, "operation-relaunch-preview")
	run(t, bctx, chromedp.Click(chromedp.CSS(`#relaunch-button`)), chromedp.WaitVisible(chromedp.CSS(".flash")))
	require.Contains(t, text(t, bctx, ".flash"), "relaunched")
	testenv.Eventually(t, 30*time.Second, func() bool {
		info, err := s.e.Client().Describe(context.Background(), "renew-globex-wait")
		return err == nil && info.PreviousRunID != "" && info.Status == engine.StatusCompleted
	}, "the relaunch to complete without a new signal")

	// A viewer reads but has no actions.
	run(t, bctx, chromedp.Navigate(s.url+"/ui/operations"), chromedp.Submit(chromedp.CSS(`header form.who button`)),
		chromedp.WaitVisible(chromedp.CSS("#token")))
	signIn(t, bctx, s.url, s.tokens["vera"])
	run(t, bctx, chromedp.Navigate(s.url+"/ui/operations/renew-globex-ok"), chromedp.WaitVisible(chromedp.CSS("#now")))
	forms := value(t, bctx, chromedp.Evaluate[int](`document.querySelectorAll("section.actions").length`))
	require.Zero(t, forms)

	// A customer sees only its own operations, and another's is not found.
	run(t, bctx, chromedp.Submit(chromedp.CSS(`header form.who button`)), chromedp.WaitVisible(chromedp.CSS("#token")))
	signIn(t, bctx, s.url, s.tokens["acme-portal"])
	mine := text(t, bctx, "table.ops")
	require.Contains(t, mine, "renew-acme-wait")
	require.NotContains(t, mine, "globex")
	require.Contains(t, text(t, bctx, "#who"), "acme")
	shot(t, bctx, "customer-operations")
	run(t, bctx, chromedp.Navigate(s.url+"/ui/operations/renew-globex-ok"), chromedp.WaitVisible(chromedp.CSS("main")))
	other := text(t, bctx, "main")
	require.Contains(t, strings.ToLower(other), "not found")
	require.NotContains(t, other, "globex.com")
}

// insertLegacy adds n pending renewal rows to the site's legacy table,
// cycling through the TLDs, and returns their IDs and keys.
func (s *site) insertLegacy(t *testing.T, n int, tlds ...string) map[string]string {
	t.Helper()
	rows := map[string]string{}
	for i := range n {
		id, tld := fmt.Sprintf("legacy-%d", i), tlds[i%len(tlds)]
		_, err := s.e.DB().Exec(`INSERT INTO `+pq.QuoteIdentifier(s.e.Schema())+`.operations (id, kind, domain, customer) VALUES ($1, 'renewal', $2, 'acme')`,
			id, "d"+id+"."+tld)
		require.NoError(t, err)
		rows[id] = tld
	}
	return rows
}

// TestFlagsWalk: an admin previews a rules change over the pending legacy
// rows and saves it, flips a kind's kill switch; the changes are audited
// and seen by the flag store (which intake reads); a stale form is refused;
// an operator reads but cannot change.
func TestFlagsWalk(t *testing.T) {
	s := newSite(t)
	bctx := newBrowser(t)
	rows := s.insertLegacy(t, 90, "info", "fr", "com")
	signIn(t, bctx, s.url, s.tokens["ada"])
	run(t, bctx, chromedp.Navigate(s.url+"/ui/flags"), chromedp.WaitVisible(chromedp.CSS("#kill-switches")))
	require.Contains(t, text(t, bctx, "#flag-renewal"), "info=100")
	require.Contains(t, text(t, bctx, "#kill-renewal"), "intake on")

	// The preview: what the new rules would route, counted as intake would.
	run(t, bctx, chromedp.SetValue(chromedp.CSS(`#flag-renewal input[name="key_rules"]`), "info=100; fr=50"),
		chromedp.SetValue(chromedp.CSS(`#flag-renewal input[name="reason"]`), "half of .fr"),
		chromedp.Submit(chromedp.CSS(`#flag-renewal button`)), chromedp.WaitVisible(chromedp.CSS("#flag-preview")))
	now, err := s.flags.Snapshot(context.Background())
	require.NoError(t, err)
	proposed := *now.Flags["renewal"]
	proposed.KeyRules = []tasks.KeyRule{{Keys: []string{"info"}, Percent: 100}, {Keys: []string{"fr"}, Percent: 50}}
	after := &tasks.Snapshot{Flags: map[string]*tasks.Flag{"renewal": &proposed}}
	var beforeGraft, afterGraft int
	for id, tld := range rows {
		if tasks.Evaluate(now, "renewal", tld, id).Route == tasks.RouteGraft {
			beforeGraft++
		}
		if tasks.Evaluate(after, "renewal", tld, id).Route == tasks.RouteGraft {
			afterGraft++
		}
	}
	require.Equal(t, 30, beforeGraft)
	require.Greater(t, afterGraft, beforeGraft)
	require.Equal(t, "90", text(t, bctx, "#preview-scanned"))
	require.Contains(t, text(t, bctx, "#preview-before"), fmt.Sprintf("%d%d", beforeGraft, 90-beforeGraft))
	require.Contains(t, text(t, bctx, "#preview-after"), fmt.Sprintf("%d%d", afterGraft, 90-afterGraft))
	require.Contains(t, text(t, bctx, "#preview-moves"), fmt.Sprintf("%d rows to graft", afterGraft-beforeGraft))
	unchanged, err := s.flags.Snapshot(context.Background())
	require.NoError(t, err)
	require.Equal(t, now.Version, unchanged.Version, "a preview changes nothing")
	shot(t, bctx, "flags-preview")
	run(t, bctx, chromedp.Submit(chromedp.CSS(`#flag-confirm button`)), chromedp.WaitVisible(chromedp.CSS("#rules")))
	require.Contains(t, text(t, bctx, "#flag-renewal"), "fr=50")
	require.Contains(t, text(t, bctx, "#audit"), "half of .fr")

	run(t, bctx, chromedp.SetValue(chromedp.CSS(`#kill-renewal input[name="reason"]`), "registry incident"),
		chromedp.Submit(chromedp.CSS(`#kill-renewal button`)), chromedp.WaitVisible(chromedp.CSS("#kill-switches")))
	require.Contains(t, text(t, bctx, "#kill-renewal"), "intake stopped")
	require.Contains(t, text(t, bctx, "#audit"), "registry incident")
	snap, err := s.flags.Snapshot(context.Background())
	require.NoError(t, err)
	require.True(t, snap.Flags["renewal"].Killed)
	shot(t, bctx, "flags")

	// A form made against an older version is refused, and changes nothing.
	_, err = s.flags.Set(context.Background(), tasks.Change{Flag: tasks.Flag{Kind: "renewal", Killed: true, DefaultPercent: 5,
		KeyRules: []tasks.KeyRule{{Keys: []string{"info"}, Percent: 100}, {Keys: []string{"fr"}, Percent: 50}}},
		Version: 3, Actor: "someone-else", Reason: "meanwhile"})
	require.NoError(t, err)
	run(t, bctx, chromedp.SetValue(chromedp.CSS(`#flag-renewal input[name="default_percent"]`), "40"),
		chromedp.SetValue(chromedp.CSS(`#flag-renewal input[name="reason"]`), "stale"),
		chromedp.Submit(chromedp.CSS(`#flag-renewal button`)), chromedp.WaitVisible(chromedp.CSS("#flag-preview")),
		chromedp.Submit(chromedp.CSS(`#flag-confirm button`)), chromedp.WaitVisible(chromedp.CSS("#flag-error")))
	require.Contains(t, text(t, bctx, "#flag-error"), "version")
	snap, err = s.flags.Snapshot(context.Background())
	require.NoError(t, err)
	require.EqualValues(t, 5, snap.Flags["renewal"].DefaultPercent)

	// A key the source's transform (tld) would change never matches: the
	// preview and the save both say so, naming what to write.
	run(t, bctx, chromedp.Navigate(s.url+"/ui/flags"), chromedp.WaitVisible(chromedp.CSS("#rules")),
		chromedp.SetValue(chromedp.CSS(`#flag-renewal input[name="key_rules"]`), "info=100; .FR=50"),
		chromedp.SetValue(chromedp.CSS(`#flag-renewal input[name="reason"]`), "upper case"),
		chromedp.Submit(chromedp.CSS(`#flag-renewal button`)), chromedp.WaitVisible(chromedp.CSS("#flag-preview-error")))
	const never = `key ".FR" never matches: kind renewal keys on the last dot-separated label, lower-cased (transform tld); write "fr"`
	require.Contains(t, text(t, bctx, "#flag-preview-error"), never)
	run(t, bctx, chromedp.Submit(chromedp.CSS(`#flag-confirm button`)), chromedp.WaitVisible(chromedp.CSS("#flag-error")))
	require.Contains(t, text(t, bctx, "#flag-error"), "key rules: rule 2 (.FR=50): "+never)
	unchanged, err = s.flags.Snapshot(context.Background())
	require.NoError(t, err)
	require.Equal(t, snap.Version, unchanged.Version)

	// An operator reads the flags but has no forms.
	run(t, bctx, chromedp.Submit(chromedp.CSS(`header form.who button`)), chromedp.WaitVisible(chromedp.CSS("#token")))
	signIn(t, bctx, s.url, s.tokens["oscar"])
	run(t, bctx, chromedp.Navigate(s.url+"/ui/flags"), chromedp.WaitVisible(chromedp.CSS("#kill-switches")))
	forms := value(t, bctx, chromedp.Evaluate[int](`document.querySelectorAll("#kill-switches form, #rules form").length`))
	require.Zero(t, forms)
}

// TestProvidersWalk: a worker's limiter holds calls in flight; the
// providers page shows the key with its limits and those calls; an admin
// lowers its concurrency in the browser and the limiter enforces it; a
// viewer sees the page without forms and cannot change a limit; a customer
// has no such page.
func TestProvidersWalk(t *testing.T) {
	s := newSite(t)
	bctx := newBrowser(t)
	ctx := testenv.Ctx(t, 120*time.Second)
	l, err := ratelimit.NewRedisLimiter(s.redis, ratelimit.RedisConfig{Prefix: s.prefix, RecoveryWindow: -1,
		Limits: ratelimit.StaticLimits(ratelimit.Limits{Concurrency: 3, Rate: 100, Burst: 2}), RefreshInterval: 50 * time.Millisecond})
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Close() })
	for i := range 2 {
		_, err := l.Acquire(ctx, "registry", fmt.Sprintf("call-%d", i))
		require.NoError(t, err)
	}

	signIn(t, bctx, s.url, s.tokens["ada"])
	eventuallyText(t, bctx, s.url+"/ui/providers?live=0", "#provider-registry .in-flight", "2 / 3")
	require.Contains(t, text(t, bctx, "#provider-registry .limit-rate"), "100")
	shot(t, bctx, "providers")

	run(t, bctx, chromedp.SetValue(chromedp.CSS(`#limits-registry input[name="concurrency"]`), "1"),
		chromedp.SetValue(chromedp.CSS(`#limits-registry input[name="reason"]`), "the registry asked us to slow down"),
		chromedp.Submit(chromedp.CSS(`#limits-registry button`)), chromedp.WaitVisible(chromedp.CSS(".flash")))
	require.Contains(t, text(t, bctx, "#provider-registry"), "override")
	require.Contains(t, text(t, bctx, "#provider-registry .in-flight"), "2 / 1")
	// The worker's limiter applies it: no third call, nor a new one while
	// two are in flight.
	testenv.Eventually(t, 30*time.Second, func() bool {
		lease, err := l.Acquire(ctx, "registry", "call-new")
		if err == nil {
			require.NoError(t, l.Release(ctx, lease))
			return false
		}
		var denied *ratelimit.DeniedError
		return errors.As(err, &denied) && denied.Reason == ratelimit.ReasonConcurrency && denied.Limits.Concurrency == 1
	}, "the limiter to enforce the new limit")
	// A call that must wait for a slot shows as a throttled waiter.
	wctx, stopWaiter := context.WithCancel(ctx)
	waited := make(chan struct{})
	go func() {
		defer close(waited)
		_, _ = ratelimit.Wait(wctx, l, "registry", "waiter", time.Minute)
	}()
	eventuallyText(t, bctx, s.url+"/ui/providers?live=0", "#provider-registry .waiters", "1")
	shot(t, bctx, "providers-override")
	stopWaiter()
	<-waited

	// A viewer sees the key but no form, and a forged change is refused.
	run(t, bctx, chromedp.Submit(chromedp.CSS(`header form.who button`)), chromedp.WaitVisible(chromedp.CSS("#token")))
	signIn(t, bctx, s.url, s.tokens["vera"])
	run(t, bctx, chromedp.Navigate(s.url+"/ui/providers?live=0"), chromedp.WaitVisible(chromedp.CSS("#provider-registry")))
	forms := value(t, bctx, chromedp.Evaluate[int](`document.querySelectorAll("#change-limits form").length`))
	require.Zero(t, forms)
	run(t, bctx, chromedp.Evaluate[chromedp.Void](`(() => {
		const f = document.createElement("form"); f.method = "post"; f.action = "/ui/providers/registry";
		for (const [k, v] of [["csrf", document.querySelector('header form.who input[name="csrf"]').value], ["concurrency", "100"], ["reason", "more!"]]) {
			const i = document.createElement("input"); i.name = k; i.value = v; f.appendChild(i);
		}
		document.body.appendChild(f); f.submit();
	})()`), chromedp.WaitVisible(chromedp.CSS("#providers-error")))
	require.Contains(t, text(t, bctx, "#providers-error"), "viewer")
	info, err := ratelimit.NewInspector(s.redis, s.prefix)
	require.NoError(t, err)
	k, err := info.Key(ctx, "registry")
	require.NoError(t, err)
	require.Equal(t, 1, k.Override.Concurrency, "the viewer changed nothing")

	// A customer has no providers or overview page.
	run(t, bctx, chromedp.Navigate(s.url+"/ui/operations"), chromedp.Submit(chromedp.CSS(`header form.who button`)), chromedp.WaitVisible(chromedp.CSS("#token")))
	signIn(t, bctx, s.url, s.tokens["acme-portal"])
	links := value(t, bctx, chromedp.Evaluate[int](`document.querySelectorAll('header nav a[href="/ui/providers"], header nav a[href="/ui/overview"]').length`))
	require.Zero(t, links)
	for _, page := range []string{"/ui/providers", "/ui/overview"} {
		run(t, bctx, chromedp.Navigate(s.url+page), chromedp.WaitVisible(chromedp.CSS("body")))
		require.Contains(t, strings.ToLower(text(t, bctx, "body")), "not found", page)
	}
}

// TestOverviewWalk: with operations completed and failed in the last hour,
// the overview draws its three charts, the failures by error type naming
// the error.
func TestOverviewWalk(t *testing.T) {
	s := newSite(t)
	bctx := newBrowser(t)
	s.start(t, "renew-ok-1", "acme", renewIn{Domain: "one.info"})
	s.start(t, "renew-ok-2", "acme", renewIn{Domain: "two.info"})
	s.start(t, "renew-bad", "globex", renewIn{Domain: "bad.fr", Fail: true})
	s.start(t, "renew-wait", "globex", renewIn{Domain: "wait.com", Wait: true})
	s.waitStatus(t, "renew-ok-1", "completed")
	s.waitStatus(t, "renew-ok-2", "completed")
	s.waitStatus(t, "renew-bad", "failed")
	s.waitStatus(t, "renew-wait", "waiting")

	signIn(t, bctx, s.url, s.tokens["oscar"])
	run(t, bctx, chromedp.Navigate(s.url+"/ui/overview"), chromedp.WaitVisible(chromedp.CSS("#chart-throughput")))
	require.Contains(t, text(t, bctx, "#overview-summary"), "4 operations created")
	for _, id := range []string{"#chart-statuses", "#chart-throughput", "#chart-failures"} {
		n := value(t, bctx, chromedp.Evaluate[int](`document.querySelectorAll("`+id+` svg rect.bar").length`))
		require.Positive(t, n, id)
	}
	require.Contains(t, text(t, bctx, "#chart-failures"), "RegistryRefused")
	require.Contains(t, text(t, bctx, "#chart-statuses"), "completed")
	require.Contains(t, text(t, bctx, "#overview-live .live"), "Live")
	shot(t, bctx, "overview")
}

// TestSessionAndCSRF checks the session cookie's flags, that every form
// post needs the session's CSRF token (and changes nothing without it),
// and that a bad token does not sign in.
func TestSessionAndCSRF(t *testing.T) {
	s := newSite(t)
	s.start(t, "renew-1", "acme", renewIn{Domain: "one.info", Wait: true})
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	c := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	res, err := c.PostForm(s.url+"/ui/signin", url.Values{"token": {"graft_nope_nope"}})
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusUnauthorized, res.StatusCode)
	require.Empty(t, res.Cookies())

	res, err = c.PostForm(s.url+"/ui/signin", url.Values{"token": {s.tokens["oscar"]}})
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusSeeOther, res.StatusCode)
	var session *http.Cookie
	for _, ck := range res.Cookies() {
		if ck.Name == ui.SessionCookie {
			session = ck
		}
	}
	require.NotNil(t, session)
	require.True(t, session.HttpOnly)
	require.Equal(t, http.SameSiteStrictMode, session.SameSite)

	for _, action := range []string{"cancel", "signal", "relaunch"} {
		res, err = c.PostForm(s.url+"/ui/operations/renew-1/"+action, url.Values{"reason": {"forged"}, "name": {"confirm"}})
		require.NoError(t, err)
		res.Body.Close()
		require.Equal(t, http.StatusForbidden, res.StatusCode, action)
	}
	info, err := s.e.Client().Describe(context.Background(), "renew-1")
	require.NoError(t, err)
	require.False(t, info.CancelRequested, "a forged cancel changed the operation")

	res, err = c.Get(s.url + "/ui/operations")
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode)
	csp := res.Header.Get("Content-Security-Policy")
	require.Contains(t, csp, "script-src 'self'")
	require.Contains(t, csp, "frame-ancestors 'none'")
	require.False(t, errors.Is(err, http.ErrUseLastResponse))
}
