package graftsync_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/grafttest"
	graftsync "github.com/graftdev/graft/sync"
)

func withActions(table string) graftsync.Mapping {
	m := fullMapping(table)
	m.Actions = &graftsync.Actions{On: map[string]graftsync.Action{
		"cancel_requested":   {Cancel: true, Reason: "cancelled in the back office", Ack: "cancelling"},
		"relaunch_requested": {Signal: "fixed"},
	}}
	return m
}

// TestLegacyCancel: the back office writes cancel_requested; graft cancels
// the workflow, acknowledges, and the row ends cancelled.
func TestLegacyCancel(t *testing.T) {
	t.Parallel()
	for _, tc := range modes() {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ev := newEnv(t, envOpts{separate: tc.separate, mapping: guarded(tc.guard, withActions)})
			ev.insertRow("op-1")
			ev.insertRow("legacy-only")
			run := ev.start("op-1", renewal{Domain: "a.com", Confirm: true}, nil)
			ev.waitStatus("op-1", "waiting")

			ev.exec(`UPDATE ` + ev.qtable() + ` SET status = 'cancel_requested' WHERE id IN ('op-1', 'legacy-only')`)
			_, err := ev.result(run)
			var ce *engine.CanceledError
			require.ErrorAs(t, err, &ce)
			require.Equal(t, "cancelled in the back office", ce.Reason)
			// The acknowledgement may write "cancelled" first (the run had
			// ended); the mirror's write of the end brings the error.
			ev.waitRow("op-1", func(r *opRow) bool {
				return r.Status == "cancelled" && strings.Contains(r.LastError.String, "cancelled in the back office")
			}, "the row ends cancelled, with the reason")
			// A row graft does not mirror is the legacy runner's.
			r, _ := ev.row("legacy-only")
			require.Equal(t, "cancel_requested", r.Status)
		})
	}
}

// TestLegacySignal: relaunch_requested signals a workflow that waits for an
// operator; the acknowledgement writes the status of the run's state.
func TestLegacySignal(t *testing.T) {
	t.Parallel()
	ev := newEnv(t, envOpts{mapping: withActions})
	ev.insertRow("op-1")
	run := ev.start("op-1", renewal{Domain: "a.com", Operator: true}, nil)
	ev.waitStatus("op-1", "problem")
	ev.exec(`UPDATE ` + ev.qtable() + ` SET status = 'relaunch_requested' WHERE id = 'op-1'`)
	_, err := ev.result(run)
	require.NoError(t, err)
	ev.waitStatus("op-1", "done")
}

// TestRequestOutlivesMirrorWrites: a request value is not overwritten by
// the mirror's writes until graft takes it; a request on a workflow that
// has ended is acknowledged without an action, with the status of its end.
func TestRequestOutlivesMirrorWrites(t *testing.T) {
	t.Parallel()
	ev := newEnv(t, envOpts{mapping: withActions, config: func(c *graftsync.Config) { c.ActionInterval = time.Hour }})
	ev.insertRow("op-1")
	run := ev.start("op-1", renewal{Domain: "a.com", Confirm: true}, nil)
	ev.waitStatus("op-1", "waiting")
	ev.exec(`UPDATE ` + ev.qtable() + ` SET status = 'cancel_requested' WHERE id = 'op-1'`)
	require.NoError(t, ev.c.Signal(context.Background(), "op-1", "confirm", true))
	_, err := ev.result(run)
	require.NoError(t, err)
	r := ev.waitRow("op-1", func(r *opRow) bool { return r.Step.String == "registering" }, "the mirror wrote the last step")
	require.Equal(t, "cancel_requested", r.Status, "the request is still there")

	n, err := ev.mr.ActOnce(grafttest.Context(t, 10*time.Second), ev.c)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	r, _ = ev.row("op-1")
	require.Equal(t, "done", r.Status,
		"acknowledged with the status of the run's end: it had completed, nothing to cancel, and the mirror's write of its end was held back by the request")
	info, err := ev.c.Describe(context.Background(), "op-1")
	require.NoError(t, err)
	require.Equal(t, engine.StatusCompleted, info.Status)

	// Rows graft does not mirror are the legacy runner's: not touched.
	ev.insertRow("legacy-only")
	ev.exec(`UPDATE ` + ev.qtable() + ` SET status = 'cancel_requested' WHERE id = 'legacy-only'`)
	n, err = ev.mr.ActOnce(grafttest.Context(t, 10*time.Second), ev.c)
	require.NoError(t, err)
	require.Zero(t, n)
	r, _ = ev.row("legacy-only")
	require.Equal(t, "cancel_requested", r.Status)
}
