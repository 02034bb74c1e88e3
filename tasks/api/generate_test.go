package api_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/tasks/api"
)

// TestGeneratedCodeIsUpToDate regenerates the server and client from
// openapi.yaml with the generator go.mod pins, and compares: a change to
// the spec must come with its generated code.
func TestGeneratedCodeIsUpToDate(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the generator")
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "api.gen.go")
	cfg, err := os.ReadFile("oapi-codegen.yaml")
	require.NoError(t, err)
	cfg = regexp.MustCompile(`(?m)^output: .*$`).ReplaceAll(cfg, []byte("output: "+out))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "config.yaml"), cfg, 0o644))
	cmd := exec.Command("go", "tool", "oapi-codegen", "-config", filepath.Join(dir, "config.yaml"), "openapi.yaml")
	b, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", b)
	want, err := os.ReadFile(out)
	require.NoError(t, err)
	got, err := os.ReadFile("api.gen.go")
	require.NoError(t, err)
	require.True(t, bytes.Equal(want, got), "api.gen.go is stale: run go generate ./tasks/api")
}

// TestServedSpecIsTheSource: /openapi.yaml serves the file the code is
// generated from.
func TestServedSpecIsTheSource(t *testing.T) {
	src, err := os.ReadFile("openapi.yaml")
	require.NoError(t, err)
	require.Equal(t, src, api.OpenAPI())
	ev := newEnv(t, api.Config{})
	code, body := ev.do(t, "", "GET", "/openapi.yaml", "")
	require.Equal(t, 200, code)
	require.Equal(t, string(src), body)
}
