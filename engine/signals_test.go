package engine_test

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

type ftFix struct {
	Field string
	Value int
}

// Signals sent before the workflow reads them are buffered and delivered
// typed, in the order they were sent, per name.
func TestSignalsBufferedTypedInOrder(t *testing.T) {
	t.Parallel()
	wf := engine.NewWorkflow("sig.order", func(ctx engine.Context, n int) ([]string, error) {
		if _, err := engine.GetSignalChannel[struct{}](ctx, "go").Receive(ctx); err != nil {
			return nil, err
		}
		fixes := engine.GetSignalChannel[ftFix](ctx, "fix")
		notes := engine.GetSignalChannel[string](ctx, "note")
		var out []string
		for i := 0; i < n; i++ {
			f, err := fixes.Receive(ctx)
			if err != nil {
				return nil, err
			}
			out = append(out, fmt.Sprintf("%s=%d", f.Field, f.Value))
		}
		for {
			s, ok, err := notes.ReceiveAsync(ctx)
			if err != nil {
				return nil, err
			}
			if !ok {
				break
			}
			out = append(out, s)
		}
		return out, nil
	})
	_, c := ftEnv(t, &engine.Config{UnloadAfter: time.Hour}, wf)
	ctx := testenv.Ctx(t, 20*time.Second)
	run, err := wf.Start(ctx, c, 5, &engine.StartOptions{ID: "order"})
	require.NoError(t, err)
	for i := 0; i < 5; i++ {
		require.NoError(t, c.Signal(ctx, "order", "fix", ftFix{Field: "f", Value: i}))
		require.NoError(t, c.Signal(ctx, "order", "note", fmt.Sprintf("n%d", i)))
	}
	require.NoError(t, c.Signal(ctx, "order", "go", struct{}{}))
	out, err := run.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{"f=0", "f=1", "f=2", "f=3", "f=4", "n0", "n1", "n2", "n3", "n4"}, out)
}

// Signals to unknown or closed workflows are refused with sentinel errors;
// a payload that cannot be encoded or is too large is refused before
// anything is written.
func TestSignalErrors(t *testing.T) {
	t.Parallel()
	wf := engine.NewWorkflow("sig.quick", func(ctx engine.Context, _ struct{}) (int, error) { return 1, nil })
	_, c := ftEnv(t, &engine.Config{MaxPayloadBytes: 1024}, wf)
	ctx := testenv.Ctx(t, 20*time.Second)

	err := c.Signal(ctx, "nobody", "x", 1)
	require.ErrorIs(t, err, engine.ErrNotFound)

	run, err := wf.Start(ctx, c, struct{}{}, &engine.StartOptions{ID: "quick"})
	require.NoError(t, err)
	_, err = run.Result(ctx)
	require.NoError(t, err)
	require.ErrorIs(t, c.Signal(ctx, "quick", "x", 1), engine.ErrNotRunning)
	require.ErrorIs(t, c.Signal(ctx, "quick", "x", make([]byte, 4096)), engine.ErrPayloadTooLarge)
	require.Error(t, c.Signal(ctx, "quick", "", 1))
}

// SignalWithStart starts the workflow when none is open and delivers the
// signal to it; when one is open it only signals.
func TestSignalWithStart(t *testing.T) {
	t.Parallel()
	var starts ftCounter
	wf := engine.NewWorkflow("sig.sws", func(ctx engine.Context, who string) ([]string, error) {
		starts.inc(who)
		ch := engine.GetSignalChannel[string](ctx, "add")
		var got []string
		for len(got) < 3 {
			v, err := ch.Receive(ctx)
			if err != nil {
				return nil, err
			}
			got = append(got, v)
		}
		return got, nil
	})
	_, c := ftEnv(t, &engine.Config{UnloadAfter: time.Hour}, wf)
	ctx := testenv.Ctx(t, 20*time.Second)
	opts := &engine.StartOptions{ID: "cart"}
	run1, err := wf.SignalWithStart(ctx, c, "first", opts, "add", "a")
	require.NoError(t, err)
	run2, err := wf.SignalWithStart(ctx, c, "second", opts, "add", "b")
	require.NoError(t, err)
	require.Equal(t, run1.RunID, run2.RunID, "the open run was signalled, not restarted")
	run3, err := wf.SignalWithStart(ctx, c, "third", opts, "add", "c")
	require.NoError(t, err)
	require.Equal(t, run1.RunID, run3.RunID)
	out, err := run1.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{"a", "b", "c"}, out)
	require.Equal(t, 0, starts.get("second"))

	// Closed: SignalWithStart starts a new run.
	run4, err := wf.SignalWithStart(ctx, c, "again", opts, "add", "x")
	require.NoError(t, err)
	require.NotEqual(t, run1.RunID, run4.RunID)
	require.NoError(t, c.Signal(ctx, "cart", "add", "y"))
	require.NoError(t, c.Signal(ctx, "cart", "add", "z"))
	out, err = run4.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{"x", "y", "z"}, out)

	_, err = wf.SignalWithStart(ctx, c, "x", nil, "add", "a")
	require.Error(t, err, "SignalWithStart needs an ID")
}

