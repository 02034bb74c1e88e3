package engine

import (
	"context"
	"log/slog"
)

// replayAwareHandler drops records while its run replays.
type replayAwareHandler struct {
	inner slog.Handler
	s     *runState
}

func (h *replayAwareHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return !h.s.replaying() && h.inner.Enabled(ctx, l)
}

func (h *replayAwareHandler) Handle(ctx context.Context, r slog.Record) error {
	if h.s.replaying() {
		return nil
	}
	return h.inner.Handle(ctx, r)
}

func (h *replayAwareHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &replayAwareHandler{inner: h.inner.WithAttrs(as), s: h.s}
}

func (h *replayAwareHandler) WithGroup(name string) slog.Handler {
	return &replayAwareHandler{inner: h.inner.WithGroup(name), s: h.s}
}
