package api

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/graftdev/graft/engine"
)

// Names of the bulk job's workflow, its activities and its queue.
const (
	// BulkWorkflow is the workflow that runs a bulk job; its ID is the job's.
	BulkWorkflow = "graft.bulk"
	// BulkQueue is the queue bulk jobs run on (see Server.StartBulkWorker).
	BulkQueue = "graft.bulk"
	// DefaultBulkConcurrency bounds the operations one job acts on at once.
	DefaultBulkConcurrency = 16

	bulkBatchActivity  = "graft.bulk.batch"
	bulkStateActivity  = "graft.bulk.state"
	bulkFinishActivity = "graft.bulk.finish"
	// bulkWindow is how long one batch lasts at the job's rate; between
	// batches the workflow takes pause and stop signals.
	bulkWindow   = 2 * time.Second
	maxBulkBatch = 5000
	// bulkRunsPerWorkflow bounds a job run's history: it continues as new
	// after this many batches.
	bulkRunsPerWorkflow = 200
)

type bulkRunIn struct {
	JobID string `json:"job_id"`
}

type bulkBatchOut struct {
	Acted     int `json:"acted"`
	Remaining int `json:"remaining"`
	// Interrupted: a pause or stop was asked before the batch ended.
	Interrupted bool `json:"interrupted"`
}

type bulkStateIn struct {
	JobID string `json:"job_id"`
	State string `json:"state"`
}

// bulkDefs are a server's bulk definitions, registered on its engine.
type bulkDefs struct {
	wf     *engine.Workflow[bulkRunIn, string]
	batch  *engine.Activity[bulkRunIn, bulkBatchOut]
	state  *engine.Activity[bulkStateIn, struct{}]
	finish *engine.Activity[bulkStateIn, struct{}]
}

// registerBulk registers the bulk job workflow on the server's engine. An
// engine another Server registered it on keeps that server's definitions:
// they act on the same database.
func (s *Server) registerBulk() error {
	if _, ok := s.cfg.Engine.WorkflowSignals(BulkWorkflow); ok {
		return nil
	}
	retry := &engine.RetryPolicy{InitialInterval: 200 * time.Millisecond, MaximumInterval: 10 * time.Second}
	d := &bulkDefs{}
	d.batch = engine.NewActivity(bulkBatchActivity, s.runBatch).
		WithOptions(engine.ActivityOptions{StartToCloseTimeout: 2 * time.Minute, RetryPolicy: retry})
	d.state = engine.NewActivity(bulkStateActivity, s.setJobState).WithOptions(engine.ActivityOptions{RetryPolicy: retry})
	d.finish = engine.NewActivity(bulkFinishActivity, s.finishJob).WithOptions(engine.ActivityOptions{RetryPolicy: retry})
	d.wf = engine.NewWorkflow(BulkWorkflow, func(ctx engine.Context, in bulkRunIn) (string, error) {
		return s.bulkJob(ctx, d, in)
	}).WithSignals(
		engine.DeclareSignal[struct{}]("pause", "pause after the items in hand"),
		engine.DeclareSignal[struct{}]("resume", "resume a paused job"),
		engine.DeclareSignal[struct{}]("stop", "stop for good"))
	return s.cfg.Engine.Register(d.wf, d.batch, d.state, d.finish)
}

// StartBulkWorker starts a worker that runs bulk jobs (queue BulkQueue) in
// this process; stop it before closing the engine. A job survives the
// process: another bulk worker on the database resumes it.
func (s *Server) StartBulkWorker(ctx context.Context) (*engine.Worker, error) {
	w, err := s.cfg.Engine.NewWorker(engine.WorkerConfig{Queues: []string{BulkQueue}, Workflows: []string{BulkWorkflow}})
	if err != nil {
		return nil, fmt.Errorf("api: bulk worker: %w", err)
	}
	if err := w.Start(ctx); err != nil {
		return nil, fmt.Errorf("api: bulk worker: %w", err)
	}
	return w, nil
}

