package engine

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Defaults of RetryPolicy and ActivityOptions, applied to fields left zero.
const (
	// DefaultInitialInterval is the wait before an activity's first retry.
	DefaultInitialInterval = time.Second
	// DefaultBackoffCoefficient multiplies the wait after each retry.
	DefaultBackoffCoefficient = 2.0
	// DefaultMaximumIntervalFactor caps the wait at this many times the
	// initial interval.
	DefaultMaximumIntervalFactor = 100
	// DefaultStartToCloseTimeout bounds one attempt when neither
	// StartToCloseTimeout nor ScheduleToCloseTimeout is set.
	DefaultStartToCloseTimeout = 5 * time.Minute
)

// RetryPolicy says how a failed activity is retried. The zero value takes the
// documented defaults.
type RetryPolicy struct {
	// InitialInterval is the wait before the first retry. Default
	// DefaultInitialInterval (1s).
	InitialInterval time.Duration
	// BackoffCoefficient multiplies the wait after each retry; below 1 it
	// takes the default, DefaultBackoffCoefficient (2).
	BackoffCoefficient float64
	// MaximumInterval caps the wait. Default DefaultMaximumIntervalFactor
	// (100) × InitialInterval.
	MaximumInterval time.Duration
	// MaximumAttempts caps attempts, the first included; 0 means unlimited.
	MaximumAttempts int
	// NonRetryableErrorTypes lists ApplicationError types that stop retries.
	NonRetryableErrorTypes []string
}

// Delay returns the wait before attempt+1 after attempt failed.
func (p RetryPolicy) Delay(attempt int) time.Duration {
	p = p.withDefaults()
	d := float64(p.InitialInterval) * math.Pow(p.BackoffCoefficient, float64(attempt-1))
	if d > float64(p.MaximumInterval) {
		return p.MaximumInterval
	}
	return time.Duration(d)
}

func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.InitialInterval <= 0 {
		p.InitialInterval = DefaultInitialInterval
	}
	if p.BackoffCoefficient < 1 {
		p.BackoffCoefficient = DefaultBackoffCoefficient
	}
	if p.MaximumInterval <= 0 {
		p.MaximumInterval = DefaultMaximumIntervalFactor * p.InitialInterval
	}
	return p
}

// ActivityOptions configure activity calls. Zero fields take the defaults.
type ActivityOptions struct {
	// StartToCloseTimeout bounds one attempt. Default
	// DefaultStartToCloseTimeout (5 minutes) when ScheduleToCloseTimeout is
	// not set either.
	StartToCloseTimeout time.Duration
	// ScheduleToCloseTimeout bounds all attempts together, waits included.
	ScheduleToCloseTimeout time.Duration
	// HeartbeatTimeout fails an attempt that has not called Heartbeat for
	// this long. Zero disables it.
	HeartbeatTimeout time.Duration
	// RetryPolicy; nil means the defaults (unlimited attempts, 1s doubling up to 100s).
	RetryPolicy *RetryPolicy

	// unknownOnCancel: OutboundInput.OutcomeUnknownOnCancel of the call.
	unknownOnCancel bool
}

func mergeOptions(call, def ActivityOptions) ActivityOptions {
	call.StartToCloseTimeout = cmp.Or(call.StartToCloseTimeout, def.StartToCloseTimeout)
	call.ScheduleToCloseTimeout = cmp.Or(call.ScheduleToCloseTimeout, def.ScheduleToCloseTimeout)
	call.HeartbeatTimeout = cmp.Or(call.HeartbeatTimeout, def.HeartbeatTimeout)
	call.RetryPolicy = cmp.Or(call.RetryPolicy, def.RetryPolicy)
	if call.StartToCloseTimeout == 0 && call.ScheduleToCloseTimeout == 0 {
		call.StartToCloseTimeout = DefaultStartToCloseTimeout
	}
	return call
}

// SnoozeError asks the engine to run the activity again after After without
// counting an attempt; a rate limiter returns it when no slot is free (the
// ratelimit package's Wait, Hold and ActivityInterceptor do). The engine
// records Reason; Err, when set, is the cause (a limiter's denial, say).
type SnoozeError struct {
	After  time.Duration
	Reason string
	Err    error
}

func (e *SnoozeError) Error() string { return fmt.Sprintf("snoozed for %v: %s", e.After, e.Reason) }

