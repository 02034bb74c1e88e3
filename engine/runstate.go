package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

type runMode int

const (
	modeLive  runMode = iota
	modeQuery         // replay only, to answer a query; stops at the first live step
)

// runState is one loaded run: the record read from the database and the
// goroutine executing the workflow function against it.
type runState struct {
	// refusals is the count of checkpoint refusals in a row the run was
	// loaded with (see refusal.go); parkedErr, when set, closes the run as
	// failed with this error without asking the checkpoint interceptors.
	refusals  int
	parkedErr error
	e         *Engine
	w         *Worker // nil in query mode
	mode      runMode
	row       *runRow
	def       workflowDef
	info      WorkflowInfo
	headers   Headers
	// callHeaders lends the headers of outbound calls (see callHeaders).
	callHeaders callHeaders
	ch          *chains
	// shard is the commit shard the run writes through while loaded
	// (committer.pin); nil (query mode) hashes the run ID.
	shard *commitShard

	// Owned by the workflow goroutine.
	history      map[int]*stepRow
	lastRecorded int
	seq          int
	queries      map[string]func([]byte) (any, error)
	rnd          *randSource
	// point counts the workflow's cancellation points (step starts and
	// waits). A recorded cancellation names the point that observed it, so
	// a replay observes it at the same call, not at an earlier wait on a
	// result that was already there.
	point int
	// inSideEffect names the SideEffect whose function is running: workflow
	// calls from inside it would not be made on replay, so they are refused.
	inSideEffect string
	// histWarned is set once the record's size was warned about; histErr
	// once the record reached its limit (the run then fails with it).
	histWarned bool
	histErr    error
	// ending is set while finish takes its last step number (no record).
	ending bool
	// replayEnd is how the workflow function ended in a query or Replayer
	// replay (nil: it stopped at a step without a record).
	replayEnd *replayEnd

	mu           sync.Mutex
	wake         chan struct{}
	signals      []*signalRow // buffered, not yet consumed, in id order
	maxSignalID  int64
	consumed     map[int64]bool
	eventSeq     int64
	cancelReason string
	children     map[int]*future
	inflight     int
	// parked are the activity steps (by seq) whose goroutine waits for a
	// next attempt that their record says is due at the time given: they
	// run nothing meanwhile, so the run may unload until the first is due.
	// unloading (below) is set once block decides to unload; a parked
	// activity then leaves its step to the run's next load.
	parked map[int]time.Time
	// starting counts activity attempts on their way to their start (see
	// runActivity's begin), which will take the pending records with them:
	// a blocked workflow leaves those to them, so a finished activity's
	// record and the next activity's start share one commit.
	starting int

	// The flags sit together: each after a field of its own took a word
	// with its padding, and the struct was 680 bytes, an allocation of
	// 704 a run (640 now).

	// moreSignals: the last load of signals was a full page, so signals
	// after maxSignalID may wait unread in the database (fillSignals).
	moreSignals               bool
	cancelReq, cancelObserved bool
	unloading                 bool
	hadChildren               bool
	// hadTimers: the run recorded a timer live (see finishSpec.hasTimers).
	hadTimers     bool
	replayingFlag bool
	draining      bool
	// refreshing is set while a refresh runs; refreshAgain asks it to read
	// once more (an event came in meanwhile), so wake-ups coalesce into at
	// most one reader per run.
	refreshing   bool
	refreshAgain bool
	// closing: the run's end (or unload) is submitted; a write after it (an
	// activity the workflow did not wait for) goes out at once.
	closing bool
	// closed is set once the run's end committed from this copy.
	closed atomic.Bool
	// launched is when the worker launched the run; promoted is set once
	// a lease renewal held it, marking its row running (see
	// Worker.promoteOnce; a row a commit held locked then is marked at the
	// next renewal).
	launched time.Time
	promoted atomic.Bool
	// histBytes sums the inputs, results and errors of the run's steps,
	// recorded or submitted (activity goroutines add theirs).
	histBytes atomic.Int64
	// pending holds step records written but not yet handed to the
	// committer, with their checkpoint events. They go out together when
	// something live depends on them (an activity attempt or a child start,
	// see the ordering rule in flushWait) or when the workflow blocks,
	// unloads or ends, so at low load a finished activity's record and the
	// next activity's start share one commit.
	pending       []*stepRow
	pendingEvents []*CheckpointEvent
	// birth, for a run started eagerly on this worker, is the run's insert
	// until it is submitted. It rides in the run's first commit, with the
	// start of its first activity: a workflow that begins with an activity
	// pays one commit less, and nothing live happens before the insert is
	// durable (the ordering rule). An activity that does not start soon
	// (eagerStartGrace) leaves it to go alone. The starter waits for its
	// outcome and may withdraw it while it is queued; the run state then
	// stops. Taken under flushMu, so nothing of the run reaches the
	// committer before it.
	birth   *writeOp
	birthMu sync.Mutex // guards birth (taken under flushMu, or by abandon)
	// born, for such a run, is closed once the insert's outcome is known.
	born chan struct{}
	// flushMu makes taking the pending records and submitting them one move,
	// so the run's ops reach the committer in the order they were written.
	flushMu sync.Mutex

	// cancelCtx is cancelled when cancellation is requested (or the run is
	// dropped); runCtx only when the run is dropped. Activities started from
	// a disconnected workflow context use runCtx.
	runCtx       context.Context
	dropRun      context.CancelFunc
	cancelCtx    context.Context
	cancelActive context.CancelFunc
	abandoned    chan struct{}
	abandonOnce  sync.Once
	exited       chan struct{}
}

