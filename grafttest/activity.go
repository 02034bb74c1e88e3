package grafttest

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"runtime/debug"
	"testing"
	"time"

	"github.com/graftdev/graft/engine"
)

// ActivityOptions configure RunActivity; nil means the defaults.
type ActivityOptions struct {
	// Info is what the activity sees through engine.ActivityInfoOf. Zero
	// fields take test values: ActivityName the activity's name,
	// ActivityID "1", Attempt the attempt's number, IdempotencyKey
	// "grafttest/<test name>/<activity name>", ScheduledAt now, and a
	// Workflow of ID and type "grafttest".
	Info engine.ActivityInfo
	// Headers is what engine.ActivityHeadersOf returns.
	Headers engine.Headers
	// HeartbeatDetails, when set, is what engine.HeartbeatDetails decodes,
	// as in an attempt that follows one which heartbeated.
	HeartbeatDetails any
	// Retry runs attempts as a worker would, under RetryPolicy (else the
	// definition's, else the defaults), waiting the policy's intervals,
	// until one succeeds or the policy gives up. False: one attempt.
	Retry bool
	// RetryPolicy replaces the definition's when Retry is set.
	RetryPolicy *engine.RetryPolicy
}

// RunActivity runs one activity alone: no database, no workflow, no
// worker. The input and the result make the JSON round trip they make in a
// worker, each attempt is bounded by the definition's StartToCloseTimeout
// (default engine.DefaultStartToCloseTimeout), a panic is returned as an
// *engine.PanicError, and the error is the activity's own (not yet through
// the database: errors.As finds the activity's types). Interceptors do not
// run.
func RunActivity[In, Out any](t testing.TB, a *engine.Activity[In, Out], in In, opts *ActivityOptions) (Out, error) {
	t.Helper()
	var zero Out
	o := ActivityOptions{}
	if opts != nil {
		o = *opts
	}
	defs := a.Options()
	policy := engine.RetryPolicy{MaximumAttempts: 1}
	if o.Retry {
		policy = *cmp.Or(o.RetryPolicy, defs.RetryPolicy, &engine.RetryPolicy{})
	}
	raw, err := json.Marshal(in)
	if err != nil {
		t.Fatalf("grafttest: encode the input of activity %s: %v", a.Name(), err)
	}
	var details json.RawMessage
	if o.HeartbeatDetails != nil {
		if details, err = json.Marshal(o.HeartbeatDetails); err != nil {
			t.Fatalf("grafttest: encode HeartbeatDetails: %v", err)
		}
	}
	info := o.Info
	info.ActivityName = cmp.Or(info.ActivityName, a.Name())
	info.ActivityID = cmp.Or(info.ActivityID, "1")
	info.IdempotencyKey = cmp.Or(info.IdempotencyKey, "grafttest/"+t.Name()+"/"+a.Name())
	if info.ScheduledAt.IsZero() {
		info.ScheduledAt = time.Now()
	}
	info.Workflow.WorkflowID = cmp.Or(info.Workflow.WorkflowID, "grafttest")
	info.Workflow.WorkflowType = cmp.Or(info.Workflow.WorkflowType, "grafttest")
	timeout := cmp.Or(defs.StartToCloseTimeout, engine.DefaultStartToCloseTimeout)
	for attempt := cmp.Or(o.Info.Attempt, 1); ; attempt++ {
		info.Attempt = attempt
		var arg In
		if err := json.Unmarshal(raw, &arg); err != nil {
			t.Fatalf("grafttest: decode the input of activity %s: %v", a.Name(), err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		ctx = engine.WithActivityContext(ctx, info, o.Headers.Clone(), details)
		out, err := callActivity(ctx, a, arg)
		cancel()
		if err == nil {
			b, err := json.Marshal(out)
			if err != nil {
				return zero, fmt.Errorf("grafttest: encode the result of activity %s: %w", a.Name(), err)
			}
			var v Out
			if err := json.Unmarshal(b, &v); err != nil {
				return zero, fmt.Errorf("grafttest: decode the result of activity %s: %w", a.Name(), err)
			}
			return v, nil
		}
		if !policy.Retryable(err, attempt) {
			return zero, err
		}
		time.Sleep(policy.Delay(attempt)) // the policy's wait, as a worker waits it
	}
}

func callActivity[In, Out any](ctx context.Context, a *engine.Activity[In, Out], in In) (out Out, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &engine.PanicError{Value: fmt.Sprint(r), Stack: string(debug.Stack())}
		}
	}()
	return a.Func()(ctx, in)
}
