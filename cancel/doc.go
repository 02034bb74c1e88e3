// Package cancel undoes what an operation already did when it is cancelled:
// a charge is refunded, a registration released, exactly once, even when
// workers crash during the refund. Workflow code stays about the business;
// compensations are declared once and run by an interceptor.
//
// It imports the engine package and nothing else of graft's.
//
// # Declaring compensations
//
// Undo declares that a successful call of one activity is undone by a call of
// another, with a function from the first call's input and result to the
// second's input:
//
//	ic, err := cancel.New(cancel.Config{
//		Compensations: []cancel.Compensation{
//			cancel.Undo(charge, refund, func(in ChargeIn, out Charge) RefundIn {
//				return RefundIn{ChargeID: out.ID, Amount: in.Amount}
//			}),
//		},
//	})
//	e, err := engine.New(engine.Config{..., Interceptors: []engine.Interceptor{ic}})
//	err = ic.Register(e) // cancel's own activities, and the Client Abort uses
//
// Workflow code then calls charge.Run(ctx, in) as usual. Add records an ad hoc
// compensation from workflow code, for an effect no activity declaration
// covers.
//
// # The record is the workflow's own replayed state
//
// The interceptor keeps, per run, a stack of the compensable activities the
// workflow scheduled, in schedule order (step order), with each call's input
// and pending result (engine.OutboundInput.Result). Nothing is written for it:
// replay is deterministic, so a resumed run rebuilds the same stack from the
// same record, and the stack is as durable as the steps it mirrors. A stack
// entry stands for a step that may still be in flight; only when compensation
// runs does it wait for the step's outcome, and it compensates the step if and
// only if the step's activity succeeded. This matters at the edges: an
// activity that completes while the cancellation arrives (its result recorded
// but never returned to the workflow, which saw the cancellation first) is
// compensated all the same, and a step whose activity failed is not. A step
// whose worker died mid-call has an unknown outcome, which the engine treats
// as possibly done: the worker that resumes the run runs the activity again
// under the same idempotency key, even when the run was cancelled meanwhile
// (its context is not cancelled until it gives an outcome), so a charge that
// went through is found, and refunded, exactly once. The same holds for a
// compensable call that the cancellation cut short and that returned its
// context's error: it may have gone through before it looked, so the engine
// runs it again under the same idempotency key, where the cancellation cannot
// reach it (engine.OutboundInput.OutcomeUnknownOnCancel). An activity that
// knows its call did not go out says so with an error of its own instead of
// ctx.Err(), and is then not compensated.
//
// # When compensations run
//
// When the workflow function returns an error after observing its
// cancellation (ctx.Err() != nil), or, for the workflow types listed in
// Config.CompensateOnFailure, when it returns any other error (not
// continue-as-new), the interceptor runs the stack under engine.Disconnected,
// so the cancellation does not touch it. It first lets every activity still in
// flight end (the cancellation has cancelled their contexts), then undoes the
// steps in reverse order. Each compensation is an ordinary durable activity
// with its own options (Compensation.WithOptions, Add's options, else
// Config.ActivityOptions) and an idempotency key, IdempotencyKey(ctx) in the
// activity, made of the workflow ID, the compensated step and a digest of the
// compensation's input: stable across retries, crashes, operator retries and
// resets that keep the step, and different when a reset re-executed the step
// and produced a different charge. Give it to the provider (or a UNIQUE
// column) and a refund re-executed after a crash cannot pay twice. The
// workflow's own error is returned unchanged, so a cancelled run ends
// cancelled and a failed one failed; the Report says what was compensated.
// Compensations do not carry over continue-as-new. A panic or a
// non-determinism error ends the run without compensation: it is a bug to fix
// first, after which a reset runs the workflow (and its compensations) again.
//
// Abort is self-cancellation, for workflow code that decides its operation
// cannot go on (a registry rejects a renewal for good): it requests the run's
// cancellation through the Client, exactly as an operator would, and returns
// the *engine.CanceledError to return from the workflow.
//
// # Needs an operator
//
// A compensation whose activity exhausts its retries is not dropped, and the
// steps before it are not undone out of order. The run records a report with
// Outcome OutcomeNeedsOperator and the error, then waits (unloaded: rows, not
// RAM) for an operator's decision on OperatorSignal: Retry runs the failed
// compensation again, with the same idempotency key; Resolve records that it
// was done by hand. Compensation then goes on with the next step. Further
// cancellations do not disturb it. Status answers, for any run, what has been
// and will be compensated.
//
// # The legacy mirror
//
// Each time compensation ends, or stops for an operator, the run executes the
// activity named ReportActivity with the Report as its input. When an operator
// is needed the step fails with Report.Problem, an error matching
// engine.ErrNeedsOperator (the sync package's word for it too), whose
// message names the step and the error; otherwise it completes. Its
// engine.CheckpointEvent (ActivityName ReportActivity, Input the Report)
// commits in the checkpoint transaction, so a mirror updates the legacy row in
// the transaction that records the step: the sync package's default mapping
// shows "needs an operator" with the error until compensation moves on, then
// "cancelled" at the run's close; the refund reference is the refund
// activity's result (a sync extra column), also in Report.Steps[i].Result. A
// hand-written CheckpointInterceptor decodes the report with ReportFromEvent;
// code that cannot import this package reads the Input's JSON:
// {"outcome": "needs_operator" | "compensated", "steps": [{"step", "undo",
// "status", "result", "error", ...}]}. Compensation activities carry their
// idempotency key in their headers, under HeaderIdempotencyKey.
package cancel