func newRunState(e *Engine, w *Worker, mode runMode, row *runRow, def workflowDef, ch *chains, steps []*stepRow, sigs []*signalRow) *runState {
	s := &runState{
		e: e, w: w, mode: mode, row: row, def: def, ch: ch,
		info:      WorkflowInfo{WorkflowID: row.WorkflowID, RunID: row.RunID, WorkflowType: row.WorkflowType, Queue: row.Queue, Loads: row.Loads, StartTime: row.CreatedAt},
		headers:   row.headers(),
		seq:       1,
		wake:      make(chan struct{}, 1),
		eventSeq:  row.EventSeq,
		abandoned: make(chan struct{}),
		exited:    make(chan struct{}),
	}
	s.refusals = refusalsOf(row.Error)
	if row.CancelRequestedAt.Valid {
		s.cancelReq = true
		s.cancelReason = row.CancelReason.String
	}
	// The run's maps are made at their first entry (put): most runs never
	// fill some of them, and a new run none before its first step.
	if len(steps) > 0 {
		s.history = make(map[int]*stepRow, len(steps))
	}
	for _, st := range steps {
		s.histBytes.Add(st.size())
		s.history[st.Seq] = st
		if st.Seq > s.lastRecorded {
			s.lastRecorded = st.Seq
		}
		if st.Kind == stepSignal && st.SignalID.Valid {
			put(&s.consumed, st.SignalID.Int64, true)
		}
	}
	s.replayingFlag = s.lastRecorded > 0
	s.addSignals(sigs)
	s.runCtx, s.dropRun = context.WithCancel(context.Background())
	s.cancelCtx, s.cancelActive = context.WithCancel(s.runCtx)
	if s.cancelReq {
		s.cancelActive()
	}
	return s
}

func (s *runState) replaying() bool {
	if s.mode == modeQuery {
		return true // a query re-executes recorded steps only; nothing it does is live
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.replayingFlag
}

// nextSeq hands out the next step number and ends the replay phase once the
// record is exhausted.
func (s *runState) nextSeq() (int, *stepRow) {
	if s.inSideEffect != "" {
		panic(fmt.Sprintf("engine: the function of SideEffect %q called a workflow API; a replay would not make that call", s.inSideEffect))
	}
	seq := s.seq
	s.seq++
	rec := s.history[seq]
	if rec == nil && seq > s.lastRecorded {
		s.mu.Lock()
		s.replayingFlag = false
		s.mu.Unlock()
		if s.mode == modeLive && !s.ending {
			s.checkHistory(seq)
		}
	}
	return seq, rec
}

// historyLimitPanic ends the workflow function when its record is full;
// main fails the run with err (even if an interceptor recovered the panic).
type historyLimitPanic struct{ err error }

func (p historyLimitPanic) Error() string { return p.err.Error() }
func (p historyLimitPanic) Unwrap() error { return p.err }

// checkHistory is called before live step seq: it warns once when the
// record is large and fails the run when it is full, so a looping workflow
// cannot grow its record (and every replay of it) without bound.
func (s *runState) checkHistory(seq int) {
	cfg := &s.e.cfg
	size := s.histBytes.Load()
	if seq > cfg.HistoryCountLimit || size > cfg.HistorySizeLimit {
		s.histErr = NewNonRetryableError(ErrorTypeHistoryLimitExceeded, fmt.Sprintf(
			"the record of run %s is full (%d steps, %d bytes; limits %d steps, %d bytes): continue as new before it fills",
			s.row.RunID, seq-1, size, cfg.HistoryCountLimit, cfg.HistorySizeLimit), nil)
		panic(historyLimitPanic{s.histErr})
	}
	if !s.histWarned && (seq > cfg.HistoryCountWarn || size > cfg.HistorySizeWarn) {
		s.histWarned = true
		s.e.cfg.Logger.Warn("engine: run history is large; continue as new before it reaches the limit",
			"run_id", s.row.RunID, "workflow_type", s.info.WorkflowType, "steps", seq-1, "bytes", size,
			"count_limit", cfg.HistoryCountLimit, "size_limit", cfg.HistorySizeLimit)
	}
}

// peek returns the record at the next sequence without consuming it.
func (s *runState) peek() *stepRow { return s.history[s.seq] }

func (s *runState) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// addSignals takes a page of signals loadSignals read, past maxSignalID.
func (s *runState) addSignals(sigs []*signalRow) {
	s.moreSignals = len(sigs) >= signalPage
	for _, sg := range sigs {
		if sg.ID <= s.maxSignalID {
			continue
		}
		s.maxSignalID = sg.ID
		if !s.consumed[sg.ID] {
			s.signals = append(s.signals, sg)
		}
	}
}

// fillSignals reads further pages of the run's signals while none named
// name is buffered in memory and more may wait in the database, so a
// workflow reads signals in order however many wait, holding at most the
// pages it needed. A failed read is retried; an abandoned run stops trying.
func (s *runState) fillSignals(name string) {
	for pause := 100 * time.Millisecond; ; {
		s.mu.Lock()
		if !s.moreSignals || s.hasSignalLocked(name) {
			s.mu.Unlock()
			return
		}
		after := s.maxSignalID
		s.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), s.e.cfg.LeaseTTL)
		sigs, err := s.e.store.loadSignals(ctx, []string{s.row.RunID}, after)
		cancel()
		if err != nil {
			if s.isAbandoned() {
				return
			}
			s.e.cfg.Logger.Warn("engine: reading the run's signals failed; retrying", "run_id", s.row.RunID, "err", err)
			time.Sleep(pause)
			pause = min(2*pause, 5*time.Second)
			continue
		}
		s.mu.Lock()
		if s.maxSignalID == after {
			s.addSignals(sigs[s.row.RunID])
		}
		s.mu.Unlock()
	}
}

