package ui

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/graftdev/graft/tasks"
	"github.com/graftdev/graft/tasks/api"
)

// flagRow is one kind's flag as the flags page shows it.
type flagRow struct {
	*tasks.Flag
	Rules   string // the key rules as "key,key=percent; ..."
	Warning string // a key rule that can never match (tasks.Flags.KeyRuleProblems)
}

// flagsPage shows the kill switches first, then each kind's rules and the
// audit log. Staff read it; only admins change flags; customers do not
// see it at all.
func (u *UI) flagsPage(w http.ResponseWriter, r *http.Request) {
	u.renderFlags(w, r, http.StatusOK, nil)
}

func (u *UI) renderFlags(w http.ResponseWriter, r *http.Request, status int, data map[string]any) {
	if data == nil {
		data = map[string]any{}
	}
	v := viewerOf(r.Context())
	if u.cfg.Flags == nil || v.Role == "customer" {
		http.NotFound(w, r)
		return
	}
	snap, err := u.cfg.Flags.Snapshot(r.Context())
	if err != nil {
		u.fail(w, r, err)
		return
	}
	problems, err := u.cfg.Flags.KeyRuleProblems(r.Context(), snap)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	var rows []flagRow
	for _, f := range snap.Flags {
		row := flagRow{Flag: f, Rules: formatRules(f.KeyRules)}
		var ve *tasks.FlagValueError
		if errors.As(problems[f.Kind], &ve) {
			row.Warning = ve.Plain()
		}
		rows = append(rows, row)
	}
	slices.SortFunc(rows, func(a, b flagRow) int { return strings.Compare(a.Kind, b.Kind) })
	audit, err := u.cfg.Flags.Audit(r.Context(), "", 50)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	data["Snapshot"], data["Flags"], data["Audit"], data["Admin"] = snap, rows, audit, v.Role == "admin"
	u.render(w, r, "flags", status, data)
}

// formatRules writes key rules the way the edit form reads them back.
func formatRules(rules []tasks.KeyRule) string {
	var parts []string
	for _, kr := range rules {
		parts = append(parts, strings.Join(kr.Keys, ",")+"="+strconv.FormatFloat(kr.Percent, 'f', -1, 64))
	}
	return strings.Join(parts, "; ")
}

// parseRules reads "info=100; fr,be=50" into key rules, naming what is wrong.
func parseRules(s string) ([]tasks.KeyRule, error) {
	var out []tasks.KeyRule
	for i, part := range strings.Split(s, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		keys, pct, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("key rules: rule %d %q: write keys=percent, e.g. info=100", i+1, part)
		}
		p, err := strconv.ParseFloat(strings.TrimSpace(pct), 64)
		if err != nil {
			return nil, fmt.Errorf("key rules: rule %d %q: percent %q is not a number", i+1, part, pct)
		}
		kr := tasks.KeyRule{Percent: p}
		for _, k := range strings.Split(keys, ",") {
			kr.Keys = append(kr.Keys, strings.TrimSpace(k))
		}
		out = append(out, kr)
	}
	return out, nil
}

// adminOnly refuses a flag change from anyone but an admin.
func (u *UI) adminOnly(w http.ResponseWriter, r *http.Request) bool {
	v := viewerOf(r.Context())
	if u.cfg.Flags == nil || v.Role == "customer" {
		http.NotFound(w, r)
		return false
	}
	if v.Role != "admin" {
		http.Error(w, "ui: only an admin may change flags", http.StatusForbidden)
		return false
	}
	return true
}

func formVersion(r *http.Request) (int64, error) {
	v, err := strconv.ParseInt(r.PostFormValue("version"), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("version: %q is not a version", r.PostFormValue("version"))
	}
	return v, nil
}

// flagError shows the flags page again with err; a stale version is a 409.
// A refused value is named by the form's field, as the API names it.
func (u *UI) flagError(w http.ResponseWriter, r *http.Request, err error) {
	status := http.StatusBadRequest
	if errors.Is(err, tasks.ErrVersionConflict) {
		status = http.StatusConflict
	}
	msg := err.Error()
	var ve *tasks.FlagValueError
	switch {
	case errors.As(err, &ve) && ve.Field == "DefaultPercent":
		msg = "default percent: " + ve.Plain()
	case errors.As(err, &ve):
		msg = "key rules: " + ve.Plain()
	}
	u.renderFlags(w, r, status, map[string]any{"Error": msg})
}

