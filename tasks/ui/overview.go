package ui

import (
	"fmt"
	"net/http"
)

// staffOnly answers 404 to a customer, for whom the staff pages (flags,
// providers, overview) do not exist; the API refuses them too.
func staffOnly(w http.ResponseWriter, r *http.Request) bool {
	if viewerOf(r.Context()).Role == "customer" {
		http.NotFound(w, r)
		return false
	}
	return true
}

// livePage fills what a polled page needs: whether it is live, the poll
// interval, and the links that pause and resume it.
func (u *UI) livePage(r *http.Request, path string) map[string]any {
	live := r.URL.Query().Get("live") != "0"
	return map[string]any{"Live": live, "Poll": fmt.Sprintf("every %ds", int(u.cfg.PollInterval.Seconds())),
		"Self": path, "PauseHref": path + "?live=0", "ResumeHref": path}
}

// overviewPage shows the last hour: operations per status, closed per
// minute and failures by error type, as server-drawn SVG charts.
func (u *UI) overviewPage(w http.ResponseWriter, r *http.Request) {
	if !staffOnly(w, r) {
		return
	}
	data := u.livePage(r, "/ui/overview")
	res, err := u.client.GetOverviewWithResponse(r.Context(), nil)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	if res.JSON200 == nil {
		data["Error"] = problemText(res.ApplicationproblemJSONDefault, res.Body)
		u.render(w, r, "overview", res.StatusCode(), data)
		return
	}
	ov := res.JSON200
	var total, closed, failed int64
	for _, n := range ov.Statuses {
		total += n
	}
	for _, m := range ov.ClosedPerMinute {
		closed += m.Completed + m.Failed + m.Cancelled
		failed += m.Failed
	}
	data["Overview"], data["Total"], data["Closed"], data["Failed"] = ov, total, closed, failed
	data["Charts"] = []*chart{statusChart(ov.Statuses), throughputChart(ov.ClosedPerMinute), failuresChart(ov.Failures)}
	u.render(w, r, "overview", http.StatusOK, data)
}
