package engine_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// Faults of the database under a running engine: backends terminated, the
// server restarted, a commit whose acknowledgement is lost. The engine's
// writes are retried (or read back), so no run is dropped for them and no
// activity runs twice.

// dfWithAppName returns dsn with application_name set, so a test can find
// the engine's own backends in pg_stat_activity.
func dfWithAppName(t *testing.T, dsn, name string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	require.NoError(t, err)
	q := u.Query()
	q.Set("application_name", name)
	u.RawQuery = q.Encode()
	return u.String()
}

// dfAdmin opens a pool on url whose connections are named admin, closed
// at cleanup: the session a fault test watches and stops backends from.
func dfAdmin(t *testing.T, url string) *sqlx.DB {
	t.Helper()
	admin, err := sqlx.Open("postgres", dfWithAppName(t, url, "admin"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = admin.Close() })
	return admin
}

// dfOpenNamed opens a guarded pool (engine.OpenDB) on url whose connections
// are named app, closed at cleanup, and returns its DSN with it.
func dfOpenNamed(t *testing.T, url, app string) (string, *sqlx.DB) {
	t.Helper()
	dsn := dfWithAppName(t, url, app)
	db, err := engine.OpenDB(dsn)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return dsn, db
}

// dfLog is a slog handler that keeps the messages it is given.
type dfLog struct {
	mu   sync.Mutex
	msgs []string
}

func (l *dfLog) Enabled(context.Context, slog.Level) bool { return true }
func (l *dfLog) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	msg := r.Message
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "err" {
			msg += " err=" + a.Value.String()
		}
		return true
	})
	l.msgs = append(l.msgs, msg)
	return nil
}
func (l *dfLog) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *dfLog) WithGroup(string) slog.Handler      { return l }

func (l *dfLog) count(prefix string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, m := range l.msgs {
		if strings.HasPrefix(m, prefix) {
			n++
		}
	}
	return n
}

// dfWorkflow is a chain of steps activities; calls counts each activity
// execution by idempotency key, and gate (when set) holds step gateAt.
func dfWorkflow(name string, steps int, calls *ftCounter, gate <-chan struct{}, gateAt int) (*engine.Activity[int, int], *engine.Workflow[int, int]) {
	act := engine.NewActivity(name+".step", func(ctx context.Context, n int) (int, error) {
		calls.inc(engine.ActivityInfoOf(ctx).IdempotencyKey)
		if n == gateAt && gate != nil {
			calls.inc("gated")
			<-gate
		}
		return n + 1, nil
	})
	wf := engine.NewWorkflow(name, func(ctx engine.Context, _ int) (int, error) {
		n := 0
		for i := 0; i < steps; i++ {
			var err error
			if n, err = act.Run(ctx, n); err != nil {
				return 0, err
			}
		}
		return n, nil
	})
	return act, wf
}

// dfRequireOnce checks that every activity ran exactly once.
func dfRequireOnce(t *testing.T, calls *ftCounter, want int) {
	t.Helper()
	calls.mu.Lock()
	defer calls.mu.Unlock()
	n := 0
	for k, v := range calls.n {
		if k == "gated" {
			continue
		}
		n++
		require.Equal(t, 1, v, "activity %s ran %d times", k, v)
	}
	require.Equal(t, want, n)
}

