package engine_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

type rbOrder struct {
	Name  string
	Count int
	Note  string
}

// Every bad start is refused with a clear error before anything is
// written: no run exists afterwards, and a good start still works.
func TestBadInputStartRefusedAndWritesNothing(t *testing.T) {
	t.Parallel()
	wf := engine.NewWorkflow("bad.order", func(ctx engine.Context, in rbOrder) (string, error) {
		return in.Name, nil
	})
	unregistered := engine.NewWorkflow("bad.unregistered", func(ctx engine.Context, in rbOrder) (string, error) {
		return in.Name, nil
	})
	_, c := rbEnv(t, &engine.Config{MaxPayloadBytes: 1024}, wf)
	big := strings.Repeat("x", 2000)

	cases := []struct {
		name     string
		start    func(ctx context.Context) error
		sentinel error
		mention  string
	}{
		{"unknown workflow name", func(ctx context.Context) error {
			_, err := c.StartByName(ctx, "bad.nope", json.RawMessage(`{"Name":"a"}`), nil)
			return err
		}, engine.ErrUnknownWorkflow, "bad.nope"},
		{"unregistered typed workflow", func(ctx context.Context) error {
			_, err := unregistered.Start(ctx, c, rbOrder{Name: "a"}, nil)
			return err
		}, engine.ErrUnknownWorkflow, "bad.unregistered"},
		{"wrong field type", func(ctx context.Context) error {
			_, err := c.StartByName(ctx, "bad.order", json.RawMessage(`{"Name": 5}`), nil)
			return err
		}, engine.ErrBadInput, "Name"},
		{"unknown field", func(ctx context.Context) error {
			_, err := c.StartByName(ctx, "bad.order", json.RawMessage(`{"Name":"a","Cuont":3}`), nil)
			return err
		}, engine.ErrBadInput, "Cuont"},
		{"not an object", func(ctx context.Context) error {
			_, err := c.StartByName(ctx, "bad.order", json.RawMessage(`[1,2]`), nil)
			return err
		}, engine.ErrBadInput, "bad.order"},
		{"malformed JSON", func(ctx context.Context) error {
			_, err := c.StartByName(ctx, "bad.order", json.RawMessage(`{"Name":`), nil)
			return err
		}, engine.ErrBadInput, "bad.order"},
		{"trailing data", func(ctx context.Context) error {
			_, err := c.StartByName(ctx, "bad.order", json.RawMessage(`{"Name":"a"} {"Name":"b"}`), nil)
			return err
		}, engine.ErrBadInput, "trailing"},
		{"oversized input by name", func(ctx context.Context) error {
			_, err := c.StartByName(ctx, "bad.order", json.RawMessage(`{"Name":"`+big+`"}`), nil)
			return err
		}, engine.ErrPayloadTooLarge, "limit is 1024"},
		{"oversized typed input", func(ctx context.Context) error {
			_, err := wf.Start(ctx, c, rbOrder{Note: big}, nil)
			return err
		}, engine.ErrPayloadTooLarge, "input of workflow bad.order"},
		{"unknown ID reuse policy", func(ctx context.Context) error {
			_, err := wf.Start(ctx, c, rbOrder{Name: "a"}, &engine.StartOptions{IDReusePolicy: "sometimes"})
			return err
		}, nil, "IDReusePolicy"},
		{"unknown conflict policy", func(ctx context.Context) error {
			_, err := wf.Start(ctx, c, rbOrder{Name: "a"}, &engine.StartOptions{ConflictPolicy: "overwrite"})
			return err
		}, nil, "ConflictPolicy"},
		{"ID too long", func(ctx context.Context) error {
			_, err := wf.Start(ctx, c, rbOrder{Name: "a"}, &engine.StartOptions{ID: strings.Repeat("i", 501)})
			return err
		}, nil, "StartOptions.ID"},
	}
	t.Run("refused", func(t *testing.T) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				err := tc.start(testenv.Ctx(t, 30*time.Second))
				require.Error(t, err)
				if tc.sentinel != nil {
					require.ErrorIs(t, err, tc.sentinel)
				}
				require.Contains(t, err.Error(), tc.mention, "the error says what is wrong")
			})
		}
	})
	ctx := testenv.Ctx(t, 30*time.Second)
	runs, err := c.List(ctx, engine.ListFilter{})
	require.NoError(t, err)
	require.Empty(t, runs, "refused starts wrote nothing")

	// The engine is unharmed: a good start by name works.
	h, err := c.StartByName(ctx, "bad.order", json.RawMessage(`{"Name":"ok","Count":1}`), &engine.StartOptions{ID: "good"})
	require.NoError(t, err)
	out, err := h.Result(ctx)
	require.NoError(t, err)
	require.JSONEq(t, `"ok"`, string(out))
	runs, err = c.List(ctx, engine.ListFilter{})
	require.NoError(t, err)
	require.Len(t, runs, 1)
}

