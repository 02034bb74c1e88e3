package engine_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// lockedBuffer is a log sink safe across goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A run whose record grows past the warning size logs a warning; past the
// limit it fails with a non-retryable HistoryLimitExceeded error instead of
// growing without bound (count of steps, or bytes of their payloads).
func TestHistoryLimits(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		cfg     engine.Config
		payload int
	}{
		{"steps", engine.Config{HistoryCountWarn: 5, HistoryCountLimit: 10}, 1},
		{"bytes", engine.Config{HistorySizeWarn: 2000, HistorySizeLimit: 5000}, 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var calls ftCounter
			act := engine.NewActivity("hist."+tc.name+".act", func(ctx context.Context, n int) (string, error) {
				calls.inc("act")
				return strings.Repeat("x", n), nil
			})
			wf := engine.NewWorkflow("hist."+tc.name+".wf", func(ctx engine.Context, n int) (int, error) {
				for i := 0; i < 1000; i++ {
					if _, err := act.Run(ctx, n); err != nil {
						return i, err
					}
				}
				return 1000, nil
			})
			logs := &lockedBuffer{}
			cfg := tc.cfg
			cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
			_, c := ftEnv(t, &cfg, act, wf)
			ctx := testenv.Ctx(t, 60*time.Second)
			run, err := wf.Start(ctx, c, tc.payload, nil)
			require.NoError(t, err)
			_, err = run.Result(ctx)
			app := ftAppErr(t, err)
			require.Equal(t, "HistoryLimitExceeded", app.Type)
			require.True(t, app.NonRetryable)
			require.Less(t, calls.get("act"), 20, "the run stopped at the limit")
			require.Contains(t, logs.String(), "history is large")
		})
	}
}

// Nonsense history limits are refused at start-up, naming the field.
func TestHistoryLimitConfig(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		cfg  engine.Config
		want string
	}{
		{engine.Config{HistoryCountLimit: -1}, "HistoryCountLimit"},
		{engine.Config{HistoryCountWarn: 100, HistoryCountLimit: 10}, "HistoryCountWarn"},
		{engine.Config{HistorySizeLimit: -1}, "HistorySizeLimit"},
		{engine.Config{HistorySizeWarn: 1 << 30}, "HistorySizeWarn"},
	} {
		cfg := tc.cfg
		cfg.DB, cfg.DatabaseURL = testenv.DB(t), testenv.DatabaseURL()
		_, err := engine.New(cfg)
		require.ErrorContains(t, err, tc.want)
	}
}
