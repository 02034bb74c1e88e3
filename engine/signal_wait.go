package engine

import "time"

// ReceiveWithTimeout waits at most d of workflow time for a signal: ok is
// false when the time ran out first (or d is not positive and no signal is
// buffered). Both the timer and which of the two came first are recorded, so
// a replay takes the same branch. It is NewTimer, Select and Receive in one
// call:
//
//	approval, ok, err := engine.GetSignalChannel[Approval](ctx, "approve").ReceiveWithTimeout(ctx, 48*time.Hour)
func (c SignalChannel[T]) ReceiveWithTimeout(ctx Context, d time.Duration) (v T, ok bool, err error) {
	if d <= 0 {
		return c.ReceiveAsync(ctx)
	}
	timer := NewTimer(ctx, d)
	idx, err := Select(ctx, c, timer)
	if err != nil || idx != 0 {
		return v, false, err
	}
	v, err = c.Receive(ctx)
	return v, err == nil, err
}
