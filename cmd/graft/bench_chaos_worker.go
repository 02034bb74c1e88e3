package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/jmoiron/sqlx"
	noopmetric "go.opentelemetry.io/otel/metric/noop"

	"github.com/graftdev/graft/cancel"
	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/ratelimit"
	graftsync "github.com/graftdev/graft/sync"
)

// The chaos scenario's worker processes are this binary run again as
// `graft bench -scenario chaos-worker`, configured through these variables
// (besides GRAFT_DATABASE_URL and GRAFT_REDIS_URL, which name the driver's
// private servers).
const (
	chaosEnvProvider = "GRAFT_CHAOS_PROVIDER" // the fake provider's base URL
	chaosEnvConc     = "GRAFT_CHAOS_LIMIT_CONCURRENCY"
	chaosEnvRate     = "GRAFT_CHAOS_LIMIT_RATE"
	// chaosEnvWorkerID names a worker slot: the process restarted in a
	// killed one's slot takes over its runs at once (WorkerConfig.ID).
	chaosEnvWorkerID = "GRAFT_CHAOS_WORKER_ID"
)

// The chaos scenario's names and timings.
const (
	chaosSchema = "chaos" // the ledger and the legacy table
	chaosKey    = "registry"
	// chaosLimiterTTL is the limiter's lease: a killed worker's slots come
	// back this long after. The engine keeps its default lease (15s): with
	// 5s, a loaded 2-core machine with thousands of runs loaded per worker
	// lost leases (renewals timed out) faster than it made progress.
	chaosLimiterTTL = 5 * time.Second
	chaosPrefix     = "graft:chaos"
)

// ChaosOrder is one renewal: charge, maybe wait, renew at the registry.
type ChaosOrder struct {
	Op     string
	Amount int
	// Wait is a durable timer between the charge and the renewal; zero for
	// most orders.
	Wait time.Duration
}

// ChaosCharge is the ledger row of a charge.
type ChaosCharge struct{ ID int64 }

// ChaosRefundIn is the refund of one charge.
type ChaosRefundIn struct {
	Op       string
	ChargeID int64
	Amount   int
}

// chaosDefs are the scenario's definitions, shared by the driver (which
// starts the workflows) and the workers (which run them).
type chaosDefs struct {
	charge *engine.Activity[ChaosOrder, ChaosCharge]
	refund *engine.Activity[ChaosRefundIn, ChaosCharge]
	renew  *engine.Activity[ChaosOrder, string]
	order  *engine.Workflow[ChaosOrder, string]
	ic     *cancel.Interceptor
}

// newChaosDefs declares the renewal against db's ledger and the provider at
// base (both nil/empty in the driver, which never runs activities).
func newChaosDefs(db *sqlx.DB, hc *http.Client, base string) (*chaosDefs, error) {
	d := &chaosDefs{}
	// The charge gives up when the operation is cancelled mid-call, as a
	// plain client would, even after the provider booked it: the engine
	// treats a compensable call cut short that way as possibly done and
	// runs it again under the same idempotency key, so cancel refunds it.
	d.charge = engine.NewActivity("chaos.charge", func(ctx context.Context, o ChaosOrder) (ChaosCharge, error) {
		id, err := chaosLedger(ctx, db, o.Op, "charge", o.Amount, 0, engine.ActivityInfoOf(ctx).IdempotencyKey)
		return ChaosCharge{ID: id}, err
	})
	d.refund = engine.NewActivity("chaos.refund", func(ctx context.Context, in ChaosRefundIn) (ChaosCharge, error) {
		id, err := chaosLedger(context.WithoutCancel(ctx), db, in.Op, "refund", in.Amount, in.ChargeID, cancel.IdempotencyKey(ctx))
		return ChaosCharge{ID: id}, err
	})
	d.renew = engine.NewActivity("chaos.renew", func(ctx context.Context, o ChaosOrder) (string, error) {
		q := url.Values{"id": {engine.ActivityInfoOf(ctx).IdempotencyKey}, "op": {o.Op}}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"?"+q.Encode(), nil)
		if err != nil {
			return "", err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("registry: %s", resp.Status)
		}
		return "renewed", nil
	})
	d.order = engine.NewWorkflow("chaos.renewal", func(ctx engine.Context, o ChaosOrder) (string, error) {
		if _, err := d.charge.Run(ctx, o); err != nil {
			return "", err
		}
		if o.Wait > 0 {
			if err := engine.Sleep(ctx, o.Wait); err != nil {
				return "", err
			}
		}
		return d.renew.Run(ctx, o)
	})
	ic, err := cancel.New(cancel.Config{
		Compensations: []cancel.Compensation{
			cancel.Undo(d.charge, d.refund, func(o ChaosOrder, ch ChaosCharge) ChaosRefundIn {
				return ChaosRefundIn{Op: o.Op, ChargeID: ch.ID, Amount: o.Amount}
			}),
		},
	})
	d.ic = ic
	return d, err
}

func (d *chaosDefs) all() []engine.Definition {
	return []engine.Definition{d.charge, d.refund, d.renew, d.order}
}

