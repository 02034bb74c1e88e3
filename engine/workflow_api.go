package engine

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"time"
)

// ---- activities -------------------------------------------------------------

// Start schedules the activity and returns its future at once, so a workflow
// can run several activities in parallel.
func (a *Activity[In, Out]) Start(ctx Context, in In) Future[Out] {
	return a.StartWith(ctx, nil, in)
}

// StartWith is Start with per-call options; nil means the definition's.
func (a *Activity[In, Out]) StartWith(ctx Context, opts *ActivityOptions, in In) Future[Out] {
	return a.start(ctx, opts, in, false)
}

func (a *Activity[In, Out]) start(ctx Context, opts *ActivityOptions, in In, wait bool) Future[Out] {
	o := a.opts
	if opts != nil {
		o = *opts
	}
	return Future[Out]{f: ctx.state().startActivity(ctx, a.name, in, o, wait)}
}

// Run executes the activity and waits for its result.
func (a *Activity[In, Out]) Run(ctx Context, in In) (Out, error) {
	return a.RunWith(ctx, nil, in)
}

// RunWith is Run with per-call options.
func (a *Activity[In, Out]) RunWith(ctx Context, opts *ActivityOptions, in In) (Out, error) {
	return a.start(ctx, opts, in, true).Get(ctx)
}

// startActivity schedules activity name and returns its future. With wait,
// the workflow waits for the result at once (Run): the attempt
// runs on the workflow's goroutine, which has nothing else to do meanwhile,
// and saves a goroutine and two hand-offs between goroutines per activity
// (see activityStep's attempts).
func (s *runState) startActivity(ctx Context, name string, in any, opts ActivityOptions, wait bool) *future {
	c := s.outbound(ctx, OutboundActivity, name, in)
	if c.rec != nil && !c.f.done {
		s.expect(c.seq, c.rec, stepActivity, name)
		if c.rec.Status == stepCompleted || c.rec.Status == stepFailed {
			c.f.done, c.f.value, c.f.err = true, c.rec.Output, decodeError(c.rec.Error)
		}
	}
	def := s.e.reg.activities[name]
	var unknown error
	if def == nil {
		unknown = NewNonRetryableError(ErrorTypeUnknownActivity, fmt.Sprintf("%v: %q is not registered", ErrUnknownActivity, name), nil)
	}
	input, ok := s.goLive(c, "input of activity "+name, in, unknown)
	if !ok {
		return c.f
	}
	f, rec, outIn := c.f, c.rec, c.in
	base := s.cancelCtx
	if ctx.isDisconnected() {
		base = s.runCtx
	}
	s.mu.Lock()
	s.inflight++
	s.starting++ // runActivity's first attempt
	s.mu.Unlock()
	o := mergeOptions(opts, def.defaults())
	o.unknownOnCancel = outIn.OutcomeUnknownOnCancel
	if wait {
		s.newActivityStep(base, f, def, input, in, &o, outIn.Headers, rec).attempts(true)
		return f
	}
	go s.runActivity(base, f, def, input, in, o, outIn.Headers, rec)
	return f
}

// ---- timers -----------------------------------------------------------------

// NewTimer returns a future that becomes ready after d of workflow time. The
// fire time is recorded, so a replay waits for the same instant.
func NewTimer(ctx Context, d time.Duration) Future[struct{}] {
	s := ctx.state()
	f := &future{s: s}
	if err := s.cancelPoint(ctx); err != nil {
		f.done, f.err = true, err
		return Future[struct{}]{f: f}
	}
	seq, rec := s.nextSeq()
	f.seq = seq
	n := len(s.ch.outbound)
	outIn := &OutboundInput{Info: s.info, Kind: OutboundTimer, Name: "timer", Seq: seq, Duration: d, Headers: s.callHeaders.lend(s.headers, n), Replaying: rec != nil || s.mode == modeQuery}
	_ = s.ch.callOutbound(ctx, outIn)
	s.callHeaders.settle(s.headers, outIn.Headers, n)
	if rec != nil {
		s.expect(seq, rec, stepTimer, "")
		f.fireAt = rec.FireAt.Time
		return Future[struct{}]{f: f}
	}
	s.stopIfQuery()
	now := s.e.cfg.Clock.Now()
	f.fireAt = now.Add(d)
	s.mu.Lock()
	s.hadTimers = true
	s.mu.Unlock()
	s.write(&stepRow{RunID: s.row.RunID, Seq: seq, Kind: stepTimer, Name: "timer", Status: stepStarted,
		StartedAt: nullTime(now), FireAt: nullTime(f.fireAt), Input: []byte(fmt.Sprintf("%d", d.Milliseconds()))}, nil)
	return Future[struct{}]{f: f}
}

