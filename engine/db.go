package engine

import (
	"database/sql"
	"database/sql/driver"
	"fmt"

	"github.com/jmoiron/sqlx"

	"github.com/graftdev/graft/internal/pgconn"
)

// OpenDB opens a pool on databaseURL (a lib/pq DSN) for Config.DB, whose
// connections a database that stops answering cannot hold: see
// NewConnector. It does not connect yet; Ping it to find out whether the
// database answers.
func OpenDB(databaseURL string) (*sqlx.DB, error) {
	c, err := NewConnector(databaseURL)
	if err != nil {
		return nil, err
	}
	return sqlx.NewDb(sql.OpenDB(c), "postgres"), nil
}

// NewConnector returns a lib/pq connector (for sql.OpenDB, or for a
// connector of your own to wrap) whose connections cannot be held by a
// database that stops answering.
//
// With lib/pq alone, a statement whose context ends sends a cancel request
// and keeps waiting for the server: a stalled server (a stopped backend, a
// hung host, a network that drops the packets) holds the call until the
// operating system gives up on the connection, which can be never. Here,
// a server that has not answered a cancel request within 2 s has the
// backend terminated (over a new connection, when one can be made) and
// the connection closed, and the call fails with a connection error: the
// engine retries such a commit (on another connection), reading back
// first whether it went through. A statement whose context does not end is
// not touched, however long it runs. Every connection also sends TCP
// keep-alive probes (15 s idle, then every 5 s, 3 times) and on Linux
// sets TCP_USER_TIMEOUT (30 s), so a peer that vanished is noticed when
// nothing is in flight too; a DSN without connect_timeout gets 10 s.
func NewConnector(databaseURL string) (driver.Connector, error) {
	c, err := pgconn.NewConnector(databaseURL)
	if err != nil {
		return nil, fmt.Errorf("engine: database URL: %w", err)
	}
	return c, nil
}