// chaosLedger books a charge or refund once per idempotency key, as a
// payment provider does, and returns its row's ID.
func chaosLedger(ctx context.Context, db *sqlx.DB, op, kind string, amount int, chargeID int64, key string) (int64, error) {
	var id int64
	err := db.QueryRowContext(ctx, `
		WITH ins AS (
			INSERT INTO chaos.ledger (op, kind, amount, charge_id, idempotency_key) VALUES ($1, $2, $3, NULLIF($4, 0), $5)
			ON CONFLICT (idempotency_key) DO NOTHING RETURNING id)
		SELECT id FROM ins UNION ALL SELECT id FROM chaos.ledger WHERE idempotency_key = $5 LIMIT 1`,
		op, kind, amount, chargeID, key).Scan(&id)
	return id, err
}

// chaosDDL is the ledger (the payment provider's books) and, from the
// mirror scenario, the legacy operations table the workflows mirror into.
var chaosDDL = fmt.Sprintf(mirrorDDL, chaosSchema) + `
CREATE TABLE chaos.ledger (
	id bigserial PRIMARY KEY, op text NOT NULL, kind text NOT NULL CHECK (kind IN ('charge', 'refund')),
	amount int NOT NULL, charge_id bigint, idempotency_key text NOT NULL UNIQUE,
	at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE INDEX ON chaos.ledger (op);`

// chaosMapping maps the renewal's state onto chaos.operations.
func chaosMapping() graftsync.Mapping {
	m := benchMapping(chaosSchema + ".operations")
	m.Step = &graftsync.StepColumn{Column: "step", Labels: map[string]string{
		"chaos.charge": "charge", "chaos.renew": "renew", "chaos.refund": "refund"}}
	return m
}

// chaosLegacyStatus is what the legacy table must show for a closed run.
var chaosLegacyStatus = map[engine.Status]string{
	engine.StatusCompleted: "done", engine.StatusCancelled: "cancelled", engine.StatusFailed: "error",
}

// chaosEngineConfig is the engine configuration of drivers and workers.
func chaosEngineConfig(db *sqlx.DB, logger *slog.Logger, interceptors ...engine.Interceptor) engine.Config {
	return engine.Config{DB: db, DatabaseURL: databaseURL(), Logger: logger,
		PollInterval: 500 * time.Millisecond, Interceptors: interceptors}
}

// benchChaosWorker is one worker process of the chaos scenario: it runs
// until its stdin closes (the driver ended) or it is killed.
func benchChaosWorker() error {
	ctx := context.Background()
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	db, err := openDB(40)
	if err != nil {
		return err
	}
	rc, err := openRedis(ctx)
	if err != nil {
		return err
	}
	conc, _ := strconv.Atoi(os.Getenv(chaosEnvConc))
	rate, _ := strconv.ParseFloat(os.Getenv(chaosEnvRate), 64)
	limits := providerLimits(conc, rate)
	limits.LeaseTTL = chaosLimiterTTL
	lim, err := ratelimit.NewRedisLimiter(rc, ratelimit.RedisConfig{
		Limits: ratelimit.StaticLimits(limits), Prefix: chaosPrefix, MeterProvider: noopmetric.NewMeterProvider(),
	})
	if err != nil {
		return err
	}
	rl, err := ratelimit.NewActivityInterceptor(ratelimit.InterceptorConfig{
		Limiter: lim, Key: ratelimit.KeyByActivity(map[string]string{"chaos.renew": chaosKey}), Logger: logger,
	})
	if err != nil {
		return err
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	defs, err := newChaosDefs(db, hc, os.Getenv(chaosEnvProvider))
	if err != nil {
		return err
	}
	mr, err := graftsync.New(ctx, graftsync.Config{Mapping: chaosMapping(), DB: db, Schema: chaosSchema})
	if err != nil {
		return err
	}
	// DESIGN.md's order: ratelimit, then cancel, then the mirror innermost.
	e, err := engine.New(chaosEngineConfig(db, logger, rl, defs.ic, mr))
	if err != nil {
		return err
	}
	if err := e.Register(defs.all()...); err != nil {
		return err
	}
	if err := defs.ic.Register(e); err != nil {
		return err
	}
	if err := mr.Start(ctx, e.Client()); err != nil {
		return err
	}
	if err := serveWorker(ctx, e, engine.WorkerConfig{ID: os.Getenv(chaosEnvWorkerID)}); err != nil {
		return err
	}
	mr.Close()
	return e.Close()
}

// serveWorker runs a worker of e until this process's stdin closes (the
// driver is done; a kill needs no cleanup), then stops it. It prints
// "ready" once the worker claims work.
func serveWorker(ctx context.Context, e *engine.Engine, cfg engine.WorkerConfig) error {
	w, err := e.NewWorker(cfg)
	if err != nil {
		return err
	}
	if err := w.Start(ctx); err != nil {
		return err
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, bufio.NewReader(os.Stdin))
	sctx, cancelStop := context.WithTimeout(ctx, 5*time.Second)
	defer cancelStop()
	_ = w.Stop(sctx)
	return nil
}
