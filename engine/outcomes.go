package engine

import (
	"context"
	"database/sql"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lib/pq"
)

// outcomeReader reads runs' outcomes for Result calls waiting on runs that
// execute in other processes, many runs per query. Each such call reads its
// run when it begins and again when the run is announced closed; with one
// query per call, a process that starts many workflows and waits for them
// (a client of separate workers) spent most of its CPU, and PostgreSQL a
// query per read, on these reads. Requests that arrive while a query is in
// flight wait for the next, so the batch grows with the load.
type outcomeReader struct {
	s *store
	// hot is the read, prepared (see query); released once the loops
	// have ended after close.
	hot   *hotStmt
	loops sync.WaitGroup
	reqs  chan *outcomeReq
	// mu orders sends on reqs before close: once stop is closed nothing
	// more is sent, and the loops answer what is queued before they end.
	mu     sync.RWMutex
	closed bool
	stop   chan struct{}
	// runsRead counts the runs read (tests).
	runsRead atomic.Int64
}

// runOutcome is what Result needs of a run.
type runOutcome struct {
	workflowID string
	status     Status
	output     []byte
	errJSON    []byte
	// next is the run that succeeded a closed run (continue-as-new, reset),
	// if any.
	next string
}

type outcomeReq struct {
	runID string
	reply chan outcomeReply // buffered: the reader never waits on a caller
}

type outcomeReply struct {
	o   *runOutcome
	err error
}

const (
	// outcomeReaders is how many outcome queries may be in flight at once.
	outcomeReaders = 2
	// outcomeBatch bounds the runs read by one query.
	outcomeBatch = 1000
	// outcomeTimeout bounds one query; it serves many callers, so no one
	// caller's context bounds it.
	outcomeTimeout = 30 * time.Second
)

func newOutcomeReader(s *store) *outcomeReader {
	r := &outcomeReader{s: s, hot: &hotStmt{q: outcomeSQL(s.runs)}, reqs: make(chan *outcomeReq, outcomeBatch), stop: make(chan struct{})}
	for range outcomeReaders {
		r.loops.Go(r.loop)
	}
	return r
}

// close stops the reader's loops; reads after it query on their own.
func (r *outcomeReader) close() {
	r.mu.Lock()
	r.closed = true
	close(r.stop)
	r.mu.Unlock()
	go func() {
		r.loops.Wait()
		r.hot.close()
	}()
}

// read returns the outcome of runID (its status while it is open), or
// ErrNotFound.
func (r *outcomeReader) read(ctx context.Context, runID string) (*runOutcome, error) {
	req := &outcomeReq{runID: runID, reply: make(chan outcomeReply, 1)}
	r.mu.RLock()
	if r.closed {
		r.mu.RUnlock()
		r.answer(ctx, []*outcomeReq{req}, false)
	} else {
		select {
		case r.reqs <- req:
			r.mu.RUnlock()
		case <-ctx.Done():
			r.mu.RUnlock()
			return nil, ctx.Err()
		}
	}
	select {
	case rep := <-req.reply:
		return rep.o, rep.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (r *outcomeReader) loop() {
	for {
		var batch []*outcomeReq
		select {
		case req := <-r.reqs:
			batch = append(batch, req)
		case <-r.stop:
			// What was queued before close is answered.
			for {
				select {
				case req := <-r.reqs:
					batch = append(batch, req)
				default:
					if len(batch) > 0 {
						ctx, cancel := context.WithTimeout(context.Background(), outcomeTimeout)
						r.answer(ctx, batch, true)
						cancel()
					}
					return
				}
			}
		}
	drain:
		for len(batch) < outcomeBatch {
			select {
			case req := <-r.reqs:
				batch = append(batch, req)
			default:
				break drain
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), outcomeTimeout)
		r.answer(ctx, batch, true)
		cancel()
	}
}

// answer reads the runs of batch in one query and replies to each request;
// prepared is false for the reads after close, which the loops no longer
// serve (the prepared statement is released once they have ended).
func (r *outcomeReader) answer(ctx context.Context, batch []*outcomeReq, prepared bool) {
	ids := make([]string, len(batch))
	for i, req := range batch {
		ids[i] = req.runID
	}
	got, err := r.query(ctx, ids, prepared)
	for _, req := range batch {
		switch o := got[req.runID]; {
		case err != nil:
			req.reply <- outcomeReply{err: err}
		case o == nil:
			req.reply <- outcomeReply{err: ErrNotFound}
		default:
			req.reply <- outcomeReply{o: o}
		}
	}
}

// query reads the runs of ids. Prepared (a hotStmt), the read is planned
// once per connection (a generic plan after five executions) instead of at
// every call: bench -n 50000 -c 512 -stats, its backends' CPU 498-597 µs a
// call against 868-1,250 sent unprepared (22-37 µs a workflow against
// 47-65, -workers 4 and 1, two alternated pairs each).
func (r *outcomeReader) query(ctx context.Context, ids []string, prepared bool) (map[string]*runOutcome, error) {
	r.runsRead.Add(int64(len(ids)))
	var rows *sql.Rows
	var err error
	if prepared {
		rows, err = r.hot.query(ctx, r.s, r.s.db, pq.Array(ids))
	} else {
		rows, err = r.s.db.QueryContext(ctx, r.hot.q, pq.Array(ids))
	}
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make(map[string]*runOutcome, len(ids))
	for rows.Next() {
		var id string
		var next sql.NullString
		o := &runOutcome{}
		if err := rows.Scan(&id, &o.workflowID, &o.status, &o.output, &o.errJSON, &next); err != nil {
			return nil, err
		}
		o.next = next.String
		out[id] = o
	}
	return out, rows.Err()
}

// outcomeSQL reads runs' outcomes by ID, each closed run's successor with it.
func outcomeSQL(runs string) string {
	return `SELECT x.run_id, x.workflow_id, x.status, x.output, x.error,
			CASE WHEN x.status NOT IN ('pending','running','waiting') THEN (
				SELECT n.run_id FROM ` + runs + ` n WHERE n.workflow_id = x.workflow_id AND n.previous_run_id = x.run_id
				ORDER BY n.created_at DESC LIMIT 1) END
		FROM ` + runs + ` x WHERE x.run_id = ANY($1)`
}
