package engine_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// Helpers shared by the feature tests (timers, signals, queries, cancel,
// reset, children, unloading). Names carry an "ft" prefix so they cannot
// collide with helpers of other test files in the package.

// ftT0 is the start of fake time in clock-driven tests.
var ftT0 = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

// ftEnv is an engine with its definitions registered and one worker running.
func ftEnv(t *testing.T, cfg *engine.Config, defs ...engine.Definition) (*engine.Engine, *engine.Client) {
	t.Helper()
	e := testenv.Engine(t, cfg)
	require.NoError(t, e.Register(defs...))
	testenv.Worker(t, e, engine.WorkerConfig{})
	return e, e.Client()
}

// ftDescribe returns the latest run of id, failing the test on error.
func ftDescribe(t *testing.T, c *engine.Client, id string) *engine.RunInfo {
	t.Helper()
	info, err := c.Describe(context.Background(), id)
	require.NoError(t, err)
	return info
}

// ftWaitStatus waits until the latest run of id has the status.
func ftWaitStatus(t *testing.T, c *engine.Client, id string, status engine.Status) *engine.RunInfo {
	t.Helper()
	var last *engine.RunInfo
	testenv.Eventually(t, 20*time.Second, func() bool {
		info, err := c.Describe(context.Background(), id)
		if err != nil {
			return false
		}
		last = info
		return info.Status == status
	}, "workflow %s never reached status %s", id, status)
	return last
}

// ftWaitUnloaded waits until the latest run of id is unloaded ("waiting")
// and has been loaded at least minLoads times, so a test knows the run
// reached the wait it expects.
func ftWaitUnloaded(t *testing.T, c *engine.Client, id string, minLoads int) *engine.RunInfo {
	t.Helper()
	var last *engine.RunInfo
	testenv.Eventually(t, 20*time.Second, func() bool {
		info, err := c.Describe(context.Background(), id)
		if err != nil {
			return false
		}
		last = info
		return info.Status == engine.StatusWaiting && info.Loads >= minLoads
	}, "workflow %s never unloaded after %d loads (last: %+v)", id, minLoads, last)
	return last
}

// ftCounter counts calls by key, safely across goroutines.
type ftCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *ftCounter) inc(k string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[k]++
	return c.n[k]
}

func (c *ftCounter) get(k string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[k]
}

// ftAppErr returns the ApplicationError in err's chain, failing if none.
func ftAppErr(t *testing.T, err error) *engine.ApplicationError {
	t.Helper()
	require.Error(t, err)
	var app *engine.ApplicationError
	require.True(t, errors.As(err, &app), "want an ApplicationError, got %T: %v", err, err)
	return app
}
