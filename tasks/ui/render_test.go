package ui

import (
	"context"
	"encoding/json"
	"html/template"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/cancel"
	"github.com/graftdev/graft/tasks"
	"github.com/graftdev/graft/tasks/api"
)

func p[T any](v T) *T { return &v }

// renderCase is a page's template, or one of its fragments, rendered with
// fixture data; the output must contain each of want.
type renderCase struct {
	page, name string
	data       map[string]any
	want       []string
}

// checkRenders renders each case for viewer v, one subtest a case.
func checkRenders(t *testing.T, pages map[string]*template.Template, v viewer, cases []renderCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.page+"/"+c.name, func(t *testing.T) {
			c.data["Viewer"] = v
			c.data["Page"] = c.page
			var b strings.Builder
			require.NoError(t, pages[c.page].ExecuteTemplate(&b, c.name, c.data))
			for _, w := range c.want {
				require.Contains(t, b.String(), w)
			}
		})
	}
}

// fixtureOperation is an operation with something in every field a page shows.
func fixtureOperation() *api.Operation {
	in := json.RawMessage(`{"domain":"example.info"}`)
	return &api.Operation{Id: "op-1", Kind: "renewal", Status: api.StatusFailed, Route: api.RouteGraft, RunId: "run-1", Runs: 1,
		CreatedAt: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), Customer: p("acme"), Key: p("info"), Input: &in,
		Legacy: &api.LegacyRow{"status": "failed", "domain": "example.info",
			"version": float64(618003431433), "attempts": float64(2), "ratio": 0.5, "runner": nil, "tags": []any{"a"}},
		Now: api.NowSummary{CurrentStep: p("charge"), Attempt: p(3), MaxAttempts: p(5), NextWakeup: p(time.Now()),
			LastError: &api.ErrorInfo{Message: "card declined", Type: p("CardDeclined"), Step: p("charge")}},
		Signals: &[]api.SignalDecl{{Name: "confirm", Description: p("the customer confirms"), Schema: fixtureSchema[fixtureConfirm]()},
			{Name: cancel.OperatorSignal, Description: p("an operator's decision"), Schema: fixtureSchema[cancel.OperatorAction]()}}}
}

func fixtureEvents() []api.HistoryEvent {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	return []api.HistoryEvent{
		{At: t0, Type: "run_started", Name: p("renewal")},
		{At: t0.Add(time.Second), EndedAt: p(t0.Add(2 * time.Second)), Type: "step", Kind: p("activity"), Name: p("charge"), Status: p("failed"), Attempt: p(1),
			Error: &api.ErrorInfo{Message: "timeout"}},
		{At: t0.Add(3 * time.Second), EndedAt: p(t0.Add(4 * time.Second)), Type: "step", Kind: p("activity"), Name: p("charge"), Status: p("completed"), Attempt: p(2)},
		{At: t0.Add(5 * time.Second), Type: "step", Kind: p("signal"), Name: p("confirm"), Status: p("completed")},
		{At: t0.Add(6 * time.Second), Type: "action", Name: p("cancel"), Actor: p("oscar"), Reason: p("customer asked")},
		{At: t0.Add(7 * time.Second), EndedAt: p(t0.Add(8 * time.Second)), Type: "step", Kind: p("activity"), Name: p("refund"), Status: p("completed")},
		{At: t0.Add(9 * time.Second), Type: "run_closed", Status: p("cancelled")},
	}
}