// Signals sent while the workflow is unloaded are not lost: each wakes the
// run, which replays and consumes them in order. The last two are sent from
// a hook at the moment the run has decided to unload and before the unload
// is written, so every one of them races with the unload.
func TestSignalsWhileUnloadedAreNotLost(t *testing.T) {
	t.Parallel()
	wf := engine.NewWorkflow("sig.unloaded", func(ctx engine.Context, n int) ([]int, error) {
		ch := engine.GetSignalChannel[int](ctx, "n")
		var got []int
		for len(got) < n {
			v, err := ch.Receive(ctx)
			if err != nil {
				return nil, err
			}
			got = append(got, v)
		}
		return got, nil
	})
	e, c := ftEnv(t, &engine.Config{UnloadAfter: 100 * time.Millisecond}, wf)
	ctx := testenv.Ctx(t, 30*time.Second)
	run, err := wf.Start(ctx, c, 7, &engine.StartOptions{ID: "unl"})
	require.NoError(t, err)

	ftWaitUnloaded(t, c, "unl", 1)
	require.NoError(t, c.Signal(ctx, "unl", "n", 1))
	ftWaitUnloaded(t, c, "unl", 2) // consumed 1, unloaded again
	// A burst while unloaded.
	for i := 2; i <= 4; i++ {
		require.NoError(t, c.Signal(ctx, "unl", "n", i))
	}
	waitConsumed := func(n int) {
		testenv.Eventually(t, 20*time.Second, func() bool {
			h, err := c.History(ctx, "unl")
			return err == nil && h[0].Run.Status == engine.StatusWaiting && len(h[0].Steps) == n
		}, "the run never consumed %d signals and unloaded", n)
	}
	waitConsumed(4)

	// Signals racing with the unload itself: 5 wakes the run; 6 and 7 are
	// sent by the hook as the run unloads after 5 and after 6.
	var raced atomic.Int32
	engine.SetBlockedHookForTest(e, func(_ string, unloading bool) {
		if n := raced.Load(); unloading && n < 2 {
			raced.Add(1)
			if err := c.Signal(ctx, "unl", "n", 6+int(n)); err != nil {
				t.Errorf("signal %d: %v", 6+n, err)
			}
		}
	})
	require.NoError(t, c.Signal(ctx, "unl", "n", 5))
	out, err := run.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, []int{1, 2, 3, 4, 5, 6, 7}, out)
	require.EqualValues(t, 2, raced.Load(), "signals sent during an unload")
}

// A signal sent from another engine (another process, as far as the engine
// knows) reaches a loaded run through LISTEN/NOTIFY. Polling and lease
// renewals are an hour apart, so a result within the test's deadline came
// from the notice.
func TestSignalFromAnotherEngine(t *testing.T) {
	t.Parallel()
	schema := testenv.Schema(t)
	wf := engine.NewWorkflow("sig.remote", func(ctx engine.Context, _ struct{}) (string, error) {
		return engine.GetSignalChannel[string](ctx, "hello").Receive(ctx)
	})
	cfg := engine.Config{Schema: schema, UnloadAfter: time.Hour, PollInterval: time.Hour, LeaseTTL: time.Hour}
	e, c := ftEnv(t, &cfg, wf)
	var blocked atomic.Bool
	engine.SetBlockedHookForTest(e, func(string, bool) { blocked.Store(true) })
	other := testenv.Engine(t, &cfg)
	require.NoError(t, other.Register(wf))
	ctx := testenv.Ctx(t, 20*time.Second)
	run, err := wf.Start(ctx, c, struct{}{}, &engine.StartOptions{ID: "remote"})
	require.NoError(t, err)
	testenv.Eventually(t, 20*time.Second, blocked.Load, "the run never blocked in Receive")
	require.NoError(t, other.Client().Signal(ctx, "remote", "hello", "from afar"))
	out, err := run.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, "from afar", out)
}

