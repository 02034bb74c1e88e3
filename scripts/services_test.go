// Package scripts holds the tests of the repository's shell scripts.
package scripts

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/internal/testenv"
)

// services runs scripts/services.sh with the given URLs, without CI=true
// or GRAFT_SETUP_SERVICES, and returns its exit code and output.
func services(t *testing.T, mode, databaseURL, redisURL string, extraEnv ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "./services.sh", mode)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CI=") && !strings.HasPrefix(kv, "GRAFT_") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env, append([]string{"GRAFT_DATABASE_URL=" + databaseURL, "GRAFT_REDIS_URL=" + redisURL}, extraEnv...)...)
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else {
		require.NoError(t, err)
	}
	t.Logf("services.sh %s (exit %d):\n%s", mode, code, out)
	return code, string(out)
}

func maxConnections(t *testing.T, url string) string {
	t.Helper()
	db, err := sqlx.Open("postgres", url)
	require.NoError(t, err)
	defer db.Close()
	var v string
	require.NoError(t, db.Get(&v, `SELECT setting || CASE WHEN pending_restart THEN ' (pending restart)' ELSE '' END
		FROM pg_settings WHERE name = 'max_connections'`))
	return v
}

// A PostgreSQL the script did not create, with too few connections for the
// tests: the script says what is missing and how to fix it, and changes
// nothing. make demo does not need the connections and goes on.
func TestServicesDoesNotReconfigureAForeignPostgres(t *testing.T) {
	t.Parallel()
	pg := testenv.PrivatePostgres(t) // max_connections 200
	require.Equal(t, "200", maxConnections(t, pg.URL))

	code, out := services(t, "test", pg.URL, testenv.RedisURL())
	require.Equal(t, 1, code)
	require.Contains(t, out, fmt.Sprintf("max_connections of the PostgreSQL on 127.0.0.1:%d is 200; the tests run in parallel and need at least 300", pg.Port))
	require.Contains(t, out, "-c 'ALTER SYSTEM SET max_connections = 300'")
	require.NotContains(t, out, "GRAFT_SETUP_SERVICES", "not a cluster the script could change")
	require.Equal(t, "200", maxConnections(t, pg.URL), "nothing changed, nothing pending")

	code, out = services(t, "demo", pg.URL, testenv.RedisURL())
	require.Equal(t, 0, code)
	require.Contains(t, out, fmt.Sprintf("postgres 127.0.0.1:%d: ok (already running)", pg.Port))
}

// A server that asks for a password: the script names the user and the
// pg_hba.conf line that would let it in, and does not touch the server. A
// user that does not exist is named as such.
func TestServicesNamesTheMissingLogin(t *testing.T) {
	t.Parallel()
	pg := testenv.PrivatePostgres(t)
	code, out := services(t, "demo", strings.Replace(pg.URL, "postgres://postgres@", "postgres://graft_nobody@", 1), testenv.RedisURL())
	require.Equal(t, 1, code)
	require.Contains(t, out, fmt.Sprintf("user graft_nobody does not exist on the PostgreSQL at 127.0.0.1:%d", pg.Port))

	db, err := sqlx.Open("postgres", pg.URL)
	require.NoError(t, err)
	defer db.Close()
	// Password auth for postgres over TCP, trust for graft_admin (this
	// test's own look), written through SQL: the server writes its own file.
	var hba string
	require.NoError(t, db.Get(&hba, `SHOW hba_file`))
	_, err = db.Exec(`CREATE ROLE graft_admin LOGIN SUPERUSER; ALTER ROLE postgres PASSWORD 'secret'`)
	require.NoError(t, err)
	_, err = db.Exec(`COPY (SELECT unnest(ARRAY['local all all trust', 'host all graft_admin 127.0.0.1/32 trust',
		'host all all 127.0.0.1/32 scram-sha-256'])) TO ` + pq.QuoteLiteral(hba))
	require.NoError(t, err)
	_, err = db.Exec(`SELECT pg_reload_conf()`)
	require.NoError(t, err)
	admin := strings.Replace(pg.URL, "postgres://postgres@", "postgres://graft_admin@", 1)
	readHBA := func() string {
		adb, err := sqlx.Open("postgres", admin)
		require.NoError(t, err)
		defer adb.Close()
		var s string
		require.NoError(t, adb.Get(&s, `SELECT pg_read_file($1)`, hba))
		return s
	}
	testenv.Eventually(t, 20*time.Second, func() bool {
		code, _ := services(t, "demo", pg.URL, testenv.RedisURL())
		return code == 1
	}, "the new pg_hba.conf is read")
	before := readHBA()

	code, out = services(t, "demo", pg.URL, testenv.RedisURL())
	require.Equal(t, 1, code)
	require.Contains(t, out, fmt.Sprintf("user postgres cannot log in to 127.0.0.1:%d without a password", pg.Port))
	require.Contains(t, out, "host    all    postgres    127.0.0.1/32    trust")
	require.Contains(t, out, "or set GRAFT_DATABASE_URL to a URL with a password")
	require.NotContains(t, out, "GRAFT_SETUP_SERVICES", "not a cluster the script could change")
	require.Equal(t, before, readHBA(), "pg_hba.conf untouched")

}

// Nothing answers on the Redis port: the script starts a server of its own
// there (it created it, so that is its to do), says how to stop it, and
// finds nothing to do the second time.
func TestServicesStartsItsOwnRedis(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())
	url := fmt.Sprintf("redis://127.0.0.1:%d/0", port)
	state := t.TempDir()
	t.Cleanup(func() { _ = exec.Command("redis-cli", "-p", fmt.Sprint(port), "shutdown", "nosave").Run() })

	code, out := services(t, "demo", testenv.DatabaseURL(), url, "XDG_STATE_HOME="+state)
	require.Equal(t, 0, code)
	require.Contains(t, out, fmt.Sprintf("redis 127.0.0.1:%d: started (dir %s/graft/redis-%d; stop it with: redis-cli -p %d shutdown nosave)", port, state, port, port))
	require.Contains(t, out, "postgres 127.0.0.1:5432: ok (already running)")
	pong, err := exec.Command("redis-cli", "-p", fmt.Sprint(port), "ping").Output()
	require.NoError(t, err)
	require.Equal(t, "PONG", strings.TrimSpace(string(pong)))

	code, out = services(t, "demo", testenv.DatabaseURL(), url, "XDG_STATE_HOME="+state)
	require.Equal(t, 0, code)
	require.Contains(t, out, fmt.Sprintf("redis 127.0.0.1:%d: ok (already running)", port))
}
