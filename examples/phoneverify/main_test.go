package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/grafttest"
	"github.com/graftdev/graft/internal/testenv"
)

// api is a client of the server under test.
type api struct {
	t    *testing.T
	base string
}

// call sends a request and returns the status code and the decoded body.
func (a api) call(method, path, body string) (int, map[string]any) {
	a.t.Helper()
	req, err := http.NewRequest(method, a.base+path, strings.NewReader(body))
	require.NoError(a.t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(a.t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(a.t, err)
	var out map[string]any
	require.NoError(a.t, json.Unmarshal(raw, &out), "body %s", raw)
	return resp.StatusCode, out
}

func (a api) create(phone string) string {
	a.t.Helper()
	code, body := a.call("POST", "/v1/customers", fmt.Sprintf(`{"phone": %q}`, phone))
	require.Equal(a.t, http.StatusCreated, code, "body %v", body)
	require.Equal(a.t, StatusPending, body["status"])
	return body["id"].(string)
}

// verify sends a code and checks the answer.
func (a api) verify(id, typed string, wantCode int, wantStatus string, wantLeft int) {
	a.t.Helper()
	code, body := a.call("POST", "/v1/customers/"+id+":verify", fmt.Sprintf(`{"code": %q}`, typed))
	require.Equal(a.t, wantCode, code, "body %v", body)
	require.Equal(a.t, wantStatus, body["status"], "body %v", body)
	require.EqualValues(a.t, wantLeft, body["attempts_left"], "body %v", body)
}

func (a api) state(id string) (string, float64) {
	a.t.Helper()
	code, body := a.call("GET", "/v1/customers/"+id, "")
	require.Equal(a.t, http.StatusOK, code, "body %v", body)
	return body["status"].(string), body["attempts"].(float64)
}

// startServer runs serve in this process until the test ends.
func startServer(t *testing.T, o options) api {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan string, 1)
	done := make(chan error, 1)
	o.DatabaseURL, o.Addr, o.Log = grafttest.DatabaseURL(), "127.0.0.1:0", testLog{t}
	o.Listening = func(a string) { addr <- a }
	go func() { done <- serve(ctx, o) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	select {
	case a := <-addr:
		return api{t: t, base: "http://" + a}
	case err := <-done:
		t.Fatalf("server did not start: %v", err)
	}
	return api{}
}

type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func TestPhoneVerifyRightCodeAndBadInput(t *testing.T) {
	t.Parallel()
	a := startServer(t, options{Schema: grafttest.Schema(t)})
	id := a.create("+33612345678")
	a.verify(id, "0000", http.StatusUnprocessableEntity, StatusWrongCode, 2)
	a.verify(id, code, http.StatusOK, StatusVerified, 2)
	a.verify(id, code, http.StatusOK, StatusVerified, 0) // decided already: the workflow's result
	st, n := a.state(id)
	require.Equal(t, StatusVerified, st)
	require.EqualValues(t, 1, n)

	for _, c := range []struct{ method, path, body, want string }{
		{"POST", "/v1/customers", `{"phone": "12"}`, `phone "12" is not an E.164 number`},
		{"POST", "/v1/customers", `{"phone": "+33612345678", "name": "x"}`, `unknown field "name"`},
		{"POST", "/v1/customers/" + id + ":verify", `{}`, `field "code" is required`},
		{"POST", "/v1/customers/cus_nobody:verify", `{"code": "1234"}`, "no customer cus_nobody"},
		{"POST", "/v1/customers/" + id + ":delete", `{}`, "no such action"},
		{"GET", "/v1/customers/cus_nobody", ``, "no customer cus_nobody"},
	} {
		code, body := a.call(c.method, c.path, c.body)
		require.Contains(t, []int{http.StatusBadRequest, http.StatusNotFound}, code, "%s %s", c.method, c.path)
		require.Contains(t, body["error"], c.want, "%s %s", c.method, c.path)
	}
}

// The code expires after two minutes on the engine's clock.
func TestPhoneVerifyCodeExpires(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2027, 1, 1, 8, 0, 0, 0, time.UTC)
	clock := engine.NewFakeClock(t0)
	schema := grafttest.Schema(t)
	a := startServer(t, options{Schema: schema, Clock: clock})
	id := a.create("+33612345679")
	c := grafttest.NewClient(t, schema)
	testenv.Eventually(t, 20*time.Second, func() bool {
		info, err := c.Describe(context.Background(), id)
		return err == nil && info.WakeAt.Equal(t0.Add(2*time.Minute))
	}, "the expiry timer is set")
	clock.Advance(2 * time.Minute)
	testenv.Eventually(t, 20*time.Second, func() bool {
		st, _ := a.state(id)
		return st == StatusCodeExpired
	}, "the code expired")
	a.verify(id, code, http.StatusGone, StatusCodeExpired, 0)
}

const (
	envSchema   = "PHONEVERIFY_TEST_SCHEMA"
	envAddrFile = "PHONEVERIFY_TEST_ADDR_FILE"
	envUnload   = "PHONEVERIFY_TEST_UNLOAD_AFTER"
)

// Two wrong codes, then the server process is killed with SIGKILL while its
// worker holds the run; a new server process resumes the run by replay, and
// the third wrong code answers MAX_ATTEMPTS_REACHED: the attempts survived
// the crash. The SMS was sent once.
func TestPhoneVerifySurvivesSIGKILL(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("spawns server processes")
	}
	schema := grafttest.Schema(t)
	spawn := func(unloadAfter time.Duration) (*testenv.Proc, api) {
		addrFile := filepath.Join(t.TempDir(), "addr")
		p := testenv.Spawn(t, "TestPhoneServerProcess", envSchema+"="+schema, envAddrFile+"="+addrFile,
			envUnload+"="+unloadAfter.String())
		p.WaitLine(t, "ready", 60*time.Second)
		addr, err := os.ReadFile(addrFile)
		require.NoError(t, err)
		return p, api{t: t, base: "http://" + string(addr)}
	}

	// A long UnloadAfter keeps the run loaded and leased by the first
	// server, so the kill hits a live run, not one already put away.
	first, a := spawn(time.Hour)
	c := grafttest.NewClient(t, schema)
	id := a.create("+33612345670")
	a.verify(id, "0000", http.StatusUnprocessableEntity, StatusWrongCode, 2)
	a.verify(id, "1111", http.StatusUnprocessableEntity, StatusWrongCode, 1)
	info, err := c.Describe(context.Background(), id)
	require.NoError(t, err)
	require.Equal(t, engine.StatusRunning, info.Status, "the first server holds the run")

	first.Kill(t)

	_, b := spawn(0)
	b.verify(id, "2222", http.StatusGone, StatusMaxAttemptsReached, 0)
	st, n := b.state(id)
	require.Equal(t, StatusMaxAttemptsReached, st)
	require.EqualValues(t, 3, n)

	// The answer is read from the record of the consumed code; the run's
	// end commits just after.
	testenv.Eventually(t, 20*time.Second, func() bool {
		info, err = c.Describe(context.Background(), id)
		return err == nil && info.Status == engine.StatusFailed
	}, "the run ends failed")
	require.GreaterOrEqual(t, info.Loads, 2, "resumed by the second server")
	h, err := c.History(context.Background(), id)
	require.NoError(t, err)
	sms := 0
	for _, st := range h[0].Steps {
		if st.Name == "phoneverify.send_sms" {
			sms++
		}
	}
	require.Equal(t, 1, sms, "the code was sent once")
}

// TestPhoneServerProcess is the server process of the SIGKILL test; it does
// nothing unless started by it.
func TestPhoneServerProcess(t *testing.T) {
	schema := os.Getenv(envSchema)
	if schema == "" {
		t.Skip("server process of TestPhoneVerifySurvivesSIGKILL")
	}
	unload, err := time.ParseDuration(os.Getenv(envUnload))
	require.NoError(t, err)
	o := options{DatabaseURL: grafttest.DatabaseURL(), Schema: schema, Addr: "127.0.0.1:0", Log: os.Stdout,
		LeaseTTL: 2 * time.Second, UnloadAfter: unload}
	o.Listening = func(addr string) {
		require.NoError(t, os.WriteFile(os.Getenv(envAddrFile), []byte(addr), 0o600))
		fmt.Println("ready")
	}
	go func() {
		err := serve(context.Background(), o)
		fmt.Println("serve:", err)
		os.Exit(2)
	}()
	// Block until SIGKILL; should the parent die first, stdin closes.
	_, _ = io.Copy(io.Discard, os.Stdin)
	os.Exit(1)
}
