// Package redislog keeps go-redis's logging to one line per Redis outage.
//
// go-redis prints a line to stderr for every failed dial of its connection
// pool ("connection pool: failed to dial after 5 attempts"), several a second
// while Redis is down. Quiet sends go-redis's lines to a slog.Logger instead,
// without the per-dial failures, and Watch reports a client's outages
// itself: one line when dialling Redis starts failing, one when it works
// again.
package redislog

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// repeatEvery is how often Quiet logs go-redis lines of one format.
const repeatEvery = time.Minute

// Quiet makes go-redis log through log (process-wide: redis.SetLogger):
// its per-dial failures are dropped, for Watch to report once per outage,
// and any other line is logged at most once a minute per message format.
func Quiet(log *slog.Logger) {
	redis.SetLogger(&quiet{log: log, last: map[string]time.Time{}})
}

type quiet struct {
	log  *slog.Logger
	mu   sync.Mutex
	last map[string]time.Time // format -> when last logged
}

func (q *quiet) Printf(ctx context.Context, format string, v ...any) {
	if strings.Contains(format, "failed to dial") {
		return
	}
	q.mu.Lock()
	now := time.Now()
	if t, ok := q.last[format]; ok && now.Sub(t) < repeatEvery {
		q.mu.Unlock()
		return
	}
	q.last[format] = now
	q.mu.Unlock()
	q.log.WarnContext(ctx, "go-redis: "+strings.TrimPrefix(fmt.Sprintf(format, v...), "redis: "))
}

// Watch logs a Redis client's outages: when one of its dials fails after
// they worked (or at first), and when one works after they failed. Add it
// to a client with AddTo.
type Watch struct {
	log   *slog.Logger
	what  string // how the lines name this Redis (its URL, password left out)
	mu    sync.Mutex
	down  bool
	since time.Time
}

// NewWatch returns a Watch that logs to log, naming the Redis what.
func NewWatch(log *slog.Logger, what string) *Watch {
	return &Watch{log: log, what: what}
}

// AddTo adds w's hook to c: every dial c makes (its pool's, for commands,
// /readyz pings and its own reconnect attempts) tells w whether Redis
// answers.
func (w *Watch) AddTo(c *redis.Client) { c.AddHook(hook{w}) }

// Down records an outage already reported elsewhere (a start-up check), so
// that only its end is logged.
func (w *Watch) Down() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.down {
		w.down, w.since = true, time.Now()
	}
}

// saw records one dial's outcome and logs a change.
func (w *Watch) saw(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case err != nil && !w.down:
		w.down, w.since = true, time.Now()
		w.log.Warn("Redis unavailable; logged once until it answers again", "redis", w.what, "err", err)
	case err == nil && w.down:
		w.down = false
		w.log.Info("Redis available again", "redis", w.what, "down_for", time.Since(w.since).Round(time.Millisecond))
	}
}

type hook struct{ w *Watch }

func (h hook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := next(ctx, network, addr)
		if err != nil && ctx.Err() != nil {
			return c, err // the caller gave up; says nothing about Redis
		}
		h.w.saw(err)
		return c, err
	}
}

func (hook) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (hook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
