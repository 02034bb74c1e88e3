package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/pgproc"
)

// The chaos scenario's load: the share of operations cancelled, the share
// that wait on a durable timer, and how long an operation may take before
// the run gives up on it.
const (
	chaosDefaultConcurrency = 16
	chaosDefaultRate        = 300
	chaosCancelShare        = 0.10
	chaosTimerShare         = 0.20
	chaosMaxCancelAt        = 2 * time.Second
	// chaosPatience is how long the run waits with nothing closing before
	// it gives up and counts the open runs as lost: three times the
	// longest a rate limiter sends an attempt away when the provider's
	// backlog is deep (a minute), so that a backlog's last runs, sent away
	// while the others drained it, are not counted lost while they wait.
	chaosPatience = 3 * time.Minute
)

// chaosProvider is the fake registry: the provider scenario's fakeProvider
// (which counts concurrency and rate violations), plus a record of which
// idempotency keys renewed each operation, so that a renewal done twice
// under two keys is seen.
type chaosProvider struct {
	fp *fakeProvider

	mu   sync.Mutex
	keys map[string]map[string]struct{} // op -> idempotency keys
}

func (p *chaosProvider) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	op, id := r.URL.Query().Get("op"), r.URL.Query().Get("id")
	p.mu.Lock()
	if p.keys[op] == nil {
		p.keys[op] = map[string]struct{}{}
	}
	p.keys[op][id] = struct{}{}
	p.mu.Unlock()
	p.fp.ServeHTTP(w, r)
}

// renewedTwice counts operations renewed under more than one key.
func (p *chaosProvider) renewedTwice() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, ks := range p.keys {
		if len(ks) > 1 {
			n++
		}
	}
	return n
}

// chaosCounts are the fault and outcome counters of one run.
type chaosCounts struct {
	kills, pgRestarts, redisRestarts, terminated, cancels atomic.Int64
}

// benchChaos runs the chaos scenario and prints its summary.
func benchChaos(o benchOpts) error {
	s, err := runChaos(o)
	if err != nil {
		return err
	}
	fmt.Print(s.details, s.line)
	return nil
}

// chaosSummary is a chaos run's result: its books, and the lines it prints.
type chaosSummary struct {
	chaosResult
	kills, pgRestarts, violations int64
	details, line                 string
}

