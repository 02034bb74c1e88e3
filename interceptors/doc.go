// Package interceptors holds graft's reusable interceptors: structured
// logging with log/slog, OpenTelemetry tracing and metrics, panic recovery,
// and helpers that carry a trace context or caller values in engine.Headers.
//
// Each interceptor embeds engine.InterceptorBase and implements only the
// chains it acts in (one method each), so it is left out of the others; add
// them to engine.Config.Interceptors (every
// worker and client of the engine) or engine.WorkerConfig.Interceptors (one
// worker). In a list the first is the outermost. All returns the recommended
// order:
//
//	tracing -> metrics -> logging -> [your interceptors: ratelimit, cancel, sync] -> recovery -> your code
//
// Tracing is outermost so its spans cover the time the others take and so
// code inside sees the span in its context. Recovery is innermost: a panic
// in workflow or activity code becomes an *engine.PanicError right there, so
// every other interceptor sees an ordinary error return (logged, counted,
// recorded on the span) instead of a panic unwinding through it. The engine
// recovers panics too, as a last resort, so a worker process never dies of
// one either way.
//
// Replay. A workflow that is resumed (after an unload, a crash or a deploy)
// runs its function again from the top; recorded steps return their results
// without executing. The interceptors here act only on live work: they log,
// count and trace a workflow start, a signal or a workflow's end only when
// it is not replayed, and a query (answered by replaying the record) emits
// nothing from the workflow side. Activities never run during a replay, so
// every activity call these interceptors see is a real attempt.
//
// Tracing produces one workflow span per execution segment: the stretch of
// a run one worker executes between loading it and finishing or unloading
// it. A run that completes in one go has one span; a run that waits for a
// day on a timer has one span per wake-up that did live work, each a child
// of the span of the start call (which the run's headers carry, so the run
// is one trace however often it is resumed, on whatever worker) and marked
// graft.resumed=true when it began by replaying. A resumed segment's span
// starts when the run was loaded, so it covers the replay, but it is only
// created once the segment does something live: a segment that only
// replays, such as a query's, leaves no span. Activity, child-workflow and
// signal spans are children of the segment that scheduled or received them.
//
// Metrics and logs of a workflow's end are emitted when the function returns
// live. A worker that crashes between that return and the commit of its
// record leaves the run to be resumed, and its end is reported again: like
// activities, these observations are at-least-once.
//
// This package imports engine and OpenTelemetry; it must not import sync,
// ratelimit, cancel or tasks.
package interceptors