// An oversized signal is refused with ErrPayloadTooLarge and not buffered:
// the workflow receives only the signal sent after it.
func TestBadInputOversizedSignalNotDelivered(t *testing.T) {
	t.Parallel()
	wf := engine.NewWorkflow("bad.sig", func(ctx engine.Context, _ struct{}) (string, error) {
		return engine.GetSignalChannel[string](ctx, "note").Receive(ctx)
	})
	_, c := rbEnv(t, &engine.Config{MaxPayloadBytes: 1024}, wf)
	ctx := testenv.Ctx(t, 30*time.Second)
	run, err := wf.Start(ctx, c, struct{}{}, &engine.StartOptions{ID: "sig"})
	require.NoError(t, err)
	err = c.Signal(ctx, "sig", "note", strings.Repeat("x", 2000))
	require.ErrorIs(t, err, engine.ErrPayloadTooLarge)
	require.Contains(t, err.Error(), "signal note")
	_, err = wf.SignalWithStart(ctx, c, struct{}{}, &engine.StartOptions{ID: "sig"}, "note", strings.Repeat("y", 2000))
	require.ErrorIs(t, err, engine.ErrPayloadTooLarge)
	require.NoError(t, c.Signal(ctx, "sig", "note", "small"))
	out, err := run.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, "small", out, "the oversized signals were never buffered")

	// SignalWithStart with an oversized signal starts nothing either.
	_, err = wf.SignalWithStart(ctx, c, struct{}{}, &engine.StartOptions{ID: "fresh"}, "note", strings.Repeat("z", 2000))
	require.ErrorIs(t, err, engine.ErrPayloadTooLarge)
	_, err = c.Describe(ctx, "fresh")
	require.ErrorIs(t, err, engine.ErrNotFound)
}

// Oversized payloads produced inside a run (an activity's result, an
// activity's input, the workflow's result) are not recorded: the step or
// run fails with a non-retryable error that errors.Is matches as
// ErrPayloadTooLarge, even after it went through the database.
func TestBadInputOversizedPayloadsInsideRun(t *testing.T) {
	t.Parallel()
	var log rbAttempts
	bigResult := engine.NewActivity("bad.bigresult", func(ctx context.Context, n int) (string, error) {
		log.add("bigresult")
		return strings.Repeat("r", n), nil
	})
	echo := engine.NewActivity("bad.echo", func(ctx context.Context, s string) (string, error) {
		log.add("echo")
		return s, nil
	})
	wf := engine.NewWorkflow("bad.inside", func(ctx engine.Context, what string) (string, error) {
		switch what {
		case "activity result":
			return bigResult.Run(ctx, 2000)
		case "activity input":
			return echo.Run(ctx, strings.Repeat("i", 2000))
		case "workflow result":
			return strings.Repeat("w", 2000), nil
		}
		return "", errors.New("unknown case")
	})
	_, c := rbEnv(t, &engine.Config{MaxPayloadBytes: 1024}, bigResult, echo, wf)
	t.Run("cases", func(t *testing.T) {
		for _, what := range []string{"activity result", "activity input", "workflow result"} {
			t.Run(what, func(t *testing.T) {
				t.Parallel()
				ctx := testenv.Ctx(t, 30*time.Second)
				id := strings.ReplaceAll(what, " ", "-")
				run, err := wf.Start(ctx, c, what, &engine.StartOptions{ID: id})
				require.NoError(t, err)
				_, err = run.Result(ctx)
				require.ErrorIs(t, err, engine.ErrPayloadTooLarge)
				var app *engine.ApplicationError
				require.True(t, errors.As(err, &app))
				require.True(t, app.NonRetryable)
				require.Contains(t, app.Message, "limit is 1024")

				h, err := c.History(ctx, id)
				require.NoError(t, err)
				require.Equal(t, engine.StatusFailed, h[0].Run.Status)
				require.Empty(t, h[0].Run.Output)
				for _, st := range h[0].Steps {
					require.Equal(t, "failed", st.Status)
					require.Equal(t, 1, st.Attempts, "not retried")
					require.Empty(t, st.Output, "the oversized result was not recorded")
					require.ErrorIs(t, st.Error, engine.ErrPayloadTooLarge)
				}
			})
		}
	})
	require.Equal(t, 1, log.count("bigresult"), "an oversized result is not retried")
	require.Equal(t, 0, log.count("echo"), "an activity with oversized input never runs")
}
