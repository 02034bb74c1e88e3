package engine_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// Phone verification: the workflow sends an SMS code and waits for the
// customer to type it, with 3 attempts and a 2-minute expiry. The attempts
// live in the workflow's record (its consumed signals), not in a table.

type phoneIn struct{ Phone string }

type phoneSMS struct {
	To   string
	Code string
}

const (
	phoneMaxAttempts = 3
	phoneExpiry      = 2 * time.Minute
	phoneHelperEnv   = "GRAFT_PHONE_HELPER_SCHEMA"
)

// phoneDefs returns the phone verification definitions. The test process
// and the helper process (a re-exec of the test binary) register the same.
func phoneDefs() (*engine.Activity[phoneSMS, string], *engine.Workflow[phoneIn, string]) {
	send := engine.NewActivity("phone.send_sms", func(ctx context.Context, sms phoneSMS) (string, error) {
		return "queued to " + sms.To, nil // the SMS gateway; its input is in the history
	})
	wf := engine.NewWorkflow("phone.verify", func(ctx engine.Context, in phoneIn) (string, error) {
		attempts := 0
		engine.SetQueryHandler(ctx, "attempts", func(struct{}) (int, error) { return attempts, nil })
		code := fmt.Sprintf("%06d", engine.Rand(ctx).Intn(1000000)) // recorded seed: same code on replay
		if _, err := send.Run(ctx, phoneSMS{To: in.Phone, Code: code}); err != nil {
			return "", err
		}
		expiry := engine.NewTimer(ctx, phoneExpiry)
		codes := engine.GetSignalChannel[string](ctx, "code")
		for {
			i, err := engine.Select(ctx, codes, expiry)
			if err != nil {
				return "", err
			}
			if i == 1 {
				return "", engine.NewNonRetryableError("CodeExpired", "code expired", nil)
			}
			typed, err := codes.Receive(ctx)
			if err != nil {
				return "", err
			}
			if typed == code {
				return "verified " + in.Phone, nil
			}
			attempts++
			if attempts >= phoneMaxAttempts {
				return "", engine.NewNonRetryableError("MaxAttempts", "max attempts reached", attempts)
			}
		}
	})
	return send, wf
}

// phoneSentCode reads the code the workflow sent from its history (the SMS
// activity's recorded input), waiting until it was sent.
func phoneSentCode(t *testing.T, c *engine.Client, id string) string {
	t.Helper()
	var code string
	testenv.Eventually(t, 20*time.Second, func() bool {
		h, err := c.History(context.Background(), id)
		if err != nil {
			return false
		}
		for _, st := range h[len(h)-1].Steps {
			if st.Name == "phone.send_sms" && st.Status == "completed" {
				var sms phoneSMS
				require.NoError(t, json.Unmarshal(st.Input, &sms))
				code = sms.Code
				return true
			}
		}
		return false
	}, "SMS sent")
	return code
}

func phoneWrong(code string) string {
	if code == "000000" {
		return "111111"
	}
	return "000000"
}

func TestPhoneVerificationRightCode(t *testing.T) {
	t.Parallel()
	send, wf := phoneDefs()
	_, c := ftEnv(t, &engine.Config{UnloadAfter: 100 * time.Millisecond}, send, wf)
	ctx := testenv.Ctx(t, 30*time.Second)
	run, err := wf.Start(ctx, c, phoneIn{Phone: "+33600000001"}, &engine.StartOptions{ID: "phone-ok"})
	require.NoError(t, err)
	code := phoneSentCode(t, c, "phone-ok")
	ftWaitUnloaded(t, c, "phone-ok", 1) // waiting for the customer holds no goroutine
	require.NoError(t, c.Signal(ctx, "phone-ok", "code", phoneWrong(code)))
	testenv.Eventually(t, 10*time.Second, func() bool {
		n, err := engine.QueryAs[int](ctx, c, "phone-ok", "attempts", nil)
		return err == nil && n == 1
	}, "one wrong attempt counted")
	require.NoError(t, c.Signal(ctx, "phone-ok", "code", code))
	out, err := run.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, "verified +33600000001", out)
}

func TestPhoneVerificationExpiry(t *testing.T) {
	t.Parallel()
	clock := engine.NewFakeClock(ftT0)
	send, wf := phoneDefs()
	_, c := ftEnv(t, &engine.Config{Clock: clock}, send, wf)
	ctx := testenv.Ctx(t, 30*time.Second)
	run, err := wf.Start(ctx, c, phoneIn{Phone: "+33600000002"}, &engine.StartOptions{ID: "phone-exp"})
	require.NoError(t, err)
	code := phoneSentCode(t, c, "phone-exp")
	info := ftWaitUnloaded(t, c, "phone-exp", 1) // 2 minutes is beyond UnloadAfter: unloaded at once
	require.True(t, info.WakeAt.Equal(ftT0.Add(phoneExpiry)), "wake at %v", info.WakeAt)
	require.NoError(t, c.Signal(ctx, "phone-exp", "code", phoneWrong(code)))
	ftWaitUnloaded(t, c, "phone-exp", 2)
	clock.Advance(phoneExpiry)
	_, err = run.Result(ctx)
	require.Equal(t, "CodeExpired", ftAppErr(t, err).Type)
	// The right code after expiry is refused: the workflow is closed.
	require.ErrorIs(t, c.Signal(ctx, "phone-exp", "code", code), engine.ErrNotRunning)
}

