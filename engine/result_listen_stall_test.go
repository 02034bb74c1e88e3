//go:build unix

package engine_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// listenDone listens on e's done channel from a session of its own, and
// returns what waits until that session read the notice that announces
// runID.
func listenDone(t *testing.T, dsn string, e *engine.Engine) (readPast func(ctx context.Context, runID string)) {
	t.Helper()
	l := pq.NewListener(dsn, 10*time.Millisecond, time.Second, nil)
	t.Cleanup(func() { _ = l.Close() })
	for _, ch := range engine.ListenChannelsForTest(e) {
		if strings.HasSuffix(ch, "_done") {
			require.NoError(t, l.Listen(ch))
		}
	}
	return func(ctx context.Context, runID string) {
		for {
			select {
			case n := <-l.Notify:
				if n != nil && strings.Contains(n.Extra, runID) {
					return
				}
			case <-ctx.Done():
				t.Fatal("the close was never announced")
			}
		}
	}
}

// A Result call in a process that does not run the workflow, whose first
// LISTEN on the done channel gets no answer (the LISTEN connection's
// backend is stopped, SIGSTOP, as a hung connection or a proxy holding its
// bytes would stop it), waits CommitTimeout for it and then reads its run.
// The run closes while the LISTEN is still unanswered, so its notice is not
// delivered. The waiter's safety-net poll is an hour:
//   - while the LISTEN stays unanswered, the waiter reads its run at the
//     PollInterval pace, and learns of the close that way;
//   - with a PollInterval of an hour too, the waiter learns of it when the
//     backend resumes: the LISTEN then in place, the waiters read again.
//
// Before, the waiter read its run once more at its first recheck and then
// waited for the safety-net poll (resultSafetyPoll, 30 s) in both cases.
func TestResultLearnsOfACloseWhileItsFirstListenIsStalled(t *testing.T) {
	t.Parallel()
	pg := testenv.PrivatePostgres(t)
	for _, c := range []struct {
		name   string
		poll   time.Duration // the waiter's PollInterval
		resume bool          // the LISTEN backend resumes once the run closed
	}{
		{"listen stays stalled", 0, false},
		{"listen answered later", time.Hour, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			app := fmt.Sprintf("rlstall%v", c.resume)
			open := func(name string) (string, *sqlx.DB) { return dfOpenNamed(t, pg.URL, name) }
			schema := fmt.Sprintf("rl_%v", c.resume)
			gate := make(chan struct{})
			var calls ftCounter
			act, wf := dfWorkflow("rl.stall", 2, &calls, gate, 1)
			rdsn, rdb := open(app + "-runner")
			runner := testenv.Engine(t, &engine.Config{DB: rdb, DatabaseURL: rdsn, Schema: schema})
			require.NoError(t, runner.Register(act, wf))
			testenv.Worker(t, runner, engine.WorkerConfig{})
			wdsn, wdb := open(app)
			waiter := testenv.Engine(t, &engine.Config{DB: wdb, DatabaseURL: wdsn, Schema: schema,
				CommitTimeout: time.Second, PollInterval: c.poll})
			require.NoError(t, waiter.Register(act, wf))
			engine.SetResultPollForTest(waiter, time.Hour)
			ctx := testenv.Ctx(t, 60*time.Second)
			_, admin := open("admin")

			runs := dfStartGated(ctx, t, waiter, wf, &calls, "rl", 1)
			var pids []int
			require.NoError(t, admin.SelectContext(ctx, &pids, `SELECT pid FROM pg_stat_activity
				WHERE application_name = $1 AND query LIKE 'LISTEN%'`, app))
			require.Len(t, pids, 1, "the waiter's LISTEN connection")
			resume := dfStopBackends(t, pids)

			done := make(chan error, 1)
			go func() {
				_, err := runs[0].Result(ctx)
				done <- err
			}()
			// Past its first recheck: the read that a close unannounced for
			// want of a registration would need.
			testenv.Eventually(t, 30*time.Second, func() bool {
				return engine.OutcomeReadsForTest(waiter) >= 2 && engine.WaiterCountForTest(waiter) == 1
			}, "Result never waited")
			// Another session of the database reads past the close's
			// notice (its own LISTEN on the done channel), so the waiter's
			// LISTEN, once answered, starts from there, as PostgreSQL lets
			// a new listener do: the notice is not delivered to it late.
			readPast := listenDone(t, pg.URL, waiter)
			close(gate)
			testenv.Eventually(t, 30*time.Second, func() bool {
				info, err := runner.Client().Describe(ctx, runs[0].WorkflowID)
				return err == nil && info.Status == engine.StatusCompleted
			}, "the run never completed")
			if c.resume {
				readPast(ctx, runs[0].RunID)
				resume()
			}
			select {
			case err := <-done:
				require.NoError(t, err)
			case <-ctx.Done():
				t.Fatalf("Result never learned of the close (outcome reads %d)", engine.OutcomeReadsForTest(waiter))
			}
		})
	}
}
