package ui

import (
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/graftdev/graft/tasks/api"
)

// pageNames are the pages; each is templates/<name>.html with the layout.
var pageNames = []string{"signin", "operations", "operation", "flags", "overview", "providers", "bulk", "bulkjob", "bulkpreview"}

// statusOrder is the order of the per-status counts on the operations page.
var statusOrder = []string{"pending", "running", "waiting", "retrying", "throttled", "waiting_signal", "needs_operator", "failed", "cancelled", "completed"}

func parseTemplates() (map[string]*template.Template, error) {
	funcs := template.FuncMap{
		"when": func(t *time.Time) string {
			if t == nil || t.IsZero() {
				return ""
			}
			return t.UTC().Format("2006-01-02 15:04:05")
		},
		"at":  func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05") },
		"str": func(s *string) string { return deref(s) },
		// statuses are the list's status filter values.
		"statuses": func() []string { return statusOrder },
		"num": func(n *int) string {
			if n == nil {
				return ""
			}
			return strconv.Itoa(*n)
		},
		"int": func(n *int) int {
			if n == nil {
				return 0
			}
			return *n
		},
		"raw": func(r *json.RawMessage) string {
			if r == nil {
				return ""
			}
			var v any
			if json.Unmarshal(*r, &v) != nil {
				return string(*r)
			}
			b, _ := json.MarshalIndent(v, "", "  ")
			return string(b)
		},
		// cell shows a legacy row's value as the table holds it: a whole
		// number in full (the row comes as JSON, whose numbers decode to
		// float64, which {{.}} prints as 6.18003431433e+11), null as
		// nothing, an array or object as JSON.
		"cell": func(v any) string {
			switch x := v.(type) {
			case nil:
				return ""
			case string:
				return x
			case json.Number: // a legacy row's number, exactly as sent (api.LegacyRow)
				return x.String()
			case float64:
				return strconv.FormatFloat(x, 'f', -1, 64)
			case bool:
				return strconv.FormatBool(x)
			}
			b, err := json.Marshal(v)
			if err != nil {
				return fmt.Sprint(v)
			}
			return string(b)
		},
		// shape and payloadTemplate describe a signal's payload from its
		// JSON Schema (signalhint.go); chosenSignal is the signal the form
		// selects: the one named, or else the first.
		"shape":           schemaShape,
		"payloadTemplate": schemaTemplate,
		"chosenSignal": func(name any, decls *[]api.SignalDecl) string {
			if s, ok := name.(string); ok && s != "" {
				return s
			}
			if decls == nil || len(*decls) == 0 {
				return ""
			}
			return (*decls)[0].Name
		},
		"list": func(l *[]string) []string {
			if l == nil {
				return nil
			}
			return *l
		},
	}
	pages := map[string]*template.Template{}
	for _, name := range pageNames {
		t, err := template.New(name).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/parts/*.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("ui: template %s: %w", name, err)
		}
		pages[name] = t
	}
	return pages, nil
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// filterFields are the list filters the page keeps in its URL, in the API's
// parameter names.
var filterFields = []string{"status", "kind", "key", "customer", "route", "failing_step", "error_type", "created_after", "created_before"}

// listParams turns the page's query into the API's list parameters; a value
// the API would refuse is reported by the API itself, naming the field.
func listParams(q url.Values) (api.ListOperationsParams, error) {
	var p api.ListOperationsParams
	opt := func(name string) *string {
		if v := strings.TrimSpace(q.Get(name)); v != "" {
			return &v
		}
		return nil
	}
	if v := opt("status"); v != nil {
		var st []api.StatusFilter
		for _, s := range strings.Split(*v, ",") {
			st = append(st, api.StatusFilter(strings.TrimSpace(s)))
		}
		p.Status = &st
	}
	p.Kind, p.Key, p.Customer = opt("kind"), opt("key"), opt("customer")
	p.FailingStep, p.ErrorType, p.Cursor = opt("failing_step"), opt("error_type"), opt("cursor")
	if v := opt("route"); v != nil {
		r := api.ListOperationsParamsRoute(*v)
		p.Route = &r
	}
	for _, f := range []struct {
		name string
		dst  **time.Time
	}{{"created_after", &p.CreatedAfter}, {"created_before", &p.CreatedBefore}} {
		if v := opt(f.name); v != nil {
			t, err := parseWhen(*v)
			if err != nil {
				return p, fmt.Errorf("%s: %w", f.name, err)
			}
			*f.dst = &t
		}
	}
	return p, nil
}

// parseWhen accepts RFC 3339 or the browser's datetime-local format (UTC).
func parseWhen(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339, "2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not a time (use 2006-01-02T15:04 or RFC 3339)", s)
}

// statusCount is one status's count, linked to the list filtered on it.
type statusCount struct {
	Status string
	Count  int64
	// AtLeast: the API's count stopped at its cap (shown "10,000+").
	AtLeast bool
	Href    string
	Active  bool
}

// Shown is the count as the page writes it: with thousands separators, and
// a "+" when it is a lower bound.
func (c statusCount) Shown() string {
	d := strconv.FormatInt(c.Count, 10)
	for i := len(d) - 3; i > 0; i -= 3 {
		d = d[:i] + "," + d[i:]
	}
	if c.AtLeast {
		d += "+"
	}
	return d
}

func (u *UI) operationsPage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	data := map[string]any{"Filter": q, "Live": q.Get("live") != "0", "Poll": fmt.Sprintf("every %ds", int(u.cfg.PollInterval.Seconds()))}
	p, err := listParams(q)
	if err != nil {
		data["Error"] = err.Error()
		u.render(w, r, "operations", http.StatusBadRequest, data)
		return
	}
	res, err := u.client.ListOperationsWithResponse(r.Context(), &p)
	page := answered(u, w, r, "operations", data, res, err)
	if page == nil {
		return
	}
	data["Items"] = page.Items
	var counts []statusCount
	var atLeast []string
	if page.CountsAtLeast != nil {
		atLeast = *page.CountsAtLeast
	}
	for _, st := range statusOrder {
		n, ok := page.Counts[st]
		if !ok {
			continue
		}
		counts = append(counts, statusCount{Status: st, Count: n, AtLeast: slices.Contains(atLeast, st), Href: withQuery(q, "status", st, "cursor", ""), Active: q.Get("status") == st})
	}
	data["Counts"] = counts
	data["AllHref"] = withQuery(q, "status", "", "cursor", "")
	if page.NextCursor != nil {
		data["Next"] = withQuery(q, "cursor", *page.NextCursor)
	}
	data["First"] = q.Get("cursor") != ""
	data["FirstHref"] = withQuery(q, "cursor", "")
	data["PauseHref"] = withQuery(q, "live", "0")
	data["ResumeHref"] = withQuery(q, "live", "")
	data["Self"] = withQuery(q)
	u.render(w, r, "operations", http.StatusOK, data)
}

// withQuery returns the operations page's URL with q changed by pairs of
// name and value (an empty value removes the parameter).
func withQuery(q url.Values, pairs ...string) string {
	c := url.Values{}
	for k, v := range q {
		c[k] = slices.Clone(v)
	}
	for i := 0; i+1 < len(pairs); i += 2 {
		if pairs[i+1] == "" {
			c.Del(pairs[i])
		} else {
			c.Set(pairs[i], pairs[i+1])
		}
	}
	if len(c) == 0 {
		return "/ui/operations"
	}
	return "/ui/operations?" + c.Encode()
}

func problemText(p *api.Problem, body []byte) string {
	if p == nil {
		return strings.TrimSpace(string(body))
	}
	s := p.Title
	if p.Detail != nil && *p.Detail != "" {
		s += ": " + *p.Detail
	}
	if p.Field != nil && *p.Field != "" {
		s += " (field " + *p.Field + ")"
	}
	return s
}

// operationData loads what the operation page shows: the operation, its
// timeline, and the previews of its actions.
func (u *UI) operationData(r *http.Request, id string) (map[string]any, int, error) {
	ctx := r.Context()
	res, err := u.client.GetOperationWithResponse(ctx, id)
	if err != nil {
		return nil, 0, err
	}
	if res.JSON200 == nil {
		return map[string]any{"Error": problemText(res.ApplicationproblemJSONDefault, res.Body), "ID": id}, res.StatusCode(), nil
	}
	op := res.JSON200
	data := map[string]any{"Op": op, "ID": id, "Poll": fmt.Sprintf("every %ds", int(u.cfg.PollInterval.Seconds())), "Live": r.URL.Query().Get("live") != "0"}
	hist, err := u.client.GetOperationHistoryWithResponse(ctx, id)
	if err != nil {
		return nil, 0, err
	}
	if hist.JSON200 != nil {
		data["Events"] = hist.JSON200.Events
		data["Timeline"] = buildTimeline(hist.JSON200.Events, time.Now())
	} else {
		data["HistoryError"] = problemText(hist.ApplicationproblemJSONDefault, hist.Body)
	}
	open := op.Status == api.StatusPending || op.Status == api.StatusRunning || op.Status == api.StatusWaiting
	data["Open"] = open
	// graft server holds none of the workflows: the signal box says where
	// the kind's signals come from (its workers' publication), or why it
	// offers only cancel's operator signal (nothing published).
	if op.KindRegistered != nil && !*op.KindRegistered {
		data["SignalsFrom"] = string(api.SignalsNone)
		if op.SignalsSource != nil {
			data["SignalsFrom"] = string(*op.SignalsSource)
		}
	}
	if !open && viewerOf(ctx).CanAct() {
		// The relaunch preview: which steps a relaunch reuses and which run again.
		dry := true
		pre, err := u.client.RelaunchOperationWithResponse(ctx, id, api.RelaunchRequest{DryRun: &dry, Reason: "preview"})
		if err != nil {
			return nil, 0, err
		}
		switch p := pre.ApplicationproblemJSONDefault; {
		case pre.JSON200 != nil:
			data["RelaunchPreview"] = newRelaunchPreview(pre.JSON200, "")
		case p != nil && p.Type == api.ProblemNoFailedStep:
			// The usual case for a completed or cancelled operation, not an
			// error: say what the form needs in its own words.
			data["RelaunchPreviewNote"] = "Nothing failed in its latest run, so there is no default: name the step to run again from."
		default:
			data["RelaunchPreviewError"] = problemText(p, pre.Body)
		}
	}
	return data, http.StatusOK, nil
}

func (u *UI) operationPage(w http.ResponseWriter, r *http.Request) {
	data, status, err := u.operationData(r, r.PathValue("id"))
	if err != nil {
		u.fail(w, r, err)
		return
	}
	if msg := r.URL.Query().Get("done"); msg != "" {
		data["Flash"] = msg
	}
	if op, ok := data["Op"].(*api.Operation); ok {
		signalChoice(op, r.URL.Query(), data)
	}
	u.render(w, r, "operation", status, data)
}

// afterAction shows the operation page again with the action's outcome:
// a redirect on success (so a reload does not repeat it), the page with the
// API's error otherwise.
func (u *UI) afterAction(w http.ResponseWriter, r *http.Request, id string, status int, body []byte, p *api.Problem, ok string, extra map[string]any) {
	if status >= 200 && status < 300 {
		if extra == nil {
			http.Redirect(w, r, "/ui/operations/"+url.PathEscape(id)+"?done="+url.QueryEscape(ok), http.StatusSeeOther)
			return
		}
	}
	data, st, err := u.operationData(r, id)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	if status >= 300 {
		data["ActionError"] = problemText(p, body)
		st = status
	} else {
		data["Flash"] = ok
	}
	for k, v := range extra {
		data[k] = v
	}
	u.render(w, r, "operation", st, data)
}

// cancelAction previews a cancellation (preview=1: the API's dry run, whose
// refund plan the page shows with a confirm button) or makes it.
func (u *UI) cancelAction(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	reason := r.PostFormValue("reason")
	preview := r.PostFormValue("preview") == "1"
	req := api.CancelRequest{Reason: reason}
	if preview {
		req.DryRun = &preview
	}
	res, err := u.client.CancelOperationWithResponse(r.Context(), id, req)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	if preview {
		var extra map[string]any
		if res.JSON200 != nil {
			extra = map[string]any{"CancelPreview": res.JSON200, "CancelReason": reason}
		}
		u.afterAction(w, r, id, res.StatusCode(), res.Body, res.ApplicationproblemJSONDefault, "", extra)
		return
	}
	var extra map[string]any
	if res.JSON200 != nil {
		extra = map[string]any{"CancelResult": res.JSON200}
	}
	u.afterAction(w, r, id, res.StatusCode(), res.Body, res.ApplicationproblemJSONDefault, "cancellation requested", extra)
}

// relaunchPreview is a relaunch's dry run as the operation page says it.
type relaunchPreview struct {
	// FromStep is the step named to relaunch from; "" from before the last
	// failure.
	FromStep string
	// Reused are the steps the new run reuses, Rerun those it runs again,
	// Again the signals it receives again (with the earlier run's payload,
	// not waited for).
	Reused, Rerun, Again []string
}

func newRelaunchPreview(r *api.RelaunchResult, from string) *relaunchPreview {
	p := &relaunchPreview{FromStep: from}
	for _, s := range r.Reused {
		p.Reused = append(p.Reused, s.Name)
	}
	for _, s := range r.Rerun {
		if s.Redelivered != nil && *s.Redelivered {
			p.Again = append(p.Again, s.Name)
		} else {
			p.Rerun = append(p.Rerun, s.Name)
		}
	}
	return p
}

// relaunchAction previews a relaunch (preview=1: the API's dry run with the
// form's step, shown above the form, which keeps what was typed) or makes
// it.
func (u *UI) relaunchAction(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	req := api.RelaunchRequest{Reason: r.PostFormValue("reason")}
	from := strings.TrimSpace(r.PostFormValue("from_step"))
	if from != "" {
		req.FromStep = &from
	}
	preview := r.PostFormValue("preview") == "1"
	if preview {
		req.DryRun = &preview
	}
	res, err := u.client.RelaunchOperationWithResponse(r.Context(), id, req)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	if preview {
		extra := map[string]any{"RelaunchReason": req.Reason, "RelaunchFrom": from}
		if res.JSON200 != nil {
			extra["RelaunchPreview"] = newRelaunchPreview(res.JSON200, from)
		}
		u.afterAction(w, r, id, res.StatusCode(), res.Body, res.ApplicationproblemJSONDefault, "", extra)
		return
	}
	u.afterAction(w, r, id, res.StatusCode(), res.Body, res.ApplicationproblemJSONDefault, "relaunched", nil)
}

func (u *UI) signalAction(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	req := api.SignalRequest{Name: r.PostFormValue("name"), Reason: r.PostFormValue("reason")}
	// A refused signal shows the form again as it was sent: the signal
	// selected, the payload and reason as typed.
	typed := map[string]any{"SignalName": req.Name, "SignalPayload": r.PostFormValue("payload"), "SignalReason": req.Reason}
	if s := strings.TrimSpace(r.PostFormValue("payload")); s != "" {
		if !json.Valid([]byte(s)) {
			u.afterAction(w, r, id, http.StatusBadRequest, nil, &api.Problem{Title: "payload is not valid JSON", Field: strPtr("payload")}, "", typed)
			return
		}
		raw := json.RawMessage(s)
		req.Payload = &raw
	}
	res, err := u.client.SignalOperationWithResponse(r.Context(), id, req)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	if res.StatusCode() < 300 {
		typed = nil // sent: the redirect shows the page afresh
	}
	u.afterAction(w, r, id, res.StatusCode(), res.Body, res.ApplicationproblemJSONDefault, "signal "+req.Name+" sent", typed)
}

func strPtr(s string) *string { return &s }