// fixtureAttempts is the history of a run whose "check" step failed once
// and then succeeded, whose "charge" step lost an attempt with its worker,
// and whose "renew" step was snoozed by a provider's limit first.
func fixtureAttempts() []api.HistoryEvent {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	step := func(seq int, name, status string, from, to int) api.HistoryEvent {
		return api.HistoryEvent{At: at(from), EndedAt: p(at(to)), Type: "step", RunId: p("run-1"), Seq: p(seq), Kind: p("activity"), Name: p(name), Status: p(status)}
	}
	attempt := func(seq int, name, status string, n, from, to int) api.HistoryEvent {
		e := step(seq, name, status, from, to)
		e.Type, e.Attempt = "attempt", p(n)
		return e
	}
	failed := attempt(1, "check", "failed", 1, 1, 2)
	failed.Error = &api.ErrorInfo{Message: "registry busy", Type: p("Busy")}
	lost := attempt(2, "charge", "lost", 1, 4, 6)
	lost.Error = &api.ErrorInfo{Message: "attempt 1 was in flight when its worker stopped", Type: p("ActivityLost")}
	snoozed := attempt(3, "renew", "snoozed", 1, 8, 8)
	snoozed.Reason = p("provider acme: rate limit")
	return []api.HistoryEvent{
		{At: t0, Type: "run_started", RunId: p("run-1"), Name: p("renewal")},
		step(1, "check", "completed", 1, 3), failed, attempt(1, "check", "completed", 2, 2, 3),
		step(2, "charge", "completed", 4, 7), lost, attempt(2, "charge", "completed", 2, 6, 7),
		step(3, "renew", "completed", 8, 10), snoozed, attempt(3, "renew", "completed", 1, 9, 10),
	}
}

// The timeline draws a step tried more than once as one bar per attempt
// (and per snooze), not one bar over them: the failed attempt in the
// failure colour, the lost one and the snooze marked as such.
func TestTimelineOneBarPerAttempt(t *testing.T) {
	tl := buildTimeline(fixtureAttempts(), time.Now())
	var got []string
	for _, r := range tl.Rows {
		got = append(got, r.Step+" "+r.Class+" "+r.Label)
	}
	require.Equal(t, []string{
		"check failed check (attempt 1)", "check ok check (attempt 2)",
		"charge lost charge (attempt 1, lost)", "charge ok charge (attempt 2)",
		"renew snoozed renew (snoozed)", "renew ok renew (attempt 1)",
	}, got)
}

