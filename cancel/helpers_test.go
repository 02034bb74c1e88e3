package cancel_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/cancel"
	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/grafttest"
	"github.com/graftdev/graft/internal/testenv"
)

// The tests run a domain renewal, charge -> register -> notify, against a
// stand-in payment provider: a ledger table whose idempotency keys are UNIQUE,
// as a real provider's are. Every test has its own schema.

type ChargeIn struct {
	Op     string
	Amount int
}

type Charge struct{ ID int64 }

type RefundIn struct {
	Op       string
	ChargeID int64
	Amount   int
}

type Refund struct{ ID int64 }

type RegisterIn struct{ Op, Domain string }

type Registration struct {
	Op, Domain string
	ID         int64
}

type Mail struct{ Op, Kind string }

// Order is the renewal workflow's input.
type Order struct {
	ID     string
	Domain string
	Amount int
	// PauseAfter names a step ("charge", "register", "notify") after which
	// the workflow waits for the "resume" signal: a place to cancel between
	// steps.
	PauseAfter string
	// FailOnReject makes a permanent registry rejection fail the workflow
	// instead of aborting (self-cancelling) it.
	FailOnReject bool
}

// Workflow types: renewStrict is listed in CompensateOnFailure.
const (
	renewType       = "shop.renew"
	renewStrictType = "shop.renew_strict"
)

// provider is the outside world: the ledger, the registry and the mailer,
// plus the knobs tests turn.
type provider struct {
	db     *sqlx.DB
	schema string

	mu    sync.Mutex
	calls []string
	holds map[string]*hold

	refundDown      atomic.Bool // refunds fail while set
	rejectRegister  atomic.Bool // the registry rejects every domain for good
	hangAfterRefund bool        // the helper process hangs inside the refund, to be killed
	hangAfterCharge bool        // the helper process hangs inside the charge, to be killed
	// chargeThenCtxErr makes a charge whose context was cancelled go
	// through and then return the context's error, as a client library
	// that checks its context after the call would.
	chargeThenCtxErr atomic.Bool
}

// hold stops an activity at its start until released or cancelled.
type hold struct {
	started chan struct{}
	release chan struct{}
	// honour makes the activity fail when its context is cancelled; without
	// it the call "went out" and completes anyway.
	honour bool
	once   sync.Once
}

func newProvider(db *sqlx.DB, schema string) *provider {
	return &provider{db: db, schema: schema, holds: map[string]*hold{}}
}

func (p *provider) tbl(name string) string { return pq.QuoteIdentifier(p.schema) + "." + name }

func (p *provider) createTables(ctx context.Context) error {
	_, err := p.db.ExecContext(ctx, `
		CREATE TABLE IF NOT EXISTS `+p.tbl("ledger")+` (
			id bigserial PRIMARY KEY, op text NOT NULL, kind text NOT NULL CHECK (kind IN ('charge', 'refund')),
			amount int NOT NULL, charge_id bigint, idempotency_key text NOT NULL UNIQUE);
		CREATE TABLE IF NOT EXISTS `+p.tbl("refund_attempts")+` (
			id bigserial PRIMARY KEY, idempotency_key text NOT NULL, pid int NOT NULL);
		CREATE TABLE IF NOT EXISTS `+p.tbl("domains")+` (
			id bigserial PRIMARY KEY, op text NOT NULL, name text NOT NULL, status text NOT NULL,
			idempotency_key text NOT NULL UNIQUE);
		CREATE TABLE IF NOT EXISTS `+p.tbl("mails")+` (
			op text NOT NULL, kind text NOT NULL, idempotency_key text NOT NULL UNIQUE);
		CREATE TABLE IF NOT EXISTS `+p.tbl("operations")+` (
			id text PRIMARY KEY, status text NOT NULL, refund_ref bigint, problem text)`)
	return err
}

func (p *provider) note(call string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, call)
}

func (p *provider) callLog() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string{}, p.calls...)
}

