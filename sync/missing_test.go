package graftsync_test

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	graftsync "github.com/graftdev/graft/sync"
)

func withMissing(p graftsync.MissingRowPolicy) func(string) graftsync.Mapping {
	return func(table string) graftsync.Mapping {
		m := fullMapping(table)
		m.MissingRow = p
		return m
	}
}

// TestMissingRowSkip: the workflow runs; nothing is written.
func TestMissingRowSkip(t *testing.T) {
	t.Parallel()
	ev := newEnv(t, envOpts{mapping: withMissing(graftsync.MissingSkip)})
	_, err := ev.result(ev.start("op-1", renewal{Domain: "a.com"}, nil))
	require.NoError(t, err)
	ev.waitEngine("op-1", engine.StatusCompleted)
	_, found := ev.row("op-1")
	require.False(t, found)
}

// TestMissingRowCreate: the row is created at the first change, with the
// legacy table's defaults in the columns the mapping does not name; with a
// version column, by the write folded into the engine's statement.
func TestMissingRowCreate(t *testing.T) {
	t.Parallel()
	for _, g := range []string{"mirror_state", "version"} {
		t.Run(g, func(t *testing.T) {
			t.Parallel()
			ev := newEnv(t, envOpts{mapping: guarded(g, withMissing(graftsync.MissingCreate))})
			_, err := ev.result(ev.start("op-1", renewal{Domain: "a.com", Years: 1}, nil))
			require.NoError(t, err)
			r := ev.waitStatus("op-1", "done")
			require.Equal(t, "registering", r.Step.String)
			require.Equal(t, "renewal", r.Kind, "the table's default")
			require.False(t, r.Customer.Valid)
			require.Equal(t, "R-a.com", r.Ref.String)
		})
	}
}

// TestMissingRowFail: a start without its row is refused with a clear
// error and leaves no run; a row that disappears while the workflow runs
// fails its next activity, and so the workflow.
func TestMissingRowFail(t *testing.T) {
	t.Parallel()
	ev := newEnv(t, envOpts{mapping: withMissing(graftsync.MissingFail)})
	_, err := renewalWf.Start(context.Background(), ev.c, renewal{Domain: "a.com"}, &engine.StartOptions{ID: "op-1"})
	var mre *graftsync.MissingRowError
	require.ErrorAs(t, err, &mre)
	require.Equal(t, "op-1", mre.Key)
	require.Contains(t, err.Error(), `legacy row `+ev.table+` "op-1" of workflow "op-1" does not exist`)
	_, err = ev.c.Describe(context.Background(), "op-1")
	require.ErrorIs(t, err, engine.ErrNotFound)

	ev.insertRow("op-2")
	run := ev.start("op-2", renewal{Domain: "b.com", Confirm: true}, nil)
	ev.waitStatus("op-2", "waiting")
	ev.exec(`DELETE FROM ` + ev.qtable() + ` WHERE id = 'op-2'`)
	require.NoError(t, ev.c.Signal(context.Background(), "op-2", "confirm", true))
	_, err = ev.result(run)
	var app *engine.ApplicationError
	require.True(t, errors.As(err, &app), "%T %v", err, err)
	require.Equal(t, graftsync.MissingRowErrorType, app.Type)
	require.Contains(t, app.Message, `"op-2" of workflow "op-2" does not exist`)
	_, found := ev.row("op-2")
	require.False(t, found, "nothing created")
}