// TestEveryTemplateRenders renders every page and fragment with fixture
// data, so a template error fails the build rather than a page.
func TestEveryTemplateRenders(t *testing.T) {
	pages, err := parseTemplates()
	require.NoError(t, err)
	require.Len(t, pages, len(pageNames))
	staff := viewer{Name: "oscar", Role: "operator", CSRF: "tok"}
	op := fixtureOperation()
	ev := fixtureEvents()
	retrying := fixtureOperation()
	retrying.Status = api.StatusWaiting
	retrying.Now = api.NowSummary{CurrentStep: p("check"), Attempt: p(2), MaxAttempts: p(4), WaitingFor: p("retry"), NextWakeup: p(time.Now()),
		LastError: &api.ErrorInfo{Message: "registry busy", Type: p("Busy"), Step: p("check")}}
	published := fixtureOperation()
	published.SignalsPublishedBy, published.SignalsPublishedAt = p("w-7 (graft@v1)"), p(time.Date(2026, 12, 7, 1, 2, 3, 0, time.UTC))
	throttled := fixtureOperation()
	throttled.Now = api.NowSummary{CurrentStep: p("renew"), Attempt: p(1), MaxAttempts: p(0), WaitingFor: p("throttle"),
		ThrottleReason: p("provider acme: rate limit"), NextWakeup: p(time.Now())}
	q := url.Values{"status": {"failed"}, "kind": {"renewal"}}
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	ov := &api.Overview{Minutes: 3, Since: t0, Statuses: map[string]int64{"completed": 3, "failed": 2, "waiting": 2},
		ClosedPerMinute: []api.MinuteCount{{At: t0, Completed: 1}, {At: t0.Add(time.Minute), Completed: 2, Failed: 1}, {At: t0.Add(2 * time.Minute), Failed: 1}},
		Failures:        []api.ErrorTypeCount{{ErrorType: "CardDeclined", Count: 2}}}
	cases := []renderCase{
		{"signin", "layout", map[string]any{"Error": "token: unknown"}, []string{"Sign in", "token: unknown"}},
		{"operations", "layout", map[string]any{"Filter": q, "Live": true, "Poll": "every 5s", "Self": "/ui/operations?status=failed",
			"Items": []api.OperationSummary{{Id: "op-1", Kind: "renewal", Status: api.StatusFailed, Route: api.RouteGraft,
				LastError: &api.ErrorInfo{Message: "card declined", Step: p("charge")}, Conditions: &[]string{"needs_operator"}}},
			"Counts": []statusCount{{Status: "failed", Count: 3, Href: "/ui/operations?status=failed", Active: true},
				{Status: "completed", Count: api.CountCap, AtLeast: true, Href: "/ui/operations?status=completed"}},
			"Next": "/ui/operations?cursor=x"},
			[]string{"op-1", "card declined", "needs_operator", `hx-trigger="every 5s"`, "Next page", "Pause", "failed <b>3</b>", "completed <b>10,000&#43;</b>"}},
		{"operations", "ops", map[string]any{"Filter": q, "Live": false, "Items": []api.OperationSummary{}}, []string{"No operation matches", "Resume live updates"}},
		{"operation", "layout", map[string]any{"Op": op, "ID": op.Id, "Events": ev, "Timeline": buildTimeline(ev, time.Now()), "Open": false,
			"RelaunchPreview": newRelaunchPreview(&api.RelaunchResult{Reused: []api.StepRef{{Name: "check"}}, Rerun: []api.StepRef{{Name: "charge"}}}, ""),
			"CancelResult":    &api.CancelResult{RefundPlan: &[]api.Compensation{{Step: "s2", Activity: p("charge"), Undo: "refund", Status: "pending"}}}},
			[]string{"<svg", "bar failed", "mark action", "card declined", "Legacy row", "refund undoes charge", "Relaunch", "runs again 1",
				"<th>version</th><td>618003431433</td>", "<th>attempts</th><td>2</td>", "<th>ratio</th><td>0.5</td>", "<th>runner</th><td></td>",
				"<th>tags</th><td>[&#34;a&#34;]</td>"}},
		{"operation", "layout", map[string]any{"Op": retrying, "ID": retrying.Id, "Events": fixtureAttempts(), "Timeline": buildTimeline(fixtureAttempts(), time.Now()), "Open": true},
			[]string{`rect class="bar failed" data-step="check"`, `rect class="bar ok" data-step="check"`, `rect class="bar lost"`, `rect class="bar snoozed"`,
				"check (attempt 2)", "charge (attempt 1, lost)", "renew (snoozed)", "provider acme: rate limit",
				`<dd id="attempt">2 of 4</dd>`, `<dd id="waiting-for">retry</dd>`, "Busy: registry busy"}},
		{"operation", "now", map[string]any{"Op": throttled}, []string{`<dd id="waiting-for">throttle (provider acme: rate limit)</dd>`, `<dd id="attempt">1 of unlimited</dd>`}},
		{"operations", "layout", map[string]any{"Filter": url.Values{"status": {"retrying"}}, "Live": false, "Self": "/ui/operations?status=retrying",
			"Items":  []api.OperationSummary{{Id: "op-2", Kind: "renewal", Status: api.StatusWaiting, Route: api.RouteGraft, Conditions: &[]string{"retrying"}}},
			"Counts": []statusCount{{Status: "retrying", Count: 1, Href: "/ui/operations?status=retrying", Active: true}, {Status: "throttled", Count: 2, Href: "/ui/operations?status=throttled"}}},
			[]string{`<option value="retrying">`, `<option value="throttled">`, `class="st-retrying"`, "throttled <b>2</b>", `badge cond">retrying`}},
		{"operation", "layout", map[string]any{"Op": op, "ID": op.Id, "Events": ev, "Open": true, "Live": true, "Poll": "every 5s"},
			[]string{"Preview cancellation", "Send signal", "confirm"}},
		{"operation", "layout", map[string]any{"ID": "nope", "Error": "operation not found"}, []string{"operation not found"}},
		// The signal form alone (htmx's HX-Target) with a signal chosen:
		// selected, its hint marked, the payload and reason as given.
		{"operation", "signal-form", map[string]any{"Op": op, "Open": true, "SignalName": cancel.OperatorSignal,
			"SignalPayload": `{"action":"retry"}`, "SignalReason": "phoned"},
			[]string{`<option value="graft.cancel.operator" selected>`, `<tr data-signal="graft.cancel.operator" class="selected">`,
				`>{&#34;action&#34;:&#34;retry&#34;}</textarea>`, `id="signal-reason" required value="phoned"`}},
		// graft server registers none of the workflows: the signal box says
		// why it offers only cancel's operator signal when no worker
		// published the kind's signals...
		{"operation", "layout", map[string]any{"Op": op, "ID": op.Id, "Events": ev, "Open": true, "SignalsFrom": "none"},
			[]string{`id="signal-note"`, "This server does not register the workflow <code>renewal</code>, and no worker serving it has published its signals",
				"so it offers only cancel's operator signal"}},
		// ... and where the signals it offers come from when one did.
		{"operation", "layout", map[string]any{"Op": published, "ID": op.Id, "Events": ev, "Open": true, "SignalsFrom": "published"},
			[]string{`id="signal-note"`, "This server does not register the workflow <code>renewal</code>: it offers the signals its workers published (by w-7 (graft@v1), 2026-12-07 01:02:03 UTC)",
				// each signal's description and payload shape, the first selected
				`<tr data-signal="confirm" class="selected"><th><code>confirm</code></th>`, "the customer confirms",
				`<code class="shape">{&#34;approved&#34;?: boolean, &#34;note&#34;?: string | null}</code>`,
				`href="/ui/operations/op-1?live=0&amp;signal=confirm#signal-form"`,
				`<code class="shape">{&#34;action&#34;?: &#34;retry&#34; | &#34;resolve&#34;, &#34;note&#34;?: string, &#34;step&#34;?: string}</code>`,
				`href="/ui/operations/op-1?live=0&amp;signal=graft.cancel.operator#signal-form"`,
				"checks a payload against their JSON Schema", `<option value="confirm" selected>`}},
		// A relaunch from a signal receives it again: the preview says so,
		// and does not count it among the steps that run again.
		{"operation", "layout", map[string]any{"Op": op, "ID": op.Id, "Events": ev, "Open": false, "RelaunchFrom": "confirm", "RelaunchReason": "card updated",
			"RelaunchPreview": newRelaunchPreview(&api.RelaunchResult{Reused: []api.StepRef{{Name: "check"}},
				Rerun: []api.StepRef{{Name: "confirm", Kind: "signal", Redelivered: p(true)}, {Name: "charge", Kind: "activity"}}}, "confirm")},
			[]string{"From step <code>confirm</code>: reuses 1 step(s) <code>check</code>; runs again 1 <code>charge</code>; receives again 1 signal(s) <code>confirm</code>, with the payload the earlier run received: the new run does not wait for a new one.",
				`value="confirm"`, `value="card updated"`, `name="preview" value="1"`}},
		{"flags", "layout", map[string]any{"Admin": true, "Error": "version conflict", "Snapshot": &tasks.Snapshot{Version: 7, Killed: true},
			"Flags": []flagRow{{Flag: &tasks.Flag{Kind: "renewal", DefaultPercent: 5, Version: 3}, Rules: "info=100"}},
			"Audit": []tasks.AuditEntry{{Kind: "renewal", Actor: "ada", Reason: "incident", Old: []byte(`{"killed":false}`), New: []byte(`{"killed":true}`)}}},
			[]string{"Resume all intake", "Stop renewal", "info=100", "incident", "version conflict", `{&#34;killed&#34;:true}`}},
		{"operation", "layout", map[string]any{"Op": op, "ID": op.Id, "Events": ev, "Open": true, "CancelReason": "customer asked",
			"CancelPreview": &api.CancelResult{DryRun: p(true), RefundPlan: &[]api.Compensation{
				{Step: "s2", Activity: p("charge"), StepName: p("charge"), StepStatus: p("completed"), Undo: "refund", Status: "recorded"},
				{Step: "s1", Activity: p("reserve"), StepName: p("reserve"), StepStatus: p("started"), Undo: "release", Status: "recorded"}}}},
			[]string{`id="cancel-preview"`, "refund</b> undoes charge", "completed, will be undone", "possibly done", "Confirm cancellation", `value="customer asked"`}},
		{"operation", "layout", map[string]any{"Op": op, "ID": op.Id, "Events": ev, "Open": true, "CancelReason": "r",
			"CancelPreview": &api.CancelResult{RefundPlanError: p("kind not registered")}},
			[]string{"refund plan cannot be read: kind not registered", "Confirm cancellation"}},
		{"flags", "layout", map[string]any{"Admin": true, "Snapshot": &tasks.Snapshot{Version: 7},
			"Flags": []flagRow{{Flag: &tasks.Flag{Kind: "renewal", DefaultPercent: 5, Version: 3}, Rules: "info=100"}},
			"Preview": flagPreview{Kind: "renewal", Version: 3, DefaultPercent: "10", Rules: "info=100; fr=50", Reason: "more .fr",
				Result: &api.FlagPreview{Kind: "renewal", Scanned: 10000, Limit: 10000, Estimate: true, Before: api.RouteCounts{Graft: 10, Legacy: 90},
					After: api.RouteCounts{Graft: 40, Legacy: 60}, ToGraft: 30, ByKey: []api.KeyPreview{{Key: "fr", Rows: 50, AfterGraft: 25}}}}},
			[]string{`id="flag-preview"`, "an estimate", "moves <b>30</b> rows to graft", "Save this change", `value="info=100; fr=50"`, "Preview change"}},
		// A rule stored before keys the source's transform would change were
		// refused is shown with why it never matches.
		{"flags", "layout", map[string]any{"Admin": true, "Snapshot": &tasks.Snapshot{Version: 7},
			"Flags": []flagRow{{Flag: &tasks.Flag{Kind: "renewal", Version: 3}, Rules: "FR=50", Warning: `rule 1 (FR=50): key "FR" never matches`}}},
			[]string{`<p class="error rules-warning">Never matches: rule 1 (FR=50): key &#34;FR&#34; never matches</p>`}},
		{"flags", "layout", map[string]any{"Admin": true, "Snapshot": &tasks.Snapshot{Version: 7},
			"Preview": flagPreview{Kind: "renewal", DefaultPercent: "10", Error: "no intake source"}},
			[]string{"No preview: no intake source", "Save this change"}},
		{"overview", "layout", map[string]any{"Live": true, "Poll": "every 5s", "Self": "/ui/overview", "Total": int64(7), "Closed": int64(5), "Failed": int64(2),
			"Overview": ov, "Charts": []*chart{statusChart(ov.Statuses), throughputChart(ov.ClosedPerMinute), failuresChart(ov.Failures)}},
			[]string{`id="chart-statuses"`, `id="chart-throughput"`, `id="chart-failures"`, "<svg", "CardDeclined: 2", "rect class=\"bar failed\"", `hx-trigger="every 5s"`, "<b>7</b> operations created"}},
		{"overview", "overview-live", map[string]any{"Live": false, "Overview": &api.Overview{Minutes: 60},
			"Charts": []*chart{statusChart(nil), throughputChart(nil), failuresChart(nil)}},
			[]string{"No operation was created", "No operation closed", "No failure", "Resume live updates"}},
		{"overview", "layout", map[string]any{"Error": "the server failed"}, []string{"the server failed"}},
		{"providers", "layout", map[string]any{"Live": true, "Poll": "every 5s", "Self": "/ui/providers", "Admin": true, "Flash": "limits changed",
			"Providers": []api.Provider{{Key: "registry", InFlight: 3, RecentRate: 12.5, Waiters: 4, UpdatedAt: p(time.Now()),
				Limits: &api.ProviderLimits{Concurrency: 5, Rate: 50, Burst: 1}, Override: &api.ProviderLimits{Concurrency: 5, Rate: 50, Burst: 1}},
				{Key: "dns"}}},
			[]string{`id="provider-registry"`, "3 / 5", "12.5", "override", "not reported yet", `id="limits-registry"`, "Clear override", "limits changed"}},
		{"providers", "providers-live", map[string]any{"Live": false, "Providers": []api.Provider{}}, []string{"No rate-limit key", "Resume live updates"}},
		{"providers", "layout", map[string]any{"Error": "no rate-limit inspector", "Admin": false}, []string{"no rate-limit inspector"}},
	}
	checkRenders(t, pages, staff, cases)
}

