package testenv

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/internal/pgproc"
)

// Postgres is a PostgreSQL server of one test's own, for tests that must
// stop, restart or crash the database: the shared server on 5432 is never
// touched. It runs from a temporary data directory on a free loopback port,
// with trust authentication and fsync off, and is stopped and removed when
// the test ends.
type Postgres struct {
	// URL is the DSN of its "postgres" database, in the form of DatabaseURL.
	URL string
	// Port is the loopback port it listens on.
	Port int

	s *pgproc.Server
}

// PrivatePostgres initialises and starts a private PostgreSQL server. The
// binaries are taken from GRAFT_PG_BIN, else the newest
// /usr/lib/postgresql/*/bin, else PATH. Run as root, the server runs as the
// postgres user (initdb refuses root).
func PrivatePostgres(t testing.TB) *Postgres {
	t.Helper()
	s, err := pgproc.Start(pgproc.Config{})
	require.NoError(t, err, "start a private PostgreSQL")
	t.Cleanup(s.Close)
	return &Postgres{URL: s.URL, Port: s.Port, s: s}
}

// Start starts the server (again) and waits until it accepts connections.
func (p *Postgres) Start(t testing.TB) {
	t.Helper()
	require.NoError(t, p.s.Start(), "start private PostgreSQL")
}

// Stop shuts the server down the way a restart or a failover does: open
// sessions are terminated and in-flight transactions rolled back.
func (p *Postgres) Stop(t testing.TB) {
	t.Helper()
	require.NoError(t, p.s.Stop(), "stop private PostgreSQL")
}

// Crash kills the server without a shutdown checkpoint, as a power cut
// would; Start recovers it from its WAL.
func (p *Postgres) Crash(t testing.TB) {
	t.Helper()
	require.NoError(t, p.s.Crash(), "crash private PostgreSQL")
}

// Restart stops and starts the server.
func (p *Postgres) Restart(t testing.TB) {
	t.Helper()
	p.Stop(t)
	p.Start(t)
}