// Unwrap returns the cause.
func (e *SnoozeError) Unwrap() error { return e.Err }

// Snooze returns a SnoozeError.
func Snooze(after time.Duration, reason string) error {
	return &SnoozeError{After: after, Reason: reason}
}

type activityCtxKey struct{}

type activityState struct {
	info    ActivityInfo
	headers Headers
	mu      sync.Mutex
	lastHB  time.Time
	details json.RawMessage
	prev    json.RawMessage

	// Saving heartbeat details for an attempt after a crash: a goroutine
	// started by the first heartbeat with details saves the latest for step
	// seq of run at most once a second (dirty says there are new ones) until
	// the attempt ends (done).
	run  *runState
	seq  int
	done <-chan struct{}
	// attempt, when set, is the attempt's context, whose Done is done
	// (made when the saver starts).
	attempt   *attemptCtx
	saverOnce sync.Once
	dirty     chan struct{}
}

// saveLoop saves the attempt's latest heartbeat details now and then at
// most once a second while new ones come, until the attempt ends.
func (st *activityState) saveLoop() {
	for {
		st.mu.Lock()
		d := st.details
		st.mu.Unlock()
		st.run.saveHeartbeat(st.seq, d)
		t := time.NewTimer(time.Second)
		select {
		case <-st.done:
			t.Stop()
			return
		case <-t.C:
		}
		select {
		case <-st.done:
			return
		case <-st.dirty:
		}
	}
}

// ActivityInfoOf returns the calling activity's identity, attempt and
// idempotency key. It panics outside an activity.
func ActivityInfoOf(ctx context.Context) ActivityInfo {
	return mustActivity(ctx).info
}

// ActivityHeadersOf returns the headers the activity was called with.
func ActivityHeadersOf(ctx context.Context) Headers { return mustActivity(ctx).headers.Clone() }

func mustActivity(ctx context.Context) *activityState {
	st, _ := ctx.Value(activityCtxKey{}).(*activityState)
	if st == nil {
		panic("engine: not called from an activity")
	}
	return st
}

// Heartbeat records that the activity is alive, with optional progress
// details a retry can resume from (see HeartbeatDetails). Details are kept
// in memory for retries in this process and saved to the database at most
// about once a second, for an attempt that follows a crash.
func Heartbeat(ctx context.Context, details any) {
	st := mustActivity(ctx)
	var b json.RawMessage
	if details != nil {
		b, _ = json.Marshal(details)
	}
	st.mu.Lock()
	st.lastHB = time.Now()
	if b != nil {
		st.details = b
	}
	st.mu.Unlock()
	if b != nil && st.run != nil {
		st.saverOnce.Do(func() {
			if st.attempt != nil {
				st.done = st.attempt.Done()
			}
			st.dirty = make(chan struct{}, 1)
			go st.saveLoop()
		})
		select {
		case st.dirty <- struct{}{}:
		default:
		}
	}
}

// HeartbeatDetails decodes the details the previous attempt last recorded
// (after a crash: the last ones saved, up to about a second older).
func HeartbeatDetails[T any](ctx context.Context) (T, bool) {
	var v T
	st := mustActivity(ctx)
	if len(st.prev) == 0 || json.Unmarshal(st.prev, &v) != nil {
		return v, false
	}
	return v, true
}

// ActivityLostType is the type of the *ApplicationError that stands for an
// activity attempt which was in flight when its worker stopped (a crash, a
// SIGKILL, a lost lease). Its outcome is unknown, so it is treated as
// possibly done: it counts as an attempt, and the retry policy decides
// whether another attempt, with the same idempotency key, follows. The step
// fails with this error when none may.
const ActivityLostType = "ActivityLost"

// errAttemptNotStarted: the run was dropped before an attempt's start was
// durable, so the attempt did not run.
var errAttemptNotStarted = errors.New("engine: the run was dropped before the activity attempt started")

// runActivity runs the attempts of one activity step and records the outcome,
// on a goroutine of its own (see newActivityStep and attempts).
func (s *runState) runActivity(base context.Context, f *future, def activityDef, input []byte, live any, opts ActivityOptions, headers Headers, rec *stepRow) {
	s.newActivityStep(base, f, def, input, live, &opts, headers, rec).attempts(false)
}