func (s *runState) hasSignalLocked(name string) bool {
	for _, sg := range s.signals {
		if sg.Name == name {
			return true
		}
	}
	return false
}

// nondeterminism aborts the workflow goroutine with a NonDeterminismError.
type nondeterminismPanic struct{ err *NonDeterminismError }

// Error and Unwrap let a recovering interceptor find the NonDeterminismError
// (errors.As) and return it instead of turning it into a PanicError.
func (p nondeterminismPanic) Error() string { return p.err.Error() }
func (p nondeterminismPanic) Unwrap() error { return p.err }

func describeStep(kind, name string) string {
	if name == "" {
		return kind
	}
	return fmt.Sprintf("%s %q", kind, name)
}

// expect checks that a record matches the step the workflow asks for.
func (s *runState) expect(seq int, rec *stepRow, kind, name string) {
	if rec.Kind != kind || (name != "" && rec.Name != name) {
		panic(nondeterminismPanic{&NonDeterminismError{Seq: seq, Recorded: describeStep(rec.Kind, rec.Name), Requested: describeStep(kind, name)}})
	}
}

// stopIfQuery ends a query replay when it reaches a step without a record.
func (s *runState) stopIfQuery() {
	if s.mode == modeQuery {
		runtime.Goexit()
	}
}

// cancelPoint starts a new cancellation point (a step start or a wait) and
// checks for cancellation there.
func (s *runState) cancelPoint(ctx Context) error {
	s.point++
	return s.checkCancel(ctx)
}

// checkCancel is called at each cancellation point and while blocked. It
// replays a recorded cancellation, or records one that was requested, at this
// point of the workflow; from then on non-disconnected calls fail with
// CanceledError.
func (s *runState) checkCancel(ctx Context) error {
	if ctx.isDisconnected() {
		return nil
	}
	s.mu.Lock()
	observed, requested, reason := s.cancelObserved, s.cancelReq, s.cancelReason
	s.mu.Unlock()
	if observed {
		return &CanceledError{Reason: reason}
	}
	if rec := s.peek(); rec != nil && rec.Kind == stepCancel && (len(rec.Input) == 0 || string(rec.Input) == strconv.Itoa(s.point)) {
		s.nextSeq()
		s.mu.Lock()
		s.cancelObserved = true
		s.cancelReason = string(rec.Output)
		s.mu.Unlock()
		return &CanceledError{Reason: string(rec.Output)}
	}
	if requested && s.mode == modeLive && s.peek() == nil && s.seq > s.lastRecorded {
		seq, _ := s.nextSeq()
		s.mu.Lock()
		s.cancelObserved = true
		s.mu.Unlock()
		now := s.e.cfg.Clock.Now()
		s.write(&stepRow{RunID: s.row.RunID, Seq: seq, Kind: stepCancel, Name: "cancel", Status: stepCompleted,
			Input: []byte(strconv.Itoa(s.point)), Output: []byte(reason), StartedAt: nullTime(now), CompletedAt: nullTime(now)}, nil)
		return &CanceledError{Reason: reason}
	}
	return nil
}

// maxPending bounds the step records a run keeps unsubmitted (a workflow
// that loops over side effects without blocking).
const maxPending = 64

// write adds a step record to the run's pending records (see
// runState.pending): it commits in order with the run's later writes, and
// the run is dropped if it was fenced out.
func (s *runState) write(st *stepRow, events []*CheckpointEvent) {
	if s.mode != modeLive || s.isAbandoned() {
		// This worker gave the run up (Stop's deadline, a lost lease): what
		// its goroutines still produce, such as an activity failing because
		// abandon cancelled it, is not the run's record.
		return
	}
	s.histBytes.Add(st.size())
	s.mu.Lock()
	s.pending = append(s.pending, st)
	s.pendingEvents = append(s.pendingEvents, events...)
	now := s.closing || len(s.pending) >= maxPending
	s.mu.Unlock()
	if now {
		s.flush()
	}
}

// flush submits the pending records without waiting for their commit.
func (s *runState) flush() {
	_ = s.submitPending(nil, false)
}

// flushWait submits the pending records with op and waits for the commit.
// This is the ordering rule: an activity attempt or a child start goes live
// only once every earlier step of its run is durable, so a replay cannot
// take a branch other than the one whose side effects already happened.
// Batching stays: the records ride in whatever commit the committer makes
// next, with other runs' writes.
func (s *runState) flushWait(op *writeOp) error {
	return s.submitPending(op, true)
}

