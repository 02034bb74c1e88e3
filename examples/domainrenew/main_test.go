package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/grafttest"
	"github.com/graftdev/graft/internal/testenv"
)

// The demo end to end with a small burst: every renewal is processed once,
// by the side the flags chose; the premium renewals wait for their
// customers, one is confirmed and three are cancelled and refunded; the
// registry saw no call beyond its limits; every legacy row, read through
// the legacy API, agrees with the engine; and the demo leaves nothing.
func TestDemo(t *testing.T) {
	t.Parallel()
	ctx := grafttest.Context(t, 4*time.Minute)
	schema := grafttest.Schema(t)
	t.Cleanup(func() { _, _ = grafttest.DB(t).Exec(`DROP SCHEMA IF EXISTS ` + schema + `_legacy CASCADE`) })
	var out strings.Builder
	o := options{DatabaseURL: grafttest.DatabaseURL(), RedisURL: testenv.RedisURL(), Schema: schema,
		N: 40, LegacyDelay: 100 * time.Millisecond, LegacyWorkers: 8}
	last, err := run(ctx, o, &out)
	t.Log("\n" + out.String() + last)
	require.NoError(t, err)

	var ops, graft, legacy, completed, cancelled, refunds, violations, mismatches int
	_, err = fmt.Sscanf(last, "demo ops=%d graft=%d legacy=%d completed=%d cancelled=%d refunds=%d violations=%d mismatches=%d",
		&ops, &graft, &legacy, &completed, &cancelled, &refunds, &violations, &mismatches)
	require.NoError(t, err, "last line %q", last)
	require.Equal(t, 40, ops)
	require.Equal(t, ops, graft+legacy)
	// Rows 1-4 are the premium .info domains; of the others, g%10 in 0-2
	// is .info (10 rows, all graft's), 3-5 .fr (10, about half), 6-9 .com
	// (16, all legacy).
	require.GreaterOrEqual(t, graft, 14)
	require.GreaterOrEqual(t, legacy, 16)
	require.Equal(t, 3, cancelled)
	require.Equal(t, 3, refunds)
	require.Equal(t, ops-cancelled, completed)
	require.Zero(t, violations)
	require.Zero(t, mismatches)

	// Nothing is left behind.
	var n int
	require.NoError(t, grafttest.DB(t).Get(&n, `SELECT count(*) FROM pg_namespace WHERE nspname IN ($1, $2)`, schema, schema+"_legacy"))
	require.Zero(t, n)
}

// With -serve the demo keeps the operations API and web UI up after its
// summary: the operator token it prints lists the demo's operations, the
// UI answers, and the demo ends (and cleans up) when its context does.
func TestDemoServe(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(grafttest.Context(t, 4*time.Minute))
	defer cancel()
	schema := grafttest.Schema(t)
	t.Cleanup(func() { _, _ = grafttest.DB(t).Exec(`DROP SCHEMA IF EXISTS ` + schema + `_legacy CASCADE`) })
	var listed, signin, providers int
	var body, providersBody string
	type getResult struct {
		status int
		body   string
	}
	var flagsGot, opGot, root getResult
	o := options{DatabaseURL: grafttest.DatabaseURL(), RedisURL: testenv.RedisURL(), Schema: schema,
		N: 12, LegacyDelay: 50 * time.Millisecond, LegacyWorkers: 4, Serve: "127.0.0.1:0",
		onServe: func(base, token string) {
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", base+"/v1/operations?status=cancelled", nil)
			req.Header.Set("Authorization", "Bearer "+token)
			if res, err := http.DefaultClient.Do(req); err == nil {
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				listed, body = res.StatusCode, string(b)
			}
			if res, err := http.Get(base + "/ui/signin"); err == nil {
				res.Body.Close()
				signin = res.StatusCode
			}
			// The providers list shows the registry's limits.
			req, _ = http.NewRequestWithContext(ctx, "GET", base+"/v1/providers", nil)
			req.Header.Set("Authorization", "Bearer "+token)
			if res, err := http.DefaultClient.Do(req); err == nil {
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				providers = res.StatusCode
				providersBody = string(b)
			}
			// graft flags and graft ops show work on the demo as the README
			// has them: the flags, and an operation's legacy row.
			for path, got := range map[string]*getResult{"/v1/flags": &flagsGot, "/v1/operations/" + premiumIDs()[1]: &opGot} {
				req, _ = http.NewRequestWithContext(ctx, "GET", base+path, nil)
				req.Header.Set("Authorization", "Bearer "+token)
				if res, err := http.DefaultClient.Do(req); err == nil {
					b, _ := io.ReadAll(res.Body)
					res.Body.Close()
					*got = getResult{res.StatusCode, string(b)}
				}
			}
			// The address alone leads to the UI's sign-in page.
			noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
			if res, err := noRedirect.Get(base + "/"); err == nil {
				res.Body.Close()
				root = getResult{res.StatusCode, res.Header.Get("Location")}
			}
		}}
	var out strings.Builder
	last, err := run(ctx, o, &out)
	t.Log("\n" + out.String() + last)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, listed, body)
	require.Contains(t, body, premiumIDs()[1]) // a cancelled premium renewal
	require.Equal(t, http.StatusOK, signin)
	require.Equal(t, http.StatusOK, providers, providersBody)
	require.Contains(t, providersBody, `"key":"registry"`)
	require.Contains(t, providersBody, `"concurrency":50`)
	require.Equal(t, http.StatusOK, flagsGot.status, flagsGot.body)
	require.Contains(t, flagsGot.body, `"kind":"renew"`)
	require.Equal(t, http.StatusOK, opGot.status, opGot.body)
	require.Contains(t, opGot.body, `"legacy":{`)
	require.Contains(t, opGot.body, `"status":"cancelled"`)
	require.Contains(t, opGot.body, `"name":"confirm"`, "the renewal declares its confirm signal")
	require.Equal(t, getResult{http.StatusSeeOther, "/ui/signin"}, root)
	require.Contains(t, out.String(), "operator token: graft_")
	require.True(t, strings.HasPrefix(last, "demo ops=12 "), last)
}
