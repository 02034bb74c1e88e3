package graftsync

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/graftdev/graft/engine"
)

// Request is the payload of a signal sent for a legacy-side request.
type Request struct {
	// Table is the mapping's table, "schema.table".
	Table string `json:"table"`
	// Key is the row's key.
	Key string `json:"key"`
	// Value is the request value found in the row.
	Value string `json:"value"`
}

// actionLoop polls for requests until Stop.
func (mr *Mirror) actionLoop(c *engine.Client) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-mr.stop
		cancel()
	}()
	// The first look is one interval after Start, like every later one: a
	// process that polls at once on start would make the timing of its
	// start matter to what it takes.
	t := time.NewTicker(mr.cfg.ActionInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := mr.actOnce(ctx, c); err != nil && ctx.Err() == nil {
			mr.log.Warn("graftsync: polling for requests failed", "table", mr.table.String(), "err", err)
		}
	}
}

// ActOnce looks for requests now, acts on them and returns how many it
// acknowledged. It is for tests and tools; Start polls in the background.
func (mr *Mirror) ActOnce(ctx context.Context, c *engine.Client) (int, error) {
	if mr.m.Actions == nil {
		return 0, errors.New("graftsync: ActOnce: the mapping has no Actions")
	}
	return mr.actOnce(ctx, c)
}

// actOnce takes one round of requests while a legacy transaction holds an
// advisory lock, so one process at a time acts for a mapping. Each
// acknowledgement commits on its own right after its action, holding no row
// lock across the round (mirror writes to the same rows must not wait on
// it); a crash between an action and its acknowledgement repeats that
// action (at least once).
func (mr *Mirror) actOnce(ctx context.Context, c *engine.Client) (int, error) {
	db := mr.legacyDB()
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	var elected bool
	if err := tx.QueryRowContext(ctx, `SELECT pg_try_advisory_xact_lock($1)`, lockKey("graftsync-actions:"+mr.stateSchema+":"+mr.table.String())).Scan(&elected); err != nil {
		return 0, err
	}
	if !elected {
		return 0, nil
	}
	type req struct{ key, value, workflowID, state string }
	var reqs []req
	rows, err := tx.QueryContext(ctx, mr.sql.poll, mr.table.String(), mr.requestValues, mr.cfg.ActionBatch)
	if err != nil {
		return 0, err
	}
	for rows.Next() {
		var r req
		if err := rows.Scan(&r.key, &r.value, &r.workflowID, &r.state); err != nil {
			rows.Close()
			return 0, err
		}
		reqs = append(reqs, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	states, values := mr.stateValues()
	acked := 0
	for _, r := range reqs {
		act, ok := mr.m.Actions.On[r.value]
		if !ok {
			continue // bpchar padding or a value removed from the mapping
		}
		outcome := "done"
		if err := mr.act(ctx, c, act, r.key, r.value, r.workflowID); err != nil {
			if !errors.Is(err, engine.ErrNotRunning) && !errors.Is(err, engine.ErrNotFound) {
				mr.met.request(ctx, r.value, "error")
				mr.log.Warn("graftsync: request not delivered; retrying at the next poll", "table", mr.table.String(),
					"key", r.key, "request", r.value, "workflow_id", r.workflowID, "err", err)
				continue
			}
			// The workflow is closed (or gone): nothing to do, but the
			// request must not stay.
			outcome = "not_running"
			mr.log.Info("graftsync: request for a workflow that is not running; acknowledged", "table", mr.table.String(),
				"key", r.key, "request", r.value, "workflow_id", r.workflowID, "err", err)
		}
		if err := mr.acknowledge(ctx, db, c, act, r.key, r.value, r.workflowID, states, values); err != nil {
			return acked, fmt.Errorf("acknowledge request %q of %s %q: %w", r.value, mr.table, r.key, err)
		}
		mr.met.request(ctx, r.value, outcome)
		acked++
	}
	return acked, tx.Commit()
}

// acknowledge replaces a request value that was acted on. The value is the
// action's Ack, or the status of the run's state when it has none; but when
// the run has already ended, the status of its end: the mirror skips the
// status column while a request is pending, so the write of the run's end
// may have been skipped and no later write will come. The row's mirror
// state (or, with a version column, the legacy row) is locked first, as the
// mirror locks it before it writes: a mirror write that comes later waits
// for the acknowledgement and then writes the status over it.
func (mr *Mirror) acknowledge(ctx context.Context, db *sqlx.DB, c *engine.Client, act Action, key, value, workflowID, states, values string) error {
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var state State
	if mr.versioned {
		// No mirror_state: the engine says what state the run is in.
		var one int
		err = tx.QueryRowContext(ctx, mr.sql.lockRow, key).Scan(&one)
		if err == nil {
			state = mr.currentState(ctx, c, workflowID)
		}
	} else {
		err = tx.QueryRowContext(ctx, mr.sql.lockState, mr.table.String(), key).Scan(&state)
	}
	if errors.Is(err, sql.ErrNoRows) {
		return nil // the row is gone: nothing to acknowledge
	}
	if err != nil {
		return err
	}
	var ack any
	if v, ok := mr.m.Status.Values[state]; ok && (state.closed() || act.Ack == "") {
		ack = v
	} else if act.Ack != "" {
		ack = act.Ack
	}
	if _, err := tx.ExecContext(ctx, mr.sql.ack, mr.table.String(), key, value, ack, states, values); err != nil {
		return err
	}
	return tx.Commit()
}

func (mr *Mirror) act(ctx context.Context, c *engine.Client, act Action, key, value, workflowID string) error {
	if act.Cancel {
		reason := act.Reason
		if reason == "" {
			reason = "requested in " + mr.table.String()
		}
		return c.Cancel(ctx, workflowID, reason)
	}
	return c.Signal(ctx, workflowID, act.Signal, Request{Table: mr.table.String(), Key: key, Value: value})
}

// stateValues renders Status.Values as two text[] literals (states, values)
// for the acknowledgement's default.
func (mr *Mirror) stateValues() (string, string) {
	var ss, vs []*string
	if mr.m.Status != nil {
		for _, st := range sortedStates(mr.m.Status.Values) {
			s, v := string(st), mr.m.Status.Values[st]
			ss, vs = append(ss, &s), append(vs, &v)
		}
	}
	return pgArray(ss), pgArray(vs)
}

// currentState is the state of the workflow's latest run, as the engine
// reports it ("" when it cannot say).
func (mr *Mirror) currentState(ctx context.Context, c *engine.Client, workflowID string) State {
	info, err := c.Describe(ctx, workflowID)
	if err != nil {
		return ""
	}
	return mr.stateOfRun(info.Status, info.Error)
}
