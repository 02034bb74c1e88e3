package ui

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/graftdev/graft/tasks/api"
)

// bulkReportShown bounds the report lines the job page shows; the download
// has them all.
const bulkReportShown = 500

// bulkForm is a bulk action as the operations page's form (and the
// preview's confirm form, which carries it on) posts it.
type bulkForm struct {
	Scope      string // "selected" or "filter"
	IDs        []string
	Filter     url.Values // the list filters, in the API's names
	Action     string
	SignalName string
	Payload    string
	Rate       string
	Reason     string
	Exclude    string
	FromStep   string // for relaunch: from the first step of this name
}

func parseBulkForm(r *http.Request) bulkForm {
	f := bulkForm{Scope: r.PostFormValue("scope"), IDs: r.PostForm["id"], Filter: url.Values{},
		Action: r.PostFormValue("action"), SignalName: strings.TrimSpace(r.PostFormValue("signal_name")),
		Payload: strings.TrimSpace(r.PostFormValue("payload")), Rate: strings.TrimSpace(r.PostFormValue("rate")),
		Reason: r.PostFormValue("reason"), Exclude: r.PostFormValue("exclude"), FromStep: strings.TrimSpace(r.PostFormValue("from_step"))}
	for _, k := range filterFields {
		if v := strings.TrimSpace(r.PostFormValue("f_" + k)); v != "" {
			f.Filter.Set(k, v)
		}
	}
	return f
}

// splitIDs reads IDs separated by commas, spaces or new lines.
func splitIDs(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\r' || r == '\t' })
}

// request is the API request the form asks for; its errors name the form's
// field.
func (f bulkForm) request(dryRun bool) (api.BulkRequest, error) {
	req := api.BulkRequest{Action: api.BulkAction(f.Action), Reason: f.Reason, DryRun: &dryRun}
	var filter api.BulkFilter
	switch f.Scope {
	case "selected":
		if len(f.IDs) == 0 {
			return req, errors.New("select at least one operation, or choose everything matching the filter")
		}
		ids := f.IDs
		filter.Ids = &ids
	case "filter":
		p, err := listParams(f.Filter)
		if err != nil {
			return req, err
		}
		filter = api.BulkFilter{Status: p.Status, Kind: p.Kind, Key: p.Key, Customer: p.Customer, FailingStep: p.FailingStep,
			ErrorType: p.ErrorType, CreatedAfter: p.CreatedAfter, CreatedBefore: p.CreatedBefore}
		if p.Route != nil {
			filter.Route = (*api.Route)(p.Route)
		}
	default:
		return req, errors.New("scope: choose the selected operations or everything matching the filter")
	}
	req.Filter = &filter
	if f.Rate != "" {
		r, err := strconv.ParseFloat(f.Rate, 64)
		if err != nil {
			return req, fmt.Errorf("rate: %q is not a number of operations per second", f.Rate)
		}
		req.Rate = &r
	}
	if ex := splitIDs(f.Exclude); len(ex) > 0 {
		req.Exclude = &ex
	}
	if f.FromStep != "" {
		req.FromStep = &f.FromStep
	}
	if f.Action == string(api.BulkActionSignal) {
		sig := api.BulkSignal{Name: f.SignalName}
		if f.Payload != "" {
			if !json.Valid([]byte(f.Payload)) {
				return req, errors.New("payload: not valid JSON")
			}
			raw := json.RawMessage(f.Payload)
			sig.Payload = &raw
		}
		req.Signal = &sig
	}
	return req, nil
}

// Hidden lists the form's values as the confirm form's hidden inputs.
func (f bulkForm) Hidden() [][2]string {
	h := [][2]string{{"scope", f.Scope}, {"action", f.Action}, {"signal_name", f.SignalName}, {"payload", f.Payload},
		{"rate", f.Rate}, {"reason", f.Reason}, {"exclude", f.Exclude}, {"from_step", f.FromStep}}
	for _, id := range f.IDs {
		h = append(h, [2]string{"id", id})
	}
	for _, k := range filterFields {
		if v := f.Filter.Get(k); v != "" {
			h = append(h, [2]string{"f_" + k, v})
		}
	}
	return h
}

// Describe says in words which operations the form names.
func (f bulkForm) Describe() string {
	if f.Scope == "selected" {
		return fmt.Sprintf("the %d selected operations", len(f.IDs))
	}
	if len(f.Filter) == 0 {
		return "every operation"
	}
	var parts []string
	for _, k := range filterFields {
		if v := f.Filter.Get(k); v != "" {
			parts = append(parts, k+"="+v)
		}
	}
	return "everything matching " + strings.Join(parts, ", ")
}

// bulkSubmit runs the bulk form: as a dry run (the API's) it shows what
// the action would do, with a form that confirms it; confirmed, it starts
// the bulk job and shows it.
func (u *UI) bulkSubmit(dryRun bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		f := parseBulkForm(r)
		data := map[string]any{"Form": f}
		req, err := f.request(dryRun)
		if err != nil {
			data["Error"] = err.Error()
			u.render(w, r, "bulkpreview", http.StatusBadRequest, data)
			return
		}
		res, err := u.client.CreateBulkJobWithResponse(r.Context(), req)
		if err != nil {
			u.fail(w, r, err)
			return
		}
		switch {
		case dryRun && res.JSON200 != nil:
			data["Preview"] = res.JSON200
			u.render(w, r, "bulkpreview", http.StatusOK, data)
		case !dryRun && res.JSON201 != nil:
			http.Redirect(w, r, "/ui/bulk/"+url.PathEscape(res.JSON201.Id)+"?done=started", http.StatusSeeOther)
		default:
			data["Error"] = problemText(res.ApplicationproblemJSONDefault, res.Body)
			u.render(w, r, "bulkpreview", res.StatusCode(), data)
		}
	}
}

