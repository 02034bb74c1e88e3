package ui_test

import (
	"context"
	"encoding/json"
	"errors"
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
	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/cancel"
	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
	"github.com/graftdev/graft/tasks"
	"github.com/graftdev/graft/tasks/api"
	"github.com/graftdev/graft/tasks/ui"
)

type renewIn struct {
	Domain string `json:"domain"`
	Fail   bool   `json:"fail,omitempty"`
	Wait   bool   `json:"wait,omitempty"`
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
}

// legacySource declares a legacy operations table whose "renewal" kind
// intake may route, so that flags may name it, and returns the flag store.
func legacySource(t *testing.T, e *engine.Engine) *tasks.Flags {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, tasks.Migrate(ctx, e.DB(), e.Schema()))
	_, err := e.DB().Exec(`CREATE TABLE ` + pq.QuoteIdentifier(e.Schema()) + `.operations (
		id text PRIMARY KEY, kind text NOT NULL, domain text, customer text, status text NOT NULL DEFAULT 'pending')`)
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
	return f
}

func newSite(t *testing.T) *site {
	t.Helper()
	s := &site{tokens: map[string]string{}}
	check := engine.NewActivity("check", func(_ context.Context, in renewIn) (string, error) { return "ok " + in.Domain, nil })
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
	srv, err := api.New(api.Config{Engine: s.e})
	require.NoError(t, err)
	s.flags = legacySource(t, s.e)
	u, err := ui.New(ui.Config{API: srv.Handler(), Flags: s.flags, PollInterval: time.Second})
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.Handle("/", srv.Handler())
	mux.Handle(ui.Prefix, u.Handler())
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	s.url = hs.URL
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

// run runs browser actions with a deadline.
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

func text(t *testing.T, bctx context.Context, sel string) string {
	t.Helper()
	return value(t, bctx, chromedp.TextContent(chromedp.CSS(sel)))
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
		s, err := chromedp.Run(ctx, chromedp.TextContent(chromedp.CSS(sel)))
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
	s.waitStatus(t, "renew-acme-fail", "failed")
	s.waitStatus(t, "renew-globex-ok", "completed")

	signIn(t, bctx, s.url, s.tokens["oscar"])
	all := text(t, bctx, "table.ops")
	for _, id := range []string{"renew-acme-wait", "renew-acme-fail", "renew-globex-ok", "renew-globex-wait"} {
		require.Contains(t, all, id)
	}
	require.Contains(t, text(t, bctx, "ul.counts"), "failed")
	shot(t, bctx, "operations")

	// Filter by status with the form: the URL keeps the filter.
	run(t, bctx, chromedp.SetValue(chromedp.CSS(`input[name="status"]`), "failed"),
		chromedp.Submit(chromedp.CSS(`input[name="status"]`)), chromedp.WaitVisible(chromedp.CSS("table.ops")))
	loc := value(t, bctx, chromedp.Location())
	require.Contains(t, loc, "status=failed")
	failed := text(t, bctx, "table.ops")
	require.Contains(t, failed, "renew-acme-fail")
	require.Contains(t, failed, "RegistryRefused")
	require.NotContains(t, failed, "renew-globex-ok")
	shot(t, bctx, "operations-filtered")

	// A bad signal payload is refused with the field named; a good one is sent.
	opURL := s.url + "/ui/operations/renew-globex-wait"
	run(t, bctx, chromedp.Navigate(opURL+"?live=0"), chromedp.WaitVisible(chromedp.CSS("#signal-form")),
		chromedp.SetValue(chromedp.CSS(`#signal-form textarea[name="payload"]`), `{"approved":`),
		chromedp.SetValue(chromedp.CSS(`#signal-form input[name="reason"]`), "customer phoned"),
		chromedp.Submit(chromedp.CSS(`#signal-form button`)), chromedp.WaitVisible(chromedp.CSS("#action-error")))
	require.Contains(t, text(t, bctx, "#action-error"), "payload")
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
	run(t, bctx, chromedp.SetValue(chromedp.CSS(`#cancel-form input[name="reason"]`), "customer asked"),
		chromedp.Submit(chromedp.CSS(`#cancel-form button`)), chromedp.WaitVisible(chromedp.CSS("#refund-plan")))
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

// TestFlagsWalk: an admin flips a kind's kill switch and changes its rules
// in the browser; the change is audited and seen by the flag store (which
// intake reads); a stale form is refused; an operator reads but cannot change.
func TestFlagsWalk(t *testing.T) {
	s := newSite(t)
	bctx := newBrowser(t)
	signIn(t, bctx, s.url, s.tokens["ada"])
	run(t, bctx, chromedp.Navigate(s.url+"/ui/flags"), chromedp.WaitVisible(chromedp.CSS("#kill-switches")))
	require.Contains(t, text(t, bctx, "#flag-renewal"), "info=100")
	require.Contains(t, text(t, bctx, "#kill-renewal"), "intake on")

	run(t, bctx, chromedp.SetValue(chromedp.CSS(`#kill-renewal input[name="reason"]`), "registry incident"),
		chromedp.Submit(chromedp.CSS(`#kill-renewal button`)), chromedp.WaitVisible(chromedp.CSS("#kill-switches")))
	require.Contains(t, text(t, bctx, "#kill-renewal"), "intake stopped")
	require.Contains(t, text(t, bctx, "#audit"), "registry incident")
	snap, err := s.flags.Snapshot(context.Background())
	require.NoError(t, err)
	require.True(t, snap.Flags["renewal"].Killed)
	shot(t, bctx, "flags")

	run(t, bctx, chromedp.SetValue(chromedp.CSS(`#flag-renewal input[name="key_rules"]`), "info=100; fr=50"),
		chromedp.SetValue(chromedp.CSS(`#flag-renewal input[name="reason"]`), "half of .fr"),
		chromedp.Submit(chromedp.CSS(`#flag-renewal button`)), chromedp.WaitVisible(chromedp.CSS("#rules")))
	require.Contains(t, text(t, bctx, "#flag-renewal"), "fr=50")

	// A form made against an older version is refused, and changes nothing.
	_, err = s.flags.Set(context.Background(), tasks.Change{Flag: tasks.Flag{Kind: "renewal", Killed: true, DefaultPercent: 5,
		KeyRules: []tasks.KeyRule{{Keys: []string{"info"}, Percent: 100}, {Keys: []string{"fr"}, Percent: 50}}},
		Version: 3, Actor: "someone-else", Reason: "meanwhile"})
	require.NoError(t, err)
	run(t, bctx, chromedp.SetValue(chromedp.CSS(`#flag-renewal input[name="default_percent"]`), "40"),
		chromedp.SetValue(chromedp.CSS(`#flag-renewal input[name="reason"]`), "stale"),
		chromedp.Submit(chromedp.CSS(`#flag-renewal button`)), chromedp.WaitVisible(chromedp.CSS("#flag-error")))
	require.Contains(t, text(t, bctx, "#flag-error"), "version")
	snap, err = s.flags.Snapshot(context.Background())
	require.NoError(t, err)
	require.EqualValues(t, 5, snap.Flags["renewal"].DefaultPercent)

	// An operator reads the flags but has no forms.
	run(t, bctx, chromedp.Submit(chromedp.CSS(`header form.who button`)), chromedp.WaitVisible(chromedp.CSS("#token")))
	signIn(t, bctx, s.url, s.tokens["oscar"])
	run(t, bctx, chromedp.Navigate(s.url+"/ui/flags"), chromedp.WaitVisible(chromedp.CSS("#kill-switches")))
	forms := value(t, bctx, chromedp.Evaluate[int](`document.querySelectorAll("#kill-switches form, #rules form").length`))
	require.Zero(t, forms)
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
