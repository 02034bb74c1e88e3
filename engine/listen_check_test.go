//go:build unix

package engine_test

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// The engine checks its LISTEN connection after each interval without a
// notification. When the connection's backend stalls (SIGSTOP: the TCP
// connection stays up and no error ever reaches the client), a check gets
// no answer. Checks must not pile up, one goroutine per interval, each
// parked for good: at most one is in flight, one that gets no answer
// within an interval has failed, and the connection is replaced, so
// notifications arrive again while the old backend is still stopped.
func TestListenCheckOnAStalledConnection(t *testing.T) {
	t.Parallel()
	pg := testenv.PrivatePostgres(t)
	admin := dfAdmin(t, pg.URL)
	const name = "lcstall"
	dsn, db := dfOpenNamed(t, pg.URL, name)
	cfg := engine.Config{DB: db, DatabaseURL: dsn, Schema: name}
	engine.SetListenCheckForTest(&cfg, 200*time.Millisecond)
	e := testenv.Engine(t, &cfg)
	ctx := testenv.Ctx(t, 3*time.Minute)

	var mu sync.Mutex
	var ticks, inFlight, most int
	engine.SetListenCheckHookForTest(e, func(ev string) {
		mu.Lock()
		defer mu.Unlock()
		switch ev {
		case "tick":
			ticks++
		case "start":
			inFlight++
			most = max(most, inFlight)
		case "end":
			inFlight--
		}
	})
	var work string
	for _, ch := range engine.ListenChannelsForTest(e) {
		if strings.HasSuffix(ch, "_work") {
			work = ch
		}
	}
	noticed := make(chan string, 16)
	engine.SetNoticeHookForTest(e, func(channel, payload string) {
		if channel == work {
			noticed <- payload
		}
	})
	// The listener's last statement is a LISTEN or, once its checks have
	// begun (every 200ms from New), a check's empty query.
	var pids []int
	require.NoError(t, admin.SelectContext(ctx, &pids, `SELECT pid FROM pg_stat_activity
		WHERE application_name = $1 AND (query LIKE 'LISTEN%' OR query = '')`, name))
	require.Len(t, pids, 1, "the engine's LISTEN connection")
	dfStopBackends(t, pids)

	// Several check intervals pass against the stalled backend.
	mu.Lock()
	from := ticks
	mu.Unlock()
	testenv.Eventually(t, time.Minute, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return ticks >= from+6
	}, "the listener did not check its connection every interval")
	mu.Lock()
	atOnce := most
	mu.Unlock()
	require.LessOrEqual(t, atOnce, 1, "checks of the LISTEN connection in flight at once")

	// The stalled connection was replaced: a notification reaches the
	// engine, which the stopped backend cannot send.
	testenv.Eventually(t, time.Minute, func() bool {
		_, err := admin.ExecContext(ctx, `SELECT pg_notify($1, 'probe')`, work)
		require.NoError(t, err)
		select {
		case p := <-noticed:
			return p == "probe"
		case <-time.After(200 * time.Millisecond):
			return false
		}
	}, "no notification reached the engine: its stalled LISTEN connection was not replaced")
}
