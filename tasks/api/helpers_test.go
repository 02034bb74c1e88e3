package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/cancel"
	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
	"github.com/graftdev/graft/tasks/api"
)

type orderIn struct {
	Item string `json:"item"`
	// Wait makes the workflow wait for a confirm signal before charging.
	Wait bool `json:"wait,omitempty"`
}

type confirm struct {
	Approved bool `json:"approved"`
}

// env is a migrated engine with a worker running the "order" workflow, an
// API server over it, and a token per role.
type env struct {
	e      *engine.Engine
	srv    *api.Server
	http   *httptest.Server
	tokens map[string]string // role (or "customer-other") -> secret
	// failCharge makes the charge activity fail (non-retryably).
	failCharge atomic.Bool
	charged    atomic.Int64
	released   atomic.Int64
	// bulkWorker runs the server's bulk jobs in the test process.
	bulkWorker *engine.Worker
}

func newEnv(t *testing.T, cfg api.Config) *env {
	t.Helper()
	return newEnvOn(t, nil, cfg)
}

// newEnvOn is newEnv on engine e (nil: a new one).
func newEnvOn(t *testing.T, e *engine.Engine, cfg api.Config) *env {
	t.Helper()
	ev := &env{tokens: map[string]string{}}
	reserve := engine.NewActivity("reserve", func(_ context.Context, in orderIn) (string, error) { return "r-" + in.Item, nil })
	charge := engine.NewActivity("charge", func(_ context.Context, in orderIn) (string, error) {
		if ev.failCharge.Load() {
			return "", engine.NewNonRetryableError("CardDeclined", "card declined for "+in.Item, nil)
		}
		ev.charged.Add(1)
		return "c-" + in.Item, nil
	}).WithOptions(engine.ActivityOptions{RetryPolicy: &engine.RetryPolicy{MaximumAttempts: 1}})
	order := engine.NewWorkflow("order", func(ctx engine.Context, in orderIn) (string, error) {
		if _, err := reserve.Run(ctx, in); err != nil {
			return "", err
		}
		if in.Wait {
			c, err := engine.GetSignalChannel[confirm](ctx, "confirm").Receive(ctx)
			if err != nil {
				return "", err
			}
			if !c.Approved {
				return "refused", nil
			}
		}
		return charge.Run(ctx, in)
	}).WithSignals(engine.DeclareSignal[confirm]("confirm", "the customer confirms (or refuses) the order"))
	release := engine.NewActivity("release", func(_ context.Context, reservation string) (string, error) {
		ev.released.Add(1)
		return "released " + reservation, nil
	})
	ic, err := cancel.New(cancel.Config{Compensations: []cancel.Compensation{
		cancel.Undo(reserve, release, func(_ orderIn, reservation string) string { return reservation }),
	}})
	require.NoError(t, err)
	ev.e = e
	if ev.e == nil {
		ev.e = testenv.Engine(t, &engine.Config{Interceptors: []engine.Interceptor{ic}})
	}
	require.NoError(t, ev.e.Register(reserve, charge, release, order))
	require.NoError(t, ic.Register(ev.e))
	require.NoError(t, api.Migrate(context.Background(), ev.e.DB(), ev.e.Schema()))
	cfg.Engine = ev.e
	srv, err := api.New(cfg) // registers the bulk workflow: before the workers
	require.NoError(t, err)
	ev.srv = srv
	testenv.Worker(t, ev.e, engine.WorkerConfig{})
	bw, err := srv.StartBulkWorker(context.Background())
	require.NoError(t, err)
	ev.bulkWorker = bw
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = bw.Stop(ctx)
	})
	ev.http = httptest.NewServer(srv.Handler())
	t.Cleanup(ev.http.Close)
	for _, n := range []api.NewToken{
		{Name: "ada", Role: api.RoleAdmin}, {Name: "oscar", Role: api.RoleOperator}, {Name: "vera", Role: api.RoleViewer},
		{Name: "acme-portal", Role: api.RoleCustomer, Customer: "acme"},
	} {
		_, secret, err := srv.Tokens().Create(context.Background(), n)
		require.NoError(t, err)
		ev.tokens[string(n.Role)] = secret
	}
	_, secret, err := srv.Tokens().Create(context.Background(), api.NewToken{Name: "globex-portal", Role: api.RoleCustomer, Customer: "globex"})
	require.NoError(t, err)
	ev.tokens["customer-other"] = secret
	return ev
}

// unregistered starts a second process's API over ev's database that
// registers no workflow (as graft server) and reads the published
// declarations afresh on every check; it returns that process's engine
// and a client of the API that sends the operator's token.
func (ev *env) unregistered(t *testing.T) (*engine.Engine, *api.ClientWithResponses) {
	t.Helper()
	e2 := testenv.Engine(t, &engine.Config{Schema: ev.e.Schema()})
	srv2, err := api.New(api.Config{Engine: e2})
	require.NoError(t, err)
	api.SetPublishedTTL(srv2, 0)
	h2 := httptest.NewServer(srv2.Handler())
	t.Cleanup(h2.Close)
	return e2, ev.clientOf(t, h2.URL, "operator")
}

// client returns a generated client that sends role's token.
func (ev *env) client(t *testing.T, role string) *api.ClientWithResponses {
	t.Helper()
	return ev.clientOf(t, ev.http.URL, role)
}

// clientOf returns a generated client of the server at url (over ev's
// schema) that sends role's token.
func (ev *env) clientOf(t *testing.T, url, role string) *api.ClientWithResponses {
	t.Helper()
	tok := ev.tokens[role]
	c, err := api.NewClientWithResponses(url, api.WithRequestEditorFn(func(_ context.Context, r *http.Request) error {
		r.Header.Set("Authorization", "Bearer "+tok)
		return nil
	}))
	require.NoError(t, err)
	return c
}

// start starts an order through the API as the operator and returns its ID.
func (ev *env) start(t *testing.T, id, customer string, in orderIn) string {
	t.Helper()
	b, _ := json.Marshal(in)
	res, err := ev.client(t, "operator").StartOperationWithResponse(testenv.Ctx(t, 10*time.Second), api.StartRequest{
		Kind: "order", Id: &id, Input: b, Customer: &customer, Reason: ptr("test")})
	require.NoError(t, err)
	require.Equal(t, http.StatusCreated, res.StatusCode(), string(res.Body))
	return id
}

// status returns the engine status of id's latest run.
func (ev *env) status(t *testing.T, id string) engine.Status {
	t.Helper()
	info, err := ev.e.Client().Describe(context.Background(), id)
	require.NoError(t, err)
	return info.Status
}

func (ev *env) waitFor(t *testing.T, id string, status engine.Status) {
	t.Helper()
	testenv.Eventually(t, 20*time.Second, func() bool { return ev.status(t, id) == status }, "%s to be %s (is %s)", id, status, ev.status(t, id))
}

func ptr[T any](v T) *T { return &v }
