package engine

import (
	"testing"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/internal/devenv"
)

// testDB opens a pool of its own on the development database for a test of
// the package's internals (which cannot use testenv: it imports engine), and
// closes it when the test ends.
func testDB(t *testing.T) *sqlx.DB {
	t.Helper()
	db, err := sqlx.Open("postgres", devenv.DatabaseURL())
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return db
}
