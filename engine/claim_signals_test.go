package engine_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
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
	db := sqlx.NewDb(sql.OpenDB(&logConnector{base: base, log: st}), "postgres")
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
// read the signals table.
type stmtLog struct {
	mu            sync.Mutex
	claims, reads int
}

func (l *stmtLog) note(q string) {
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

type logConnector struct {
	base driver.Connector
	log  *stmtLog
}

func (k *logConnector) Connect(ctx context.Context) (driver.Conn, error) {
	cn, err := k.base.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return &logConn{Conn: cn, log: k.log}, nil
}

func (k *logConnector) Driver() driver.Driver { return k.base.Driver() }

// logConn passes the driver connection's interfaces through, noting each
// statement's text.
type logConn struct {
	driver.Conn
	log *stmtLog
}

func (cn *logConn) QueryContext(ctx context.Context, q string, args []driver.NamedValue) (driver.Rows, error) {
	cn.log.note(q)
	return cn.Conn.(driver.QueryerContext).QueryContext(ctx, q, args)
}

func (cn *logConn) ExecContext(ctx context.Context, q string, args []driver.NamedValue) (driver.Result, error) {
	cn.log.note(q)
	return cn.Conn.(driver.ExecerContext).ExecContext(ctx, q, args)
}

func (cn *logConn) PrepareContext(ctx context.Context, q string) (driver.Stmt, error) {
	cn.log.note(q)
	return cn.Conn.(driver.ConnPrepareContext).PrepareContext(ctx, q)
}

func (cn *logConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	return cn.Conn.(driver.ConnBeginTx).BeginTx(ctx, opts)
}

func (cn *logConn) CheckNamedValue(nv *driver.NamedValue) error {
	return cn.Conn.(driver.NamedValueChecker).CheckNamedValue(nv)
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
