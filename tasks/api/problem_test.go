package api_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/tasks/api"
)

// TestBadInputIsAProblemNamingTheField sends each kind of bad request and
// checks the RFC 9457 answer (status, content type, the field named) and
// that nothing changed.
func TestBadInputIsAProblemNamingTheField(t *testing.T) {
	ev := newEnv(t, api.Config{MaxBodyBytes: 4096})
	ev.start(t, "open-1", "acme", orderIn{Item: "a", Wait: true})
	ev.failCharge.Store(true)
	ev.start(t, "failed-1", "acme", orderIn{Item: "f"})
	ev.waitFor(t, "failed-1", engine.StatusFailed)
	auditBefore := ev.auditCount(t)

	cases := []struct {
		name, method, path, body string
		status                   int
		field                    string
		detail                   string
	}{
		{"malformed JSON", "POST", "/v1/operations/open-1/cancel", `{"reason":`, 400, "", "ends early"},
		{"not an object", "POST", "/v1/operations/open-1/cancel", `"stop"`, 400, "", "JSON object"},
		{"unknown field", "POST", "/v1/operations/open-1/cancel", `{"reason":"r","force":true}`, 400, "force", "not a field"},
		{"wrong type", "POST", "/v1/operations/open-1/cancel", `{"reason":42}`, 400, "reason", "must be a string"},
		{"trailing data", "POST", "/v1/operations/open-1/cancel", `{"reason":"r"} {}`, 400, "", "after its JSON value"},
		{"empty body", "POST", "/v1/operations/open-1/cancel", ``, 400, "", "body is required"},
		{"missing reason", "POST", "/v1/operations/open-1/cancel", `{}`, 400, "reason", "required"},
		{"blank reason", "POST", "/v1/operations/open-1/relaunch", `{"reason":"  "}`, 400, "reason", "required"},
		{"body too large", "POST", "/v1/operations/open-1/cancel", `{"reason":"` + strings.Repeat("x", 5000) + `"}`, 413, "", "limit of 4096"},
		{"unknown operation", "POST", "/v1/operations/nope/cancel", `{"reason":"r"}`, 404, "", "does not exist"},
		{"unknown operation get", "GET", "/v1/operations/nope", ``, 404, "", "does not exist"},
		{"relaunch an open run", "POST", "/v1/operations/open-1/relaunch", `{"reason":"r"}`, 409, "", "closed operation"},
		{"relaunch from an unknown step", "POST", "/v1/operations/failed-1/relaunch", `{"reason":"r","from_step":"nope"}`, 400, "from_step", "no step named"},
		{"cancel a closed run", "POST", "/v1/operations/failed-1/cancel", `{"reason":"r"}`, 409, "", "is failed"},
		{"undeclared signal", "POST", "/v1/operations/open-1/signal", `{"name":"nope","reason":"r"}`, 400, "name", "declares no signal"},
		{"payload of the wrong type", "POST", "/v1/operations/open-1/signal", `{"name":"confirm","payload":{"approved":"yes"},"reason":"r"}`, 400, "payload", "approved"},
		{"payload with an unknown field", "POST", "/v1/operations/open-1/signal", `{"name":"confirm","payload":{"aproved":true},"reason":"r"}`, 400, "payload", "aproved"},
		{"start an unknown kind", "POST", "/v1/operations", `{"kind":"nope","input":{}}`, 400, "kind", "unknown workflow"},
		{"start with bad input", "POST", "/v1/operations", `{"kind":"order","input":{"item":1}}`, 400, "input", "item"},
		{"start an open ID", "POST", "/v1/operations", `{"kind":"order","id":"open-1","input":{"item":"x"}}`, 409, "", "already started"},
		{"bad status filter", "GET", "/v1/operations?status=sleeping", ``, 400, "status", "sleeping"},
		{"bad limit", "GET", "/v1/operations?limit=0", ``, 400, "limit", "between 1 and 500"},
		{"limit not a number", "GET", "/v1/operations?limit=ten", ``, 400, "limit", ""},
		{"bad time", "GET", "/v1/operations?created_after=yesterday", ``, 400, "created_after", ""},
		{"bad cursor", "GET", "/v1/operations?cursor=xyz", ``, 400, "cursor", "not a cursor"},
		{"bad route", "GET", "/v1/operations?route=elsewhere", ``, 400, "route", "elsewhere"},
		{"legacy route", "GET", "/v1/operations?route=legacy", ``, 400, "route", "legacy-routed operations are not listed here: they are rows of the legacy table"},
		{"token for a customer without one", "POST", "/v1/tokens", `{"name":"c","role":"customer"}`, 400, "customer", "required"},
		{"token with a bad role", "POST", "/v1/tokens", `{"name":"c","role":"root"}`, 400, "role", "root"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, body := ev.do(t, "admin", tc.method, tc.path, tc.body)
			require.Equal(t, tc.status, code, body)
			var p api.Problem
			require.NoError(t, json.Unmarshal([]byte(body), &p), body)
			require.Equal(t, tc.status, p.Status)
			require.NotEmpty(t, p.Type)
			require.NotEmpty(t, p.Title)
			if tc.field != "" {
				require.NotNil(t, p.Field, body)
				require.Equal(t, tc.field, *p.Field, body)
			}
			if tc.detail != "" {
				require.NotNil(t, p.Detail, body)
				require.Contains(t, *p.Detail, tc.detail)
			}
		})
	}
	// The content type of a problem.
	res, err := ev.client(t, "admin").GetOperationWithResponse(t.Context(), "nope")
	require.NoError(t, err)
	require.Equal(t, "application/problem+json", res.HTTPResponse.Header.Get("Content-Type"))
	require.NotNil(t, res.ApplicationproblemJSONDefault)

	// Nothing changed: the open run still waits, the failed one is still the
	// only run of its ID, and no action was recorded.
	info, err := ev.e.Client().Describe(t.Context(), "open-1")
	require.NoError(t, err)
	require.Contains(t, []engine.Status{engine.StatusRunning, engine.StatusWaiting}, info.Status)
	require.False(t, info.CancelRequested)
	hist, err := ev.e.Client().History(t.Context(), "failed-1")
	require.NoError(t, err)
	require.Len(t, hist, 1)
	require.Equal(t, auditBefore, ev.auditCount(t))
}

func (ev *env) auditCount(t *testing.T) int {
	var n int
	require.NoError(t, ev.e.DB().Get(&n, `SELECT count(*) FROM `+ev.e.Schema()+`.api_audit`))
	return n
}
