package cancel

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/graftdev/graft/engine"
)

// Compensation declares that a successful call of one activity is undone by a
// call of another. Build it with Undo and list it in Config.Compensations.
type Compensation struct {
	do    string
	undo  undoer
	input func(args any, result json.RawMessage) (any, error)
	opts  *engine.ActivityOptions
	err   error // reported by New
}

// Undo declares that a successful call of do is undone by a call of undo with
// the input that input returns, given do's input and result. input must be
// deterministic: it runs in workflow code, again on every replay.
func Undo[DIn, DOut, UIn, UOut any](do *engine.Activity[DIn, DOut], undo *engine.Activity[UIn, UOut],
	input func(in DIn, out DOut) UIn) Compensation {
	switch {
	case do == nil:
		return Compensation{err: errors.New("the activity to undo is nil")}
	case undo == nil:
		return Compensation{err: fmt.Errorf("the undo activity of %q is nil", do.Name())}
	case input == nil:
		return Compensation{err: fmt.Errorf("the input function of %q is nil", do.Name())}
	}
	return Compensation{
		do:   do.Name(),
		undo: undoerOf(undo),
		input: func(args any, result json.RawMessage) (v any, err error) {
			defer func() {
				if r := recover(); r != nil {
					err = fmt.Errorf("cancel: input function of %q panicked: %v", do.Name(), r)
				}
			}()
			in, ok := args.(DIn)
			if !ok {
				if err := convert(args, &in); err != nil {
					return nil, fmt.Errorf("cancel: input of %q: %w", do.Name(), err)
				}
			}
			var out DOut
			if len(result) > 0 {
				if err := json.Unmarshal(result, &out); err != nil {
					return nil, fmt.Errorf("cancel: result of %q: %w", do.Name(), err)
				}
			}
			return input(in, out), nil
		},
	}
}

// WithOptions returns a copy whose compensation calls use opts instead of
// Config.ActivityOptions; fields left zero fall back to the undo activity's
// definition (see engine.ActivityOptions). Give RetryPolicy a MaximumAttempts
// or the compensation never stops for an operator.
func (c Compensation) WithOptions(opts engine.ActivityOptions) Compensation {
	c.opts = &opts
	return c
}

// undoer runs one compensation activity, type-erased.
type undoer struct {
	name string
	run  func(ctx engine.Context, opts *engine.ActivityOptions, in any) (json.RawMessage, error)
}

func undoerOf[In, Out any](a *engine.Activity[In, Out]) undoer {
	return undoer{name: a.Name(), run: func(ctx engine.Context, opts *engine.ActivityOptions, in any) (json.RawMessage, error) {
		v, ok := in.(In)
		if !ok {
			if err := convert(in, &v); err != nil {
				return nil, fmt.Errorf("cancel: input of %q: %w", a.Name(), err)
			}
		}
		out, err := a.RunWith(ctx, opts, v)
		if err != nil {
			return nil, err
		}
		return json.Marshal(out)
	}}
}

// convert moves a value into another type through JSON, for an input that
// reached the interceptor as a different (but compatible) Go type.
func convert(from, to any) error {
	b, err := json.Marshal(from)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, to)
}

// Add records, from workflow code, that the operation must run undo with in
// if it is cancelled (or fails, where Config.CompensateOnFailure says so),
// for an effect no Undo declaration covers. It takes its place on the stack
// like a completed activity: compensations run in reverse order of recording.
// opts nil means Config.ActivityOptions. Add fails with ErrNotInstalled when
// the run has no cancel interceptor: a compensation is never dropped quietly.
func Add[In, Out any](ctx engine.Context, undo *engine.Activity[In, Out], in In, opts *engine.ActivityOptions) error {
	st := stackOf(ctx)
	if st == nil {
		return fmt.Errorf("cancel: Add: %w", ErrNotInstalled)
	}
	if undo == nil {
		return errors.New("cancel: Add: the undo activity is nil")
	}
	st.added++
	st.entries = append(st.entries, &entry{id: fmt.Sprintf("a%d", st.added), undo: undoerOf(undo), undoIn: in, opts: opts,
		status: StepRecorded})
	return nil
}