// bulkJob is the job's workflow: batches at the job's rate until no item
// is pending, taking pause, resume and stop signals between batches.
func (s *Server) bulkJob(ctx engine.Context, d *bulkDefs, in bulkRunIn) (string, error) {
	pause := engine.GetSignalChannel[struct{}](ctx, "pause")
	resume := engine.GetSignalChannel[struct{}](ctx, "resume")
	stop := engine.GetSignalChannel[struct{}](ctx, "stop")
	end := func(state string) (string, error) {
		if _, err := d.finish.Run(ctx, bulkStateIn{JobID: in.JobID, State: state}); err != nil {
			return "", err
		}
		return state, nil
	}
	// paused waits for resume or stop; it reports whether to stop.
	paused := func() (bool, error) {
		if _, err := d.state.Run(ctx, bulkStateIn{JobID: in.JobID, State: "paused"}); err != nil {
			return false, err
		}
		i, err := engine.Select(ctx, stop, resume)
		if err != nil || i == 0 {
			return true, err
		}
		if _, err := resume.Receive(ctx); err != nil {
			return false, err
		}
		_, err = d.state.Run(ctx, bulkStateIn{JobID: in.JobID, State: "running"})
		return false, err
	}
	for range s.bulkBatchesPerRun {
		out, err := d.batch.Run(ctx, in)
		if err != nil {
			return "", err
		}
		if out.Remaining == 0 {
			return end("completed")
		}
		if out.Interrupted {
			// A pause or stop was asked: its signal was sent with it.
			if i, err := engine.Select(ctx, stop, pause); err != nil {
				return "", err
			} else if i == 0 {
				return end("stopped")
			}
		} else {
			if _, ok, err := stop.ReceiveAsync(ctx); err != nil {
				return "", err
			} else if ok {
				return end("stopped")
			}
			if _, ok, err := pause.ReceiveAsync(ctx); err != nil {
				return "", err
			} else if !ok {
				continue
			}
		}
		if _, _, err := pause.ReceiveAsync(ctx); err != nil {
			return "", err
		}
		if halt, err := paused(); err != nil {
			return "", err
		} else if halt {
			return end("stopped")
		}
	}
	return "", engine.ContinueAsNew(ctx, d.wf, in)
}

// setJobState records the state the job's workflow is in.
func (s *Server) setJobState(ctx context.Context, in bulkStateIn) (struct{}, error) {
	_, err := s.db.ExecContext(ctx, `UPDATE `+s.schema+`.bulk_jobs SET state = $2
		WHERE id = $1 AND state NOT IN ('stopped', 'completed')`, in.JobID, in.State)
	return struct{}{}, err
}