// activityStep is one activity step's state, shared by its attempts: one
// allocation, where each variable closures shared was one of its own
// (seventeen an activity). Its methods take it by pointer, so the frames
// below an attempt on the workflow's goroutine stay small: a workflow's
// activities run on it, inside both interceptor chains, and stack held
// there can make the goroutine copy its stack as it grows (the attempts
// closure this replaces held 1,432 bytes of frame, 368 of them the
// arguments to attempt, and runActivity below it 720 more).
type activityStep struct {
	s       *runState
	f       *future
	def     activityDef
	input   []byte
	live    any
	opts    ActivityOptions
	headers Headers
	base    context.Context
	policy  RetryPolicy
	// scheduleDeadline: when the step's ScheduleToCloseTimeout ends (zero
	// without one). The step began at info.ScheduledAt.
	scheduleDeadline time.Time
	// beginFn is begin as a value, made once for the step's attempts.
	beginFn func(context.Context) error

	info ActivityInfo
	// args: the input as decoded for the last attempt.
	args, out   any
	err         error
	prevDetails json.RawMessage
	// done counts the attempts that ran (a snooze is none); attempt is
	// the number of the one to run next.
	done, attempt int
	// log gathers the attempts (and snoozes) that ended, for the
	// step's next write; attStart is when attempt done started. A
	// step's first attempt, when nothing came before it, starts with
	// the step (attempt_started_at stays NULL; separate is false): the
	// hot path writes nothing extra.
	log      attemptLog
	attStart time.Time
	// nextAt: the next attempt waits until then; recorded: the step's
	// record says so, and the run may unload meanwhile.
	nextAt time.Time

	// The flags sit together (each after a field of its own took a word
	// with its padding) and the step's start is kept once, in info: the
	// struct was 600 bytes, an allocation of 640 a step, and is 568, of
	// 576.
	separate, recorded bool
	// unknown: the last attempt may have done its work in a process
	// that stopped. Until an attempt gives an outcome, the attempts
	// run on the run's context, which a cancellation does not cancel:
	// a re-execution with the same idempotency key tells what happened
	// (a charge that went through is found, and can then be
	// compensated), where a cancelled one would say nothing had.
	unknown, finished bool
	// inputWritten: a record of the step holds its input.
	inputWritten bool
	// starting: this attempt counts in s.starting, on its way to begin
	// (startActivity counted the first one).
	starting, began bool
}

// newActivityStep prepares the attempts of one activity step.
// rec is the step's record when a replay found it not ended: an earlier
// load of the run started an attempt whose outcome is unknown, or recorded
// when the next attempt is due (a retry's backoff, a limiter's snooze).
//
// live is the input value input encodes, when the workflow passed it now
// (nil on a resumed run): see liveValue.
func (s *runState) newActivityStep(base context.Context, f *future, def activityDef, input []byte, live any, opts *ActivityOptions, headers Headers, rec *stepRow) *activityStep {
	a := &activityStep{s: s, f: f, def: def, input: input, live: live, opts: *opts, headers: headers, base: base}
	a.beginFn = a.begin
	scheduled := time.Now()
	if rec != nil && rec.StartedAt.Valid {
		scheduled = rec.StartedAt.Time
	}
	if opts.RetryPolicy != nil {
		a.policy = *opts.RetryPolicy
	}
	if opts.ScheduleToCloseTimeout > 0 {
		a.scheduleDeadline = scheduled.Add(opts.ScheduleToCloseTimeout)
	}
	id := strconv.Itoa(f.seq)
	a.info = ActivityInfo{Workflow: s.info, ActivityName: def.Name(), ActivityID: id, ScheduledAt: scheduled,
		IdempotencyKey: s.info.WorkflowID + "/" + s.info.RunID + "/" + id}
	if s.row.Loads > 1 {
		// A resumed run: an attempt of this step may have heartbeated in a
		// process that died.
		a.prevDetails, _ = s.e.store.loadHeartbeat(base, s.row.RunID, f.seq)
	}
	a.attempt = 1
	if rec != nil {
		switch {
		case rec.NextAttemptAt.Valid:
			a.done, a.nextAt, a.recorded, a.separate = rec.Attempts, rec.NextAttemptAt.Time, true, true
			a.attempt = a.done + 1
		case rec.Attempts > 0:
			a.unknown, a.separate = true, true
			a.done = rec.Attempts
			a.attStart = rec.StartedAt.Time
			if rec.AttemptStartedAt.Valid {
				a.attStart = rec.AttemptStartedAt.Time
			}
			lost := NewApplicationError(ActivityLostType, fmt.Sprintf("attempt %d of activity %q was in flight when its worker stopped; its outcome is unknown",
				rec.Attempts, def.Name()), nil)
			a.log.add(attemptEntry{Attempt: a.done, StartedAt: a.attStart, EndedAt: s.e.cfg.Clock.Now(), Error: encodeError(lost), Lost: true, Max: a.policy.MaximumAttempts})
			switch {
			case !retryable(lost, a.policy, a.done):
				a.err, a.finished = lost, true
			case !a.scheduleDeadline.IsZero() && !time.Now().Before(a.scheduleDeadline):
				a.err, a.finished = &TimeoutError{Kind: TimeoutScheduleToClose, HeartbeatDetails: a.prevDetails}, true
			default:
				a.attempt = a.done + 1
			}
		}
	}
	a.inputWritten = rec != nil
	a.starting = true
	return a
}