// submitPending hands the pending records to the committer as one op,
// merged into op when it is not nil. With wait it returns the commit's
// outcome; without, a refusal drops the run.
func (s *runState) submitPending(op *writeOp, wait bool) error {
	// ordered: op must be written after the run's insert has committed.
	ordered := op != nil && (op.fin != nil || op.newRun != nil)
	asleep := false
	s.flushMu.Lock()
	if b := s.takeBirth(); b != nil {
		starter := b.done
		b.done = func(err error) {
			if err != nil {
				s.abandon() // not started: nothing of it may run
			}
			if errors.Is(err, errLeaseLost) {
				// Dropped unwritten (the run state was abandoned while it
				// was queued): the starter starts the run for any worker.
				err = errNotLaunched
			}
			starter(err)
			close(s.born)
		}
		switch {
		case ordered && op.newRun == nil && op.fin.status == StatusWaiting && b.newRun.signal == nil:
			// The run unloads before its insert went out (it sleeps or
			// waits first): it is inserted waiting, due at the unload's
			// wake time, in one write instead of an insert and, once that
			// committed, an update of every index entry of the row.
			b.newRun.asleep, b.newRun.row.WakeAt = true, nullTime(op.fin.wakeAt)
			op.fin = nil
			op = b.absorb(op)
			ordered, asleep = false, true
			s.mu.Lock()
			s.closing = true
			s.mu.Unlock()
		case ordered:
			_, _, _ = s.submitLocked(b, false)
		default:
			op = b.absorb(op)
		}
	}
	if ordered && s.born != nil {
		// A batch writes run transitions and child starts before inserts:
		// the run's own insert must have committed first.
		select {
		case <-s.born:
		default:
			s.flushMu.Unlock()
			select {
			case <-s.born:
			case <-s.abandoned:
			}
			if s.isAbandoned() {
				return errLeaseLost
			}
			s.flushMu.Lock()
		}
	}
	ch, sh, claimed := s.submitLocked(op, wait)
	s.flushMu.Unlock()
	if ch == nil {
		return nil
	}
	if sh != nil {
		// The shard was idle: write in place, the run's later writes
		// queued behind.
		s.e.commit.writeClaimed(sh, claimed)
	}
	err := s.await(ch)
	if asleep && err != nil {
		// The run was not started (its starter hears why): there is no
		// run to unload.
		return errLeaseLost
	}
	return err
}

// submitBirth submits the run's insert, if it is still waiting for the
// run's first records, with those written so far.
func (s *runState) submitBirth() {
	s.birthMu.Lock()
	waiting := s.birth != nil
	s.birthMu.Unlock()
	if waiting {
		s.flush()
	}
}

// takeBirth takes the run's unsubmitted insert, if any.
func (s *runState) takeBirth() *writeOp {
	s.birthMu.Lock()
	defer s.birthMu.Unlock()
	b := s.birth
	s.birth = nil
	return b
}

// unborn reports whether the run's eager insert has not committed yet: the
// run is not in the database, so a renewal would find it lost.
func (s *runState) unborn() bool {
	if s.born == nil {
		return false
	}
	select {
	case <-s.born:
		return false
	default:
		return true
	}
}

// absorb adds op's records to b (a run's insert) so that both commit as one.
func (b *writeOp) absorb(op *writeOp) *writeOp {
	if op == nil {
		return b
	}
	b.steps = append(b.steps, op.steps...)
	b.events = append(b.events, op.events...)
	if d := op.done; d != nil {
		prev := b.done
		b.done = func(err error) {
			prev(err)
			d(err)
		}
	}
	return b
}

// submitLocked submits op with the pending records (s.flushMu is held).
// With wait it returns the channel that will carry the outcome; without,
// nil. A run insert its starter withdrew is not submitted: the run stops.
// With wait, when the op's shard is idle, the op is not queued: the shard
// is returned, held for the caller, with the op, which the caller writes in
// place once s.flushMu is released (see committer.claimOrQueue).
func (s *runState) submitLocked(op *writeOp, wait bool) (chan error, *commitShard, *writeOp) {
	s.mu.Lock()
	if op == nil && len(s.pending) == 0 {
		s.mu.Unlock()
		return nil, nil, nil
	}
	if op == nil {
		op = &writeOp{}
	}
	if len(s.pending) > 0 {
		op.steps = append(s.pending, op.steps...)
		op.events = append(s.pendingEvents, op.events...)
		s.pending, s.pendingEvents = nil, nil
	}
	if op.fin != nil {
		s.closing = true
	}
	s.mu.Unlock()
	op.runID, op.owner, op.token, op.abandoned, op.sh = s.row.RunID, s.w.id, s.row.Loads, s.abandoned, s.shard
	var ch chan error
	if wait {
		ch = make(chan error, 1)
		prev := op.done
		op.done = func(err error) {
			if prev != nil {
				prev(err)
			}
			ch <- err
		}
	} else if op.done == nil {
		op.done = func(err error) {
			if err != nil && !s.isAbandoned() {
				s.e.cfg.Logger.Warn("engine: step write refused; dropping run", "run_id", s.row.RunID, "err", err)
				s.dropAfter(err)
			}
		}
	}
	if op.newRun != nil && op.newRun.row.RunID == s.row.RunID && op.state.Load() == opWithdrawn {
		s.abandon()
		if ch != nil {
			ch <- errLeaseLost
		}
		return ch, nil, nil
	}
	if wait {
		if sh := s.e.commit.claimOrQueue(op); sh != nil {
			return ch, sh, op
		}
	} else {
		s.e.commit.submit(op)
	}
	if op.newRun != nil && op.newRun.row.RunID == s.row.RunID {
		if h := s.e.commit.queued.Load(); h != nil {
			(*h)() // the starter waits for this write
		}
	}
	return ch, nil, nil
}