// finishJob ends a job: a stopped job's pending items are reported skipped.
func (s *Server) finishJob(ctx context.Context, in bulkStateIn) (struct{}, error) {
	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		return struct{}{}, err
	}
	defer tx.Rollback()
	if in.State == "stopped" {
		if _, err := tx.ExecContext(ctx, s.withProgress(`UPDATE `+s.schema+`.bulk_items SET state = 'skipped', detail = 'the job was stopped', at = now()
			WHERE job_id = $1 AND state = 'pending' RETURNING state, at`, 1, 2), in.JobID, 0); err != nil {
			return struct{}{}, err
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE `+s.schema+`.bulk_jobs SET state = $2, requested = NULL, finished_at = COALESCE(finished_at, now())
		WHERE id = $1`, in.JobID, in.State); err != nil {
		return struct{}{}, err
	}
	return struct{}{}, tx.Commit()
}

// runBatch acts on the job's next pending items at its rate, for about
// bulkWindow, and stops taking items as soon as a pause or stop is asked.
func (s *Server) runBatch(ctx context.Context, in bulkRunIn) (bulkBatchOut, error) {
	var out bulkBatchOut
	j, err := s.loadJob(ctx, s.db, Principal{}, in.JobID, false)
	if err != nil {
		return out, err
	}
	spec, err := j.spec()
	if err != nil {
		return out, err
	}
	n := int(math.Min(math.Max(math.Ceil(j.Rate*bulkWindow.Seconds()), 1), maxBulkBatch))
	var ids []bulkPending
	if !j.Requested.Valid {
		if err := s.db.SelectContext(ctx, &ids, `SELECT operation_id, seq FROM `+s.schema+`.bulk_items
			WHERE job_id = $1 AND state = 'pending' ORDER BY seq LIMIT $2`, j.ID, n); err != nil {
			return out, fmt.Errorf("api: bulk job %s items: %w", j.ID, err)
		}
	}
	var interrupted atomic.Bool
	interrupted.Store(j.Requested.Valid)
	stopped := make(chan struct{}) // closed when a pause or stop is asked
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	if interrupted.Load() {
		close(stopped)
	} else {
		go s.watchRequested(watchCtx, j.ID, &interrupted, stopped)
	}
	// Item i goes at start + i/rate, and the batch lasts len(ids)/rate, so
	// that batches one after another keep the pace; start is where the
	// previous batch's plan ended, when that is just past (bulkPace).
	start := s.bulkPace.start(j.ID, time.Now())
	planned := time.Time{} // the batch's planned end, once it ran through
	defer func() { s.bulkPace.planned(j.ID, planned) }()
	slot := func(i int) time.Duration { return time.Duration(float64(i) / j.Rate * float64(time.Second)) }
	wait := func(d time.Duration) bool {
		if d = time.Until(start.Add(d)); d <= 0 {
			return !interrupted.Load() && ctx.Err() == nil
		}
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			return !interrupted.Load()
		case <-stopped:
			return false
		case <-ctx.Done():
			return false
		}
	}
	// Items go a chunk at a time (bulkChunk), chunk k at the slot of its
	// first item.
	chunk := bulkChunkSize(j.Rate)
	work := make(chan []bulkPending)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	var acted atomic.Int64
	for w := range min(s.cfg.BulkConcurrency, max((len(ids)+chunk-1)/chunk, 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range work {
				n, err := s.bulkChunk(ctx, j, spec, c, bulkShard(w))
				acted.Add(int64(n))
				if err != nil {
					mu.Lock()
					firstErr = cmpErr(firstErr, err)
					mu.Unlock()
				}
			}
		}()
	}
	for i := 0; i < len(ids); i += chunk {
		if !wait(slot(i)) {
			break
		}
		work <- ids[i:min(i+chunk, len(ids))]
	}
	close(work)
	wg.Wait()
	if firstErr != nil {
		return out, firstErr
	}
	if err := s.db.GetContext(ctx, &out.Remaining, `SELECT count(*) FROM `+s.schema+`.bulk_items
		WHERE job_id = $1 AND state = 'pending'`, j.ID); err != nil {
		return out, err
	}
	if out.Remaining > 0 && len(ids) > 0 && wait(slot(len(ids))) { // the batch's share of time, unless a pause or stop comes first
		planned = start.Add(slot(len(ids)))
	}
	stopWatch()
	out.Acted, out.Interrupted = int(acted.Load()), interrupted.Load()
	return out, nil
}

// watchRequested polls the job for a pause or stop asked through the API,
// and then sets interrupted and closes stopped.
func (s *Server) watchRequested(ctx context.Context, jobID string, interrupted *atomic.Bool, stopped chan struct{}) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var req *string
		if s.db.GetContext(ctx, &req, `SELECT requested FROM `+s.schema+`.bulk_jobs WHERE id = $1`, jobID) == nil && req != nil {
			interrupted.Store(true)
			close(stopped)
			return
		}
	}
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// bulkItem acts on one operation of a job. The action and the item's
// outcome commit together, so an item is acted on at most once however
// often its batch runs again; an item no longer pending is left alone.
func (s *Server) bulkItem(ctx context.Context, j *bulkJobRow, spec *bulkSpec, opID string, shard int) error {
	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var it struct {
		RunID string `db:"run_id"`
		State string `db:"state"`
	}
	if err := tx.GetContext(ctx, &it, `SELECT run_id, state FROM `+s.schema+`.bulk_items
		WHERE job_id = $1 AND operation_id = $2 FOR UPDATE`, j.ID, opID); err != nil {
		return fmt.Errorf("api: bulk item %s/%s: %w", j.ID, opID, err)
	}
	if it.State != "pending" {
		return nil
	}
	outcome, detail, newRun, actErr := s.bulkAct(ctx, tx, j, spec, opID, it.RunID)
	if actErr != nil {
		// The action failed: its transaction is spoilt. Record the failure
		// in another, if the item is still pending (a context that ended is
		// no failure: the batch runs again).
		_ = tx.Rollback()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if engine.IsConflict(actErr) {
			// Nor is a deadlock or a serialization failure: the action met
			// another transaction at a bad moment (a commit that holds a
			// child of the run and wakes the run, say). The item stays
			// pending and the batch runs again.
			return fmt.Errorf("api: bulk item %s/%s: %w", j.ID, opID, actErr)
		}
		_, err := s.db.ExecContext(ctx, s.withProgress(`UPDATE `+s.schema+`.bulk_items SET state = 'failed', detail = $3, at = now()
			WHERE job_id = $1 AND operation_id = $2 AND state = 'pending' RETURNING state, at`, 1, 4), j.ID, opID, actErr.Error(), shard)
		return err
	}
	if _, err := tx.ExecContext(ctx, s.withProgress(`UPDATE `+s.schema+`.bulk_items SET state = $3, detail = NULLIF($4, ''), new_run_id = NULLIF($5, ''), at = now()
		WHERE job_id = $1 AND operation_id = $2 RETURNING state, at`, 1, 6), j.ID, opID, outcome, detail, newRun, shard); err != nil {
		return err
	}
	return tx.Commit()
}

// relaunchLock serialises relaunches of one operation (the API's and bulk
// jobs') for the rest of tx.
func relaunchLock(ctx context.Context, tx *sqlx.Tx, id string) error {
	_, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, relaunchKey(id))
	return err
}

// bulkAct acts on operation id in tx, as the job's creator, and audits it
// there; it returns the item's outcome (done or skipped) and why, or the
// action's error. An operation relaunched or closed since the job started
// is skipped.
func (s *Server) bulkAct(ctx context.Context, tx *sqlx.Tx, j *bulkJobRow, spec *bulkSpec, id, runID string) (outcome, detail, newRun string, err error) {
	if spec.Action == BulkActionRelaunch {
		if err := relaunchLock(ctx, tx, id); err != nil {
			return "", "", "", err
		}
	}
	p := j.principal()
	r, err := s.loadOperationIn(ctx, tx, p, id)
	if err != nil {
		if pe := (*problemError)(nil); errors.As(err, &pe) && pe.status == http.StatusNotFound {
			r, err = nil, nil
		} else {
			return "", "", "", err
		}
	}
	o, err := s.bulkActOn(ctx, tx, j, spec, id, runID, r)
	if err != nil {
		return "", "", "", err
	}
	if o.audit != nil {
		if err := s.audit(ctx, tx, p, string(spec.Action), id, j.Reason, o.audit); err != nil {
			return "", "", "", err
		}
	}
	return o.state, o.detail, o.newRun, nil
}

// bulkActOn acts on operation id, whose latest run p may see is r (nil:
// none), in tx, holding its relaunch lock for a relaunch. It returns the
// item's outcome, with what to audit when it acted, or the action's error.
func (s *Server) bulkActOn(ctx context.Context, tx *sqlx.Tx, j *bulkJobRow, spec *bulkSpec, id, runID string, r *opRow) (bulkOutcome, error) {
	o, act := s.bulkEligible(ctx, j, spec, id, runID, r)
	if !act {
		return o, nil
	}
	switch spec.Action {
	case BulkActionRelaunch:
		h, err := s.client.ResetTx(ctx, tx.Tx, id, bulkResetOptions(j))
		if err != nil {
			return o, err
		}
		o.relaunched(h.RunID)
	case BulkActionCancel:
		if err := s.client.CancelTx(ctx, tx.Tx, id, j.Reason); err != nil {
			return o, err
		}
	case BulkActionSignal:
		if err := s.client.SignalTx(ctx, tx.Tx, id, spec.Signal.Name, *spec.Signal.Payload); err != nil {
			return o, err
		}
		o.audit["name"], o.audit["payload"] = spec.Signal.Name, spec.Signal.Payload
	}
	return o, nil
}

// bulkEligible tells whether the job acts on operation id, whose latest run
// p may see is r (nil: none), and found run runID when it was created. It
// returns the item's outcome when it does not (skipped, and why), or the
// outcome of the action, to complete once it is done.
func (s *Server) bulkEligible(ctx context.Context, j *bulkJobRow, spec *bulkSpec, id, runID string, r *opRow) (bulkOutcome, bool) {
	skip := func(why string) (bulkOutcome, bool) { return bulkOutcome{id: id, state: "skipped", detail: why}, false }
	if r == nil {
		return skip("not found")
	}
	if r.RunID != runID {
		return skip("relaunched since the job started (run " + r.RunID + ")")
	}
	open := isOpen(Status(r.Status))
	switch {
	case spec.Action == BulkActionRelaunch && open:
		return skip("open since the job started (" + string(r.Status) + ")")
	case spec.Action != BulkActionRelaunch && !open:
		return skip("closed since the job started (" + string(r.Status) + ")")
	case spec.Action == BulkActionSignal:
		if why := s.signalIneligible(ctx, r.WorkflowType, spec.Signal); why != "" {
			return skip(why)
		}
	}
	return bulkOutcome{id: id, state: "done", audit: map[string]any{"bulk_job": j.ID, "run_id": r.RunID}}, true
}

// bulkResetOptions are the options a relaunch of job j resets with.
func bulkResetOptions(j *bulkJobRow) engine.ResetOptions {
	if j.FromStep.Valid {
		return engine.ResetOptions{BeforeStep: j.FromStep.String, Reason: j.Reason}
	}
	return engine.ResetOptions{BeforeLastFailedActivity: true, Reason: j.Reason}
}

// relaunched records the new run of a relaunch in the outcome.
func (o *bulkOutcome) relaunched(newRun string) {
	o.newRun = newRun
	o.audit["new_run_id"] = newRun
}