// setStarting counts the current attempt in s.starting (on) or not.
func (a *activityStep) setStarting(on bool) {
	if a.starting == on {
		return
	}
	a.starting = on
	s := a.s
	s.mu.Lock()
	if on {
		s.starting++
	} else {
		s.starting--
	}
	s.mu.Unlock()
}

// begin makes the current attempt's start durable, with every earlier
// step of the run (the ordering rule), just before the activity runs,
// then takes the worker's rate token.
func (a *activityStep) begin(ctx context.Context) error {
	s := a.s
	a.began, a.attStart = true, s.e.cfg.Clock.Now()
	st := &stepRow{RunID: s.row.RunID, Seq: a.f.seq, Kind: stepActivity, Name: a.def.Name(), Status: stepStarted,
		Attempts: a.attempt, StartedAt: nullTime(a.info.ScheduledAt), logAppend: a.log.take()}
	if a.separate {
		st.AttemptStartedAt = nullTime(a.attStart)
	}
	if !a.inputWritten {
		st.Input = a.input
	}
	s.histBytes.Add(st.size())
	err := s.flushWait(&writeOp{steps: []*stepRow{st}})
	a.setStarting(false)
	if err != nil {
		if !s.isAbandoned() {
			s.e.cfg.Logger.Warn("engine: activity start refused; dropping run", "run_id", s.row.RunID, "seq", a.f.seq, "err", err)
			s.dropAfter(err)
		}
		return errAttemptNotStarted
	}
	a.inputWritten = true
	return s.w.waitRate(ctx)
}

// recordWait records that the step waits until next for its next
// attempt (status retrying or throttled), with the attempts that ended.
func (a *activityStep) recordWait(status string, next time.Time) {
	s := a.s
	st := &stepRow{RunID: s.row.RunID, Seq: a.f.seq, Kind: stepActivity, Name: a.def.Name(), Status: status,
		Attempts: a.done, StartedAt: nullTime(a.info.ScheduledAt), NextAttemptAt: nullTime(next), logAppend: a.log.take()}
	if !a.inputWritten {
		st.Input = a.input
		a.inputWritten = true
	}
	s.write(st, nil)
	s.flush()
}

