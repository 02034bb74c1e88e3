package ui

import (
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

// livePage returns the data of a polled page at path with its live-update
// controls (liveData) filled.
func (u *UI) livePage(r *http.Request, path string) map[string]any {
	data := map[string]any{}
	u.liveData(r, path, data)
	return data
}

// overviewPage shows the last hour: operations per status, closed per
// minute and failures by error type, as server-drawn SVG charts.
func (u *UI) overviewPage(w http.ResponseWriter, r *http.Request) {
	if !staffOnly(w, r) {
		return
	}
	data := u.livePage(r, "/ui/overview")
	res, err := u.client.GetOverviewWithResponse(r.Context(), nil)
	ov := answered(u, w, r, "overview", data, res, err)
	if ov == nil {
		return
	}
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
