package ui

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/graftdev/graft/tasks/api"
)

// providersPage lists each rate-limit key: its limits, calls in flight,
// recent rate and throttled waiters; admins change a key's limits there.
func (u *UI) providersPage(w http.ResponseWriter, r *http.Request) {
	if !staffOnly(w, r) {
		return
	}
	data := u.livePage(r, "/ui/providers")
	if msg := r.URL.Query().Get("done"); msg != "" {
		data["Flash"] = msg
	}
	u.renderProviders(w, r, http.StatusOK, data)
}

func (u *UI) renderProviders(w http.ResponseWriter, r *http.Request, status int, data map[string]any) {
	res, err := u.client.ListProvidersWithResponse(r.Context())
	list := answered(u, w, r, "providers", data, res, err)
	if list == nil {
		return
	}
	data["Providers"] = list.Items
	data["Admin"] = viewerOf(r.Context()).Role == "admin"
	u.render(w, r, "providers", status, data)
}

// optionalNumber reads a form field: nil when empty, an error naming the
// field when it is not a number.
func optionalNumber[T int | float64](r *http.Request, field string) (*T, error) {
	s := strings.TrimSpace(r.PostFormValue(field))
	if s == "" {
		return nil, nil
	}
	var v T
	switch p := any(&v).(type) {
	case *int:
		n, err := strconv.Atoi(s)
		if err != nil {
			return nil, fmt.Errorf("%s: %q is not a whole number", field, s)
		}
		*p = n
	case *float64:
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: %q is not a number", field, s)
		}
		*p = f
	}
	return &v, nil
}

// setProviderAction changes (or clears) a key's limits through the API,
// which refuses anyone but an admin.
func (u *UI) setProviderAction(w http.ResponseWriter, r *http.Request) {
	if !staffOnly(w, r) {
		return
	}
	key := r.PathValue("key")
	req := api.ProviderLimitsChange{Reason: r.PostFormValue("reason")}
	fail := func(status int, msg string) {
		data := u.livePage(r, "/ui/providers")
		data["Live"] = false
		data["Error"] = msg
		u.renderProviders(w, r, status, data)
	}
	if r.PostFormValue("op") == "clear" {
		req.Clear = ptrTo(true)
	} else {
		var err error
		if req.Concurrency, err = optionalNumber[int](r, "concurrency"); err == nil {
			if req.Rate, err = optionalNumber[float64](r, "rate"); err == nil {
				req.Burst, err = optionalNumber[int](r, "burst")
			}
		}
		if err != nil {
			fail(http.StatusBadRequest, err.Error())
			return
		}
	}
	res, err := u.client.SetProviderLimitsWithResponse(r.Context(), key, req)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	if res.JSON200 == nil {
		fail(res.StatusCode(), problemText(res.ApplicationproblemJSONDefault, res.Body))
		return
	}
	msg := "limits of " + key + " changed; every worker applies them within about a second"
	if req.Clear != nil {
		msg = "override of " + key + " cleared; the workers' configured limits apply again"
	}
	http.Redirect(w, r, "/ui/providers?live=0&done="+url.QueryEscape(msg), http.StatusSeeOther)
}

func ptrTo[T any](v T) *T { return &v }