// attempts runs the attempts and records the outcome; on the workflow's
// goroutine (inline: the workflow waits for the result at once, Run) it
// runs them itself until one has to wait for its time (a retry's backoff,
// a snooze), and hands the rest to a goroutine of its own, and the workflow
// blocks as it does for a started activity, where it may unload the run
// while the step waits. What is not on the way to an attempt is in
// functions of its own (not inlined), out of the frame an attempt runs on.
func (a *activityStep) attempts(inline bool) {
	handed := false
	defer a.stopStarting(&handed)
	s, w, clock := a.s, a.s.w, a.s.e.cfg.Clock
	for !a.finished {
		ctx := a.base
		if a.unknown {
			ctx = s.runCtx
		}
		if !a.nextAt.IsZero() {
			a.setStarting(false)
			if inline {
				handed = true
				go a.attempts(false)
				return
			}
			gone, werr := a.waitNext(ctx)
			if gone {
				return
			}
			if werr != nil {
				a.err = werr
				break
			}
		}
		a.info.Attempt = a.attempt
		a.setStarting(true)
		if a.err = w.acquireActivitySlot(ctx); a.err != nil {
			break
		}
		tried := clock.Now()
		a.began = false
		var details json.RawMessage
		a.args, a.out, details, a.err = a.run(ctx)
		w.releaseActivitySlot()
		if a.starting {
			// Stopped before its start (a snooze, an interceptor's error):
			// the records it would have taken go out now.
			a.setStarting(false)
			s.flush()
		}
		if errors.Is(a.err, errAttemptNotStarted) {
			s.inflightDone()
			return // the run is dropped; its next load runs the step
		}
		if details != nil {
			a.prevDetails = details
		}
		ended := clock.Now()
		if !a.began {
			a.attStart = tried
		}
		if a.err == nil {
			a.done = a.attempt
			break
		}
		if !a.failed(tried, ended) {
			break
		}
	}
	a.finish(inline)
}

// stopStarting takes the attempt out of s.starting unless it was handed to
// another goroutine.
func (a *activityStep) stopStarting(handed *bool) {
	if !*handed {
		a.setStarting(false)
	}
}

// inflightDone counts an activity step that ended, or left the run, out of
// s.inflight.
func (s *runState) inflightDone() {
	s.mu.Lock()
	s.inflight--
	s.mu.Unlock()
}

// waitNext waits for the next attempt's time. It returns gone when the
// run was unloaded or given up meanwhile (the record says when the attempt
// is due, and the next load runs it), and the step's error when the wait
// was cancelled.
//
//go:noinline
func (a *activityStep) waitNext(ctx context.Context) (gone bool, err error) {
	s := a.s
	if werr := s.waitAttempt(ctx, a.f.seq, a.nextAt, a.recorded); werr != nil {
		if errors.Is(werr, errRunUnloaded) || s.isAbandoned() {
			s.inflightDone()
			return true, nil
		}
		return false, &CanceledError{Reason: s.cancelReasonOr("activity cancelled")}
	}
	a.nextAt, a.recorded = time.Time{}, false
	return false, nil
}

// failed takes in the attempt that started at tried and ended with a.err
// at ended: a snooze, an outcome made unknown by a cancellation, or a
// failure the retry policy may retry. It returns whether another attempt
// follows.
//
//go:noinline
func (a *activityStep) failed(tried, ended time.Time) bool {
	s, policy := a.s, &a.policy
	var sn *SnoozeError
	if errors.As(a.err, &sn) {
		next := dueAt(ended, sn.After)
		a.log.add(attemptEntry{Attempt: a.attempt, StartedAt: tried, EndedAt: ended, Snoozed: true, Reason: sn.Reason, Next: &next, Max: policy.MaximumAttempts})
		a.separate = true
		// A snooze long enough to unload the run for is recorded; a
		// shorter one keeps it loaded, and its entry goes with the
		// step's next write.
		if sn.After > s.e.cfg.UnloadAfter {
			a.recordWait(stepThrottled, next)
			a.recorded = true
		}
		a.nextAt = next
		return true
	}
	a.done = a.attempt
	if a.base.Err() != nil && !a.unknown && a.began && a.opts.unknownOnCancel && errors.Is(a.err, context.Canceled) &&
		retryable(a.err, *policy, a.attempt) {
		// The run's cancellation cut the attempt short after it went
		// live, and it may have done its work before it saw that: its
		// outcome is unknown, so the next attempt runs under the same
		// idempotency key where the cancellation cannot reach it.
		a.log.add(attemptEntry{Attempt: a.attempt, StartedAt: a.attStart, EndedAt: ended, Error: encodeError(a.err)})
		a.separate = true
		a.unknown = true
		a.attempt++
		return true
	}
	a.unknown = false
	if a.base.Err() != nil {
		a.err = &CanceledError{Reason: s.cancelReasonOr("activity cancelled")}
		return false
	}
	if !retryable(a.err, *policy, a.attempt) {
		return false
	}
	delay := policy.Delay(a.attempt)
	if !a.scheduleDeadline.IsZero() && time.Now().Add(delay).After(a.scheduleDeadline) {
		a.log.add(attemptEntry{Attempt: a.attempt, StartedAt: a.attStart, EndedAt: ended, Error: encodeError(a.err), Max: policy.MaximumAttempts})
		a.err = &TimeoutError{Kind: TimeoutScheduleToClose, HeartbeatDetails: a.prevDetails}
		return false
	}
	next := dueAt(ended, delay)
	a.log.add(attemptEntry{Attempt: a.attempt, StartedAt: a.attStart, EndedAt: ended, Error: encodeError(a.err), Next: &next, Max: policy.MaximumAttempts})
	a.recordWait(stepRetrying, next)
	a.nextAt, a.recorded, a.separate = next, true, true
	a.attempt++
	return true
}

