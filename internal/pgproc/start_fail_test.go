//go:build unix

package pgproc_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/internal/pgproc"
)

// A Start that fails after it made its directory (here initdb fails)
// returns its error and closes what it started. Its deferred clean-up
// called Close on the nil *Server the return had set, and the caller
// panicked (nil pointer dereference) instead of learning why.
func TestStartReturnsItsFailure(t *testing.T) {
	ctl, err := exec.LookPath("pg_ctl")
	if err != nil {
		ctl = filepath.Join(pgBinDir(t), "pg_ctl")
	}
	bin := t.TempDir()
	require.NoError(t, os.Chmod(bin, 0o755))
	for _, name := range []string{"pg_ctl", "postgres"} {
		require.NoError(t, os.Symlink(filepath.Join(filepath.Dir(ctl), name), filepath.Join(bin, name)))
	}
	require.NoError(t, os.WriteFile(filepath.Join(bin, "initdb"), []byte("#!/bin/sh\nexit 1\n"), 0o755))
	t.Setenv("GRAFT_PG_BIN", bin)
	s, err := pgproc.Start(pgproc.Config{})
	require.ErrorContains(t, err, "initdb")
	require.Nil(t, s)
}

// pgBinDir is the newest installed PostgreSQL's bin directory.
func pgBinDir(t *testing.T) string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	if len(dirs) == 0 {
		t.Skip("no PostgreSQL installed")
	}
	return dirs[len(dirs)-1]
}
