package ui

import (
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/tasks/api"
)

// TestBulkTemplatesRender renders the bulk pages and fragments with fixture
// data: the operations page's bulk form, the preview, the jobs list and a
// job with its controls and report.
func TestBulkTemplatesRender(t *testing.T) {
	pages, err := parseTemplates()
	require.NoError(t, err)
	staff := viewer{Name: "oscar", Role: "operator", CSRF: "tok"}
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	job := &api.BulkJob{Id: "bulk-1", Action: api.BulkActionRelaunch, State: api.BulkStateRunning, Reason: "registry back", Rate: 50,
		ActualRate: p(48.5), Total: 10, Done: 4, Failed: 1, Skipped: 1, Pending: 4, CreatedAt: t0, CreatedBy: "oscar"}
	finished := *job
	finished.State, finished.Pending, finished.Done, finished.FinishedAt = api.BulkStateCompleted, 0, 8, p(t0.Add(time.Minute))
	finished.FromStep = p("charge")
	form := bulkForm{Scope: "filter", Filter: url.Values{"status": {"failed"}}, Action: "relaunch", Rate: "50", Reason: "registry back", FromStep: "charge"}
	items := []api.BulkReportItem{{Id: "op-1", Outcome: "done", NewRunId: p("run-2"), At: p(t0)},
		{Id: "op-2", Outcome: "failed", Detail: p("provider down")}, {Id: "op-3", Outcome: "skipped", Detail: p("completed")}}
	cases := []renderCase{
		{"operations", "layout", map[string]any{"Filter": url.Values{"status": {"failed"}, "cursor": {"x"}}, "Live": false,
			"Items": []api.OperationSummary{{Id: "op-1", Kind: "renewal", Status: api.StatusFailed, Route: api.RouteGraft}}},
			[]string{`id="bulk-form"`, `name="f_status" value="failed"`, `form="bulk-form"`, `value="op-1"`, "everything matching the filter", `name="csrf" value="tok"`, "Bulk jobs"}},
		{"bulkpreview", "layout", map[string]any{"Form": form, "Preview": &api.BulkPreview{Action: api.BulkActionRelaunch, Matched: 3, Count: 2,
			Sample: []api.BulkItemRef{{Id: "op-1", Kind: "renewal", Status: api.StatusFailed,
				Relaunch: &api.BulkRelaunchPlan{FromStep: "charge", FromSeq: 3, Reused: 2, Rerun: 4}}},
			Ineligible: []api.BulkIneligible{{Id: "op-3", Why: "completed"}}, IneligibleCount: 1}},
			[]string{`id="bulk-count"`, "<th>Runs again from</th>", "<td>charge (#3)</td><td>2</td><td>4</td>", "The first 1 of 2.", "<b>2</b> of 3", "op-3", "completed", `id="bulk-confirm"`, `name="f_status" value="failed"`, `name="reason" value="registry back"`,
				"Start: relaunch 2 operations from step charge at 50/s", "everything matching status=failed", `name="from_step" value="charge"`}},
		{"bulkpreview", "layout", map[string]any{"Form": bulkForm{Scope: "selected", IDs: []string{"a"}, Action: "cancel"}, "Error": "Invalid request: is required (field reason)"},
			[]string{`id="bulk-error"`, "field reason", "the 1 selected operations"}},
		{"bulkpreview", "layout", map[string]any{"Form": form, "Preview": &api.BulkPreview{Action: api.BulkActionCancel}}, []string{"Nothing to do"}},
		{"bulk", "layout", map[string]any{"Live": true, "Poll": "every 5s", "Self": "/ui/bulk", "Jobs": []api.BulkJob{*job}},
			[]string{`href="/ui/bulk/bulk-1"`, "4 done, 1 skipped of 10", `hx-trigger="every 5s"`, "Pause"}},
		{"bulk", "bulk-live", map[string]any{"Live": false, "Jobs": []api.BulkJob{}}, []string{"No bulk job yet", "Resume live updates"}},
		{"bulkjob", "layout", map[string]any{"ID": "bulk-1", "Job": job, "Live": true, "Poll": "every 5s", "Self": "/ui/bulk/bulk-1", "Percent": 60,
			"ActualRate": "48.5", "Items": items, "Flash": "Bulk job started."},
			[]string{`id="bulk-state"`, "running", `value="60"`, "48.5/s so far", `id="bulk-pause"`, `id="bulk-stop"`, `id="report-csv"`, "provider down", "run-2", "Bulk job started.", `hx-trigger="every 5s"`}},
		{"bulkjob", "bulkjob-live", map[string]any{"ID": "bulk-1", "Job": &finished, "Finished": true, "Percent": 100, "Items": items, "More": 7},
			[]string{"completed", `id="bulk-retry"`, "Retry the 1 failed", "7 more in the download", `<dd id="bulk-from-step">charge</dd>`}},
		{"bulkjob", "layout", map[string]any{"ID": "bulk-x", "Error": "Not found"}, []string{"Not found"}},
	}
	checkRenders(t, pages, staff, cases)
	// A viewer gets no bulk form and no job controls.
	var b strings.Builder
	require.NoError(t, pages["bulkjob"].ExecuteTemplate(&b, "layout", map[string]any{"ID": "bulk-1", "Job": job, "Viewer": viewer{Name: "vera", Role: "viewer"}, "Page": "bulkjob"}))
	require.NotContains(t, b.String(), "bulk-controls")
	b.Reset()
	require.NoError(t, pages["operations"].ExecuteTemplate(&b, "layout", map[string]any{"Filter": url.Values{}, "Viewer": viewer{Name: "vera", Role: "viewer"}, "Page": "operations"}))
	require.NotContains(t, b.String(), "bulk-form")
}

// TestBulkFormRequest: the form's fields become the API's request, and a
// form that names nothing is refused with what to do.
func TestBulkFormRequest(t *testing.T) {
	r := httptest.NewRequest("POST", "/ui/bulk/preview", strings.NewReader(
		"scope=filter&f_status=failed,cancelled&f_kind=renewal&action=signal&signal_name=confirm&payload=%7B%22approved%22%3Atrue%7D&rate=20&reason=r&exclude=a,+b"))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	f := parseBulkForm(r)
	req, err := f.request(true)
	require.NoError(t, err)
	require.Equal(t, []api.StatusFilter{"failed", "cancelled"}, *req.Filter.Status)
	require.Equal(t, "renewal", *req.Filter.Kind)
	require.Equal(t, "confirm", req.Signal.Name)
	require.JSONEq(t, `{"approved":true}`, string(*req.Signal.Payload))
	require.EqualValues(t, 20, *req.Rate)
	require.Equal(t, []string{"a", "b"}, *req.Exclude)
	require.True(t, *req.DryRun)
	_, err = bulkForm{Scope: "selected"}.request(false)
	require.ErrorContains(t, err, "select at least one")
	_, err = bulkForm{Scope: "filter", Rate: "fast"}.request(false)
	require.ErrorContains(t, err, "rate")
	_, err = bulkForm{Scope: "filter", Action: "signal", Payload: "{"}.request(false)
	require.ErrorContains(t, err, "payload")
}