// TestUnsignedRequestsGoToSignIn: no cookie, no page; and every answer
// carries the strict policy headers.
func TestUnsignedRequestsGoToSignIn(t *testing.T) {
	u, err := New(Config{API: http.NotFoundHandler()})
	require.NoError(t, err)
	for _, path := range []string{"/ui/operations", "/ui/operations/x"} {
		rec := httptest.NewRecorder()
		u.Handler().ServeHTTP(rec, httptest.NewRequestWithContext(context.Background(), "GET", path, nil))
		require.Equal(t, http.StatusSeeOther, rec.Code, path)
		require.Equal(t, "/ui/signin", rec.Header().Get("Location"))
		require.Contains(t, rec.Header().Get("Content-Security-Policy"), "script-src 'self'")
		require.NotContains(t, rec.Header().Get("Content-Security-Policy"), "unsafe")
	}
}

func TestBuildTimelineScalesToTheAxis(t *testing.T) {
	tl := buildTimeline(fixtureEvents(), time.Now())
	require.Len(t, tl.Rows, 3) // two attempts of charge, one refund
	require.Len(t, tl.Marks, 4)
	require.Equal(t, "failed", tl.Rows[0].Class)
	require.Equal(t, "charge (attempt 2)", tl.Rows[1].Label)
	for _, r := range tl.Rows {
		require.GreaterOrEqual(t, r.X, tlLabelWidth)
		require.LessOrEqual(t, r.X+r.W, tlLabelWidth+tlPlotWidth+tlMinBar)
	}
	require.Nil(t, buildTimeline(nil, time.Now()))
}