func (p *provider) hold(name string, honour bool) *hold {
	h := &hold{started: make(chan struct{}), release: make(chan struct{}), honour: honour}
	p.mu.Lock()
	p.holds[name] = h
	p.mu.Unlock()
	return h
}

// pause blocks a held activity until its release or its cancellation.
func (p *provider) pause(ctx context.Context, name string) error {
	p.mu.Lock()
	h := p.holds[name]
	p.mu.Unlock()
	if h == nil {
		return nil
	}
	h.once.Do(func() { close(h.started) })
	select {
	case <-ctx.Done():
		p.note(name + ":ctx-cancelled")
		if h.honour {
			// It knows the call did not go out, and says so: a bare
			// ctx.Err() would leave the outcome of a compensable call
			// unknown, and the engine would run it again to find out.
			return errors.New(name + ": cancelled before the call went out")
		}
	case <-h.release:
	}
	return nil
}

// ledgerInsert records a ledger entry once per idempotency key and returns
// its ID, the existing one when the key was seen before.
func (p *provider) ledgerInsert(ctx context.Context, op, kind string, amount int, chargeID int64, key string) (int64, error) {
	var id int64
	err := p.db.QueryRowContext(context.WithoutCancel(ctx), `
		WITH ins AS (
			INSERT INTO `+p.tbl("ledger")+` (op, kind, amount, charge_id, idempotency_key) VALUES ($1, $2, $3, NULLIF($4, 0), $5)
			ON CONFLICT (idempotency_key) DO NOTHING RETURNING id)
		SELECT id FROM ins UNION ALL SELECT id FROM `+p.tbl("ledger")+` WHERE idempotency_key = $5 LIMIT 1`,
		op, kind, amount, chargeID, key).Scan(&id)
	return id, err
}

func (p *provider) charge(ctx context.Context, in ChargeIn) (Charge, error) {
	p.note("charge")
	if err := p.pause(ctx, "charge"); err != nil {
		return Charge{}, err
	}
	id, err := p.ledgerInsert(ctx, in.Op, "charge", in.Amount, 0, engine.ActivityInfoOf(ctx).IdempotencyKey)
	if err == nil && ctx.Err() != nil && p.chargeThenCtxErr.Load() {
		return Charge{}, ctx.Err()
	}
	if p.hangAfterCharge {
		fmt.Println("charged") // the parent kills this process now
		<-make(chan struct{})
	}
	return Charge{ID: id}, err
}

func (p *provider) refund(ctx context.Context, in RefundIn) (Refund, error) {
	p.note("refund")
	if ctx.Err() != nil {
		p.note("refund:ctx-cancelled")
	}
	key := cancel.IdempotencyKey(ctx)
	if _, err := p.db.ExecContext(ctx, `INSERT INTO `+p.tbl("refund_attempts")+` (idempotency_key, pid) VALUES ($1, $2)`,
		key, os.Getpid()); err != nil {
		return Refund{}, err
	}
	if p.refundDown.Load() {
		return Refund{}, errors.New("payment provider unavailable")
	}
	if err := p.pause(ctx, "refund"); err != nil {
		return Refund{}, err
	}
	id, err := p.ledgerInsert(ctx, in.Op, "refund", in.Amount, in.ChargeID, key)
	if p.hangAfterRefund {
		fmt.Println("refunded") // the parent kills this process now
		<-make(chan struct{})
	}
	return Refund{ID: id}, err
}

func (p *provider) register(ctx context.Context, in RegisterIn) (Registration, error) {
	p.note("register")
	if err := p.pause(ctx, "register"); err != nil {
		return Registration{}, err
	}
	if p.rejectRegister.Load() {
		return Registration{}, engine.NewNonRetryableError("RegistryRejected", "the registry refuses "+in.Domain+" for good", nil)
	}
	var id int64
	err := p.db.QueryRowContext(context.WithoutCancel(ctx), `
		INSERT INTO `+p.tbl("domains")+` (op, name, status, idempotency_key) VALUES ($1, $2, 'active', $3)
		ON CONFLICT (idempotency_key) DO UPDATE SET name = EXCLUDED.name RETURNING id`,
		in.Op, in.Domain, engine.ActivityInfoOf(ctx).IdempotencyKey).Scan(&id)
	return Registration{Op: in.Op, Domain: in.Domain, ID: id}, err
}

