package interceptors

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"

	"github.com/graftdev/graft/engine"
)

// Recovery turns panics into *engine.PanicError values carrying the panic's
// value and stack:
//   - in an activity, the attempt fails with it; the error is retryable, so
//     the retry policy decides what happens next;
//   - in workflow code (the workflow function, a signal's delivery), the
//     workflow fails with it;
//   - in a query handler, the query returns it.
//
// Place it last (innermost) so that the interceptors outside it see an error
// return rather than a panic. The engine recovers panics itself as a last
// resort, so a worker survives a panic in any of these places with or
// without Recovery; a panic in a goroutine the activity started itself is
// out of anyone's reach and still ends the process.
//
// A replay that finds the workflow asking for a different step than its
// record holds is not a panic of the workflow's making: Recovery returns the
// engine's *engine.NonDeterminismError for it unchanged.
type Recovery struct {
	engine.InterceptorBase
}

// NewRecovery returns a recovery interceptor. Its methods take a pointer
// receiver: called through the pointer, a value method would go through
// the compiler's wrapper, a frame more in the stack of every workflow
// goroutine, which the garbage collector walks at every cycle.
func NewRecovery() *Recovery { return &Recovery{} }

// panicError converts a recovered value. It runs in the deferred function,
// while the panicking frames are still on the stack, so the stack shows
// where the panic happened.
func panicError(r any) error {
	if err, ok := r.(error); ok {
		var nd *engine.NonDeterminismError
		if errors.As(err, &nd) {
			return nd
		}
	}
	return &engine.PanicError{Value: fmt.Sprint(r), Stack: string(debug.Stack())}
}

// recoverResult, deferred by a method around next, turns a panic of next
// into the method's error (and a nil result). It is the deferred function
// itself, so recover stops the panic; deferred directly, without a closure
// around next, it keeps the method's frame small (a workflow's activities
// run inside it, see Logging).
func recoverResult(out *any, err *error) {
	if r := recover(); r != nil {
		*out, *err = nil, panicError(r)
	}
}

// recoverError is recoverResult for a method that returns only an error.
func recoverError(err *error) {
	if r := recover(); r != nil {
		*err = panicError(r)
	}
}

// ExecuteWorkflow fails the workflow with the panic of its code.
func (*Recovery) ExecuteWorkflow(ctx engine.Context, in *engine.ExecuteWorkflowInput,
	next engine.WorkflowNext) (out any, err error) {
	defer recoverResult(&out, &err)
	return next(ctx, in)
}

// HandleSignal returns the panic of a signal's delivery as the error of the
// Receive that delivered it.
func (*Recovery) HandleSignal(ctx engine.Context, in *engine.HandleSignalInput,
	next engine.SignalNext) (err error) {
	defer recoverError(&err)
	return next(ctx, in)
}

// HandleQuery returns the panic of a query handler as the query's error.
func (*Recovery) HandleQuery(ctx context.Context, in *engine.HandleQueryInput,
	next engine.QueryNext) (out any, err error) {
	defer recoverResult(&out, &err)
	return next(ctx, in)
}

// ExecuteActivity fails the attempt with the activity's panic.
func (*Recovery) ExecuteActivity(ctx context.Context, in *engine.ActivityInput,
	next engine.ActivityNext) (out any, err error) {
	defer recoverResult(&out, &err)
	return next(ctx, in)
}