func (u *UI) globalKillAction(w http.ResponseWriter, r *http.Request) {
	if !u.adminOnly(w, r) {
		return
	}
	ver, err := formVersion(r)
	if err != nil {
		u.flagError(w, r, err)
		return
	}
	killed := r.PostFormValue("killed") == "true"
	if _, err := u.cfg.Flags.GlobalKill(r.Context(), killed, ver, viewerOf(r.Context()).Name, r.PostFormValue("reason")); err != nil {
		u.flagError(w, r, err)
		return
	}
	http.Redirect(w, r, "/ui/flags", http.StatusSeeOther)
}

func (u *UI) setFlagAction(w http.ResponseWriter, r *http.Request) {
	if !u.adminOnly(w, r) {
		return
	}
	ver, err := formVersion(r)
	if err != nil {
		u.flagError(w, r, err)
		return
	}
	snap, err := u.cfg.Flags.Snapshot(r.Context())
	if err != nil {
		u.fail(w, r, err)
		return
	}
	kind := r.PathValue("kind")
	f := tasks.Flag{Kind: kind}
	if cur := snap.Flags[kind]; cur != nil {
		f = *cur
	}
	switch r.PostFormValue("op") {
	case "preview":
		u.previewFlag(w, r, f, ver)
		return
	case "kill":
		f.Killed = r.PostFormValue("killed") == "true"
	case "edit":
		if f.DefaultPercent, err = strconv.ParseFloat(strings.TrimSpace(r.PostFormValue("default_percent")), 64); err != nil {
			u.flagError(w, r, fmt.Errorf("default percent: %q is not a number", r.PostFormValue("default_percent")))
			return
		}
		if f.KeyRules, err = parseRules(r.PostFormValue("key_rules")); err != nil {
			u.flagError(w, r, err)
			return
		}
	default:
		u.flagError(w, r, fmt.Errorf("op: %q is none of kill, preview, edit", r.PostFormValue("op")))
		return
	}
	if _, err := u.cfg.Flags.Set(r.Context(), tasks.Change{Flag: f, Version: ver, Actor: viewerOf(r.Context()).Name, Reason: r.PostFormValue("reason")}); err != nil {
		u.flagError(w, r, err)
		return
	}
	http.Redirect(w, r, "/ui/flags", http.StatusSeeOther)
}

// flagPreview is a proposed change shown with what it would route, and the
// form that saves it.
type flagPreview struct {
	Kind           string
	Version        int64
	DefaultPercent string
	Rules          string
	Reason         string
	Result         *api.FlagPreview
	Error          string
}

// previewFlag shows what the edited rules would route over the pending
// legacy rows (the API's preview, admin only), with a form that saves them.
func (u *UI) previewFlag(w http.ResponseWriter, r *http.Request, cur tasks.Flag, version int64) {
	pv := flagPreview{Kind: cur.Kind, Version: version, DefaultPercent: strings.TrimSpace(r.PostFormValue("default_percent")),
		Rules: strings.TrimSpace(r.PostFormValue("key_rules")), Reason: r.PostFormValue("reason")}
	pct, err := strconv.ParseFloat(pv.DefaultPercent, 64)
	if err != nil {
		u.flagError(w, r, fmt.Errorf("default percent: %q is not a number", pv.DefaultPercent))
		return
	}
	rules, err := parseRules(pv.Rules)
	if err != nil {
		u.flagError(w, r, err)
		return
	}
	req := api.FlagPreviewRequest{Killed: &cur.Killed, DefaultPercent: &pct, KeyRules: &[]api.KeyRule{}}
	for _, kr := range rules {
		*req.KeyRules = append(*req.KeyRules, api.KeyRule{Keys: kr.Keys, Percent: kr.Percent})
	}
	res, err := u.client.PreviewFlagWithResponse(r.Context(), cur.Kind, req)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	if res.JSON200 != nil {
		pv.Result = res.JSON200
	} else {
		pv.Error = problemText(res.ApplicationproblemJSONDefault, res.Body)
	}
	u.renderFlags(w, r, http.StatusOK, map[string]any{"Preview": pv})
}