// Sleep waits d of workflow time. A long sleep holds no goroutine: the run is
// unloaded and resumed by replay when the timer is due.
func Sleep(ctx Context, d time.Duration) error {
	_, err := NewTimer(ctx, d).Get(ctx)
	return err
}

// ---- signals ----------------------------------------------------------------

// SignalChannel receives signals of one name, in the order they were sent.
type SignalChannel[T any] struct {
	s    *runState
	name string
}

// GetSignalChannel returns the channel for signals named name.
func GetSignalChannel[T any](ctx Context, name string) SignalChannel[T] {
	return SignalChannel[T]{s: ctx.state(), name: name}
}

type signalWaiter struct {
	s    *runState
	name string
}

func (w signalWaiter) readyLocked(time.Time) bool { return w.s.hasSignalLocked(w.name) }

func (w signalWaiter) deadline() time.Time { return time.Time{} }

func (c SignalChannel[T]) waiterOf() waiter { return signalWaiter(c) }

// Receive blocks until a signal arrives and returns its payload.
func (c SignalChannel[T]) Receive(ctx Context) (T, error) {
	v, _, err := c.receive(ctx, true)
	return v, err
}

// ReceiveAsync returns a buffered signal if there is one, without blocking.
// The answer is recorded, so a replay gives the same one.
func (c SignalChannel[T]) ReceiveAsync(ctx Context) (T, bool, error) {
	return c.receive(ctx, false)
}

func (c SignalChannel[T]) receive(ctx Context, wait bool) (T, bool, error) {
	var zero T
	s := c.s
	if err := s.cancelPoint(ctx); err != nil {
		return zero, false, err
	}
	if rec := s.peek(); rec != nil {
		seq, rec := s.nextSeq()
		s.expect(seq, rec, stepSignal, c.name)
		if rec.Status != stepCompleted {
			return zero, false, nil
		}
		v, err := c.deliver(ctx, rec.Payload(), nil, true)
		return v, true, err
	}
	s.stopIfQuery()
	if wait {
		if _, err := s.block(ctx, []waiter{signalWaiter{s: s, name: c.name}}); err != nil {
			return zero, false, err
		}
	} else {
		s.fillSignals(c.name)
	}
	s.mu.Lock()
	var sg *signalRow
	for i, x := range s.signals {
		if x.Name == c.name {
			sg = x
			s.signals = append(s.signals[:i:i], s.signals[i+1:]...)
			put(&s.consumed, x.ID, true)
			break
		}
	}
	s.mu.Unlock()
	seq, _ := s.nextSeq()
	now := s.e.cfg.Clock.Now()
	st := &stepRow{RunID: s.row.RunID, Seq: seq, Kind: stepSignal, Name: c.name, StartedAt: nullTime(now), CompletedAt: nullTime(now)}
	if sg == nil {
		st.Status = "empty"
		s.write(st, nil)
		return zero, false, nil
	}
	st.Status, st.Output, st.SignalID = stepCompleted, sg.Payload, nullInt(sg.ID)
	s.write(st, nil)
	v, err := c.deliver(ctx, sg.Payload, decodeHeaders(sg.Headers), false)
	return v, true, err
}

func (c SignalChannel[T]) deliver(ctx Context, payload []byte, headers Headers, replaying bool) (T, error) {
	var v T
	in := &HandleSignalInput{Info: c.s.info, Name: c.name, Payload: payload, Headers: headers, Replaying: replaying}
	err := compose(c.s.ch.signal, wrapSignal, SignalNext(func(_ Context, in *HandleSignalInput) error {
		if len(in.Payload) == 0 {
			return nil
		}
		return json.Unmarshal(in.Payload, &v)
	}))(ctx, in)
	return v, err
}