// finish records the step's outcome and resolves its future.
//
//go:noinline
func (a *activityStep) finish(inline bool) {
	s, def, clock := a.s, a.def, a.s.e.cfg.Clock
	var output []byte
	if a.err == nil {
		if output, a.err = s.e.encodePayload("result of activity "+def.Name(), a.out); a.err != nil {
			a.err = NewNonRetryableError(ErrorTypePayloadTooLarge, a.err.Error(), nil)
		}
	}
	now := clock.Now()
	st := &stepRow{RunID: s.row.RunID, Seq: a.f.seq, Kind: stepActivity, Name: def.Name(), Status: stepCompleted,
		Output: output, Attempts: a.done, StartedAt: nullTime(a.info.ScheduledAt), CompletedAt: nullTime(now), logAppend: a.log.take()}
	if a.separate && !a.attStart.IsZero() {
		st.AttemptStartedAt = nullTime(a.attStart)
	}
	if !a.inputWritten {
		st.Input = a.input
	}
	if a.err != nil {
		st.Status, st.Error = stepFailed, encodeError(a.err)
	}
	// The outcome's event is for the checkpoint interceptors: without
	// any, nothing reads it.
	var evs []*CheckpointEvent
	if len(s.e.chains.checkpoint) > 0 {
		ev := &CheckpointEvent{Kind: CheckpointActivityCompleted, WorkflowID: s.info.WorkflowID, RunID: s.info.RunID,
			WorkflowType: s.info.WorkflowType, Headers: a.headers, Status: StatusRunning, Seq: a.f.seq, ActivityName: def.Name(),
			Attempt: max(a.done, 1), Result: a.out, At: now}
		if a.err != nil {
			ev.Kind, ev.Err, ev.Result = CheckpointActivityFailed, a.err, nil
		}
		if a.args == nil { // no attempt decoded it (cancelled before one began)
			a.args, _ = def.decodeInput(a.input)
		}
		ev.Input = a.args
		st.refused = func(cerr error) (*stepRow, []*CheckpointEvent) {
			return refusedOutcome(st, ev, cerr, a.policy, a.attStart, a.scheduleDeadline, clock.Now())
		}
		evs = []*CheckpointEvent{ev}
	}
	if a.err != nil {
		a.err = decodeError(st.Error) // the workflow sees what a replay would see
	}
	s.write(st, evs)
	s.mu.Lock()
	if a.err == nil {
		a.f.resolveLiveLocked(output, a.out, nil)
	} else {
		a.f.resolveLocked(output, a.err)
	}
	s.inflight--
	s.mu.Unlock()
	if !inline {
		s.poke()
	}
}

// refusedOutcome is what is recorded instead of an activity's outcome st
// (with its event ev) when a checkpoint interceptor refused the write that
// carried it with err: the attempt failed with the interceptor's error, and
// the retry policy decides. Another attempt waits in the record for its
// backoff (status retrying); without one, the step fails with that error,
// and the failure's event goes to the interceptors in turn.
func refusedOutcome(st *stepRow, ev *CheckpointEvent, err error, policy RetryPolicy, attStart, scheduleDeadline, now time.Time) (*stepRow, []*CheckpointEvent) {
	var app *ApplicationError
	if !errors.As(err, &app) {
		app = NewApplicationError(ErrorTypeCheckpointRefused, err.Error(), nil)
	}
	if attStart.IsZero() {
		attStart = st.StartedAt.Time
	}
	entry := attemptEntry{Attempt: st.Attempts, StartedAt: attStart, EndedAt: now, Error: encodeError(app)}
	row := &stepRow{RunID: st.RunID, Seq: st.Seq, Kind: st.Kind, Name: st.Name, Attempts: st.Attempts,
		StartedAt: st.StartedAt, Input: st.Input, AttemptStartedAt: st.AttemptStartedAt}
	delay := policy.Delay(st.Attempts)
	if retryable(app, policy, st.Attempts) && (scheduleDeadline.IsZero() || now.Add(delay).Before(scheduleDeadline)) {
		next := dueAt(now, delay)
		entry.Next = &next
		row.Status, row.NextAttemptAt = stepRetrying, nullTime(next)
		row.logAppend = joinLogs(st.logAppend, mustJSON([]attemptEntry{entry}))
		return row, nil
	}
	row.Status, row.Error, row.CompletedAt = stepFailed, encodeError(app), nullTime(now)
	row.logAppend = st.logAppend
	fail := *ev
	fail.Kind, fail.Err, fail.Result, fail.At = CheckpointActivityFailed, decodeError(row.Error), nil, now
	return row, []*CheckpointEvent{&fail}
}

