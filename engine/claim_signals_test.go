package engine_test

import (
	"database/sql"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/sqlobserve"
	"github.com/graftdev/graft/internal/testenv"
)

// A claim reads its runs' buffered signals in the claim statement itself:
// runs whose signals were sent before any worker claimed them are claimed
// and receive those signals with no other statement reading the signals
// table (it was a second round trip after each claim).
func TestClaimReadsSignalsInOneStatement(t *testing.T) {
	t.Parallel()
	const runs = 20
	wf := engine.NewWorkflow("claimsig.wait", func(ctx engine.Context, _ struct{}) (int, error) {
		return engine.GetSignalChannel[int](ctx, "go").Receive(ctx)
	})
	base, err := engine.NewConnector(testenv.DatabaseURL())
	require.NoError(t, err)
	st := &stmtLog{}
	db := sqlx.NewDb(sql.OpenDB(sqlobserve.NewConnector[string](base, st)), "postgres")
	t.Cleanup(func() { _ = db.Close() })
	e := testenv.Engine(t, &engine.Config{DB: db})
	require.NoError(t, e.Register(wf))
	ctx := testenv.Ctx(t, time.Minute)
	c := e.Client()
	handles := make([]*engine.Run[int], runs)
	for i := range handles {
		id := fmt.Sprintf("cs-%d", i)
		handles[i], err = wf.Start(ctx, c, struct{}{}, &engine.StartOptions{ID: id})
		require.NoError(t, err)
		require.NoError(t, c.Signal(ctx, id, "go", i))
	}
	st.reset()
	testenv.Worker(t, e, engine.WorkerConfig{})
	for i, h := range handles {
		out, err := h.Result(ctx)
		require.NoError(t, err)
		require.Equal(t, i, out)
	}
	claims, reads := st.counts()
	require.Positive(t, claims, "no claim statement seen")
	require.Zero(t, reads, "statements reading signals besides %d claims", claims)
}

// stmtLog counts the claim statements sent and the other statements that
// read the signals table (a prepared statement at each execution).
type stmtLog struct {
	sqlobserve.Base[string]
	mu            sync.Mutex
	claims, reads int
}

func (l *stmtLog) Key(q string) string { return q }

func (l *stmtLog) Statement(q string, _ bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case strings.Contains(q, "claimed_until = now() +"):
		l.claims++
	case strings.HasPrefix(strings.TrimSpace(q), "SELECT") && strings.Contains(q, ".signals "):
		l.reads++
	}
}

func (l *stmtLog) reset() {
	l.mu.Lock()
	l.claims, l.reads = 0, 0
	l.mu.Unlock()
}

func (l *stmtLog) counts() (claims, reads int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.claims, l.reads
}

// Signals buffered before the claim travel inside the claim's row (JSON,
// payloads in base64, which PostgreSQL breaks into lines): large payloads
// of any bytes reach the workflow whole and in order.
func TestClaimedSignalsKeepLargePayloads(t *testing.T) {
	t.Parallel()
	wf := engine.NewWorkflow("claimsig.large", func(ctx engine.Context, _ struct{}) ([]string, error) {
		ch := engine.GetSignalChannel[string](ctx, "part")
		var got []string
		for range 3 {
			s, err := ch.Receive(ctx)
			if err != nil {
				return nil, err
			}
			got = append(got, s)
		}
		return got, nil
	})
	e := testenv.Engine(t, nil)
	require.NoError(t, e.Register(wf))
	ctx := testenv.Ctx(t, time.Minute)
	c := e.Client()
	run, err := wf.Start(ctx, c, struct{}{}, &engine.StartOptions{ID: "large-signals"})
	require.NoError(t, err)
	want := []string{
		strings.Repeat("é∂ \"quoted\" \\ back\nslash\t\x01", 300),
		strings.Repeat("0123456789abcdef", 1000),
		"",
	}
	for _, s := range want {
		require.NoError(t, c.Signal(ctx, "large-signals", "part", s))
	}
	testenv.Worker(t, e, engine.WorkerConfig{})
	got, err := run.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, want, got)
}
