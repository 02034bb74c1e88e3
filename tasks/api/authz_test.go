package api_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/tasks/api"
)

// do sends a request with role's token (none for role "") and returns the
// status and body.
func (ev *env) do(t *testing.T, role, method, path, body string) (int, string) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, ev.http.URL+path, r)
	require.NoError(t, err)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if role != "" {
		req.Header.Set("Authorization", "Bearer "+ev.tokens[role])
	}
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// TestEveryRouteEveryRole walks every route with every role: staff roles
// get what their role allows, a customer gets 404 for an operation it does
// not own on every route, and 403 for an action on its own that customers
// may not take. Actions target a closed operation, so a permitted call ends
// in a 409 or a dry run and nothing changes.
func TestEveryRouteEveryRole(t *testing.T) {
	ev := newEnv(t, api.Config{})
	ev.failCharge.Store(true)
	ev.start(t, "acme-1", "acme", orderIn{Item: "a"})
	ev.start(t, "globex-1", "globex", orderIn{Item: "g"})
	ev.waitFor(t, "acme-1", engine.StatusFailed)
	ev.waitFor(t, "globex-1", engine.StatusFailed)

	// A finished bulk job of the operator's, for the bulk routes.
	code, body := ev.do(t, "operator", "POST", "/v1/bulk", `{"action":"relaunch","reason":"setup","filter":{"ids":["none"]}}`)
	require.Equal(t, 201, code, body)
	var job api.BulkJob
	require.NoError(t, json.Unmarshal([]byte(body), &job))
	ev.waitJob(t, job.Id, api.BulkStateCompleted)

	roles := []string{"admin", "operator", "viewer", "customer"}
	type route struct {
		name, method, path, body string
		// want per role; a customer asks about acme-1 (its own) here and
		// about globex-1 (not its own) in the second pass.
		want map[string]int
		// scoped routes name an operation; the customer's second pass
		// expects 404 on them.
		scoped bool
	}
	all := func(code int) map[string]int {
		return map[string]int{"admin": code, "operator": code, "viewer": code, "customer": code}
	}
	act := func(code int) map[string]int {
		return map[string]int{"admin": code, "operator": code, "viewer": 403, "customer": 403}
	}
	admin := func(code int) map[string]int {
		return map[string]int{"admin": code, "operator": 403, "viewer": 403, "customer": 403}
	}
	// Bulk jobs a customer did not make answer 404, as missing ones do.
	staffRead := func(code int) map[string]int {
		return map[string]int{"admin": code, "operator": code, "viewer": code, "customer": 404}
	}
	staffAct := func(code int) map[string]int {
		return map[string]int{"admin": code, "operator": code, "viewer": 403, "customer": 404}
	}
	routes := []route{
		{"list", "GET", "/v1/operations", "", all(200), false},
		{"get", "GET", "/v1/operations/{id}", "", all(200), true},
		{"history", "GET", "/v1/operations/{id}/history", "", all(200), true},
		{"start", "POST", "/v1/operations", `{"kind":"no-such-kind","input":{}}`, act(400), false},
		{"cancel", "POST", "/v1/operations/{id}/cancel", `{"reason":"r"}`, act(409), true},
		{"relaunch", "POST", "/v1/operations/{id}/relaunch", `{"reason":"r","dry_run":true}`, act(200), true},
		{"signal", "POST", "/v1/operations/{id}/signal", `{"name":"confirm","payload":{"approved":true},"reason":"r"}`, act(409), true},
		{"tokens list", "GET", "/v1/tokens", "", admin(200), false},
		{"tokens create", "POST", "/v1/tokens", `{"name":"","role":"viewer"}`, admin(400), false},
		{"tokens revoke", "DELETE", "/v1/tokens/0000000000000000", "", admin(404), false},
		{"whoami", "GET", "/v1/whoami", "", all(200), false},
		// This server has no flags store: staff get its 404, customers 403.
		{"flags", "GET", "/v1/flags", "", map[string]int{"admin": 404, "operator": 404, "viewer": 404, "customer": 403}, false},
		{"flags audit", "GET", "/v1/flags/audit", "", map[string]int{"admin": 404, "operator": 404, "viewer": 404, "customer": 403}, false},
		{"flags set", "PUT", "/v1/flags/order", `{"version":0,"reason":"r"}`, admin(404), false},
		// This server has no intake source: the admin gets its 404.
		{"flags preview", "POST", "/v1/flags/order/preview", `{"default_percent":10}`, admin(404), false},
		{"cancel preview", "POST", "/v1/operations/{id}/cancel", `{"reason":"r","dry_run":true}`, act(409), true},
		{"overview", "GET", "/v1/overview", "", map[string]int{"admin": 200, "operator": 200, "viewer": 200, "customer": 403}, false},
		// This server has no rate-limit inspector: staff get its 404.
		{"providers", "GET", "/v1/providers", "", map[string]int{"admin": 404, "operator": 404, "viewer": 404, "customer": 403}, false},
		{"providers set", "PUT", "/v1/providers/registry", `{"concurrency":1,"rate":1,"reason":"r"}`, admin(404), false},
		{"bulk list", "GET", "/v1/bulk", "", all(200), false},
		{"bulk dry run", "POST", "/v1/bulk", `{"action":"relaunch","reason":"r","dry_run":true,"filter":{}}`, act(200), false},
		{"bulk get", "GET", "/v1/bulk/{job}", "", staffRead(200), true},
		{"bulk report", "GET", "/v1/bulk/{job}/report", "", staffRead(200), true},
		{"bulk report csv", "GET", "/v1/bulk/{job}/report?format=csv", "", staffRead(200), true},
		{"bulk pause", "POST", "/v1/bulk/{job}/pause", `{"reason":"r"}`, staffAct(409), true},
		{"bulk resume", "POST", "/v1/bulk/{job}/resume", "", staffAct(409), true},
		{"bulk stop", "POST", "/v1/bulk/{job}/stop", "", staffAct(409), true},
		{"bulk retry failed", "POST", "/v1/bulk/{job}/retry-failed", `{}`, staffAct(409), true},
	}
	for _, rt := range routes {
		rt.path = strings.ReplaceAll(rt.path, "{job}", job.Id)
		for _, role := range roles {
			code, body := ev.do(t, role, rt.method, strings.ReplaceAll(rt.path, "{id}", "acme-1"), rt.body)
			require.Equal(t, rt.want[role], code, "%s as %s: %s", rt.name, role, body)
			if code >= 400 {
				require.Contains(t, body, `"status":`, "%s as %s: a problem document", rt.name, role)
			}
		}
		if rt.scoped {
			for _, who := range []struct{ role, id string }{{"customer", "globex-1"}, {"customer-other", "acme-1"}} {
				path, missing, id := strings.ReplaceAll(rt.path, "{id}", who.id), strings.ReplaceAll(rt.path, "{id}", "no-such-op"), who.id
				if strings.HasPrefix(rt.path, "/v1/bulk/") {
					path, missing, id = rt.path, strings.ReplaceAll(rt.path, job.Id, "no-such-op"), job.Id
				}
				code, body := ev.do(t, who.role, rt.method, path, rt.body)
				require.Equal(t, 404, code, "%s as a customer on another's operation: %s", rt.name, body)
				// Exactly what an operation that does not exist answers.
				code2, body2 := ev.do(t, who.role, rt.method, missing, rt.body)
				require.Equal(t, 404, code2)
				require.Equal(t, strings.ReplaceAll(body2, "no-such-op", id), body, "%s: another's operation must look like a missing one", rt.name)
			}
		}
		code, _ = ev.do(t, "", rt.method, strings.ReplaceAll(rt.path, "{id}", "acme-1"), rt.body)
		require.Equal(t, 401, code, "%s without a token", rt.name)
	}

	// The list a customer sees holds only its own operations, counts included.
	for _, who := range []struct{ role, own, other string }{{"customer", "acme-1", "globex-1"}, {"customer-other", "globex-1", "acme-1"}} {
		_, body := ev.do(t, who.role, "GET", "/v1/operations", "")
		var page api.OperationPage
		require.NoError(t, json.Unmarshal([]byte(body), &page))
		require.Len(t, page.Items, 1, body)
		require.Equal(t, who.own, page.Items[0].Id)
		require.Equal(t, map[string]int64{"failed": 1}, page.Counts)
		// Asking for the other customer's operations by filter finds none.
		_, body = ev.do(t, who.role, "GET", "/v1/operations?customer="+strings.Split(who.other, "-")[0], "")
		require.NoError(t, json.Unmarshal([]byte(body), &page))
		require.Empty(t, page.Items, body)
	}
	_, body = ev.do(t, "viewer", "GET", "/v1/operations", "")
	var page api.OperationPage
	require.NoError(t, json.Unmarshal([]byte(body), &page))
	require.Len(t, page.Items, 2, body)

	// Nothing the refused or conflicting calls did changed anything.
	require.Equal(t, engine.StatusFailed, ev.status(t, "acme-1"))
	require.Equal(t, engine.StatusFailed, ev.status(t, "globex-1"))
	var actions int
	require.NoError(t, ev.e.DB().Get(&actions, `SELECT count(*) FROM `+ev.e.Schema()+`.api_audit WHERE action NOT IN ('start', 'bulk_create')`))
	require.Zero(t, actions)
	var jobs int
	require.NoError(t, ev.e.DB().Get(&jobs, `SELECT count(*) FROM `+ev.e.Schema()+`.bulk_jobs`))
	require.Equal(t, 1, jobs, "the setup's job only: the dry runs made none")
}

// TestCustomerMayCancel: with the option, a customer cancels its own open
// operation, and still gets 404 for another's.
func TestCustomerMayCancel(t *testing.T) {
	ev := newEnv(t, api.Config{CustomerMayCancel: true})
	ev.start(t, "acme-w", "acme", orderIn{Item: "a", Wait: true})
	ev.start(t, "globex-w", "globex", orderIn{Item: "g", Wait: true})
	code, body := ev.do(t, "customer", "POST", "/v1/operations/globex-w/cancel", `{"reason":"mine?"}`)
	require.Equal(t, 404, code, body)
	code, body = ev.do(t, "customer", "POST", "/v1/operations/acme-w/cancel", `{"reason":"changed my mind"}`)
	require.Equal(t, 200, code, body)
	ev.waitFor(t, "acme-w", engine.StatusCancelled)
	require.NotEqual(t, engine.StatusCancelled, ev.status(t, "globex-w"))
}
