package engine

import (
	"fmt"
	"log/slog"
	"regexp"
	"time"

	"github.com/jmoiron/sqlx"
)

// Config configures an Engine. Zero values take the documented defaults.
type Config struct {
	// DB is the database graft stores its state in. It may be the same *sqlx.DB
	// the legacy application uses. Required.
	DB *sqlx.DB
	// DatabaseURL is used to open the LISTEN connection that wakes workers.
	// Required: lib/pq listeners need a DSN, not a pool.
	DatabaseURL string
	// Schema holds graft's tables. Default "graft".
	Schema string
	// Logger receives engine logs. Default slog.Default().
	Logger *slog.Logger
	// Clock drives timers, Now and wake-ups. Default SystemClock.
	Clock Clock
	// MaxPayloadBytes bounds every encoded input, result and signal. Default 2 MiB.
	MaxPayloadBytes int
	// LeaseTTL is how long a worker's claim on a run lasts without renewal; a
	// crashed worker's runs are resumed elsewhere after at most this long.
	// Default 15s.
	LeaseTTL time.Duration
	// UnloadAfter is how long a blocked workflow keeps its goroutine before it is
	// unloaded and left to be resumed by replay. A wait whose next timer is
	// further away than this unloads at once. Default 2s.
	UnloadAfter time.Duration
	// PollInterval is the fallback for LISTEN/NOTIFY: how often workers look for
	// due work on their own. Default 1s.
	PollInterval time.Duration
	// CommitShards is the number of group-commit writers; each run's writes go
	// through one of them in order. Default 2.
	CommitShards int
	// MaxBatch bounds the operations in one group commit. Default 1000.
	MaxBatch int
	// Retention is how long closed runs are kept before removal. Default 7 days;
	// negative keeps them forever.
	Retention time.Duration
	// Interceptors wrap every workflow, activity and client call of this engine;
	// the first is the outermost. Each may implement any of the interceptor
	// interfaces (see interceptor.go).
	Interceptors []Interceptor
}

var identRe = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]{0,62}$`)

func (c *Config) withDefaults() Config {
	out := *c
	if out.Schema == "" {
		out.Schema = "graft"
	}
	if out.Logger == nil {
		out.Logger = slog.Default()
	}
	if out.Clock == nil {
		out.Clock = SystemClock{}
	}
	if out.MaxPayloadBytes == 0 {
		out.MaxPayloadBytes = 2 << 20
	}
	if out.LeaseTTL == 0 {
		out.LeaseTTL = 15 * time.Second
	}
	if out.UnloadAfter == 0 {
		out.UnloadAfter = 2 * time.Second
	}
	if out.PollInterval == 0 {
		out.PollInterval = time.Second
	}
	if out.CommitShards == 0 {
		out.CommitShards = 2
	}
	if out.MaxBatch == 0 {
		out.MaxBatch = 1000
	}
	if out.Retention == 0 {
		out.Retention = 7 * 24 * time.Hour
	}
	return out
}

func (c *Config) validate() error {
	switch {
	case c.DB == nil:
		return fmt.Errorf("graft: Config.DB is required")
	case c.DatabaseURL == "":
		return fmt.Errorf("graft: Config.DatabaseURL is required (for LISTEN/NOTIFY)")
	case !identRe.MatchString(c.Schema):
		return fmt.Errorf("graft: Config.Schema %q is not a valid identifier", c.Schema)
	case c.MaxPayloadBytes < 0:
		return fmt.Errorf("graft: Config.MaxPayloadBytes must not be negative")
	case c.LeaseTTL < time.Second:
		return fmt.Errorf("graft: Config.LeaseTTL %v is below 1s", c.LeaseTTL)
	case c.UnloadAfter < 0:
		return fmt.Errorf("graft: Config.UnloadAfter must not be negative")
	case c.PollInterval < 10*time.Millisecond:
		return fmt.Errorf("graft: Config.PollInterval %v is below 10ms", c.PollInterval)
	case c.CommitShards < 1 || c.CommitShards > 64:
		return fmt.Errorf("graft: Config.CommitShards %d is outside 1..64", c.CommitShards)
	case c.MaxBatch < 1:
		return fmt.Errorf("graft: Config.MaxBatch must be positive")
	}
	return nil
}
