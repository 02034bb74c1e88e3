package engine

import (
	"context"
	"encoding/json"
	"time"
)

// WithActivityContext returns ctx as an activity attempt sees it, for
// calling an activity's function outside a worker, in a test (the
// grafttest package's RunActivity does): ActivityInfoOf returns info,
// ActivityHeadersOf returns headers, HeartbeatDetails decodes
// heartbeatDetails (nil: none), and Heartbeat records in memory only.
func WithActivityContext(ctx context.Context, info ActivityInfo, headers Headers, heartbeatDetails json.RawMessage) context.Context {
	if headers == nil {
		headers = Headers{}
	}
	st := &activityState{info: info, headers: headers, lastHB: time.Now(), prev: heartbeatDetails}
	return context.WithValue(ctx, activityCtxKey{}, st)
}

// Func returns the activity's function, to call it directly in a test.
func (a *Activity[In, Out]) Func() func(context.Context, In) (Out, error) { return a.fn }

// Options returns the options the definition's calls use by default
// (WithOptions); zero fields take the documented defaults.
func (a *Activity[In, Out]) Options() ActivityOptions { return a.opts }

// Retryable reports whether an activity whose attempt number attempt (the
// first is 1) failed with err is tried again under the policy: not when
// MaximumAttempts is reached, the error is non-retryable or its type (see
// ErrorTypeOf) is listed in NonRetryableErrorTypes, the schedule-to-close
// timeout passed, or the activity was cancelled.
func (p RetryPolicy) Retryable(err error, attempt int) bool { return retryable(err, p, attempt) }