// Payload returns the recorded payload of a signal step.
func (r *stepRow) Payload() []byte { return r.Output }

// ---- side effects and randomness -----------------------------------------

// SideEffect runs fn once and records its result; a replay returns the
// record without calling fn. Use it for small non-deterministic values (an
// ID, the time); anything slow or failing belongs in an activity.
func SideEffect[T any](ctx Context, name string, fn func() (T, error)) (T, error) {
	var zero T
	s := ctx.state()
	seq, rec := s.nextSeq()
	if rec != nil {
		s.expect(seq, rec, stepSideEffect, name)
		if rec.Error != nil {
			return zero, decodeError(rec.Error)
		}
		var v T
		if err := json.Unmarshal(rec.Output, &v); err != nil {
			return zero, fmt.Errorf("engine: decode side effect %q: %w", name, err)
		}
		return v, nil
	}
	s.stopIfQuery()
	n := len(s.ch.outbound)
	outIn := &OutboundInput{Info: s.info, Kind: OutboundSideEffect, Name: name, Seq: seq, Headers: s.callHeaders.lend(s.headers, n)}
	_ = s.ch.callOutbound(ctx, outIn)
	s.callHeaders.settle(s.headers, outIn.Headers, n)
	s.inSideEffect = name
	v, err := func() (T, error) {
		defer func() { s.inSideEffect = "" }()
		return fn()
	}()
	now := s.e.cfg.Clock.Now()
	st := &stepRow{RunID: s.row.RunID, Seq: seq, Kind: stepSideEffect, Name: name, Status: stepCompleted, StartedAt: nullTime(now), CompletedAt: nullTime(now)}
	if err != nil {
		st.Status, st.Error = stepFailed, encodeError(err)
	} else if st.Output, err = s.e.encodePayload("side effect "+name, v); err != nil {
		return zero, err
	}
	s.write(st, nil)
	return v, err
}

type randSource struct{ r *rand.Rand }

// Rand returns a random source seeded from a recorded side effect, so the
// sequence it produces is the same on replay.
func Rand(ctx Context) *rand.Rand {
	s := ctx.state()
	if s.rnd == nil {
		seed, err := SideEffect(ctx, "graft.rand_seed", func() (int64, error) { return rand.Int63(), nil })
		if err != nil {
			panic(err)
		}
		s.rnd = &randSource{r: rand.New(rand.NewSource(seed))}
	}
	return s.rnd.r
}

// ---- queries ----------------------------------------------------------------

// SetQueryHandler registers a read-only handler answering queries named name.
// Queries are answered by replaying the run's record up to its current
// point, so they work for loaded, unloaded and finished runs alike.
func SetQueryHandler[A, R any](ctx Context, name string, h func(A) (R, error)) {
	put(&ctx.state().queries, name, func(raw []byte) (any, error) {
		var a A
		if len(raw) > 0 && string(raw) != "null" {
			if err := json.Unmarshal(raw, &a); err != nil {
				return nil, fmt.Errorf("%w: query %q argument: %v", ErrBadInput, name, err)
			}
		}
		return h(a)
	})
}

// ---- continue-as-new ------------------------------------------------------

type continueAsNewError struct {
	workflowType string
	input        []byte
}

func (e *continueAsNewError) Error() string { return "continue as new (" + e.workflowType + ")" }

// ContinueAsNew returns an error that, returned from the workflow function,
// closes this run and starts a fresh one of wf with the same workflow ID and
// an empty record. Use it for loops that would grow without bound.
func ContinueAsNew[In, Out any](ctx Context, wf *Workflow[In, Out], in In) error {
	b, err := ctx.state().e.encodePayload("input of workflow "+wf.name, in)
	if err != nil {
		return err
	}
	return &continueAsNewError{workflowType: wf.name, input: b}
}

// IsContinueAsNew reports whether err is (or wraps) the error ContinueAsNew
// returns, so an interceptor can tell a run that continues from one that fails.
func IsContinueAsNew(err error) bool {
	var can *continueAsNewError
	return errors.As(err, &can)
}
