package engine_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// Heartbeat details are saved under the claim that runs the attempt: once a
// worker's claim is superseded (the run was claimed again, even by the same
// worker, after its lease expired), the stale attempt's saves are refused
// and cannot overwrite what the current attempt saved.
func TestStaleClaimCannotSaveHeartbeat(t *testing.T) {
	t.Parallel()
	e := testenv.Engine(t, nil)
	db, s := e.DB(), `"`+e.Schema()+`"`
	ctx := testenv.Ctx(t, 30*time.Second)
	// The run's second claim (loads 2) belongs to worker w.
	_, err := db.ExecContext(ctx, `INSERT INTO `+s+`.runs (run_id, workflow_id, workflow_type, queue, status, lease_owner, lease_expires_at, loads)
		VALUES ('r1', 'w1', 'wf', 'default', 'running', 'w', now() + interval '1 minute', 2)`)
	require.NoError(t, err)
	details := func() string {
		var d string
		err := db.GetContext(ctx, &d, `SELECT coalesce((SELECT convert_from(details, 'UTF8') FROM `+s+`.heartbeats WHERE run_id = 'r1' AND seq = 3), '')`)
		require.NoError(t, err)
		return d
	}

	require.NoError(t, engine.SaveHeartbeatForTest(ctx, e, "w", 1, "r1", 3, []byte(`"stale"`)))
	require.Empty(t, details(), "the first claim's attempt saved details under the second claim")
	require.NoError(t, engine.SaveHeartbeatForTest(ctx, e, "w", 2, "r1", 3, []byte(`"current"`)))
	require.Equal(t, `"current"`, details())
	require.NoError(t, engine.SaveHeartbeatForTest(ctx, e, "w", 1, "r1", 3, []byte(`"stale"`)))
	require.NoError(t, engine.SaveHeartbeatForTest(ctx, e, "other", 2, "r1", 3, []byte(`"stale"`)))
	require.Equal(t, `"current"`, details(), "a stale claim overwrote the current attempt's details")
}
