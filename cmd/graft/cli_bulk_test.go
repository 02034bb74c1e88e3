package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
	"github.com/graftdev/graft/tasks/api"
)

// runErr runs the CLI with args and returns its output and its stderr.
func runErr(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	root := newRootCmd()
	var out, errw bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errw)
	root.SetArgs(args)
	err := root.ExecuteContext(testenv.Ctx(t, time.Minute))
	return out.String(), errw.String(), err
}

// TestCLIBulk drives bulk jobs through the CLI against a server: a dry
// run, a relaunch followed with its progress bar to its report, a signal
// and cancel job as JSON, pause/resume/stop/status, the CSV report, and
// bad input.
func TestCLIBulk(t *testing.T) {
	e := testenv.Engine(t, nil)
	type approval struct {
		OK bool `json:"ok"`
	}
	var fail atomic.Bool
	fail.Store(true)
	charge := engine.NewActivity("charge", func(context.Context, string) (string, error) {
		if fail.Load() {
			return "", engine.NewNonRetryableError("CardDeclined", "declined", nil)
		}
		return "charged", nil
	})
	order := engine.NewWorkflow("order", func(ctx engine.Context, in string) (string, error) {
		if in == "wait" {
			if _, err := engine.GetSignalChannel[approval](ctx, "approve").Receive(ctx); err != nil {
				return "", err
			}
			return "approved", nil
		}
		return charge.Run(ctx, in)
	}).WithSignals(engine.DeclareSignal[approval]("approve", "go ahead"))
	require.NoError(t, e.Register(charge, order))
	srv, err := api.New(api.Config{Engine: e})
	require.NoError(t, err)
	testenv.Worker(t, e, engine.WorkerConfig{})
	bw, err := srv.StartBulkWorker(context.Background())
	require.NoError(t, err)
	t.Cleanup(func() { _ = bw.Stop(context.Background()) })
	require.NoError(t, api.Migrate(context.Background(), e.DB(), e.Schema()))
	_, secret, err := srv.Tokens().Create(context.Background(), api.NewToken{Name: "oscar", Role: api.RoleOperator})
	require.NoError(t, err)
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	t.Setenv("GRAFT_SERVER", hs.URL)
	t.Setenv("GRAFT_TOKEN", secret)

	ctx := testenv.Ctx(t, time.Minute)
	wait := func(id string, st engine.Status) {
		testenv.Eventually(t, 20*time.Second, func() bool {
			info, err := e.Client().Describe(ctx, id)
			return err == nil && info.Status == st
		}, "%s %s", id, st)
	}
	for i := range 8 {
		_, err := order.Start(ctx, e.Client(), "x", &engine.StartOptions{ID: fmt.Sprintf("f-%d", i)})
		require.NoError(t, err)
	}
	for i := range 8 {
		wait(fmt.Sprintf("f-%d", i), engine.StatusFailed)
	}
	_, err = order.Start(ctx, e.Client(), "wait", &engine.StartOptions{ID: "w-1"})
	require.NoError(t, err)
	wait("w-1", engine.StatusWaiting)

	out, _, err := runErr(t, "bulk", "relaunch", "--kind", "order", "--exclude", "f-7", "--reason", "processor back", "--dry-run")
	require.NoError(t, err)
	require.Contains(t, out, "dry run: relaunch would act on 7 of 8 matching operations (1 excluded)")
	require.Regexp(t, `(?m)^w-1\s+open \(waiting\)`, out)

	fail.Store(false)
	out, errOut, err := runErr(t, "bulk", "relaunch", "--status", "failed", "--exclude", "f-7", "--rate", "50", "--reason", "processor back", "--poll", "20ms")
	require.NoError(t, err, errOut)
	require.Regexp(t, `bulk job bulk-[0-9a-f]+: relaunch 7 operations at 50/s`, errOut)
	require.Regexp(t, `(?m)^\[#{30}\] 7/7 done=7 failed=0 skipped=0 .*completed$`, errOut, "the progress bar, to the end")
	require.Regexp(t, `bulk job bulk-[0-9a-f]+ completed: 7 done, 0 failed, 0 skipped, 0 pending of 7`, out)
	for i := range 7 {
		wait(fmt.Sprintf("f-%d", i), engine.StatusCompleted)
	}

	// --from-step: f-7 from its charge step; a step it does not have skips it.
	out, _, err = runErr(t, "bulk", "relaunch", "--id", "f-7", "--from-step", "nope", "--reason", "r", "--dry-run")
	require.NoError(t, err)
	require.Regexp(t, `(?m)^f-7\s+no step named "nope"$`, out)
	// The dry run says what the relaunch would do to each sampled operation.
	out, _, err = runErr(t, "bulk", "relaunch", "--id", "f-7", "--from-step", "charge", "--reason", "r", "--dry-run")
	require.NoError(t, err)
	require.Regexp(t, `(?m)^SAMPLE\s+KIND\s+STATUS\s+CUSTOMER\s+FROM STEP\s+REUSED\s+RERUN$`, out)
	require.Regexp(t, `(?m)^f-7\s+order\s+failed\s+-?\s+charge \(#\d+\)\s+0\s+1$`, out)
	out, _, err = runErr(t, "bulk", "cancel", "--id", "w-1", "--reason", "r", "--dry-run")
	require.NoError(t, err)
	require.Regexp(t, `(?m)^SAMPLE\s+KIND\s+STATUS\s+CUSTOMER$`, out, "no relaunch columns for other actions")
	out, _, err = runErr(t, "bulk", "relaunch", "--id", "f-7", "--from-step", "charge", "--reason", "from charge", "--detach")
	require.NoError(t, err)
	require.Regexp(t, `(?m)^From step:\s+charge$`, out)
	wait("f-7", engine.StatusCompleted)
	_, _, err = runErr(t, "bulk", "cancel", "--id", "f-7", "--from-step", "charge", "--reason", "r")
	require.EqualError(t, err, "unknown flag: --from-step")

	// -o json: the report, for scripts; no progress on a non-terminal.
	out, errOut, err = runErr(t, "bulk", "signal", "approve", `{"ok":true}`, "--id", "w-1", "--reason", "called", "-o", "json", "--poll", "20ms")
	require.NoError(t, err, errOut)
	require.NotContains(t, errOut, "[#")
	var rep api.BulkReport
	require.NoError(t, json.Unmarshal([]byte(out), &rep), out)
	require.Equal(t, 1, rep.Job.Done)
	require.Equal(t, "done", rep.Items[0].Outcome)
	wait("w-1", engine.StatusCompleted)

	// A slow job, detached, paused, resumed, stopped.
	for i := range 3 {
		_, err := order.Start(ctx, e.Client(), "wait", &engine.StartOptions{ID: fmt.Sprintf("c-%d", i)})
		require.NoError(t, err)
		wait(fmt.Sprintf("c-%d", i), engine.StatusWaiting)
	}
	out, _, err = runErr(t, "bulk", "cancel", "--status", "waiting", "--rate", "0.2", "--reason", "slow", "--detach", "-o", "json")
	require.NoError(t, err)
	var job api.BulkJob
	require.NoError(t, json.Unmarshal([]byte(out), &job), out)
	out, _, err = runErr(t, "bulk", "pause", job.Id, "--reason", "look")
	require.NoError(t, err)
	require.Regexp(t, `bulk job bulk-[0-9a-f]+ is (pausing|paused)`, out)
	_, _, err = runErr(t, "bulk", "pause", job.Id)
	require.ErrorContains(t, err, "409")
	_, _, err = runErr(t, "bulk", "resume", job.Id)
	require.NoError(t, err)
	out, _, err = runErr(t, "bulk", "stop", job.Id, "--reason", "enough")
	require.NoError(t, err)
	testenv.Eventually(t, 30*time.Second, func() bool {
		out, _, err = runErr(t, "bulk", "status", job.Id)
		return err == nil && strings.Contains(out, "stopped")
	}, "stopped")
	require.Regexp(t, `(?m)^Progress:\s+3 of 3`, out)
	out, _, err = runErr(t, "bulk", "report", job.Id, "--format", "csv")
	require.NoError(t, err)
	recs, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	require.NoError(t, err)
	require.Len(t, recs, 4)
	require.Contains(t, out, "the job was stopped")
	out, _, err = runErr(t, "bulk", "list")
	require.NoError(t, err)
	require.Contains(t, out, job.Id)

	_, _, err = runErr(t, "bulk", "relaunch", "--reason", "r", "--rate", "0")
	require.ErrorContains(t, err, "400 Invalid request: --rate: ")
	_, _, err = runErr(t, "bulk", "relaunch")
	require.EqualError(t, err, `required flag(s) "reason" not set`)
	_, _, err = runErr(t, "bulk", "status", "bulk-nope")
	require.ErrorContains(t, err, "404")
}