func TestParseRulesNamesWhatIsWrong(t *testing.T) {
	rules, err := parseRules(" info=100; fr, be = 50 ;")
	require.NoError(t, err)
	require.Equal(t, []tasks.KeyRule{{Keys: []string{"info"}, Percent: 100}, {Keys: []string{"fr", "be"}, Percent: 50}}, rules)
	require.Equal(t, "info=100; fr,be=50", formatRules(rules))
	_, err = parseRules("info")
	require.ErrorContains(t, err, `rule 1 "info"`)
	_, err = parseRules("info=lots")
	require.ErrorContains(t, err, `percent "lots"`)
}

// TestClosedOperationNowPanel: a closed operation's "now" panel shows when it
// closed and none of the empty rows an open one fills (current step,
// attempt, waiting for, next wake-up, last error).
func TestClosedOperationNowPanel(t *testing.T) {
	pages, err := parseTemplates()
	require.NoError(t, err)
	op := fixtureOperation()
	op.Status, op.Now, op.ClosedAt = api.StatusCompleted, api.NowSummary{}, p(time.Date(2026, 12, 1, 0, 5, 0, 0, time.UTC))
	var b strings.Builder
	require.NoError(t, pages["operation"].ExecuteTemplate(&b, "now", map[string]any{"Op": op}))
	require.Contains(t, b.String(), `<dt>Closed</dt><dd id="closed-at">2026-12-01 00:05:00</dd>`)
	for _, row := range []string{"Current step", "Attempt", "Waiting for", "Next wake-up", "Last error"} {
		require.NotContains(t, b.String(), "<dt>"+row+"</dt>")
	}
}

// TestRouteFilterOffersOnlyGraft: the API lists graft-routed operations only
// and refuses route=legacy, so the filter does not offer legacy.
func TestRouteFilterOffersOnlyGraft(t *testing.T) {
	pages, err := parseTemplates()
	require.NoError(t, err)
	var b strings.Builder
	require.NoError(t, pages["operations"].ExecuteTemplate(&b, "layout", map[string]any{"Filter": url.Values{},
		"Viewer": viewer{Name: "oscar", Role: "operator", CSRF: "tok"}, "Page": "operations", "Items": []api.OperationSummary{}}))
	require.Contains(t, b.String(), `<option value="graft"`)
	require.NotContains(t, b.String(), `<option value="legacy"`)
}