func (p *provider) unregister(ctx context.Context, r Registration) (struct{}, error) {
	p.note("unregister")
	_, err := p.db.ExecContext(ctx, `UPDATE `+p.tbl("domains")+` SET status = 'released' WHERE id = $1`, r.ID)
	return struct{}{}, err
}

func (p *provider) mail(kind string) func(ctx context.Context, m Mail) (struct{}, error) {
	return func(ctx context.Context, m Mail) (struct{}, error) {
		p.note(kind)
		if err := p.pause(ctx, kind); err != nil {
			return struct{}{}, err
		}
		_, err := p.db.ExecContext(context.WithoutCancel(ctx), `INSERT INTO `+p.tbl("mails")+` (op, kind, idempotency_key)
			VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`, m.Op, m.Kind, cancel.IdempotencyKey(ctx))
		return struct{}{}, err
	}
}

// mirror stands in for the sync package: it keeps a legacy operations row in
// step, in the checkpoint transaction.
func (p *provider) mirror(ctx context.Context, tx engine.CheckpointTx, events []*engine.CheckpointEvent) error {
	ops := p.tbl("operations")
	for _, ev := range events {
		var err error
		switch r, isReport := cancel.ReportFromEvent(ev); {
		case isReport && r.Outcome == cancel.OutcomeNeedsOperator:
			_, err = tx.ExecContext(ctx, `UPDATE `+ops+` SET status = 'needs_operator', problem = $2 WHERE id = $1`,
				ev.WorkflowID, r.Problem().Error())
		case isReport:
			_, err = tx.ExecContext(ctx, `UPDATE `+ops+` SET status = 'cancelling', problem = NULL WHERE id = $1`, ev.WorkflowID)
		case ev.Kind == engine.CheckpointActivityCompleted && ev.ActivityName == "shop.refund":
			if ref, ok := ev.Result.(Refund); ok {
				_, err = tx.ExecContext(ctx, `UPDATE `+ops+` SET refund_ref = $2 WHERE id = $1`, ev.WorkflowID, ref.ID)
			}
		case ev.Kind == engine.CheckpointWorkflowClosed:
			_, err = tx.ExecContext(ctx, `UPDATE `+ops+` SET status = $2 WHERE id = $1`, ev.WorkflowID, ev.Status)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// shop holds the definitions.
type shop struct {
	charge                  *engine.Activity[ChargeIn, Charge]
	refundAct               *engine.Activity[RefundIn, Refund]
	register                *engine.Activity[RegisterIn, Registration]
	unregister              *engine.Activity[Registration, struct{}]
	notify, notifyCancelled *engine.Activity[Mail, struct{}]
	renew, renewStrict      *engine.Workflow[Order, string]
	ic                      *cancel.Interceptor
}

func newShop(p *provider) (*shop, error) {
	s := &shop{
		charge:          engine.NewActivity("shop.charge", p.charge),
		refundAct:       engine.NewActivity("shop.refund", p.refund),
		register:        engine.NewActivity("shop.register", p.register),
		unregister:      engine.NewActivity("shop.unregister", p.unregister),
		notify:          engine.NewActivity("shop.notify", p.mail("notify")),
		notifyCancelled: engine.NewActivity("shop.notify_cancelled", p.mail("notify_cancelled")),
	}
	s.renew = engine.NewWorkflow(renewType, s.run)
	s.renewStrict = engine.NewWorkflow(renewStrictType, s.run)
	ic, err := cancel.New(cancel.Config{
		Compensations: []cancel.Compensation{
			cancel.Undo(s.charge, s.refundAct, func(in ChargeIn, out Charge) RefundIn {
				return RefundIn{Op: in.Op, ChargeID: out.ID, Amount: in.Amount}
			}),
			cancel.Undo(s.register, s.unregister, func(_ RegisterIn, out Registration) Registration { return out }),
		},
		CompensateOnFailure: []string{renewStrictType},
		ActivityOptions: &engine.ActivityOptions{StartToCloseTimeout: 10 * time.Second,
			RetryPolicy: &engine.RetryPolicy{InitialInterval: 10 * time.Millisecond, MaximumAttempts: 3}},
	})
	s.ic = ic
	return s, err
}

// interceptors puts cancel outside the mirror, as DESIGN.md orders the chain.
func (s *shop) interceptors(p *provider) []engine.Interceptor {
	return []engine.Interceptor{s.ic, engine.CheckpointInterceptorFunc(p.mirror)}
}

func (s *shop) defs() []engine.Definition {
	return []engine.Definition{s.charge, s.refundAct, s.register, s.unregister, s.notify, s.notifyCancelled, s.renew, s.renewStrict}
}

// run is the renewal: the business, and nothing about refunds but the one
// ad hoc compensation (a "sorry, cancelled" mail owed once the renewal mail
// went out).
func (s *shop) run(ctx engine.Context, o Order) (string, error) {
	ch, err := s.charge.Run(ctx, ChargeIn{Op: o.ID, Amount: o.Amount})
	if err != nil {
		return "", err
	}
	if err := pauseAfter(ctx, o, "charge"); err != nil {
		return "", err
	}
	reg, err := s.register.Run(ctx, RegisterIn{Op: o.ID, Domain: o.Domain})
	var app *engine.ApplicationError
	if errors.As(err, &app) && app.Type == "RegistryRejected" && !o.FailOnReject {
		return "", cancel.Abort(ctx, "registry rejected "+o.Domain)
	}
	if err != nil {
		return "", err
	}
	if err := pauseAfter(ctx, o, "register"); err != nil {
		return "", err
	}
	if _, err := s.notify.Run(ctx, Mail{Op: o.ID, Kind: "renewed"}); err != nil {
		return "", err
	}
	if err := cancel.Add(ctx, s.notifyCancelled, Mail{Op: o.ID, Kind: "cancelled"}, nil); err != nil {
		return "", err
	}
	if err := pauseAfter(ctx, o, "notify"); err != nil {
		return "", err
	}
	return fmt.Sprintf("renewed %s (charge %d, registration %d)", o.Domain, ch.ID, reg.ID), nil
}

func pauseAfter(ctx engine.Context, o Order, step string) error {
	if o.PauseAfter != step {
		return nil
	}
	_, err := engine.GetSignalChannel[struct{}](ctx, "resume").Receive(ctx)
	return err
}

// buildEngine creates an engine on cfg's schema with the shop, the cancel
// interceptor and the mirror; the caller migrates and starts workers.
func buildEngine(cfg engine.Config, p *provider) (*engine.Engine, *shop, error) {
	s, err := newShop(p)
	if err != nil {
		return nil, nil, err
	}
	cfg.Interceptors = s.interceptors(p)
	e, err := engine.New(cfg)
	if err != nil {
		return nil, nil, err
	}
	if err := e.Register(s.defs()...); err != nil {
		return nil, nil, err
	}
	if err := s.ic.Register(e); err != nil {
		return nil, nil, err
	}
	return e, s, nil
}

// env is one test's engine, client, provider and definitions.
type env struct {
	t      *testing.T
	e      *engine.Engine
	c      *engine.Client
	p      *provider
	s      *shop
	schema string
}

type envOptions struct {
	// Schema is an existing schema to use; default a new one.
	Schema string
	// NoWorker leaves starting workers to the test.
	NoWorker    bool
	LeaseTTL    time.Duration
	UnloadAfter time.Duration
}

func newEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	if o.Schema == "" {
		o.Schema = grafttest.Schema(t)
	}
	p := newProvider(grafttest.DB(t), o.Schema)
	s, err := newShop(p)
	require.NoError(t, err)
	e := grafttest.NewEngine(t, engine.Config{Schema: o.Schema, LeaseTTL: o.LeaseTTL, UnloadAfter: o.UnloadAfter,
		PollInterval: 50 * time.Millisecond, Interceptors: s.interceptors(p)})
	require.NoError(t, e.Register(s.defs()...))
	require.NoError(t, s.ic.Register(e))
	require.NoError(t, p.createTables(context.Background()))
	if !o.NoWorker {
		grafttest.StartWorker(t, e)
	}
	return &env{t: t, e: e, c: e.Client(), p: p, s: s, schema: o.Schema}
}

// start inserts the legacy row and starts the renewal.
func (v *env) start(wf *engine.Workflow[Order, string], o Order, opts *engine.StartOptions) *engine.Run[string] {
	v.t.Helper()
	ctx := grafttest.Context(v.t, 10*time.Second)
	_, err := v.p.db.ExecContext(ctx, `INSERT INTO `+v.p.tbl("operations")+` (id, status) VALUES ($1, 'processing')`, o.ID)
	require.NoError(v.t, err)
	if opts == nil {
		opts = &engine.StartOptions{}
	}
	opts.ID = o.ID
	run, err := wf.Start(ctx, v.c, o, opts)
	require.NoError(v.t, err)
	return run
}

// waitCompleted waits until the run's step of that activity has completed.
func (v *env) waitCompleted(id, activity string) {
	v.t.Helper()
	testenv.Eventually(v.t, 20*time.Second, func() bool {
		h, err := v.c.History(context.Background(), id)
		if err != nil {
			return false
		}
		for _, st := range h[len(h)-1].Steps {
			if st.Kind == "activity" && st.Name == activity && st.Status == "completed" {
				return true
			}
		}
		return false
	}, "%s: activity %s never completed", id, activity)
}

// waitOutcome waits until the run's report has the outcome.
func (v *env) waitOutcome(id string, want cancel.Outcome) cancel.Report {
	v.t.Helper()
	var last cancel.Report
	testenv.Eventually(v.t, 20*time.Second, func() bool {
		r, err := cancel.Status(context.Background(), v.c, id)
		last = r
		return err == nil && r.Outcome == want
	}, "%s never reached outcome %q (last %+v)", id, want, last)
	return last
}

func (v *env) report(id string) cancel.Report {
	v.t.Helper()
	r, err := cancel.Status(grafttest.Context(v.t, 10*time.Second), v.c, id)
	require.NoError(v.t, err)
	return r
}

// ledger counts an operation's ledger entries by kind.
func (v *env) ledger(op string) (charges, refunds int) {
	v.t.Helper()
	err := v.p.db.QueryRowContext(context.Background(), `SELECT count(*) FILTER (WHERE kind = 'charge'),
		count(*) FILTER (WHERE kind = 'refund') FROM `+v.p.tbl("ledger")+` WHERE op = $1`, op).Scan(&charges, &refunds)
	require.NoError(v.t, err)
	return charges, refunds
}

// legacy reads the mirrored legacy operations row.
func (v *env) legacy(op string) (status string, refundRef *int64, problem *string) {
	v.t.Helper()
	err := v.p.db.QueryRowContext(context.Background(), `SELECT status, refund_ref, problem FROM `+v.p.tbl("operations")+
		` WHERE id = $1`, op).Scan(&status, &refundRef, &problem)
	require.NoError(v.t, err)
	return status, refundRef, problem
}

// undoStatuses lists a report's steps as "undo:status", in run order.
func undoStatuses(r cancel.Report) []string {
	out := []string{}
	for _, s := range r.Steps {
		out = append(out, s.Undo+":"+string(s.Status))
	}
	return out
}

// requireCanceled asserts err is the run's cancellation with reason.
func requireCanceled(t *testing.T, err error, reason string) {
	t.Helper()
	var ce *engine.CanceledError
	require.True(t, errors.As(err, &ce), "want a cancellation, got %T: %v", err, err)
	require.Equal(t, reason, ce.Reason)
}
