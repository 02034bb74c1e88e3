package engine_test

import (
	"fmt"
	"hash/fnv"
	"sync"
	"testing"
	"time"

	"github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// A signal that commits after a claim statement took its snapshot and
// before the claim locked the run's row is not among the signals the claim
// reads, while the row the claim returns already counts it (event_seq):
// the claim says the run raced (store.claimSQL). The race is forced: a
// statement trigger in the test's schema holds the claim of due runs,
// after its snapshot and before it reads a row, on an advisory lock the
// test holds while it sends the signal. The run then unloads at its first
// wait (UnloadAfter of a nanosecond), before any refresh could have read
// the signal: it must still receive the signal, and only once.
func TestSignalRacingTheClaimIsDelivered(t *testing.T) {
	t.Parallel()
	schema := testenv.Schema(t)
	wf := engine.NewWorkflow("claimsig.raced", func(ctx engine.Context, _ struct{}) ([]string, error) {
		ch := engine.GetSignalChannel[string](ctx, "go")
		v, err := ch.Receive(ctx)
		if err != nil {
			return nil, err
		}
		got := []string{v}
		for {
			v, ok, err := ch.ReceiveAsync(ctx)
			if err != nil {
				return nil, err
			}
			if !ok {
				return got, nil
			}
			got = append(got, v)
		}
	})
	e := testenv.Engine(t, &engine.Config{Schema: schema, UnloadAfter: time.Nanosecond})
	require.NoError(t, e.Register(wf))
	ctx := testenv.Ctx(t, 2*time.Minute)
	db := testenv.DB(t)

	h := fnv.New32a()
	h.Write([]byte(schema))
	key := int32(h.Sum32() >> 1)
	q := pq.QuoteIdentifier(schema)
	_, err := db.ExecContext(ctx, fmt.Sprintf(`CREATE FUNCTION %[1]s.hold_claims() RETURNS trigger LANGUAGE plpgsql AS $f$
		BEGIN
			IF current_query() LIKE '%%claimed_until = now() +%%' AND current_query() LIKE '%%wake_at <= $5%%' THEN
				PERFORM pg_advisory_xact_lock_shared(%[2]d, 1);
			END IF;
			RETURN NULL;
		END $f$;
		CREATE TRIGGER hold_claims BEFORE UPDATE ON %[1]s.runs FOR EACH STATEMENT EXECUTE FUNCTION %[1]s.hold_claims()`, q, key))
	require.NoError(t, err)
	holder, err := db.Conn(ctx)
	require.NoError(t, err)
	_, err = holder.ExecContext(ctx, `SELECT pg_advisory_lock($1, 1)`, key)
	require.NoError(t, err)
	var release sync.Once
	unhold := func() {
		release.Do(func() {
			_, err := holder.ExecContext(ctx, `SELECT pg_advisory_unlock($1, 1)`, key)
			require.NoError(t, err)
			require.NoError(t, holder.Close())
		})
	}

	c := e.Client()
	run, err := wf.Start(ctx, c, struct{}{}, &engine.StartOptions{ID: "raced"})
	require.NoError(t, err)
	var mu sync.Mutex
	var loads []int
	engine.SetSignalLoadHookForTest(e, func(n int) {
		mu.Lock()
		loads = append(loads, n)
		mu.Unlock()
	})
	testenv.Worker(t, e, engine.WorkerConfig{})
	t.Cleanup(unhold) // before the worker stops: its claim waits on the lock
	testenv.Eventually(t, time.Minute, func() bool {
		var held bool
		err := db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_locks
			WHERE locktype = 'advisory' AND NOT granted AND classid = $1 AND objid = 1 AND objsubid = 2)`, key).Scan(&held)
		return err == nil && held
	}, "the claim of due runs did not reach the trigger")
	require.NoError(t, c.Signal(ctx, "raced", "go", "once"))
	unhold()

	got, err := run.Result(testenv.Ctx(t, time.Minute))
	if err != nil {
		// A lost signal leaves the run waiting with no wake time.
		var status, wake string
		var seq, sigs int
		_ = db.QueryRowContext(ctx, `SELECT status, coalesce(wake_at::text, 'none'), event_seq,
			(SELECT count(*) FROM `+q+`.signals) FROM `+q+`.runs`).Scan(&status, &wake, &seq, &sigs)
		require.NoError(t, err, "run %s, wake_at %s, event_seq %d, %d signals buffered", status, wake, seq, sigs)
	}
	require.Equal(t, []string{"once"}, got)
	mu.Lock()
	defer mu.Unlock()
	require.NotEmpty(t, loads)
	require.Zero(t, loads[0], "the held claim read the signal: it took its snapshot after the signal committed, no race")
}
