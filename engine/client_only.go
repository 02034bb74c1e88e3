package engine

import (
	"cmp"
	"fmt"
	"log/slog"
	"sync"

	"github.com/jmoiron/sqlx"
)

// ClientConfig configures a Client made with NewClient, for a process that
// starts, signals, queries, cancels or watches workflows but runs none: an
// HTTP API, a CLI, a cron job. Zero values take the documented defaults.
type ClientConfig struct {
	// DatabaseURL is the PostgreSQL DSN. Required: Result waits on
	// LISTEN/NOTIFY, which needs a connection of its own.
	DatabaseURL string
	// DB is the pool to use; nil opens one on DatabaseURL (closed by Close).
	DB *sqlx.DB
	// Schema holds graft's tables. Default DefaultSchema ("graft").
	Schema string
	// Logger receives client logs. Default slog.Default().
	Logger *slog.Logger
	// MaxPayloadBytes bounds every encoded input and signal. Default
	// DefaultMaxPayloadBytes; it should match the workers'.
	MaxPayloadBytes int
	// Interceptors wrap every client call; the first is the outermost.
	Interceptors []Interceptor
	// Workflows are needed only for Query (a query replays the run with the
	// workflow's code) and StartByName (which checks the input's type).
	// Workflow.Start, Signal, Cancel, Reset, Describe, List, History and
	// Result need no definitions.
	Workflows []Definition
}

type ownedClient struct {
	db   *sqlx.DB // opened by NewClient, or nil
	once sync.Once
}

// NewClient returns a Client that needs no Engine: no worker, no
// registration beyond ClientConfig.Workflows, and one DSN. Close it when
// done.
func NewClient(cfg ClientConfig) (*Client, error) {
	if cfg.DatabaseURL == "" {
		return nil, fmt.Errorf("engine: ClientConfig.DatabaseURL is required")
	}
	own := &ownedClient{}
	db := cfg.DB
	if db == nil {
		var err error
		if db, err = OpenDB(cfg.DatabaseURL); err != nil {
			return nil, fmt.Errorf("engine: open %s: %w", "ClientConfig.DatabaseURL", err)
		}
		own.db = db
	}
	e, err := New(Config{DB: db, DatabaseURL: cfg.DatabaseURL, Schema: cfg.Schema, Logger: cfg.Logger,
		MaxPayloadBytes: cfg.MaxPayloadBytes, Interceptors: cfg.Interceptors,
		Retention: -1, // removing old runs is the workers' job
	})
	if err == nil {
		err = e.Register(cfg.Workflows...)
		if err != nil {
			_ = e.Close()
		}
	}
	if err != nil {
		if own.db != nil {
			_ = own.db.Close()
		}
		return nil, err
	}
	return &Client{e: e, own: own}, nil
}

// Close releases what NewClient opened: the LISTEN connection and the pool
// it opened itself. On a client from Engine.Client it does nothing (close
// the Engine).
func (c *Client) Close() error {
	if c.own == nil {
		return nil
	}
	var err error
	c.own.once.Do(func() {
		err = c.e.Close()
		if c.own.db != nil {
			err = cmp.Or(err, c.own.db.Close())
		}
	})
	return err
}