// dueAt is when an attempt waiting d after t is due, to the microsecond
// PostgreSQL keeps: a wait resumed from the record ends when the run is
// claimed for it, not a fraction of a microsecond later.
func dueAt(t time.Time, d time.Duration) time.Time {
	return t.Add(d).Truncate(time.Microsecond)
}

// errRunUnloaded: the run was unloaded while an activity waited for its
// next attempt; the step's record says when it is due.
var errRunUnloaded = errors.New("engine: the run was unloaded while the activity waited for its next attempt")

// waitAttempt waits until at, on the engine's clock, before an attempt of
// step seq. A recorded wait (the step's record says when the attempt is
// due) runs nothing meanwhile: the workflow may unload the run (see block),
// and then it returns errRunUnloaded.
func (s *runState) waitAttempt(ctx context.Context, seq int, at time.Time, recorded bool) error {
	clock := s.e.cfg.Clock
	if recorded {
		s.park(seq, at)
	}
	for {
		d := at.Sub(clock.Now())
		if d < time.Microsecond {
			break
		}
		select {
		case <-clock.After(d):
		case <-ctx.Done():
			if recorded && !s.unpark(seq) {
				return errRunUnloaded
			}
			return ctx.Err()
		}
	}
	if recorded && !s.unpark(seq) {
		return errRunUnloaded
	}
	return nil
}

// saveHeartbeat writes step seq's latest heartbeat details.
func (s *runState) saveHeartbeat(seq int, d json.RawMessage) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.e.store.saveHeartbeat(ctx, s.fence(), s.row.RunID, seq, d); err != nil {
		s.e.cfg.Logger.Warn("engine: heartbeat details not saved", "run_id", s.row.RunID, "seq", seq, "err", err)
	}
}

func (s *runState) cancelReasonOr(def string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cancelReason != "" {
		return s.cancelReason
	}
	return def
}

func retryable(err error, p RetryPolicy, attempt int) bool {
	if p.MaximumAttempts > 0 && attempt >= p.MaximumAttempts {
		return false
	}
	var app *ApplicationError
	if errors.As(err, &app) && app.NonRetryable {
		return false
	}
	if len(p.NonRetryableErrorTypes) > 0 && slices.Contains(p.NonRetryableErrorTypes, ErrorTypeOf(err)) {
		return false
	}
	var to *TimeoutError
	if errors.As(err, &to) && to.Kind == TimeoutScheduleToClose {
		return false
	}
	return !isCanceled(err)
}

// run runs one attempt with its timeouts and heartbeat watch. It returns
// the input as decoded for the attempt, the result, the last heartbeat
// details and the error. Its contexts are made in functions of their own,
// out of the frame the activity runs on (see activityStep).
func (a *activityStep) run(base context.Context) (args, out any, details json.RawMessage, err error) {
	var ctx context.Context
	var st *activityState
	if a.opts.HeartbeatTimeout <= 0 {
		ac := a.lazyContext(base)
		defer ac.end()
		ctx, st = ac, &ac.st
	} else {
		var stop func()
		ctx, st, stop = a.watchedContext(base)
		defer stop()
	}
	args, err = a.def.inputOf(a.input, a.live)
	if err != nil {
		return nil, nil, nil, NewNonRetryableError(ErrorTypeBadInput, err.Error(), nil)
	}
	out, err = a.s.callActivity(ctx, &ActivityInput{Info: a.info, Headers: a.headers, Args: args, def: a.def, begin: a.beginFn})
	st.mu.Lock()
	details = st.details
	st.mu.Unlock()
	if err != nil {
		err = timeoutOf(ctx, err, details)
	}
	return args, out, details, err
}

