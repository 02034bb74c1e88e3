package testenv_test

import (
	"testing"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/internal/testenv"
)

// A private server keeps its data across a restart and a crash, and its
// sessions end when it stops.
func TestPrivatePostgres(t *testing.T) {
	t.Parallel()
	pg := testenv.PrivatePostgres(t)
	db, err := sqlx.Open("postgres", pg.URL)
	require.NoError(t, err)
	defer db.Close()
	db.SetMaxOpenConns(1)
	_, err = db.Exec(`CREATE TABLE kept (v int); INSERT INTO kept VALUES (7)`)
	require.NoError(t, err)

	pg.Restart(t)
	var v int
	require.NoError(t, db.Get(&v, `SELECT v FROM kept`), "the pool reconnects after a restart")
	require.Equal(t, 7, v)

	pg.Crash(t)
	require.Error(t, db.Get(&v, `SELECT v FROM kept`), "a crashed server answers nothing")
	pg.Start(t)
	require.NoError(t, db.Get(&v, `SELECT v FROM kept`))
	require.Equal(t, 7, v)
}
