package main

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/cpustat"
	"github.com/graftdev/graft/tasks/api"
)

// Sizes of the api scenario.
const (
	benchAPISamples   = 200   // get and history requests measured
	benchAPIListPages = 50    // list requests measured (half first pages, half deep)
	benchAPIBulkItems = 10000 // failed operations the bulk job relaunches
	benchAPIBulkRate  = 2000.0
	benchAPISeedChunk = 50000
)

// benchAPI seeds n operations with bulk SQL (engine runs with their steps,
// and as many legacy rows; statuses mixed: 60% completed, 20% failed at a
// charge step, 10% waiting for a signal, 10% cancelled), serves the
// operations API on a local port, and measures over HTTP with a real
// token: the list (first page and a deep page, filtered), get and history
// (p99 of benchAPIListPages and benchAPISamples requests), then a bulk relaunch of up to 10,000
// failed operations at an asked 2,000/s (the rate achieved between its
// first and last item).
func benchAPI(o benchOpts) error {
	ctx := context.Background()
	db, err := openBenchDB(o, 40)
	if err != nil {
		return err
	}
	defer db.Close()
	schema := pq.QuoteIdentifier(o.schema)
	if !o.keep {
		defer func() { _, _ = db.Exec(`DROP SCHEMA IF EXISTS ` + schema + ` CASCADE`) }()
	} else {
		fmt.Printf("schema %s is kept\n", o.schema)
	}
	e, err := engine.New(engine.Config{DB: db, DatabaseURL: databaseURL(), Schema: o.schema, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return err
	}
	defer e.Close()
	if err := migrateAPI(ctx, e); err != nil {
		return err
	}
	if o.reuse != "" {
		if err := checkSeed(ctx, db, schema, o.n); err != nil {
			return err
		}
	} else {
		seedStart := time.Now()
		if err := seedOperations(ctx, db.DB, schema, o.n); err != nil {
			return err
		}
		fmt.Printf("seeded %d operations (runs, steps, legacy rows) in %v\n", o.n, time.Since(seedStart).Round(time.Millisecond))
	}

	srv, err := api.New(api.Config{Engine: e, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return err
	}
	stopBulk, err := startBulkWorker(ctx, srv)
	if err != nil {
		return err
	}
	defer stopBulk()
	_, token, err := srv.Tokens().Create(ctx, api.NewToken{Name: "bench", Role: api.RoleOperator})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	defer hs.Close()
	base := "http://" + ln.Addr().String()
	hc := &http.Client{Timeout: time.Minute}
	call := func(method, path string, body any, out any) (time.Duration, error) {
		var r io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			r = strings.NewReader(string(b))
		}
		req, err := http.NewRequestWithContext(ctx, method, base+path, r)
		if err != nil {
			return 0, err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		t0 := time.Now()
		res, err := hc.Do(req)
		if err != nil {
			return 0, err
		}
		b, err := io.ReadAll(res.Body)
		res.Body.Close()
		took := time.Since(t0)
		if err != nil {
			return 0, err
		}
		if res.StatusCode >= 300 {
			return 0, fmt.Errorf("bench: %s %s: %d %s", method, path, res.StatusCode, b)
		}
		if out != nil {
			return took, json.Unmarshal(b, out)
		}
		return took, nil
	}

	// A deep page: the keyset position half-way through the filter's
	// operations, as the server encodes its cursors.
	var deep struct {
		CreatedAt time.Time `db:"created_at"`
		RunID     string    `db:"run_id"`
	}
	if err := db.GetContext(ctx, &deep, `SELECT created_at, run_id FROM `+schema+`.runs WHERE status = 'failed'
		ORDER BY created_at DESC, run_id DESC OFFSET $1 LIMIT 1`, o.n/10); err != nil {
		return fmt.Errorf("bench: deep cursor: %w", err)
	}
	deepCursor := base64.RawURLEncoding.EncodeToString([]byte(deep.CreatedAt.UTC().Format(time.RFC3339Nano) + "|" + deep.RunID))
	var list, get, hist []time.Duration
	for i := range benchAPIListPages {
		q := url.Values{"status": {"failed"}, "kind": {"bench.op"}, "limit": {"50"}}
		if i%2 == 1 {
			q.Set("cursor", deepCursor)
		}
		d, err := call("GET", "/v1/operations?"+q.Encode(), nil, nil)
		if err != nil {
			return err
		}
		list = append(list, d)
	}
	for range benchAPISamples {
		id := fmt.Sprintf("op-%d", rand.IntN(o.n))
		d, err := call("GET", "/v1/operations/"+id, nil, nil)
		if err != nil {
			return err
		}
		get = append(get, d)
		if d, err = call("GET", "/v1/operations/"+id+"/history", nil, nil); err != nil {
			return err
		}
		hist = append(hist, d)
	}
	_, listP99 := percentiles(list)
	_, getP99 := percentiles(get)
	_, histP99 := percentiles(hist)

	// The bulk relaunch: the first failed operations not relaunched yet
	// (by an earlier run in a reused schema), by ID.
	var ids []string
	if err := db.SelectContext(ctx, &ids, `SELECT workflow_id FROM `+schema+`.runs WHERE status = 'failed' AND NOT superseded
		ORDER BY created_at, run_id LIMIT $1`, benchAPIBulkItems); err != nil {
		return err
	}
	if len(ids) < min(benchAPIBulkItems, o.n/5) {
		return fmt.Errorf("bench: %d failed operations are left to relaunch in %s: seed anew", len(ids), o.schema)
	}
	var bulkStats *bulkPhaseStats
	if o.counters != nil {
		bulkStats = beginBulkPhase(o.counters)
	}
	var job api.BulkJob
	if _, err := call("POST", "/v1/bulk", map[string]any{"action": "relaunch", "reason": "bench", "rate": benchAPIBulkRate,
		"filter": map[string]any{"ids": ids}}, &job); err != nil {
		return err
	}
	deadline := time.Now().Add(time.Duration(float64(len(ids))/benchAPIBulkRate*float64(time.Second))*20 + time.Minute)
	for job.State != api.BulkStateCompleted {
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: bulk job %s did not finish: %+v", job.Id, job)
		}
		time.Sleep(200 * time.Millisecond)
		if _, err := call("GET", "/v1/bulk/"+job.Id, nil, &job); err != nil {
			return err
		}
	}
	var rate float64
	if job.ActualRate != nil {
		rate = *job.ActualRate
	}
	if bulkStats != nil {
		fmt.Println(bulkStats.line(job.Done + job.Failed))
	}
	fmt.Printf("list p50/p99 over first and deep pages; bulk job %s: %d done, %d failed, %d skipped\n", job.Id, job.Done, job.Failed, job.Skipped)
	fmt.Printf("api ops=%d list_p99_ms=%.1f get_p99_ms=%.1f history_p99_ms=%.1f bulk_items=%d bulk_rate_s=%.0f bulk_failed=%d\n",
		o.n, ms(listP99), ms(getP99), ms(histP99), job.Done, rate, job.Failed)
	return nil
}

// seedOperations inserts n operations "op-<i>" in chunks: an engine run
// of "bench.op" each (on a queue no worker serves), its check and charge
// steps, and a legacy row.
func seedOperations(ctx context.Context, db *sql.DB, schema string, n int) error {
	if _, err := db.ExecContext(ctx, `CREATE TABLE `+schema+`.legacy_operations (id text PRIMARY KEY, kind text NOT NULL,
		status text NOT NULL, customer text)`); err != nil {
		return fmt.Errorf("bench: legacy table: %w", err)
	}
	t0 := time.Now().Add(-time.Duration(n) * time.Millisecond)
	const status = `CASE WHEN i % 10 < 6 THEN 'completed' WHEN i % 10 < 8 THEN 'failed' WHEN i % 10 = 8 THEN 'waiting' ELSE 'cancelled' END`
	for lo := 0; lo < n; lo += benchAPISeedChunk {
		hi := min(lo+benchAPISeedChunk, n)
		for _, q := range []string{
			`INSERT INTO ` + schema + `.runs (run_id, workflow_id, workflow_type, queue, status, input, error, headers, created_at, updated_at, closed_at)
			SELECT 'r-' || i, 'op-' || i, 'bench.op', 'bench.none', ` + status + `, convert_to('{"n":' || i || '}', 'UTF8'),
				CASE WHEN i % 10 IN (6, 7) THEN '{"kind":"application","type":"CardDeclined","message":"declined","non_retryable":true}'::jsonb END,
				jsonb_build_object('customer', 'c' || (i % 100), 'key', (ARRAY['com','net','org','info','fr'])[1 + i % 5]),
				$3::timestamptz + i * interval '1 millisecond', $3::timestamptz + i * interval '1 millisecond',
				CASE WHEN i % 10 <> 8 THEN $3::timestamptz + i * interval '1 millisecond' + interval '1 second' END
			FROM generate_series($1::int, $2::int - 1) i`,
			`INSERT INTO ` + schema + `.steps (run_id, seq, kind, name, status, error, attempts, started_at, completed_at)
			SELECT 'r-' || i, s, 'activity', CASE WHEN s = 1 THEN 'check' ELSE 'charge' END,
				CASE WHEN s = 2 AND i % 10 IN (6, 7) THEN 'failed' ELSE 'completed' END,
				CASE WHEN s = 2 AND i % 10 IN (6, 7) THEN '{"kind":"application","type":"CardDeclined","message":"declined","non_retryable":true}'::jsonb END,
				1, $3::timestamptz + i * interval '1 millisecond', $3::timestamptz + i * interval '1 millisecond' + s * interval '100 milliseconds'
			FROM generate_series($1::int, $2::int - 1) i, generate_series(1, 2) s WHERE s = 1 OR i % 10 <> 8`,
			`INSERT INTO ` + schema + `.legacy_operations (id, kind, status, customer)
			SELECT 'op-' || i, 'bench.op', ` + status + `, 'c' || (i % 100) FROM generate_series($1::int, $2::int - 1) i WHERE $3::timestamptz IS NOT NULL`,
		} {
			if _, err := db.ExecContext(ctx, q, lo, hi, t0); err != nil {
				return fmt.Errorf("bench: seed: %w", err)
			}
		}
	}
	// Vacuumed as autovacuum leaves inserted tables (PostgreSQL 13 and
	// later vacuum a table after inserts): analysed, and its pages marked
	// all-visible, which index-only scans read.
	for _, t := range []string{"runs", "steps", "legacy_operations"} {
		if _, err := db.ExecContext(ctx, `VACUUM ANALYZE `+schema+`.`+t); err != nil {
			return err
		}
	}
	return nil
}

// checkSeed makes sure schema holds the n operations an earlier run seeded
// and kept (-reuse), so that figures are not taken on another size.
func checkSeed(ctx context.Context, db *sqlx.DB, schema string, n int) error {
	var last, beyond bool
	if err := db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM `+schema+`.legacy_operations WHERE id = $1),
		EXISTS (SELECT 1 FROM `+schema+`.legacy_operations WHERE id = $2)`,
		fmt.Sprintf("op-%d", n-1), fmt.Sprintf("op-%d", n)).Scan(&last, &beyond); err != nil {
		return fmt.Errorf("bench: -reuse: no seed in %s: %w", schema, err)
	}
	if !last || beyond {
		return fmt.Errorf("bench: -reuse: %s was not seeded with -n %d", schema, n)
	}
	fmt.Printf("reusing the %d operations seeded in %s\n", n, schema)
	return nil
}

// bulkPhaseStats measures the bulk relaunch with -stats: what it costs per
// item in round trips to PostgreSQL, CPU of this process (the server and
// its bulk worker) and CPU of the pool's backends, which a busy shared
// machine moves far less than it moves the rate.
type bulkPhaseStats struct {
	c      *dbCounters
	rt0    int64
	cpu0   time.Duration
	pgCPU0 time.Duration
	t0     time.Time
}

func beginBulkPhase(c *dbCounters) *bulkPhaseStats {
	st := &bulkPhaseStats{c: c, rt0: c.roundTrips.Load(), cpu0: cpustat.Process(), t0: time.Now()}
	st.pgCPU0, _ = c.backendCPU()
	return st
}

// line renders the phase's figures per item acted on.
func (st *bulkPhaseStats) line(items int) string {
	n := float64(max(items, 1))
	s := fmt.Sprintf("bulk_stats items=%d round_trips_per_item=%.2f go_cpu_us_per_item=%.0f", items,
		float64(st.c.roundTrips.Load()-st.rt0)/n, float64((cpustat.Process()-st.cpu0).Microseconds())/n)
	if pg, ok := st.c.backendCPU(); ok {
		s += fmt.Sprintf(" pg_backend_cpu_us_per_item=%.0f", float64((pg-st.pgCPU0).Microseconds())/n)
	}
	return s + fmt.Sprintf(" wall_s=%.2f", time.Since(st.t0).Seconds())
}
