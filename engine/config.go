package engine

import (
	"cmp"
	"fmt"
	"log/slog"
	"regexp"
	"time"

	"github.com/jmoiron/sqlx"
)

// Defaults of Config, applied to fields left zero.
const (
	// DefaultSchema is the PostgreSQL schema graft's tables live in.
	DefaultSchema = "graft"
	// DefaultMaxPayloadBytes bounds every encoded input, result and signal.
	DefaultMaxPayloadBytes = 2 << 20
	// DefaultLeaseTTL is how long a worker's claim on a run lasts unrenewed.
	DefaultLeaseTTL = 15 * time.Second
	// DefaultUnloadAfter is how long a blocked workflow keeps its goroutine.
	DefaultUnloadAfter = 2 * time.Second
	// DefaultPollInterval is how often workers look for due work unprompted.
	DefaultPollInterval = time.Second
	// DefaultCommitShards is the number of group-commit writers.
	DefaultCommitShards = 2
	// DefaultMaxBatch bounds the operations in one group commit.
	DefaultMaxBatch = 1000
	// DefaultCommitTimeout bounds each group commit.
	DefaultCommitTimeout = 10 * time.Second
	// DefaultCheckpointRefusalLimit is how many refusals in a row of a
	// run's write by a checkpoint interceptor fail the run.
	DefaultCheckpointRefusalLimit = 20
	// DefaultRetention is how long closed runs are kept.
	DefaultRetention = 7 * 24 * time.Hour
)

// Config configures an Engine. Zero values take the documented defaults.
type Config struct {
	// DB is the database graft stores its state in. It may be the same *sqlx.DB
	// the legacy application uses. Required. Open it with OpenDB (or on
	// NewConnector): lib/pq alone leaves a statement whose context ended
	// waiting for a server that stopped answering until the operating
	// system gives up on the connection, so CommitTimeout could not end a
	// commit to a stalled database. New logs a warning for a pool opened
	// otherwise.
	DB *sqlx.DB
	// DatabaseURL is used to open the LISTEN connection that wakes workers.
	// Required: lib/pq listeners need a DSN, not a pool.
	DatabaseURL string
	// Schema holds graft's tables. Default DefaultSchema ("graft").
	Schema string
	// Logger receives engine logs. Default slog.Default().
	Logger *slog.Logger
	// Clock drives timers, Now and wake-ups. Default SystemClock.
	Clock Clock
	// MaxPayloadBytes bounds every encoded input, result and signal.
	// Default DefaultMaxPayloadBytes (2 MiB).
	MaxPayloadBytes int
	// LeaseTTL is how long a worker's claim on a run lasts without renewal; a
	// crashed worker's runs are resumed elsewhere after at most this long.
	// Default DefaultLeaseTTL (15s).
	LeaseTTL time.Duration
	// UnloadAfter is how long a blocked workflow keeps its goroutine before it is
	// unloaded and left to be resumed by replay. A wait whose next timer is
	// further away than this unloads at once. Default DefaultUnloadAfter (2s).
	UnloadAfter time.Duration
	// PollInterval is the fallback for LISTEN/NOTIFY: how often workers look for
	// due work on their own. Default DefaultPollInterval (1s).
	PollInterval time.Duration
	// CommitShards is the number of group-commit writers; each run's writes go
	// through one of them in order. A process's loaded runs all use the first
	// while it has fewer than 64 loaded per live worker of the roster (up to
	// four), and are spread evenly past that (see committer.pin), and so do
	// the starts no local worker takes; a process with few runs in flight,
	// or one that only starts workflows, so makes fewer, larger commits.
	// Default DefaultCommitShards (2).
	CommitShards int
	// MaxBatch bounds the operations in one group commit. Default
	// DefaultMaxBatch (1000).
	MaxBatch int
	// CommitTimeout bounds each group commit (and the read-back of one whose
	// outcome was lost), so a database that stops answering cannot hold a
	// writer for ever: the commit is cancelled and retried, on another
	// connection. On a pool from OpenDB, a server that does not answer the
	// cancellation within 2 s more has that connection closed and its
	// backend terminated, so nothing sent to it runs late. Default
	// DefaultCommitTimeout (10s).
	CommitTimeout time.Duration
	// CheckpointRefusalLimit is how many times in a row a checkpoint
	// interceptor may refuse a write of a run that is not an activity's
	// outcome (its end, a timer, a signal, a child start) before the run
	// fails with an ErrorTypeNeedsOperator error holding the last refusal,
	// for an operator to reset once its cause is fixed. Until then the run
	// is resumed from its record after a pause that doubles with each
	// refusal (100 ms up to a minute), with the refusal as its error. (A
	// refused activity outcome fails its attempt instead, with
	// ErrorTypeCheckpointRefused, and the retry policy decides.) Default
	// DefaultCheckpointRefusalLimit (20, about 12 minutes of refusals).
	CheckpointRefusalLimit int
	// Retention is how long closed runs are kept before removal. Default
	// DefaultRetention (7 days); negative keeps them forever.
	Retention time.Duration
	// HistoryCountWarn is the number of steps in a run's record past which
	// the engine logs a warning (once per load of the run): a workflow that
	// loops should continue as new well before the limit. Default
	// DefaultHistoryCountWarn.
	HistoryCountWarn int
	// HistoryCountLimit is the most steps a run's record may hold: a run
	// that asks for one more fails with a non-retryable
	// ErrorTypeHistoryLimitExceeded error, as Temporal fails a workflow whose
	// history is too long. Default DefaultHistoryCountLimit.
	HistoryCountLimit int
	// HistorySizeWarn is the size in bytes of the inputs, results and
	// errors in a run's record past which the engine logs a warning (once
	// per load). Default DefaultHistorySizeWarn.
	HistorySizeWarn int64
	// HistorySizeLimit is the most bytes a run's record may hold: at its
	// next step past it the run fails with a non-retryable
	// ErrorTypeHistoryLimitExceeded error. Default DefaultHistorySizeLimit.
	HistorySizeLimit int64
	// Interceptors wrap every workflow, activity and client call of this engine;
	// the first is the outermost. Each may implement any of the interceptor
	// interfaces (see Interceptor).
	Interceptors []Interceptor

	// listenCheckEvery, when set (by a test, before New), replaces
	// listenCheckInterval.
	listenCheckEvery time.Duration
	// purgeEvery, when set (by a test, before New), replaces
	// purgeInterval.
	purgeEvery time.Duration
}

