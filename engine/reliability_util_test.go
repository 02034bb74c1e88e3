package engine_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// Helpers shared by the reliability tests (crashes, several processes,
// retries, timeouts, typed errors, non-determinism, bad input, idempotent
// start, observability, shutdown). Names carry an "rb" prefix so they
// cannot collide with helpers of other test files in the package.

// rbEnv is an engine with defs registered and one worker running.
func rbEnv(t *testing.T, cfg *engine.Config, defs ...engine.Definition) (*engine.Engine, *engine.Client) {
	t.Helper()
	e := testenv.Engine(t, cfg)
	require.NoError(t, e.Register(defs...))
	testenv.Worker(t, e, engine.WorkerConfig{})
	return e, e.Client()
}

// rbStop stops w and fails the test if draining takes longer than d.
func rbStop(t *testing.T, w *engine.Worker, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	require.NoError(t, w.Stop(ctx))
}

// rbWaitStatus waits until the latest run of id has the status.
func rbWaitStatus(t *testing.T, c *engine.Client, id string, status engine.Status) *engine.RunInfo {
	t.Helper()
	var last *engine.RunInfo
	testenv.Eventually(t, 30*time.Second, func() bool {
		info, err := c.Describe(context.Background(), id)
		if err != nil {
			return false
		}
		last = info
		return info.Status == status
	}, "workflow %s never reached status %s (last %+v)", id, status, last)
	return last
}

// rbWaitStep waits until the latest run of id has recorded a step with the
// given kind, name and status, and returns it.
func rbWaitStep(t *testing.T, c *engine.Client, id, kind, name, status string) engine.StepInfo {
	t.Helper()
	var found engine.StepInfo
	testenv.Eventually(t, 30*time.Second, func() bool {
		h, err := c.History(context.Background(), id)
		if err != nil || len(h) == 0 {
			return false
		}
		for _, st := range h[len(h)-1].Steps {
			if st.Kind == kind && st.Name == name && st.Status == status {
				found = st
				return true
			}
		}
		return false
	}, "workflow %s never recorded %s %q as %s", id, kind, name, status)
	return found
}

// rbAttempts records activity attempts in memory: when each began, keyed
// by a label, safe across goroutines.
type rbAttempts struct {
	mu sync.Mutex
	at map[string][]time.Time
}

func (a *rbAttempts) add(key string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.at == nil {
		a.at = map[string][]time.Time{}
	}
	a.at[key] = append(a.at[key], time.Now())
	return len(a.at[key])
}

func (a *rbAttempts) count(key string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.at[key])
}

func (a *rbAttempts) times(key string) []time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]time.Time(nil), a.at[key]...)
}

// rbTables creates the tables the test owns in schema: executions, where
// activities record each time they run (with the process that ran them),
// and release, which blocked activities poll for their go-ahead.
func rbTables(t testing.TB, db *sqlx.DB, schema string) {
	t.Helper()
	q := pq.QuoteIdentifier(schema)
	_, err := db.Exec(`CREATE TABLE IF NOT EXISTS ` + q + `.executions (
			id bigserial PRIMARY KEY, workflow_id text NOT NULL, step text NOT NULL,
			pid int NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp());
		CREATE TABLE IF NOT EXISTS ` + q + `.release (workflow_id text PRIMARY KEY)`)
	require.NoError(t, err)
}

// rbRecord notes one execution of step for workflowID.
func rbRecord(ctx context.Context, db *sqlx.DB, schema, workflowID, step string, pid int) error {
	_, err := db.ExecContext(ctx, `INSERT INTO `+pq.QuoteIdentifier(schema)+`.executions (workflow_id, step, pid) VALUES ($1, $2, $3)`,
		workflowID, step, pid)
	return err
}

// rbExecCounts returns how many times each step ran for workflowID.
func rbExecCounts(t testing.TB, db *sqlx.DB, schema, workflowID string) map[string]int {
	t.Helper()
	rows, err := db.Query(`SELECT step, count(*) FROM `+pq.QuoteIdentifier(schema)+`.executions WHERE workflow_id = $1 GROUP BY step`, workflowID)
	require.NoError(t, err)
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var step string
		var n int
		require.NoError(t, rows.Scan(&step, &n))
		out[step] = n
	}
	require.NoError(t, rows.Err())
	return out
}

// rbRelease lets workflowID's blocked activity finish.
func rbRelease(t testing.TB, db *sqlx.DB, schema, workflowID string) {
	t.Helper()
	_, err := db.Exec(`INSERT INTO `+pq.QuoteIdentifier(schema)+`.release (workflow_id) VALUES ($1) ON CONFLICT DO NOTHING`, workflowID)
	require.NoError(t, err)
}

// rbWaitReleased polls the release table until workflowID is released or
// ctx ends.
func rbWaitReleased(ctx context.Context, db *sqlx.DB, schema, workflowID string) error {
	for {
		var ok bool
		err := db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM `+pq.QuoteIdentifier(schema)+`.release WHERE workflow_id = $1)`,
			workflowID).Scan(&ok)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// rbIDs returns n workflow IDs with a prefix.
func rbIDs(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%04d", prefix, i)
	}
	return out
}
