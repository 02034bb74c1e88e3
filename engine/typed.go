package engine

import "context"

// Typed returns a typed view of an untyped handle, such as the one
// Client.Handle, Client.Reset or Client.StartByName returns, so its Result
// decodes into Out:
//
//	h, err := c.Reset(ctx, "order-42", engine.ResetOptions{BeforeLastFailedActivity: true})
//	...
//	receipt, err := engine.Typed[Receipt](h).Result(ctx)
//
// Out must be the workflow's result type; a result that does not decode into
// it is an error from Result, not a panic.
func Typed[Out any](h *RunHandle) *Run[Out] {
	return &Run[Out]{RunHandle: *h}
}

// Describe returns this run (not the latest run of its workflow ID, which
// Client.Describe returns): after a continue-as-new or a reset, the handle's
// run is closed with StatusContinued or StatusReset.
func (h *RunHandle) Describe(ctx context.Context) (*RunInfo, error) {
	r, err := h.c.e.store.getRun(ctx, h.c.e.db, h.RunID)
	if err != nil {
		return nil, err
	}
	info := toInfo(r)
	return &info, nil
}