// A signal payload that does not decode into the channel's type fails the
// receive with an error the workflow can handle.
func TestSignalBadPayload(t *testing.T) {
	t.Parallel()
	wf := engine.NewWorkflow("sig.bad", func(ctx engine.Context, _ struct{}) (string, error) {
		ch := engine.GetSignalChannel[ftFix](ctx, "fix")
		_, err := ch.Receive(ctx)
		if err == nil {
			return "", errors.New("want a decode error")
		}
		f, err := ch.Receive(ctx)
		if err != nil {
			return "", err
		}
		return f.Field, nil
	})
	_, c := ftEnv(t, nil, wf)
	ctx := testenv.Ctx(t, 20*time.Second)
	run, err := wf.Start(ctx, c, struct{}{}, &engine.StartOptions{ID: "bad"})
	require.NoError(t, err)
	require.NoError(t, c.Signal(ctx, "bad", "fix", "not an object"))
	require.NoError(t, c.Signal(ctx, "bad", "fix", ftFix{Field: "ok"}))
	out, err := run.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, "ok", out)
}

// Signals buffered but not yet consumed when a run continues as new are
// carried to the new run, not lost with the old one.
func TestSignalsCarriedAcrossContinueAsNew(t *testing.T) {
	t.Parallel()
	var loop *engine.Workflow[[]int, []int]
	loop = engine.NewWorkflow("sig.can", func(ctx engine.Context, got []int) ([]int, error) {
		v, err := engine.GetSignalChannel[int](ctx, "n").Receive(ctx)
		if err != nil {
			return nil, err
		}
		got = append(got, v)
		if len(got) == 5 {
			return got, nil
		}
		return nil, engine.ContinueAsNew(ctx, loop, got) // one signal per run
	})
	e, c := ftEnv(t, nil, loop)
	ctx := testenv.Ctx(t, 20*time.Second)
	run, err := loop.Start(ctx, c, nil, &engine.StartOptions{ID: "can-sig", Delay: time.Hour})
	require.NoError(t, err)
	for i := 1; i <= 5; i++ { // all buffered on the first run before it starts
		require.NoError(t, c.Signal(ctx, "can-sig", "n", i))
	}
	// Make the delayed run due now.
	_, err = testenv.DB(t).ExecContext(ctx, `UPDATE "`+e.Schema()+`".runs SET wake_at = now() WHERE workflow_id = 'can-sig'`)
	require.NoError(t, err)
	out, err := run.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, []int{1, 2, 3, 4, 5}, out)
}

// receiveHelloOnce is a workflow that looks once, at once, for a signal
// "hello" and returns it, or "no signal".
func receiveHelloOnce(name string) *engine.Workflow[struct{}, string] {
	return engine.NewWorkflow(name, func(ctx engine.Context, _ struct{}) (string, error) {
		v, ok, err := engine.GetSignalChannel[string](ctx, "hello").ReceiveAsync(ctx)
		if err != nil {
			return "", err
		}
		if !ok {
			return "no signal", nil
		}
		return v, nil
	})
}

// SignalWithStart delivers the signal in the transaction that creates the
// run: even a workflow that only looks for it once, at once, sees it.
func TestSignalWithStartIsAtomic(t *testing.T) {
	t.Parallel()
	wf := receiveHelloOnce("sig.swsatomic")
	_, c := ftEnv(t, nil, wf)
	ctx := testenv.Ctx(t, 20*time.Second)
	for i := 0; i < 10; i++ {
		id := fmt.Sprintf("atomic-%d", i)
		run, err := wf.SignalWithStart(ctx, c, struct{}{}, &engine.StartOptions{ID: id}, "hello", "world")
		require.NoError(t, err)
		out, err := run.Result(ctx)
		require.NoError(t, err)
		require.Equal(t, "world", out)
	}
}