// await waits for a submitted op's outcome. A run state abandoned meanwhile
// stops waiting: its insert may have been withdrawn, and nothing it does
// from now on is the run's.
func (s *runState) await(ch chan error) error {
	select {
	case err := <-ch:
		return err
	case <-s.abandoned:
		select {
		case err := <-ch:
			return err
		default:
			return errLeaseLost
		}
	}
}

// dropAfter drops the run after a write of it failed with err. A refused
// write (a checkpoint interceptor's error, a statement PostgreSQL rejects)
// is likely to fail again when the run is resumed and writes the same step,
// so the run is released with a pause that doubles with each load (100 ms,
// 200 ms, ... up to a minute) instead of being resumed at once in a loop.
// A lost lease needs no pause: another worker holds the run.
//
// Only the first drop of a run state gives the run back: the writes it still
// had queued are refused once it is abandoned, and each refusal comes here
// too (the lease's fence would refuse a second release anyway).
func (s *runState) dropAfter(err error) {
	if errors.Is(err, errLeaseLost) {
		s.drop()
		return
	}
	var wr *writeRefused
	if errors.As(err, &wr) {
		s.dropRefused(err)
		return
	}
	pause := time.Minute
	if n := s.row.Loads; n < 10 {
		pause = min(pause, (100*time.Millisecond)<<max(n-1, 0))
	}
	if s.abandonFirst() {
		s.e.commit.releaseLater(s.fence(), s.row.RunID, s.e.cfg.Clock.Now().Add(pause), nil)
	}
}

// drop abandons the run and gives it back, so that any worker resumes it
// from its record at once.
func (s *runState) drop() {
	if s.abandonFirst() {
		s.e.commit.releaseLater(s.fence(), s.row.RunID, s.e.cfg.Clock.Now(), nil)
	}
}

// fence is the lease this copy of the run writes under.
func (s *runState) fence() fence { return fence{s.w.id, s.row.Loads} }

// abandon makes the workflow goroutine exit without writing anything more;
// another worker (or this one) resumes the run from its record.
func (s *runState) abandon() { s.abandonFirst() }

// isAbandoned reports whether the run state was abandoned.
func (s *runState) isAbandoned() bool {
	select {
	case <-s.abandoned:
		return true
	default:
		return false
	}
}

// abandonFirst abandons the run state and reports whether this call did it.
func (s *runState) abandonFirst() (first bool) {
	s.abandonOnce.Do(func() {
		first = true
		close(s.abandoned)
		s.dropRun()
		if b := s.takeBirth(); b != nil {
			// Never submitted: the run does not exist, and its starter
			// starts it for any worker instead.
			b.done(errNotLaunched)
			close(s.born)
		}
	})
	return first
}

// waiter is something a workflow can block on.
type waiter interface {
	// readyLocked reports readiness; s.mu is held.
	readyLocked(now time.Time) bool
	// deadline is the time at which it becomes ready by itself (timers).
	deadline() time.Time
}

// block waits until one of ws is ready and returns its index. It is where a
// run is unloaded: a wait with nothing in flight that will not end within
// UnloadAfter hands the run back to the database and ends the goroutine.
func (s *runState) block(ctx Context, ws []waiter) (int, error) {
	blockedAt := time.Now()
	for {
		// known counts the events this pass looks at. One that arrives later
		// (a signal, a cancellation, a child's result) must make an unloaded
		// run due again, even if refresh has already put it in memory.
		s.mu.Lock()
		known := s.eventSeq
		s.mu.Unlock()
		if err := s.checkCancel(ctx); err != nil {
			return -1, err
		}
		if s.mode != modeQuery {
			for _, w := range ws {
				if sw, ok := w.(signalWaiter); ok {
					s.fillSignals(sw.name)
				}
			}
		}
		now := s.e.cfg.Clock.Now()
		var next time.Time
		s.mu.Lock()
		for i, w := range ws {
			if w.readyLocked(now) {
				s.mu.Unlock()
				return i, nil
			}
			if d := w.deadline(); !d.IsZero() && (next.IsZero() || d.Before(next)) {
				next = d
			}
		}
		draining, starting := s.draining, s.starting
		active, wake := s.parkedLocked(next)
		s.mu.Unlock()
		s.stopIfQuery()

		var unloadIn time.Duration // 0: stay loaded
		unloading := false
		if active == 0 {
			switch {
			case draining || (!wake.IsZero() && wake.Sub(now) > s.e.cfg.UnloadAfter):
				unloading = true
			case wake.IsZero():
				unloadIn = s.e.cfg.UnloadAfter - time.Since(blockedAt)
				unloading = unloadIn <= 0
			}
		}
		if unloading {
			// Decided again under the lock: a parked activity whose wait
			// ended meanwhile runs, and the run stays.
			s.mu.Lock()
			active, wake = s.parkedLocked(next)
			unloading = active == 0
			s.unloading = unloading
			s.mu.Unlock()
		}
		if h := s.e.hooks.blocked.Load(); h != nil {
			(*h)(s.row.RunID, unloading)
		}
		if unloading {
			s.unload(wake, known)
		}
		// What the run wrote so far goes out while it waits (nothing live
		// depends on it yet, so nothing waits for its commit), unless an
		// activity attempt about to start takes it.
		if starting == 0 {
			s.flush()
		}
		var timerC <-chan time.Time
		if !next.IsZero() {
			timerC = s.e.cfg.Clock.After(next.Sub(now))
		}
		var unloadC <-chan time.Time
		var unloadTimer *time.Timer
		if unloadIn > 0 {
			unloadTimer = time.NewTimer(unloadIn)
			unloadC = unloadTimer.C
		}
		select {
		case <-s.wake:
		case <-timerC:
		case <-unloadC:
		case <-s.abandoned:
			runtime.Goexit()
		}
		if unloadTimer != nil {
			unloadTimer.Stop()
		}
	}
}

