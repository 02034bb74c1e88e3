package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
	"github.com/graftdev/graft/tasks/api"
)

// TestBulkServerHelper is the API server a crash test kills: it serves the
// API over the schema it is given, with a bulk worker, until it is killed.
func TestBulkServerHelper(t *testing.T) {
	schema, addr := os.Getenv("GRAFT_BULK_HELPER_SCHEMA"), os.Getenv("GRAFT_BULK_HELPER_ADDR")
	if schema == "" {
		t.Skip("a helper process for TestBulkSurvivesSIGKILL")
	}
	db, err := sqlx.Open("postgres", testenv.DatabaseURL())
	require.NoError(t, err)
	e, err := engine.New(engine.Config{DB: db, DatabaseURL: testenv.DatabaseURL(), Schema: schema,
		LeaseTTL: 2 * time.Second, PollInterval: 100 * time.Millisecond})
	require.NoError(t, err)
	srv, err := api.New(api.Config{Engine: e})
	require.NoError(t, err)
	_, err = srv.StartBulkWorker(context.Background())
	require.NoError(t, err)
	ln, err := net.Listen("tcp", addr)
	require.NoError(t, err)
	go func() { _ = http.Serve(ln, srv.Handler()) }()
	fmt.Println("ready")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n') // until the parent ends
}

// TestBulkSurvivesSIGKILL: the server running a bulk relaunch is killed
// with SIGKILL mid-job and started again; the job finishes, and every
// operation was relaunched exactly once (one reset run each, one audit
// record each).
func TestBulkSurvivesSIGKILL(t *testing.T) {
	ev := newEnv(t, api.Config{})
	// Only the helper process runs bulk jobs.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	require.NoError(t, ev.bulkWorker.Stop(ctx))
	cancel()
	const n = 60
	failed := ev.startFailed(t, "k", "acme", n)
	ev.failCharge.Store(false)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	env := []string{"GRAFT_BULK_HELPER_SCHEMA=" + ev.e.Schema(), "GRAFT_BULK_HELPER_ADDR=" + addr}
	helper := testenv.Spawn(t, "TestBulkServerHelper", env...)
	helper.WaitLine(t, "ready", 30*time.Second)

	base := "http://" + addr
	post := func(path, body string) (int, string) {
		req, err := http.NewRequest("POST", base+path, strings.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+ev.tokens["operator"])
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer res.Body.Close()
		var b strings.Builder
		_, _ = bufio.NewReader(res.Body).WriteTo(&b)
		return res.StatusCode, b.String()
	}
	code, body := post("/v1/bulk", `{"action":"relaunch","reason":"after the incident","rate":20,"filter":{"status":["failed"]}}`)
	require.Equal(t, 201, code, body)
	var job api.BulkJob
	require.NoError(t, json.Unmarshal([]byte(body), &job))
	require.Equal(t, n, job.Total)

	items := func(state string) int {
		var c int
		require.NoError(t, ev.e.DB().Get(&c, `SELECT count(*) FROM `+ev.e.Schema()+`.bulk_items WHERE job_id = $1 AND state = $2`, job.Id, state))
		return c
	}
	testenv.Eventually(t, 60*time.Second, func() bool { return items("done") >= 15 }, "a quarter of the job done")
	helper.Kill(t)
	require.Positive(t, items("pending"), "killed mid-job")
	ev.checkProgress(t, job.Id) // counted in the items' transactions, not lost with the process

	helper = testenv.Spawn(t, "TestBulkServerHelper", env...)
	helper.WaitLine(t, "ready", 30*time.Second)
	done := ev.waitJob(t, job.Id, api.BulkStateCompleted)
	require.Equal(t, n, done.Done)
	require.Zero(t, done.Failed+done.Skipped+done.Pending)
	ev.checkProgress(t, job.Id)
	for _, id := range failed {
		runs, resets := ev.runsOf(t, id)
		require.Equal(t, 2, runs, "%s: one relaunch", id)
		require.Equal(t, 1, resets, id)
		ev.waitFor(t, id, engine.StatusCompleted)
	}
	var audited int
	require.NoError(t, ev.e.DB().Get(&audited, `SELECT count(*) FROM `+ev.e.Schema()+`.api_audit WHERE action = 'relaunch' AND detail->>'bulk_job' = $1`, job.Id))
	require.Equal(t, n, audited)
}
