//go:build unix

package engine_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// A worker's LISTEN connection stalls after it has been working: its
// backend is stopped (SIGSTOP), the TCP connection stays up, and no error
// ever reaches the client, so pq's listener neither reconnects nor tells
// the engine. While it is stalled, another process (an engine without
// workers) starts runs and signals them: the worker claims them on its
// PollInterval, each waiting workflow gets its signal (a loaded run by the
// lease renewal that sees its event counter move, an unloaded one by the
// claim of the run the signal made due), its timer fires, and every
// activity runs once. Once the backend resumes (SIGCONT), the listener
// reads notifications again: the wake notice of a signal sent then.
func TestWorkerCarriesOnWhileItsListenIsStalled(t *testing.T) {
	t.Parallel()
	pg := testenv.PrivatePostgres(t)
	admin := dfAdmin(t, pg.URL)
	for _, c := range []struct {
		name   string
		unload time.Duration // the worker engine's UnloadAfter
	}{
		{"runs stay loaded", time.Hour},
		{"runs unload", time.Second},
	} {
		t.Run(c.name, func(t *testing.T) {
			name := "wls" + strings.ReplaceAll(c.name, " ", "")
			schema := strings.ToLower(name)
			var calls ftCounter
			act := engine.NewActivity(name+".step", func(ctx context.Context, n int) (int, error) {
				calls.inc(engine.ActivityInfoOf(ctx).IdempotencyKey)
				return n + 1, nil
			})
			wf := engine.NewWorkflow(name, func(ctx engine.Context, _ int) (int, error) {
				v, err := engine.GetSignalChannel[int](ctx, "go").Receive(ctx)
				if err != nil {
					return 0, err
				}
				if err := engine.Sleep(ctx, 2*time.Second); err != nil {
					return 0, err
				}
				return act.Run(ctx, v)
			})
			wdsn, wdb := dfOpenNamed(t, pg.URL, name)
			we := testenv.Engine(t, &engine.Config{DB: wdb, DatabaseURL: wdsn, Schema: schema,
				LeaseTTL: 3 * time.Second, UnloadAfter: c.unload})
			require.NoError(t, we.Register(act, wf))
			testenv.Worker(t, we, engine.WorkerConfig{})
			cdsn, cdb := dfOpenNamed(t, pg.URL, name+"-client")
			ce := testenv.Engine(t, &engine.Config{DB: cdb, DatabaseURL: cdsn, Schema: schema})
			require.NoError(t, ce.Register(act, wf))
			client := ce.Client()
			ctx := testenv.Ctx(t, 3*time.Minute)

			var mu sync.Mutex
			woken := map[string]bool{} // run IDs of the wake notices the worker's listener read
			engine.SetNoticeHookForTest(we, func(channel, payload string) {
				if !strings.HasSuffix(channel, "_wake") {
					return
				}
				mu.Lock()
				defer mu.Unlock()
				for _, id := range strings.Split(payload, ",") {
					woken[id] = true
				}
			})
			// run starts a run from the other process, waits until the
			// worker has it (loaded, or unloaded when its runs unload),
			// signals it and returns its run ID.
			run := func(id string) string {
				r, err := wf.Start(ctx, client, 0, &engine.StartOptions{ID: id})
				require.NoError(t, err)
				testenv.Eventually(t, 60*time.Second, func() bool {
					info, err := client.Describe(ctx, id)
					if err != nil || info.Loads < 1 {
						return false
					}
					return c.unload == time.Hour || info.Status == engine.StatusWaiting
				}, "run %s was never claimed", id)
				require.NoError(t, client.Signal(ctx, id, "go", 41))
				return r.RunID
			}
			completed := func(id string) {
				testenv.Eventually(t, 60*time.Second, func() bool {
					info, err := client.Describe(ctx, id)
					return err == nil && info.Status == engine.StatusCompleted
				}, "run %s never completed", id)
				info, err := client.Describe(ctx, id)
				require.NoError(t, err)
				require.JSONEq(t, "42", string(info.Output))
			}
			noticed := func(runID string) {
				testenv.Eventually(t, 60*time.Second, func() bool {
					mu.Lock()
					defer mu.Unlock()
					return woken[runID]
				}, "the worker's listener never read the wake notice of %s", runID)
			}

			// The listener works: it reads the wake notice of a signal.
			noticed(run("before"))
			completed("before")

			var pids []int
			require.NoError(t, admin.SelectContext(ctx, &pids, `SELECT pid FROM pg_stat_activity
				WHERE application_name = $1 AND query LIKE 'LISTEN%'`, name))
			require.Len(t, pids, 1, "the worker's LISTEN connection")
			resume := dfStopBackends(t, pids)

			var stalled []string
			for i := range 3 {
				id := fmt.Sprintf("stalled-%d", i)
				runID := run(id)
				stalled = append(stalled, runID)
				completed(id)
			}
			mu.Lock()
			for _, id := range stalled {
				require.False(t, woken[id], "a wake notice read while the listener was stalled")
			}
			mu.Unlock()

			resume()
			noticed(run("after"))
			completed("after")
			dfRequireOnce(t, &calls, 5)
		})
	}
}