// liveData fills the live-update controls of a page at self.
func (u *UI) liveData(r *http.Request, self string, data map[string]any) {
	q := r.URL.Query()
	q.Del("done")
	data["Live"] = q.Get("live") != "0"
	data["Poll"] = fmt.Sprintf("every %ds", max(1, int(u.cfg.PollInterval.Seconds())))
	with := func(live string) string {
		c := url.Values{}
		for k, v := range q {
			c[k] = v
		}
		c.Del("live")
		if live != "" {
			c.Set("live", live)
		}
		if len(c) == 0 {
			return self
		}
		return self + "?" + c.Encode()
	}
	data["Self"], data["PauseHref"], data["ResumeHref"] = with(q.Get("live")), with("0"), with("")
}

// bulkJobsPage lists bulk jobs, newest first.
func (u *UI) bulkJobsPage(w http.ResponseWriter, r *http.Request) {
	data := map[string]any{}
	u.liveData(r, "/ui/bulk", data)
	res, err := u.client.ListBulkJobsWithResponse(r.Context(), &api.ListBulkJobsParams{})
	jobs := answered(u, w, r, "bulk", data, res, err)
	if jobs == nil {
		return
	}
	data["Jobs"] = jobs.Items
	u.render(w, r, "bulk", http.StatusOK, data)
}

// bulkFlash is what the job page says after an action (by name, so the URL
// cannot put words on the page).
var bulkFlash = map[string]string{"started": "Bulk job started.", "pause": "Pause asked: the job pauses after the operations in hand.",
	"resume": "Resumed.", "stop": "Stop asked: the operations not reached are reported skipped."}

// bulkJobPage shows a job's progress (live until it ends), its controls
// and its report.
func (u *UI) bulkJobPage(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	data := map[string]any{"ID": id}
	u.liveData(r, "/ui/bulk/"+url.PathEscape(id), data)
	data["Flash"] = bulkFlash[r.URL.Query().Get("done")]
	res, err := u.client.GetBulkReportWithResponse(r.Context(), id, &api.GetBulkReportParams{})
	rep := answered(u, w, r, "bulkjob", data, res, err)
	if rep == nil {
		return
	}
	j := rep.Job
	data["Job"] = &j
	finished := j.State == api.BulkStateCompleted || j.State == api.BulkStateStopped
	if finished {
		data["Live"] = false
	}
	data["Finished"] = finished
	if j.ActualRate != nil {
		data["ActualRate"] = fmt.Sprintf("%.1f", *j.ActualRate)
	}
	data["Percent"] = 100
	if j.Total > 0 {
		data["Percent"] = (j.Total - j.Pending) * 100 / j.Total
	}
	items := rep.Items
	if len(items) > bulkReportShown {
		data["More"] = len(items) - bulkReportShown
		items = items[:bulkReportShown]
	}
	data["Items"] = items
	u.render(w, r, "bulkjob", http.StatusOK, data)
}

// bulkControl pauses, resumes, stops or retries the failures of a job.
func (u *UI) bulkControl(w http.ResponseWriter, r *http.Request) {
	id, what := r.PathValue("id"), r.PathValue("what")
	body := api.BulkControl{}
	if reason := strings.TrimSpace(r.PostFormValue("reason")); reason != "" {
		body.Reason = &reason
	}
	var res apiReply
	var err error
	next := id
	switch what {
	case "pause":
		res, err = u.client.PauseBulkJobWithResponse(r.Context(), id, body)
	case "resume":
		res, err = u.client.ResumeBulkJobWithResponse(r.Context(), id, body)
	case "stop":
		res, err = u.client.StopBulkJobWithResponse(r.Context(), id, body)
	case "retry-failed":
		var retry *api.RetryFailedBulkJobResponse
		retry, err = u.client.RetryFailedBulkJobWithResponse(r.Context(), id, api.BulkRetry{Reason: body.Reason})
		if err == nil && retry.JSON201 != nil {
			next, what = retry.JSON201.Id, "started"
		}
		res = retry
	default:
		http.NotFound(w, r)
		return
	}
	if err != nil {
		u.fail(w, r, err)
		return
	}
	if status := res.StatusCode(); status >= 300 {
		data := map[string]any{"ID": id, "Error": problemText(res.GetApplicationproblemJSONDefault(), res.GetBody())}
		u.liveData(r, "/ui/bulk/"+url.PathEscape(id), data)
		data["Live"] = false
		u.render(w, r, "bulkjob", status, data)
		return
	}
	http.Redirect(w, r, "/ui/bulk/"+url.PathEscape(next)+"?done="+what, http.StatusSeeOther)
}

// bulkReport downloads a job's report as CSV or JSON.
func (u *UI) bulkReport(w http.ResponseWriter, r *http.Request) {
	id, format := r.PathValue("id"), api.GetBulkReportParamsFormat(r.PathValue("format"))
	if !format.Valid() {
		http.NotFound(w, r)
		return
	}
	res, err := u.client.GetBulkReportWithResponse(r.Context(), id, &api.GetBulkReportParams{Format: &format})
	if err != nil {
		u.fail(w, r, err)
		return
	}
	if res.StatusCode() != http.StatusOK {
		http.Error(w, "ui: "+problemText(res.ApplicationproblemJSONDefault, res.Body), res.StatusCode())
		return
	}
	ct := "application/json"
	if format == api.ReportCSV {
		ct = "text/csv; charset=utf-8"
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s.%s"`, strings.NewReplacer(`"`, "", "/", "").Replace(id), format))
	_, _ = w.Write(res.Body)
}