// parkedLocked returns how many of the run's activities are running or
// about to (not parked), and when the run is due again: at next (its
// earliest timer, zero for none) or when the first parked activity's next
// attempt is, whichever comes first. Activities waiting for a recorded next
// attempt run nothing meanwhile. s.mu is held.
func (s *runState) parkedLocked(next time.Time) (active int, wake time.Time) {
	wake = next
	for _, at := range s.parked {
		if wake.IsZero() || at.Before(wake) {
			wake = at
		}
	}
	return s.inflight - len(s.parked), wake
}

// park marks activity step seq as waiting until at for its next attempt,
// as its record says, and has the workflow look again at whether to unload.
func (s *runState) park(seq int, at time.Time) {
	s.mu.Lock()
	if s.parked == nil {
		s.parked = map[int]time.Time{}
	}
	s.parked[seq] = at
	s.mu.Unlock()
	s.poke()
}

// unpark ends step seq's wait; it reports false if the run is unloading,
// in which case the step is left to the run's next load.
func (s *runState) unpark(seq int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.parked, seq)
	return !s.unloading
}

// unload records the run as waiting until wakeAt (zero: until an event) and
// ends the workflow goroutine. An event beyond known (a signal, cancellation
// or child result the run has not looked at) makes the run due at once (see
// store.finishRuns).
func (s *runState) unload(wakeAt time.Time, known int64) {
	err := s.flushWait(&writeOp{
		fin:    &finishSpec{status: StatusWaiting, wakeAt: wakeAt, knownEventSeq: known, workflowID: s.info.WorkflowID},
		events: s.events(s.event(CheckpointWorkflowWaiting, StatusWaiting)),
	})
	if err != nil && !errors.Is(err, errLeaseLost) {
		s.e.cfg.Logger.Warn("engine: unload failed; releasing run", "run_id", s.row.RunID, "err", err)
		s.dropAfter(err)
	}
	s.abandon()
	runtime.Goexit()
}

// event is the run's checkpoint event of kind, or nil when the engine has
// no checkpoint interceptors: nothing else reads events.
func (s *runState) event(kind CheckpointKind, status Status) *CheckpointEvent {
	if len(s.e.chains.checkpoint) == 0 {
		return nil
	}
	return &CheckpointEvent{Kind: kind, WorkflowID: s.info.WorkflowID, RunID: s.info.RunID, WorkflowType: s.info.WorkflowType,
		Headers: s.headers, Status: status, Seq: s.seq, At: s.e.cfg.Clock.Now()}
}

// events is the list of ev, none when ev is nil (see event).
func (s *runState) events(ev *CheckpointEvent) []*CheckpointEvent {
	if ev == nil {
		return nil
	}
	return []*CheckpointEvent{ev}
}

// requestRefresh makes the run read what changed for it in the database
// (signals, cancellation, child results), once more if a read is under way.
func (s *runState) requestRefresh() {
	s.mu.Lock()
	if s.refreshing {
		s.refreshAgain = true
		s.mu.Unlock()
		return
	}
	s.refreshing = true
	s.mu.Unlock()
	go func() {
		for {
			if s.live() {
				if err := s.refresh(); err != nil && s.live() {
					// Not lost: the next lease renewal sees the run's event
					// counter ahead of what it knows and asks again.
					s.e.cfg.Logger.Warn("engine: could not read a run's new events; retrying at the next lease renewal",
						"run_id", s.row.RunID, "err", err)
				}
			}
			s.mu.Lock()
			if !s.refreshAgain || !s.live() {
				s.refreshing, s.refreshAgain = false, false
				s.mu.Unlock()
				return
			}
			s.refreshAgain = false
			s.mu.Unlock()
		}
	}()
}

// handingOn reports whether the run's end or unload is submitted (see
// closing): a write that hands the run on.
func (s *runState) handingOn() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// live reports whether this copy of the run still runs here.
func (s *runState) live() bool {
	select {
	case <-s.abandoned:
		return false
	default:
		return true
	}
}

// behind reports whether the run's event counter in the database, seq, is
// ahead of what this copy has read.
func (s *runState) behind(seq int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return seq > s.eventSeq
}

// closedHere reports whether the run's end was committed by this copy.
func (s *runState) closedHere() bool { return s.closed.Load() }