// Backends of the engine's pool and LISTEN connection are terminated again
// and again (40 times, 200 ms apart) while 30 workflows of 20 steps run: every workflow completes,
// and no activity runs twice (a write that failed was retried, not dropped
// with its run).
func TestTerminatedBackendsLoseNoWrite(t *testing.T) {
	t.Parallel()
	app := testenv.Name(t)
	dsn := dfWithAppName(t, testenv.DatabaseURL(), app)
	db, err := sqlx.Open("postgres", dsn)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	db.SetMaxOpenConns(10)
	logs := &dfLog{}
	var calls ftCounter
	// Half way, each workflow waits until the faults are under way.
	underway := make(chan struct{})
	act, wf := dfWorkflow("df.term", 20, &calls, underway, 10)
	// A claim whose answer is lost leaves its runs leased until the lease
	// expires, so the lease is not long; but renewals must get through a
	// loaded machine, or a lost lease would rightly run an activity again.
	e := testenv.Engine(t, &engine.Config{DB: db, DatabaseURL: dsn, Logger: slog.New(logs), LeaseTTL: 30 * time.Second})
	require.NoError(t, e.Register(act, wf))
	t.Cleanup(func() {
		if t.Failed() {
			logs.dump(t)
			l, _ := e.Client().List(context.Background(), engine.ListFilter{Statuses: []engine.Status{"pending", "running", "waiting"}})
			for _, r := range l {
				t.Logf("open: %+v", r)
			}
		}
	})
	testenv.Worker(t, e, engine.WorkerConfig{})
	// Results are read through an engine on the shared pool, which is left
	// alone.
	observer := testenv.Engine(t, &engine.Config{Schema: e.Schema(), LeaseTTL: 30 * time.Second})
	require.NoError(t, observer.Register(act, wf))
	ctx := testenv.Ctx(t, 150*time.Second)

	const n = 30
	for i := 0; i < n; i++ {
		testenv.Eventually(t, 10*time.Second, func() bool {
			_, err := observer.Client().StartByName(ctx, "df.term", []byte("0"), &engine.StartOptions{ID: fmt.Sprintf("t-%d", i)})
			return err == nil
		}, "start t-%d", i)
	}
	var kills atomic.Int64
	stop := make(chan struct{})
	killed := make(chan struct{})
	go func() {
		defer close(killed)
		// 40 rounds of terminations that hit something, 200 ms apart; the
		// workflows are held half way until 10 rounds have.
		for rounds, opened := 0, false; rounds < 40; {
			if rounds >= 10 && !opened {
				close(underway)
				opened = true
			}
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond): // the pace of the faults
			}
			var k int64
			if err := testenv.DB(t).Get(&k, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1`, app); err == nil {
				kills.Add(k)
				if k > 0 {
					rounds++
				}
			}
		}
	}()
	for i := 0; i < n; i++ {
		h, err := observer.Client().Handle(ctx, fmt.Sprintf("t-%d", i))
		require.NoError(t, err)
		out, err := h.Result(ctx)
		require.NoError(t, err)
		require.JSONEq(t, "20", string(out))
	}
	close(stop)
	<-killed
	require.Positive(t, kills.Load(), "no backend was terminated")
	t.Logf("%d backends terminated; %d commits retried; %d engine warnings", kills.Load(), logs.count("engine: commit failed"), logs.count("engine: "))
	dfRequireOnce(t, &calls, n*20)
}

// The database restarts while 20 workflows have an activity in flight: the
// activities' results are committed once it is back, none is run again.
func TestDatabaseRestartLosesNoWrite(t *testing.T) {
	t.Parallel()
	pg, db := dfPrivatePool(t)
	logs := &dfLog{}
	var calls ftCounter
	gate := make(chan struct{})
	act, wf := dfWorkflow("df.restart", 3, &calls, gate, 0)
	e := testenv.Engine(t, &engine.Config{DB: db, DatabaseURL: pg.URL, Schema: "graft", Logger: slog.New(logs)})
	require.NoError(t, e.Register(act, wf))
	testenv.Worker(t, e, engine.WorkerConfig{})
	ctx := testenv.Ctx(t, 90*time.Second)

	const n = 20
	runs := dfStartGated(ctx, t, e, wf, &calls, "r", n)
	pg.Stop(t)
	close(gate) // the results are written while the database is down
	testenv.Eventually(t, 30*time.Second, func() bool { return logs.count("engine: ") > 0 },
		"no write met the stopped database")
	pg.Start(t)
	for _, run := range runs {
		out, err := run.Result(ctx)
		require.NoError(t, err)
		require.Equal(t, 3, out)
	}
	dfRequireOnce(t, &calls, n*3)
}

// dfPrivatePool starts a private PostgreSQL (the test may stop it) and
// opens a pool of up to ten connections to it.
func dfPrivatePool(t *testing.T) (*testenv.Postgres, *sqlx.DB) {
	t.Helper()
	pg := testenv.PrivatePostgres(t)
	db, err := sqlx.Open("postgres", pg.URL)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	db.SetMaxOpenConns(10)
	return pg, db
}

// dfStartGated starts n runs of wf (IDs prefix-0, prefix-1, ...) and waits
// until each has reached the gate dfWorkflow holds its activity at.
func dfStartGated(ctx context.Context, t *testing.T, e *engine.Engine, wf *engine.Workflow[int, int], calls *ftCounter, prefix string, n int) []*engine.Run[int] {
	t.Helper()
	var runs []*engine.Run[int]
	for i := 0; i < n; i++ {
		run, err := wf.Start(ctx, e.Client(), 0, &engine.StartOptions{ID: fmt.Sprintf("%s-%d", prefix, i)})
		require.NoError(t, err)
		runs = append(runs, run)
	}
	testenv.Eventually(t, 30*time.Second, func() bool { return calls.get("gated") == n }, "activities never reached the gate")
	return runs
}

// dumpIfFailed logs every message at the test's end if it failed.
func (l *dfLog) dumpIfFailed(t *testing.T) {
	t.Cleanup(func() {
		if t.Failed() {
			l.dump(t)
		}
	})
}

func (l *dfLog) dump(t *testing.T) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, m := range l.msgs {
		t.Log(m)
	}
}

// Every second commit (five times) succeeds in the database but its
// acknowledgement is lost, as when the connection drops during COMMIT: the
// engine reads back what it wrote instead of writing it again, so no run is
// dropped and no activity runs twice.
func TestLostCommitAcknowledgementIsReadBack(t *testing.T) {
	t.Parallel()
	logs := &dfLog{}
	var calls ftCounter
	act, wf := dfWorkflow("df.ack", 5, &calls, nil, 0)
	e, c := rbEnv(t, &engine.Config{Logger: slog.New(logs)}, act, wf)
	var commits, lost atomic.Int64
	engine.SetLostCommitAckForTest(e, func() bool {
		if commits.Add(1)%2 == 0 && lost.Load() < 5 {
			lost.Add(1)
			return true
		}
		return false
	})
	ctx := testenv.Ctx(t, 60*time.Second)
	const n = 10
	var runs []*engine.Run[int]
	for i := 0; i < n; i++ {
		run, err := wf.Start(ctx, c, 0, &engine.StartOptions{ID: fmt.Sprintf("a-%d", i)})
		require.NoError(t, err)
		runs = append(runs, run)
	}
	for _, run := range runs {
		out, err := run.Result(ctx)
		require.NoError(t, err)
		require.Equal(t, 5, out)
	}
	require.EqualValues(t, 5, lost.Load(), "acknowledgements lost")
	dfRequireOnce(t, &calls, n*5)
	h, err := c.History(ctx, "a-0")
	require.NoError(t, err)
	require.Len(t, h, 1)
	require.Equal(t, 1, h[0].Run.Loads, "never dropped and resumed")
}

// An engine on a pool opened with plain sqlx.Open (whose connections a
// stalled database can hold) says so when it is created; one on OpenDB's
// pool does not.
func TestUnprotectedPoolIsWarnedAbout(t *testing.T) {
	t.Parallel()
	const warning = "engine: Config.DB was not opened with engine.OpenDB"
	plain, err := sqlx.Open("postgres", testenv.DatabaseURL())
	require.NoError(t, err)
	t.Cleanup(func() { _ = plain.Close() })
	protected, err := engine.OpenDB(testenv.DatabaseURL())
	require.NoError(t, err)
	t.Cleanup(func() { _ = protected.Close() })
	for _, c := range []struct {
		db   *sqlx.DB
		want int
	}{{plain, 1}, {protected, 0}} {
		logs := &dfLog{}
		e, err := engine.New(engine.Config{DB: c.db, DatabaseURL: testenv.DatabaseURL(), Schema: testenv.Name(t), Logger: slog.New(logs)})
		require.NoError(t, err)
		require.NoError(t, e.Close())
		require.Equal(t, c.want, logs.count(warning))
	}
}