func TestPhoneVerificationMaxAttempts(t *testing.T) {
	t.Parallel()
	send, wf := phoneDefs()
	_, c := ftEnv(t, &engine.Config{UnloadAfter: time.Hour}, send, wf)
	ctx := testenv.Ctx(t, 30*time.Second)
	run, err := wf.Start(ctx, c, phoneIn{Phone: "+33600000003"}, &engine.StartOptions{ID: "phone-max"})
	require.NoError(t, err)
	code := phoneSentCode(t, c, "phone-max")
	for i := 0; i < 3; i++ {
		require.NoError(t, c.Signal(ctx, "phone-max", "code", phoneWrong(code)))
	}
	_, err = run.Result(ctx)
	app := ftAppErr(t, err)
	require.Equal(t, "MaxAttempts", app.Type)
	require.Equal(t, "max attempts reached", app.Message)
	require.JSONEq(t, "3", string(app.Details))
	// The right code now is too late.
	require.ErrorIs(t, c.Signal(ctx, "phone-max", "code", code), engine.ErrNotRunning)
}

// Two wrong codes, then the worker process is killed with SIGKILL while it
// holds the run; a new worker resumes it by replay, and the third wrong code
// ends the workflow: the attempts survived the crash.
func TestPhoneVerificationSurvivesSIGKILL(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("spawns a worker process")
	}
	schema := testenv.Schema(t)
	cfg := &engine.Config{Schema: schema, LeaseTTL: 2 * time.Second}
	e := testenv.Engine(t, cfg) // migrates; no worker in this process yet
	send, wf := phoneDefs()
	require.NoError(t, e.Register(send, wf))
	c := e.Client()
	ctx := testenv.Ctx(t, 60*time.Second)

	helper := testenv.Spawn(t, "TestPhoneHelperProcess", phoneHelperEnv+"="+schema)
	helper.WaitLine(t, "ready", 30*time.Second)

	run, err := wf.Start(ctx, c, phoneIn{Phone: "+33600000004"}, &engine.StartOptions{ID: "phone-kill"})
	require.NoError(t, err)
	code := phoneSentCode(t, c, "phone-kill")
	info := ftDescribe(t, c, "phone-kill")
	require.Equal(t, engine.StatusRunning, info.Status)
	helperOwner := "phone-helper"
	require.NoError(t, c.Signal(ctx, "phone-kill", "code", phoneWrong(code)))
	require.NoError(t, c.Signal(ctx, "phone-kill", "code", phoneWrong(code)))
	testenv.Eventually(t, 20*time.Second, func() bool {
		n, err := engine.QueryAs[int](ctx, c, "phone-kill", "attempts", nil)
		return err == nil && n == 2
	}, "two wrong codes consumed by the helper process")
	var owner string
	require.NoError(t, e.DB().QueryRowContext(ctx, `SELECT lease_owner FROM "`+schema+`".runs WHERE run_id = $1`, run.RunID).Scan(&owner))
	require.Equal(t, helperOwner, owner, "the helper holds the run when it is killed")

	helper.Kill(t)

	testenv.Worker(t, e, engine.WorkerConfig{ID: "phone-survivor"})
	require.NoError(t, c.Signal(ctx, "phone-kill", "code", phoneWrong(code)))
	_, err = run.Result(ctx)
	app := ftAppErr(t, err)
	require.Equal(t, "MaxAttempts", app.Type)
	require.Equal(t, "max attempts reached", app.Message)
	require.JSONEq(t, "3", string(app.Details))

	info = ftDescribe(t, c, "phone-kill")
	require.Equal(t, engine.StatusFailed, info.Status)
	require.GreaterOrEqual(t, info.Loads, 2, "resumed on the survivor")
	h, err := c.History(ctx, "phone-kill")
	require.NoError(t, err)
	require.Len(t, h, 1)
	sms := 0
	for _, st := range h[0].Steps {
		if st.Name == "phone.send_sms" {
			sms++
		}
	}
	require.Equal(t, 1, sms, "the code was sent once")
}

// TestPhoneHelperProcess is the worker process of the SIGKILL test; it does
// nothing unless started by it.
func TestPhoneHelperProcess(t *testing.T) {
	schema := os.Getenv(phoneHelperEnv)
	if schema == "" {
		t.Skip("helper process for TestPhoneVerificationSurvivesSIGKILL")
	}
	// A long UnloadAfter keeps the run loaded and leased, so the kill hits a
	// live run rather than one already handed back to the database.
	e := testenv.Engine(t, &engine.Config{Schema: schema, LeaseTTL: 2 * time.Second, UnloadAfter: time.Hour})
	send, wf := phoneDefs()
	require.NoError(t, e.Register(send, wf))
	testenv.Worker(t, e, engine.WorkerConfig{ID: "phone-helper"})
	fmt.Println("ready")
	// Block until SIGKILL. Should the parent die first, its end of stdin
	// closes and the helper leaves.
	_, _ = io.Copy(io.Discard, os.Stdin)
	os.Exit(1)
}