// runChaos runs the chaos scenario: o.workers worker processes over o.n
// renewals, on a PostgreSQL and a Redis of its own, with (o.faults) or
// without faults, and checks the books at the end. See README.md.
func runChaos(o benchOpts) (sum chaosSummary, err error) {
	if o.workers <= 0 {
		return sum, errors.New("bench: -workers must be positive")
	}
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "graft-chaos-")
	if err != nil {
		return sum, err
	}
	defer func() {
		if err == nil && !o.keep {
			_ = os.RemoveAll(dir)
		} else {
			fmt.Fprintf(os.Stderr, "bench: chaos: logs kept in %s\n", dir)
		}
	}()
	pg, err := pgproc.Start(pgproc.Config{MaxConnections: 400})
	if err != nil {
		return sum, err
	}
	if o.keep {
		// For a post-mortem: the server stays up; stop it with pg_ctl.
		fmt.Fprintf(os.Stderr, "bench: chaos: -keep: PostgreSQL stays up at %s (pid in %s)\n", pg.URL, pg.DataDir())
	} else {
		defer pg.Close()
	}
	rs, err := startRedis(dir)
	if err != nil {
		return sum, err
	}
	defer rs.kill()
	// The workers, and this process's own engine, use the private servers.
	env := []string{"GRAFT_DATABASE_URL=" + pg.URL, "GRAFT_REDIS_URL=" + rs.URL}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		_ = os.Setenv(k, v)
	}
	// The driver's connections are named, so that backend terminations
	// spare it: it plays the legacy application and the operators.
	db, err := engine.OpenDB(pg.URL + "&application_name=chaos-driver")
	if err != nil {
		return sum, err
	}
	db.SetMaxOpenConns(40)
	defer db.Close()
	defs, err := newChaosDefs(nil, nil, "")
	if err != nil {
		return sum, err
	}
	e, err := engine.New(chaosEngineConfig(db, slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		return sum, err
	}
	defer e.Close()
	if err := e.Migrate(ctx); err != nil {
		return sum, err
	}
	if err := e.Register(defs.all()...); err != nil {
		return sum, err
	}
	if _, err := db.ExecContext(ctx, chaosDDL); err != nil {
		return sum, err
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO chaos.operations (id) SELECT 'op-' || g FROM generate_series(0, $1 - 1) g`, o.n); err != nil {
		return sum, err
	}

	prov := &chaosProvider{fp: newFakeProvider(o.limitConc, o.limitRate), keys: map[string]map[string]struct{}{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return sum, err
	}
	srv := &http.Server{Handler: prov, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	env = append(env, chaosEnvProvider+"=http://"+ln.Addr().String()+"/renew",
		chaosEnvConc+"="+strconv.Itoa(o.limitConc), chaosEnvRate+"="+strconv.FormatFloat(o.limitRate, 'g', -1, 64))

	logf, err := os.Create(filepath.Join(dir, "workers.log"))
	if err != nil {
		return sum, err
	}
	defer logf.Close()
	ws := &chaosWorkers{env: env, log: logf, procs: make([]*chaosWorkerProc, o.workers)}
	for i := range o.workers {
		if err := ws.spawn(i); err != nil {
			return sum, err
		}
	}
	defer ws.stopAll()
	for _, p := range ws.procs {
		select {
		case <-p.ready:
		case <-p.done:
			return sum, fmt.Errorf("bench: a chaos worker exited at start; see %s", logf.Name())
		case <-time.After(time.Minute):
			return sum, errors.New("bench: a chaos worker did not start within a minute")
		}
	}

	var counts chaosCounts
	var closed atomic.Int64
	start := time.Now()
	stopFaults := make(chan struct{})
	var faults sync.WaitGroup
	if o.faults {
		faults.Go(func() { ws.killLoop(stopFaults, &counts) })
		faults.Go(func() { chaosTerminateLoop(db, stopFaults, &counts) })
		faults.Go(func() { chaosRestarts(pg, rs, o.n, &closed, stopFaults, &counts) })
	}

	c := e.Client()
	rng := mrand.New(mrand.NewPCG(uint64(time.Now().UnixNano()), 7))
	orders := make([]ChaosOrder, o.n)
	cancelAt := make([]time.Duration, o.n) // 0: not cancelled
	for i := range orders {
		orders[i] = ChaosOrder{Op: "op-" + strconv.Itoa(i), Amount: 100 + i%900}
		if rng.Float64() < chaosTimerShare {
			orders[i].Wait = time.Duration(200+rng.IntN(1800)) * time.Millisecond
		}
		if rng.Float64() < chaosCancelShare {
			cancelAt[i] = time.Duration(1 + rng.Int64N(int64(chaosMaxCancelAt)))
		}
	}
	var cancels sync.WaitGroup
	failed, firstErr := fanOut(o.n, 32, func(ctx context.Context, i int) error {
		err := retry(ctx, func() error {
			_, err := defs.order.Start(ctx, c, orders[i], &engine.StartOptions{ID: orders[i].Op})
			if errors.Is(err, engine.ErrAlreadyStarted) {
				return nil // a start whose answer was lost did happen
			}
			return err
		})
		if err == nil && cancelAt[i] > 0 {
			cancels.Go(func() {
				time.Sleep(cancelAt[i]) // a random moment in the operation's life
				err := retry(ctx, func() error {
					err := c.Cancel(ctx, orders[i].Op, "chaos: customer cancelled")
					if errors.Is(err, engine.ErrNotRunning) {
						return errNoRetry // it completed first
					}
					return err
				})
				if err == nil {
					counts.cancels.Add(1)
				}
			})
		}
		return err
	})
	if failed > 0 {
		return sum, fmt.Errorf("bench: %d workflows could not be started; first: %w", failed, firstErr)
	}
	cancels.Wait()

	// Wait for every run to close; give up when nothing has closed for
	// chaosPatience.
	last, lastMove := int64(-1), time.Now()
	for {
		var n int64
		if err := db.GetContext(ctx, &n, `SELECT count(*) FROM graft.runs WHERE workflow_type = 'chaos.renewal'
			AND status IN ('completed', 'cancelled', 'failed')`); err == nil {
			closed.Store(n)
			if n != last {
				last, lastMove = n, time.Now()
			}
		}
		if last == int64(o.n) || time.Since(lastMove) > chaosPatience {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	elapsed := time.Since(start)
	close(stopFaults)
	faults.Wait()

	// The mirror's relay may still be delivering; give it a while.
	var r chaosResult
	for end := time.Now().Add(30 * time.Second); ; {
		if r, err = chaosCheck(ctx, db, o.n); err != nil {
			return sum, err
		}
		if r.mirrorMismatches == 0 || time.Now().After(end) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	r.renewedTwice = prov.renewedTwice()
	st := prov.fp.stats()
	sum = chaosSummary{chaosResult: r, kills: counts.kills.Load(), pgRestarts: counts.pgRestarts.Load(), violations: int64(st.violations)}
	sum.details = fmt.Sprintf("chaos details: completed=%d cancelled=%d failed=%d cancel_requests=%d redis_restarts=%d backends_terminated=%d "+
		"charged_twice=%d refunded_twice=%d renewed_twice=%d refunds_of_completed=%d completed_without_effects=%d "+
		"provider_calls=%d max_in_flight=%d max_starts_per_s=%d\n",
		r.completed, r.cancelled, r.failed, counts.cancels.Load(), counts.redisRestarts.Load(), counts.terminated.Load(),
		r.chargedTwice, r.refundedTwice, r.renewedTwice, r.refundsOfCompleted, r.completedWithoutEffects,
		st.calls, st.maxInFlight, st.maxStartsPerSec)
	sum.line = fmt.Sprintf("chaos n=%d workers=%d kills=%d pg_restarts=%d lost=%d duplicate_effects=%d missing_refunds=%d mirror_mismatches=%d limit_violations=%d elapsed_s=%.1f\n",
		o.n, o.workers, sum.kills, sum.pgRestarts, r.lost, r.duplicates(),
		r.missingRefunds, r.mirrorMismatches, st.violations, elapsed.Seconds())
	return sum, nil
}

// chaosResult is what the books say at the end.
type chaosResult struct {
	completed, cancelled, failed int
	// lost: operations whose run never closed.
	lost int
	// The effects done twice: two charges or two refunds booked for one
	// operation (under two idempotency keys; one key books once), or one
	// renewal done under two keys.
	chargedTwice, refundedTwice, renewedTwice int
	// missingRefunds: cancelled operations charged and not refunded.
	missingRefunds int
	// refundsOfCompleted: completed operations that were refunded anyway.
	refundsOfCompleted int
	// completedWithoutEffects: completed operations never charged.
	completedWithoutEffects int
	// mirrorMismatches: operations whose legacy row does not show their
	// run's final state.
	mirrorMismatches int
}

// duplicates is the summary's duplicate_effects.
func (r chaosResult) duplicates() int { return r.chargedTwice + r.refundedTwice + r.renewedTwice }

func chaosCheck(ctx context.Context, db *sqlx.DB, n int) (chaosResult, error) {
	var r chaosResult
	err := db.QueryRowxContext(ctx, `
		WITH runs AS (
			SELECT DISTINCT ON (workflow_id) workflow_id, status FROM graft.runs
			WHERE workflow_type = 'chaos.renewal' ORDER BY workflow_id, created_at DESC),
		books AS (
			SELECT op, count(*) FILTER (WHERE kind = 'charge') AS charges, count(*) FILTER (WHERE kind = 'refund') AS refunds
			FROM chaos.ledger GROUP BY op),
		ops AS (
			SELECT o.id, o.status AS legacy, r.status, coalesce(b.charges, 0) AS charges, coalesce(b.refunds, 0) AS refunds
			FROM chaos.operations o LEFT JOIN runs r ON r.workflow_id = o.id LEFT JOIN books b ON b.op = o.id)
		SELECT
			count(*) FILTER (WHERE status = 'completed'),
			count(*) FILTER (WHERE status = 'cancelled'),
			count(*) FILTER (WHERE status = 'failed'),
			count(*) FILTER (WHERE status IS NULL OR status NOT IN ('completed', 'cancelled', 'failed')),
			count(*) FILTER (WHERE charges > 1),
			count(*) FILTER (WHERE refunds > 1),
			count(*) FILTER (WHERE status = 'cancelled' AND charges > 0 AND refunds = 0),
			count(*) FILTER (WHERE status = 'completed' AND refunds > 0),
			count(*) FILTER (WHERE status = 'completed' AND charges = 0),
			count(*) FILTER (WHERE status IN ('completed', 'cancelled', 'failed') AND legacy IS DISTINCT FROM
				CASE status WHEN 'completed' THEN $1 WHEN 'cancelled' THEN $2 ELSE $3 END)
		FROM ops`,
		chaosLegacyStatus[engine.StatusCompleted], chaosLegacyStatus[engine.StatusCancelled], chaosLegacyStatus[engine.StatusFailed],
	).Scan(&r.completed, &r.cancelled, &r.failed, &r.lost, &r.chargedTwice, &r.refundedTwice, &r.missingRefunds,
		&r.refundsOfCompleted, &r.completedWithoutEffects, &r.mirrorMismatches)
	if err != nil {
		return r, fmt.Errorf("bench: chaos check: %w", err)
	}
	return r, nil
}

// chaosWorkers are the worker subprocesses, one slot each.
type chaosWorkers struct {
	env []string
	log io.Writer

	mu    sync.Mutex
	procs []*chaosWorkerProc
}

func (ws *chaosWorkers) spawn(i int) error {
	// The slot's worker ID is stable: a replacement is never started before
	// the killed process is gone (kill waits), so no two share it.
	env := append(ws.env[:len(ws.env):len(ws.env)], fmt.Sprintf("%s=chaos-worker-%d", chaosEnvWorkerID, i))
	p, err := spawnChaosWorker(env, ws.log)
	if err != nil {
		return err
	}
	ws.mu.Lock()
	ws.procs[i] = p
	ws.mu.Unlock()
	return nil
}

// killLoop SIGKILLs a random worker every one to two seconds and starts
// another in its place.
func (ws *chaosWorkers) killLoop(stop <-chan struct{}, counts *chaosCounts) {
	for {
		select {
		case <-stop:
			return
		case <-time.After(time.Second + mrand.N(time.Second)):
		}
		i := mrand.IntN(len(ws.procs))
		ws.mu.Lock()
		p := ws.procs[i]
		ws.mu.Unlock()
		p.kill()
		counts.kills.Add(1)
		if err := ws.spawn(i); err != nil {
			fmt.Fprintln(os.Stderr, "bench: chaos: restart a worker:", err)
		}
	}
}

func (ws *chaosWorkers) stopAll() {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	for _, p := range ws.procs {
		if p != nil {
			p.stop(10 * time.Second)
		}
	}
}

// chaosTerminateLoop terminates two random worker backends every half
// second to second and a half, as a failover, a pooler or an operator's
// pg_terminate_backend does.
func chaosTerminateLoop(db *sqlx.DB, stop <-chan struct{}, counts *chaosCounts) {
	for {
		select {
		case <-stop:
			return
		case <-time.After(500*time.Millisecond + mrand.N(time.Second)):
		}
		var n int64
		err := db.Get(&n, `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM (
			SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
				AND application_name <> 'chaos-driver' ORDER BY random() LIMIT 2) s`)
		if err == nil {
			counts.terminated.Add(n)
		}
	}
}

// chaosRestarts restarts PostgreSQL once a third of the runs have closed and
// Redis (empty, as without persistence) at two thirds.
func chaosRestarts(pg *pgproc.Server, rs *redisProc, n int, closed *atomic.Int64, stop <-chan struct{}, counts *chaosCounts) {
	pgDone, redisDone := false, false
	for !pgDone || !redisDone {
		select {
		case <-stop:
			return
		case <-time.After(100 * time.Millisecond):
		}
		switch c := closed.Load(); {
		case !pgDone && c >= int64(n)/3:
			pgDone = true
			if err := pg.Restart(); err != nil {
				fmt.Fprintln(os.Stderr, "bench: chaos: restart PostgreSQL:", err)
				continue
			}
			counts.pgRestarts.Add(1)
		case !redisDone && c >= 2*int64(n)/3:
			redisDone = true
			if err := rs.restart(); err != nil {
				fmt.Fprintln(os.Stderr, "bench: chaos: restart Redis:", err)
				continue
			}
			counts.redisRestarts.Add(1)
		}
	}
}

// errNoRetry ends a retry: the call's answer is final.
var errNoRetry = errors.New("bench: final answer")

// retry calls f until it succeeds or returns errNoRetry, for up to a minute,
// backing off: the driver's calls meet the same restarts as the workers.
func retry(ctx context.Context, f func() error) error {
	var err error
	wait := 50 * time.Millisecond
	for end := time.Now().Add(time.Minute); ; {
		if err = f(); err == nil || errors.Is(err, errNoRetry) || time.Now().After(end) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}