// Defaults of the history bounds (Temporal's: a warning at 10,240 events or
// 10 MiB, failure at 51,200 events or 50 MiB).
const (
	DefaultHistoryCountWarn  = 10 * 1024
	DefaultHistoryCountLimit = 50 * 1024
	DefaultHistorySizeWarn   = 10 << 20
	DefaultHistorySizeLimit  = 50 << 20
)

var identRe = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]{0,62}$`)

func (c *Config) withDefaults() Config {
	out := *c
	out.Schema = cmp.Or(out.Schema, DefaultSchema)
	out.Logger = cmp.Or(out.Logger, slog.Default())
	out.Clock = cmp.Or[Clock](out.Clock, SystemClock{})
	out.MaxPayloadBytes = cmp.Or(out.MaxPayloadBytes, DefaultMaxPayloadBytes)
	out.LeaseTTL = cmp.Or(out.LeaseTTL, DefaultLeaseTTL)
	out.UnloadAfter = cmp.Or(out.UnloadAfter, DefaultUnloadAfter)
	out.PollInterval = cmp.Or(out.PollInterval, DefaultPollInterval)
	out.CommitShards = cmp.Or(out.CommitShards, DefaultCommitShards)
	out.MaxBatch = cmp.Or(out.MaxBatch, DefaultMaxBatch)
	out.HistoryCountWarn = cmp.Or(out.HistoryCountWarn, DefaultHistoryCountWarn)
	out.HistoryCountLimit = cmp.Or(out.HistoryCountLimit, DefaultHistoryCountLimit)
	out.HistorySizeWarn = cmp.Or(out.HistorySizeWarn, DefaultHistorySizeWarn)
	out.HistorySizeLimit = cmp.Or(out.HistorySizeLimit, DefaultHistorySizeLimit)
	out.CommitTimeout = cmp.Or(out.CommitTimeout, DefaultCommitTimeout)
	out.Retention = cmp.Or(out.Retention, DefaultRetention)
	out.CheckpointRefusalLimit = cmp.Or(out.CheckpointRefusalLimit, DefaultCheckpointRefusalLimit)
	return out
}

func (c *Config) validate() error {
	switch {
	case c.DB == nil:
		return fmt.Errorf("engine: Config.DB is required")
	case c.DatabaseURL == "":
		return fmt.Errorf("engine: Config.DatabaseURL is required (for LISTEN/NOTIFY)")
	case !identRe.MatchString(c.Schema):
		return fmt.Errorf("engine: Config.Schema %q is not a valid identifier", c.Schema)
	case c.MaxPayloadBytes < 0:
		return fmt.Errorf("engine: Config.MaxPayloadBytes must not be negative")
	case c.LeaseTTL < time.Second:
		return fmt.Errorf("engine: Config.LeaseTTL %v is below 1s", c.LeaseTTL)
	case c.UnloadAfter < 0:
		return fmt.Errorf("engine: Config.UnloadAfter must not be negative")
	case c.PollInterval < 10*time.Millisecond:
		return fmt.Errorf("engine: Config.PollInterval %v is below 10ms", c.PollInterval)
	case c.CommitShards < 1 || c.CommitShards > 64:
		return fmt.Errorf("engine: Config.CommitShards %d is outside 1..64", c.CommitShards)
	case c.MaxBatch < 1:
		return fmt.Errorf("engine: Config.MaxBatch must be positive")
	case c.HistoryCountLimit < 0:
		return fmt.Errorf("engine: Config.HistoryCountLimit must be positive")
	case c.HistoryCountWarn < 0 || c.HistoryCountWarn > c.HistoryCountLimit:
		return fmt.Errorf("engine: Config.HistoryCountWarn %d must be positive and at most HistoryCountLimit %d", c.HistoryCountWarn, c.HistoryCountLimit)
	case c.HistorySizeLimit < 0:
		return fmt.Errorf("engine: Config.HistorySizeLimit must be positive")
	case c.HistorySizeWarn < 0 || c.HistorySizeWarn > c.HistorySizeLimit:
		return fmt.Errorf("engine: Config.HistorySizeWarn %d must be positive and at most HistorySizeLimit %d", c.HistorySizeWarn, c.HistorySizeLimit)
	case c.CheckpointRefusalLimit < 1:
		return fmt.Errorf("engine: Config.CheckpointRefusalLimit %d must be positive", c.CheckpointRefusalLimit)
	case c.CommitTimeout < 100*time.Millisecond:
		return fmt.Errorf("engine: Config.CommitTimeout %v is below 100ms", c.CommitTimeout)
	}
	return nil
}