// refresh reads what changed for the run in the database (signals,
// cancellation, child results). The event counter it records is read
// first, so an event committed during the read is seen again later.
func (s *runState) refresh() error {
	ctx, cancel := context.WithTimeout(context.Background(), s.e.cfg.LeaseTTL)
	defer cancel()
	st := s.e.store
	var seq int64
	var cancelAt *time.Time
	var reason *string
	err := st.db.QueryRowContext(ctx, `SELECT event_seq, cancel_requested_at, cancel_reason FROM `+st.runs+` WHERE run_id = $1`,
		s.row.RunID).Scan(&seq, &cancelAt, &reason)
	if err != nil {
		return err
	}
	s.mu.Lock()
	after, more := s.maxSignalID, s.moreSignals
	var pending []int
	for k := range s.children {
		pending = append(pending, k)
	}
	s.mu.Unlock()
	var sigs map[string][]*signalRow
	if !more {
		// With pages still unread, new signals come after them, and
		// fillSignals reads them in turn.
		if sigs, err = st.loadSignals(ctx, []string{s.row.RunID}, after); err != nil {
			return err
		}
	}
	var done []*stepRow
	if len(pending) > 0 {
		done, err = st.loadChildResults(ctx, s.row.RunID, pending)
		if err != nil {
			return err
		}
	}
	s.mu.Lock()
	if seq > s.eventSeq {
		s.eventSeq = seq
	}
	if !more {
		s.addSignals(sigs[s.row.RunID])
	}
	if cancelAt != nil && !s.cancelReq {
		s.cancelReq = true
		if reason != nil {
			s.cancelReason = *reason
		}
		s.cancelActive()
	}
	for _, r := range done {
		if f := s.children[r.Seq]; f != nil {
			f.resolveLocked(r.Output, decodeError(r.Error))
			delete(s.children, r.Seq)
		}
	}
	s.mu.Unlock()
	s.poke()
	return nil
}

// main runs the workflow function through the interceptor chain and records
// how it ended. It is the body of the run's goroutine.
func (s *runState) main() {
	defer close(s.exited)
	ctx := &wfContext{s: s}
	finished := false
	var out any
	var runErr error
	func() {
		defer func() {
			if r := recover(); r != nil {
				if nd, ok := r.(nondeterminismPanic); ok {
					runErr = nd.err
				} else {
					runErr = &PanicError{Value: fmt.Sprint(r), Stack: string(debug.Stack())}
				}
				finished = true
			}
		}()
		if s.mode == modeLive && s.refusals >= s.e.cfg.CheckpointRefusalLimit {
			s.parkedErr = s.parkError()
			runErr, finished = s.parkedErr, true
			return
		}
		args, err := s.def.inputOf(s.row.Input, s.row.liveInput)
		if err != nil {
			runErr, finished = NewNonRetryableError(ErrorTypeBadInput, err.Error(), nil), true
			return
		}
		h := s.headers
		if len(s.ch.workflow) > 0 { // an interceptor may write into its input's headers
			h = h.Clone()
		}
		in := &ExecuteWorkflowInput{Info: s.info, Headers: h, Args: args, Replaying: s.replaying()}
		if outer := s.ch.outerWorkflow; outer != nil {
			out, runErr = outer.ExecuteWorkflow(ctx, in, s.ch.innerWorkflow)
		} else {
			out, runErr = s.ch.innerWorkflow(ctx, in)
		}
		finished = true
	}()
	if !finished {
		return // Goexit: unloaded, abandoned or a query replay that reached its end
	}
	if s.histErr != nil {
		runErr = s.histErr
	}
	if s.mode == modeQuery {
		s.replayEnd = &replayEnd{out: out, err: runErr}
		return
	}
	s.finish(out, runErr)
}

// executeWorkflow is the innermost step of the workflow chain: the
// workflow function itself.
func (s *runState) executeWorkflow(c Context, in *ExecuteWorkflowInput) (any, error) {
	out, err := s.def.execute(c, in.Args)
	if s.mode == modeLive {
		// The return is recorded live (finish): interceptors that check
		// IsReplaying after next see it as live.
		s.mu.Lock()
		s.replayingFlag = false
		s.mu.Unlock()
	}
	return out, err
}

// finish records the run's end in one transaction (and, for continue-as-new,
// starts the next run in the same one).
func (s *runState) finish(out any, runErr error) {
	s.ending = true
	s.nextSeq() // a record beyond this point would be non-deterministic; end replay
	fin := &finishSpec{workflowID: s.info.WorkflowID}
	var newRun *newRunSpec
	var can *continueAsNewError
	switch {
	case runErr == nil:
		b, err := s.e.encodePayload("result of workflow "+s.info.WorkflowType, out)
		if err != nil {
			fin.status, fin.errJSON = StatusFailed, encodeError(NewNonRetryableError(ErrorTypePayloadTooLarge, err.Error(), nil))
		} else {
			fin.status, fin.output, fin.live = StatusCompleted, b, out
		}
	case errors.As(runErr, &can):
		fin.status = StatusContinued
		row := runRow{RunID: newRunID(), WorkflowID: s.info.WorkflowID, WorkflowType: can.workflowType, Queue: s.info.Queue,
			Input: can.input, Headers: s.row.Headers, WakeAt: nullTime(s.e.cfg.Clock.Now()),
			ParentRunID: s.row.ParentRunID, ParentSeq: s.row.ParentSeq, ParentClosePolicy: s.row.ParentClosePolicy,
			PreviousRunID: nullString(s.info.RunID), StartReason: "continue_as_new"}
		newRun = &newRunSpec{row: row, reuse: ReuseAllowDuplicate}
	case isCanceled(runErr) && s.cancelRequested():
		fin.status, fin.errJSON = StatusCancelled, encodeError(runErr)
	default:
		fin.status, fin.errJSON = StatusFailed, encodeError(runErr)
	}
	s.mu.Lock()
	fin.hasChildren, fin.hasTimers = s.hadChildren, s.hadTimers
	s.mu.Unlock()
	for _, st := range s.history {
		fin.hasChildren = fin.hasChildren || st.Kind == stepChild
		fin.hasTimers = fin.hasTimers || st.Kind == stepTimer
	}
	if s.row.ParentRunID.Valid {
		fin.parentRunID, fin.parentSeq = s.row.ParentRunID.String, int(s.row.ParentSeq.Int64)
	}
	s.abandonPendingTimers(s.e.cfg.Clock.Now())
	var evs []*CheckpointEvent
	if ev := s.event(CheckpointWorkflowClosed, fin.status); ev != nil && s.parkedErr == nil {
		ev.Result, ev.Err = out, runErr
		evs = []*CheckpointEvent{ev}
	}
	err := s.flushWait(&writeOp{fin: fin, newRun: newRun, events: evs})
	if err == nil {
		s.closed.Store(true)
	}
	if err != nil && !errors.Is(err, errLeaseLost) {
		s.e.cfg.Logger.Error("engine: could not record workflow end; releasing run", "run_id", s.row.RunID, "err", err)
		s.dropAfter(err)
	}
	s.abandon()
}