// An open run an earlier build handed a signal without counting it as an
// event (a signal-with-start, here, left at event_seq 0) gets the signal
// once migrated: a claim reads the signals of a run only once it counted
// an event (see migration 015).
func TestUncountedSignalsCountedByMigration(t *testing.T) {
	t.Parallel()
	wf := receiveHelloOnce("sig.uncounted")
	e, c := ftEnv(t, nil, wf)
	ctx := testenv.Ctx(t, 20*time.Second)
	run, err := wf.SignalWithStart(ctx, c, struct{}{}, &engine.StartOptions{ID: "uncounted", Delay: time.Hour}, "hello", "world")
	require.NoError(t, err)
	db, schema := testenv.DB(t), `"`+e.Schema()+`"`
	_, err = db.ExecContext(ctx, `UPDATE `+schema+`.runs SET event_seq = 0 WHERE workflow_id = 'uncounted'`)
	require.NoError(t, err)
	_, err = db.ExecContext(ctx, `DELETE FROM `+schema+`.schema_migrations WHERE version = 15`)
	require.NoError(t, err)
	require.NoError(t, e.Migrate(ctx))
	_, err = db.ExecContext(ctx, `UPDATE `+schema+`.runs SET wake_at = now() WHERE workflow_id = 'uncounted'`)
	require.NoError(t, err)
	out, err := run.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, "world", out)
}

// An older build running beside this one (a rolling deploy) hands a run
// signals without counting an event: a signal-with-start's insert, a
// continue-as-new's or a reset's move. A claim of this build reads a run's
// signals only once it counted one, so the table counts it itself.
func TestSignalsAnOlderBuildHandsAreRead(t *testing.T) {
	t.Parallel()
	wf := receiveHelloOnce("sig.olderbuild")
	e, c := ftEnv(t, nil, wf)
	ctx := testenv.Ctx(t, 20*time.Second)
	db, schema := testenv.DB(t), `"`+e.Schema()+`"`
	exec := func(q string, args ...any) {
		t.Helper()
		_, err := db.ExecContext(ctx, strings.ReplaceAll(q, "{s}", schema), args...)
		require.NoError(t, err)
	}
	later := func(id string) *engine.Run[string] {
		run, err := wf.Start(ctx, c, struct{}{}, &engine.StartOptions{ID: id, Delay: time.Hour})
		require.NoError(t, err)
		return run
	}
	inserted, donor, moved := later("inserted"), later("donor"), later("moved")
	exec(`INSERT INTO {s}.signals (run_id, name, payload) VALUES ($1, 'hello', '"world"')`, inserted.RunID)
	exec(`INSERT INTO {s}.signals (run_id, name, payload) VALUES ($1, 'hello', '"world"')`, donor.RunID)
	exec(`UPDATE {s}.signals SET run_id = $1 WHERE run_id = $2`, moved.RunID, donor.RunID)
	exec(`UPDATE {s}.runs SET wake_at = now() WHERE workflow_id IN ('inserted', 'moved')`)
	for _, run := range []*engine.Run[string]{inserted, moved} {
		out, err := run.Result(ctx)
		require.NoError(t, err)
		require.Equal(t, "world", out, run.WorkflowID)
	}
}

// SignalWithStart on a closed workflow whose ID may not be reused reports
// ErrAlreadyStarted rather than a start race.
func TestSignalWithStartRespectsReusePolicy(t *testing.T) {
	t.Parallel()
	wf := engine.NewWorkflow("sig.swsreuse", func(ctx engine.Context, _ struct{}) (int, error) { return 1, nil })
	_, c := ftEnv(t, nil, wf)
	ctx := testenv.Ctx(t, 20*time.Second)
	run, err := wf.Start(ctx, c, struct{}{}, &engine.StartOptions{ID: "once"})
	require.NoError(t, err)
	_, err = run.Result(ctx)
	require.NoError(t, err)
	_, err = wf.SignalWithStart(ctx, c, struct{}{}, &engine.StartOptions{ID: "once", IDReusePolicy: engine.ReuseRejectDuplicate}, "s", 1)
	require.ErrorIs(t, err, engine.ErrAlreadyStarted)
	_, err = wf.SignalWithStart(ctx, c, struct{}{}, &engine.StartOptions{ID: "once"}, "", 1)
	require.Error(t, err)
}
