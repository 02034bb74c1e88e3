package main

import (
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/grafttest"
)

// The README shows this program verbatim, and it runs.
func TestQuickstart(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	src, err := os.ReadFile("main.go")
	require.NoError(t, err)
	require.Contains(t, string(readme), "```go\n"+string(src)+"```\n", "README.md shows examples/quickstart/main.go as it is")

	db := grafttest.DB(t)
	drop := func() { _, _ = db.Exec(`DROP SCHEMA IF EXISTS graft_quickstart CASCADE`) }
	drop()
	t.Cleanup(drop)
	t.Setenv("GRAFT_DATABASE_URL", grafttest.DatabaseURL())
	r, w, err := os.Pipe()
	require.NoError(t, err)
	stdout := os.Stdout
	os.Stdout = w
	main()
	os.Stdout = stdout
	require.NoError(t, w.Close())
	out, err := io.ReadAll(r)
	require.NoError(t, err)
	require.Equal(t, "2028-01-01 <nil>", strings.TrimSpace(string(out)))
}

// Without GRAFT_DATABASE_URL the program says so, instead of the engine's
// "Config.DatabaseURL is required (for LISTEN/NOTIFY)". It runs in a
// subprocess (this test binary again), since log.Fatal exits.
func TestQuickstartWithoutDatabaseURL(t *testing.T) {
	if os.Getenv("GRAFT_QUICKSTART_MAIN") == "1" {
		main()
		return
	}
	cmd := exec.CommandContext(grafttest.Context(t, time.Minute), os.Args[0], "-test.run=^TestQuickstartWithoutDatabaseURL$")
	cmd.Env = append(os.Environ(), "GRAFT_QUICKSTART_MAIN=1", "GRAFT_DATABASE_URL=")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit, string(out))
	require.Contains(t, string(out), "set GRAFT_DATABASE_URL, e.g. postgres://")
}