func (s *runState) cancelRequested() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cancelReq
}

// future is the untyped core of Future, resolved by an activity goroutine, a
// child's completion, or from the record.
type future struct {
	s     *runState
	seq   int
	done  bool
	value []byte
	// live, when set, is the value value encodes, as it was produced (an
	// activity's result): see liveValue.
	live   any
	err    error
	fireAt time.Time // timers: ready once the clock reaches it
}

func (f *future) resolveLocked(v []byte, err error) { f.resolveLiveLocked(v, nil, err) }

// resolveLiveLocked resolves f with v, the encoding of live.
func (f *future) resolveLiveLocked(v []byte, live any, err error) {
	if f.done {
		return
	}
	f.done, f.value, f.live, f.err = true, v, live, err
}

func (f *future) readyLocked(now time.Time) bool {
	if !f.done && !f.fireAt.IsZero() && !now.Before(f.fireAt) {
		f.done = true
	}
	return f.done
}

func (f *future) deadline() time.Time {
	if f.done {
		return time.Time{}
	}
	return f.fireAt
}

// Future is the pending result of an activity, timer or child workflow.
type Future[T any] struct{ f *future }

// Get blocks the workflow until the result is ready.
func (f Future[T]) Get(ctx Context) (T, error) {
	var zero T
	f.f.s.point++
	if _, err := f.f.s.block(ctx, []waiter{f.f}); err != nil {
		return zero, err
	}
	if f.f.err != nil {
		return zero, f.f.err
	}
	if len(f.f.value) == 0 {
		return zero, nil
	}
	if v, ok := liveValue[T](f.f.live); ok {
		return v, nil
	}
	var v T
	if err := json.Unmarshal(f.f.value, &v); err != nil {
		return zero, fmt.Errorf("engine: decode recorded result of step %d: %w", f.f.seq, err)
	}
	return v, nil
}

// IsReady reports whether Get would return without blocking. The answer is
// recorded, so a replay gives the same one even though by then the result
// (or the fire time) may be known.
func (f Future[T]) IsReady() bool {
	s := f.f.s
	if rec := s.peek(); rec != nil {
		seq, rec := s.nextSeq()
		s.expect(seq, rec, stepReady, "")
		return string(rec.Output) == "true"
	}
	s.stopIfQuery()
	s.mu.Lock()
	ready := f.f.readyLocked(s.e.cfg.Clock.Now())
	s.mu.Unlock()
	seq, _ := s.nextSeq()
	now := s.e.cfg.Clock.Now()
	s.write(&stepRow{RunID: s.row.RunID, Seq: seq, Kind: stepReady, Name: "is_ready", Status: stepCompleted,
		Output: []byte(fmt.Sprint(ready)), StartedAt: nullTime(now), CompletedAt: nullTime(now)}, nil)
	return ready
}

func (f Future[T]) waiterOf() waiter { return f.f }

// Waitable is anything Select can wait on: a Future or a SignalChannel.
type Waitable interface{ waiterOf() waiter }

// Select blocks until one of ws is ready and returns its index; the choice
// is recorded so a replay makes the same one.
func Select(ctx Context, ws ...Waitable) (int, error) {
	s := ctx.state()
	if err := s.cancelPoint(ctx); err != nil {
		return -1, err
	}
	if rec := s.peek(); rec != nil {
		seq, rec := s.nextSeq()
		s.expect(seq, rec, stepSelect, "")
		var idx int
		_ = json.Unmarshal(rec.Output, &idx)
		return idx, nil
	}
	s.stopIfQuery()
	list := make([]waiter, len(ws))
	for i, w := range ws {
		list[i] = w.waiterOf()
	}
	idx, err := s.block(ctx, list)
	if err != nil {
		return -1, err
	}
	seq, _ := s.nextSeq()
	now := s.e.cfg.Clock.Now()
	out, _ := json.Marshal(idx)
	s.write(&stepRow{RunID: s.row.RunID, Seq: seq, Kind: stepSelect, Name: "select", Status: stepCompleted, Output: out,
		StartedAt: nullTime(now), CompletedAt: nullTime(now)}, nil)
	return idx, nil
}

// put sets (*m)[k] to v, making the map at its first entry.
func put[K comparable, V any](m *map[K]V, k K, v V) {
	if *m == nil {
		*m = map[K]V{}
	}
	(*m)[k] = v
}
