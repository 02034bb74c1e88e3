package redislog

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestQuietDropsDialFailures: go-redis's per-dial failure lines are
// dropped; any other line is logged once a minute per format.
func TestQuietDropsDialFailures(t *testing.T) {
	var buf bytes.Buffer
	q := &quiet{log: slog.New(slog.NewTextHandler(&buf, nil)), last: map[string]time.Time{}}
	ctx := context.Background()
	for range 3 {
		q.Printf(ctx, "redis: connection pool: failed to dial after %d attempts: %v", 5, errors.New("connection refused"))
		q.Printf(ctx, "redis: discarding bad PubSub connection: %v", errors.New("EOF"))
	}
	require.Zero(t, strings.Count(buf.String(), "failed to dial"), buf.String())
	require.Equal(t, 1, strings.Count(buf.String(), "go-redis: discarding bad PubSub connection: EOF"), buf.String())
}

// TestWatchLogsChanges: a run of failed dials is one line, a run of good
// ones after it another; a dial its caller gave up on says nothing.
func TestWatchLogsChanges(t *testing.T) {
	var buf bytes.Buffer
	w := NewWatch(slog.New(slog.NewTextHandler(&buf, nil)), "redis://127.0.0.1:1/0")
	refused := errors.New("connection refused")
	fail := func(context.Context, string, string) (net.Conn, error) { return nil, refused }
	ok := func(context.Context, string, string) (net.Conn, error) { return nil, nil }
	h := hook{w}
	ctx := context.Background()
	gone, cancel := context.WithCancel(ctx)
	cancel()
	_, _ = h.DialHook(fail)(gone, "tcp", "x")
	require.Empty(t, buf.String(), "a dial given up on is not an outage")
	for _, dial := range []func(context.Context, string, string) (net.Conn, error){fail, fail, fail, ok, ok, fail, ok} {
		_, _ = h.DialHook(dial)(ctx, "tcp", "x")
	}
	require.Equal(t, 2, strings.Count(buf.String(), "Redis unavailable"), buf.String())
	require.Equal(t, 2, strings.Count(buf.String(), "Redis available again"), buf.String())
	w.Down()
	_, _ = h.DialHook(fail)(ctx, "tcp", "x")
	require.Equal(t, 2, strings.Count(buf.String(), "Redis unavailable"), "an outage marked Down is not logged again")
}
