package main

import (
	"io"
	"os"
	"strings"
	"testing"

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