// lazyContext is the context of an attempt without a heartbeat timeout:
// an attemptCtx, whose timeouts' timer and contexts are made only if
// something looks at them.
//
//go:noinline
func (a *activityStep) lazyContext(base context.Context) *attemptCtx {
	opts := &a.opts
	var deadline time.Time
	var kind TimeoutKind
	if opts.StartToCloseTimeout > 0 {
		deadline, kind = time.Now().Add(opts.StartToCloseTimeout), TimeoutStartToClose
	}
	if !a.scheduleDeadline.IsZero() && (deadline.IsZero() || a.scheduleDeadline.Before(deadline)) {
		deadline, kind = a.scheduleDeadline, TimeoutScheduleToClose
	}
	ctx := newAttemptCtx(base, deadline, kind)
	st := &ctx.st
	st.info, st.headers, st.lastHB, st.prev, st.run, st.seq, st.attempt = a.info, a.headers, time.Now(), a.prevDetails, a.s, a.f.seq, ctx
	return ctx
}

// watchedContext is the context of an attempt with a heartbeat timeout,
// which a watch cancels when the activity does not heartbeat in time, and
// its state; stop ends both.
//
//go:noinline
func (a *activityStep) watchedContext(base context.Context) (context.Context, *activityState, func()) {
	opts := &a.opts
	ctx, cancel := context.WithCancelCause(base)
	var c1, c2 context.CancelFunc = func() {}, func() {}
	if opts.StartToCloseTimeout > 0 {
		ctx, c1 = context.WithTimeoutCause(ctx, opts.StartToCloseTimeout, &TimeoutError{Kind: TimeoutStartToClose})
	}
	if !a.scheduleDeadline.IsZero() {
		ctx, c2 = context.WithDeadlineCause(ctx, a.scheduleDeadline, &TimeoutError{Kind: TimeoutScheduleToClose})
	}
	st := &activityState{info: a.info, headers: a.headers, lastHB: time.Now(), prev: a.prevDetails,
		run: a.s, seq: a.f.seq, done: ctx.Done()}
	stop := make(chan struct{})
	go st.watchHeartbeat(opts.HeartbeatTimeout, cancel, stop)
	return context.WithValue(ctx, activityCtxKey{}, st), st, func() {
		close(stop)
		c2()
		c1()
		cancel(nil)
	}
}

// callActivity runs the activity chain, a panic made a *PanicError.
func (s *runState) callActivity(ctx context.Context, in *ActivityInput) (out any, err error) {
	defer recoverActivity(&err)
	if outer := s.ch.outerActivity; outer != nil {
		return outer.ExecuteActivity(ctx, in, s.ch.innerActivity)
	}
	return s.ch.innerActivity(ctx, in)
}

func recoverActivity(err *error) {
	if r := recover(); r != nil {
		*err = &PanicError{Value: fmt.Sprint(r), Stack: string(debug.Stack())}
	}
}

// timeoutOf returns the *TimeoutError that ended the attempt's context ctx,
// with the attempt's last heartbeat details, in place of err; err when no
// timeout did.
//
//go:noinline
func timeoutOf(ctx context.Context, err error, details json.RawMessage) error {
	var to *TimeoutError
	if cause := context.Cause(ctx); errors.As(cause, &to) {
		t := *to
		if t.HeartbeatDetails == nil {
			t.HeartbeatDetails = details
		}
		return &t
	}
	return err
}

// watchHeartbeat cancels the attempt with a heartbeat timeout when it has
// not heartbeated for timeout, until stop closes.
func (st *activityState) watchHeartbeat(timeout time.Duration, cancel context.CancelCauseFunc, stop <-chan struct{}) {
	t := time.NewTicker(timeout / 4)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			st.mu.Lock()
			late := time.Since(st.lastHB) > timeout
			d := st.details
			st.mu.Unlock()
			if late {
				cancel(&TimeoutError{Kind: TimeoutHeartbeat, HeartbeatDetails: d})
				return
			}
		}
	}
}
