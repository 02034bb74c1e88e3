// Package devenv holds the one place the default connection settings of a
// development machine are written: the PostgreSQL and Redis that the
// Makefile and scripts/services.sh set up on loopback. The CLI, the
// examples and the tests read GRAFT_DATABASE_URL and GRAFT_REDIS_URL through
// it. It imports nothing.
package devenv

import "os"

const (
	// DefaultDatabaseURL is used when GRAFT_DATABASE_URL is not set.
	DefaultDatabaseURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable&binary_parameters=yes"
	// DefaultRedisURL is used when GRAFT_REDIS_URL is not set.
	DefaultRedisURL = "redis://127.0.0.1:6379/0"
)

// DatabaseURL is GRAFT_DATABASE_URL, or DefaultDatabaseURL.
func DatabaseURL() string { return getenv("GRAFT_DATABASE_URL", DefaultDatabaseURL) }

// RedisURL is GRAFT_REDIS_URL, or DefaultRedisURL.
func RedisURL() string { return getenv("GRAFT_REDIS_URL", DefaultRedisURL) }

func getenv(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
