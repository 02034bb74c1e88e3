package api_test

import (
	"context"
	"crypto/sha256"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/tasks/api"
)

// TestTokens: a token is 256 random bits shown once and stored as its
// SHA-256; a revoked, expired, altered or malformed token is refused with
// 401; a token's use is recorded.
func TestTokens(t *testing.T) {
	ev := newEnv(t, api.Config{})
	ctx := context.Background()
	admin := ev.client(t, "admin")

	res, err := admin.CreateTokenWithResponse(ctx, api.TokenRequest{Name: "ci", Role: api.RoleViewer, ExpiresInHours: ptr(1)})
	require.NoError(t, err)
	require.Equal(t, 201, res.StatusCode(), string(res.Body))
	secret := res.JSON201.Secret
	require.True(t, strings.HasPrefix(secret, "graft_"+res.JSON201.Id+"_"))
	require.Len(t, strings.TrimPrefix(secret, "graft_"+res.JSON201.Id+"_"), 43, "32 random bytes, base64url")
	require.WithinDuration(t, time.Now().Add(time.Hour), *res.JSON201.ExpiresAt, time.Minute)

	// Stored as a hash, never as the secret.
	var stored []byte
	require.NoError(t, ev.e.DB().Get(&stored, `SELECT secret_hash FROM `+ev.e.Schema()+`.api_tokens WHERE id = $1`, res.JSON201.Id))
	sum := sha256.Sum256([]byte(strings.TrimPrefix(secret, "graft_"+res.JSON201.Id+"_")))
	require.Equal(t, sum[:], stored)
	var leaks int
	require.NoError(t, ev.e.DB().Get(&leaks, `SELECT count(*) FROM `+ev.e.Schema()+`.api_tokens t WHERE position($1 in t::text) > 0`,
		strings.TrimPrefix(secret, "graft_"+res.JSON201.Id+"_")))
	require.Zero(t, leaks)

	ev.tokens["ci"] = secret
	code, body := ev.do(t, "ci", "GET", "/v1/whoami", "")
	require.Equal(t, 200, code, body)
	require.Contains(t, body, `"name":"ci"`)
	list, err := admin.ListTokensWithResponse(ctx)
	require.NoError(t, err)
	for _, tok := range list.JSON200.Items {
		if tok.Id == res.JSON201.Id {
			require.NotNil(t, tok.LastUsedAt, "use is recorded")
		}
	}
	require.NotContains(t, string(list.Body), secret[len(secret)-43:], "a list never shows a secret")

	// Altered, malformed and unknown tokens.
	for _, bad := range []string{
		alter(secret), "graft_" + res.JSON201.Id, "Bearer", "graft_0000000000000000_" + strings.Repeat("a", 43), "",
	} {
		ev.tokens["bad"] = bad
		code, body := ev.do(t, "bad", "GET", "/v1/whoami", "")
		require.Equal(t, 401, code, "%q: %s", bad, body)
	}

	// Revoked.
	rv, err := admin.RevokeTokenWithResponse(ctx, res.JSON201.Id)
	require.NoError(t, err)
	require.Equal(t, 204, rv.StatusCode(), string(rv.Body))
	code, _ = ev.do(t, "ci", "GET", "/v1/whoami", "")
	require.Equal(t, 401, code)

	// Expired.
	_, exp, err := ev.srv.Tokens().Create(ctx, api.NewToken{Name: "old", Role: api.RoleViewer, Lifetime: time.Hour})
	require.NoError(t, err)
	_, err = ev.e.DB().Exec(`UPDATE ` + ev.e.Schema() + `.api_tokens SET expires_at = now() - interval '1 second' WHERE name = 'old'`)
	require.NoError(t, err)
	ev.tokens["old"] = exp
	code, _ = ev.do(t, "old", "GET", "/v1/whoami", "")
	require.Equal(t, 401, code)

	// Token actions are audited.
	var n int
	require.NoError(t, ev.e.DB().Get(&n, `SELECT count(*) FROM `+ev.e.Schema()+`.api_audit WHERE action IN ('token_create','token_revoke') AND actor = 'ada'`))
	require.Equal(t, 2, n)
}

// TestHealth: /healthz always, /readyz checks PostgreSQL.
func TestHealth(t *testing.T) {
	ev := newEnv(t, api.Config{})
	code, _ := ev.do(t, "", "GET", "/healthz", "")
	require.Equal(t, 200, code)
	code, body := ev.do(t, "", "GET", "/readyz", "")
	require.Equal(t, 200, code, body)
	require.Contains(t, body, `"postgres":"ok"`)
}

// alter changes the secret's first character to another valid one.
func alter(secret string) string {
	i := strings.LastIndexByte(secret, '_') + 1
	c := byte('A')
	if secret[i] == 'A' {
		c = 'B'
	}
	return secret[:i] + string(c) + secret[i+1:]
}

// TestMetrics: /metrics serves, through the OpenTelemetry Prometheus
// exporter, what is recorded on the provider: the server's request counts.
func TestMetrics(t *testing.T) {
	prom, err := api.NewPrometheus()
	require.NoError(t, err)
	ev := newEnv(t, api.Config{Metrics: prom.Handler, MeterProvider: prom.Provider})
	code, _ := ev.do(t, "viewer", "GET", "/v1/operations", "")
	require.Equal(t, 200, code)
	code, body := ev.do(t, "", "GET", "/metrics", "")
	require.Equal(t, 200, code)
	require.Contains(t, body, `graft_api_requests_total{`)
	require.Contains(t, body, `route="GET /v1/operations"`)
}
