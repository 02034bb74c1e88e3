package main

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"maps"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/sqlobserve"
)

// -stats: figures per workflow that do not depend on how busy the machine
// is, for comparing two builds on a shared machine where wall-clock figures
// are noise. Round trips and commits are counted at the driver; WAL is read
// back with pg_walinspect (when the database has it) and kept to the records
// of the benchmark's own relations and transactions; rows come from
// pg_stat_user_tables; allocations from the Go runtime.

// dbCounters counts what the benchmark's pool sends to PostgreSQL.
type dbCounters struct {
	roundTrips atomic.Int64 // statements, BEGIN and COMMIT/ROLLBACK
	commits    atomic.Int64 // COMMITs, and statements outside a transaction that write
	mu         sync.Mutex
	pids       []int // the connections' backends (see backendCPU)
	// statements counts the executions of each statement, by its text's
	// head (statementLabel): pg_stat_statements for the benchmark's own
	// pool, which works where that extension is not loaded.
	statements map[string]int64
	// conns are the connections' backends and what each sent last;
	// stmtCPU is the backends' CPU time in ns by what they ran (see
	// Sending).
	conns   map[driver.Conn]*connCPU
	stmtCPU map[string]int64
}

// statementLabel is how a statement is counted: its text with the
// whitespace folded, cut to a length that still tells the engine's
// statements apart.
func statementLabel(q string) string {
	q = strings.Join(strings.Fields(q), " ")
	if len(q) > 90 {
		q = q[:90]
	}
	return q
}

// countStatement adds one execution of the statement labelled l
// (statementLabel).
func (c *dbCounters) countStatement(l string) {
	c.mu.Lock()
	if c.statements == nil {
		c.statements = map[string]int64{}
	}
	c.statements[l]++
	c.mu.Unlock()
}

// statementKey is what dbCounters keeps of a statement's text: worked
// out once for a prepared statement, not at each execution, since both
// read the whole text, several kilobytes for a commit's statement (at each
// execution they were most of what -stats' allocs_per_wf and
// alloc_kb_per_wf counted at -c 1: 60 of its 110 KB a workflow).
type statementKey struct {
	label  string // statementLabel
	writes bool   // see writes
}

// dbCounters is the sqlobserve.Observer of the benchmark's pool.
var _ sqlobserve.Observer[statementKey] = (*dbCounters)(nil)

// writes reports whether a statement writes: it then needs a commit of its
// own when it runs outside a transaction.
func writes(q string) bool {
	u := strings.ToUpper(q)
	return strings.Contains(u, "INSERT ") || strings.Contains(u, "UPDATE ") || strings.Contains(u, "DELETE ") ||
		strings.Contains(u, "PG_NOTIFY(") || strings.Contains(u, "FOR UPDATE")
}

// Key is what is counted of the statement q.
func (c *dbCounters) Key(q string) statementKey {
	return statementKey{label: statementLabel(q), writes: writes(q)}
}

// Statement counts an execution of the statement k: a round trip, and a
// commit of its own when it writes outside a transaction.
func (c *dbCounters) Statement(k statementKey, inTx bool) {
	c.roundTrips.Add(1)
	c.countStatement(k.label)
	if !inTx && k.writes {
		c.commits.Add(1)
	}
}

// Prepare counts a preparation as a round trip (it writes nothing).
func (c *dbCounters) Prepare(statementKey) { c.roundTrips.Add(1) }

// Begin counts BEGIN as a round trip.
func (c *dbCounters) Begin() { c.roundTrips.Add(1) }

// End counts COMMIT or ROLLBACK as a round trip, and COMMIT as a commit.
func (c *dbCounters) End(commit bool) {
	c.roundTrips.Add(1)
	if commit {
		c.commits.Add(1)
	}
}

// openBenchDB is openDB, with counters on its connections when -stats
// asks for them (o.counters).
func openBenchDB(o benchOpts, maxConns int) (*sqlx.DB, error) {
	if o.counters != nil {
		return openCountingDB(maxConns, o.counters)
	}
	return openDB(maxConns)
}

// openCountingDB is openDB with counters on the pool's connections.
func openCountingDB(maxConns int, c *dbCounters) (*sqlx.DB, error) {
	base, err := engine.NewConnector(databaseURL())
	if err != nil {
		return nil, err
	}
	db := sqlx.NewDb(sql.OpenDB(sqlobserve.NewConnector[statementKey](base, c)), "postgres")
	db.SetMaxOpenConns(maxConns)
	db.SetMaxIdleConns(maxConns)
	if err := db.Ping(); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("connect to GRAFT_DATABASE_URL %s: %w", redactURL(databaseURL()), err)
	}
	return db, nil
}

// benchStats measures one phase of a benchmark (see -stats).
type benchStats struct {
	c        *dbCounters
	schema   string
	mem0     runtime.MemStats
	lsn0     string
	rt0, cm0 int64
	pgCPU0   time.Duration
	stmts0   map[string]int64
	cpu0     map[string]int64
	// tables0 are the schema's table counters when the phase began: what
	// an extra's set-up wrote (-with mirror's legacy rows, one insert a
	// workflow, and their ANALYZE) is not the phase's.
	tables0 tableCounters
}

// tableCounters are the schema's tables' counters, summed: rows from
// pg_stat_user_tables, buffer pages from pg_statio_user_tables.
type tableCounters struct{ ins, upd, hot, del, blks, seqRows int64 }

// readTableCounters reads the schema's tableCounters.
func readTableCounters(ctx context.Context, q interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}, schema string) (tableCounters, error) {
	var c tableCounters
	// Buffer pages the statements touched in the schema's tables and
	// indexes, and rows read by sequential scans: what a plan costs,
	// counted, where CPU time moves with the machine's load.
	err := q.QueryRowContext(ctx, `SELECT coalesce(sum(n_tup_ins),0), coalesce(sum(n_tup_upd),0), coalesce(sum(n_tup_hot_upd),0),
			coalesce(sum(n_tup_del),0),
			coalesce(sum(heap_blks_hit + heap_blks_read + coalesce(idx_blks_hit, 0) + coalesce(idx_blks_read, 0)), 0),
			coalesce(sum(seq_tup_read), 0)
		FROM pg_statio_user_tables io JOIN pg_stat_user_tables t USING (relid) WHERE t.schemaname = $1`, schema).Scan(
		&c.ins, &c.upd, &c.hot, &c.del, &c.blks, &c.seqRows)
	return c, err
}

// begin marks the start of the measured phase.
func (st *benchStats) begin(ctx context.Context, db *sqlx.DB) error {
	runtime.ReadMemStats(&st.mem0)
	st.rt0, st.cm0 = st.c.roundTrips.Load(), st.c.commits.Load()
	st.pgCPU0, _ = st.c.backendCPU()
	st.c.mu.Lock()
	st.stmts0 = maps.Clone(st.c.statements)
	st.cpu0 = maps.Clone(st.c.stmtCPU)
	st.c.mu.Unlock()
	var err error
	if st.tables0, err = readTableCounters(ctx, db, st.schema); err != nil {
		return err
	}
	return db.QueryRowContext(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&st.lsn0)
}

// statsAtEnd is what the measured phase's process saw, taken before the
// engine closes.
type statsAtEnd struct {
	mallocs, allocBytes uint64
	roundTrips, commits int64
	// pgCPU is the CPU time of the pool's backends (pgCPUOK: it could be
	// read).
	pgCPU   time.Duration
	pgCPUOK bool
	// statements are the executions of each statement (see
	// dbCounters.statements).
	statements map[string]int64
	// stmtCPU is the backends' CPU time in ns by statement (see Sending).
	stmtCPU map[string]int64
}

// add counts in what another process (a -workers worker) sent.
func (e *statsAtEnd) add(o statsAtEnd) {
	e.roundTrips += o.roundTrips
	e.commits += o.commits
	if o.pgCPUOK {
		e.pgCPU, e.pgCPUOK = e.pgCPU+o.pgCPU, true
	}
	for l, n := range o.statements {
		e.statements[l] += n
	}
	for l, n := range o.stmtCPU {
		if e.stmtCPU == nil {
			e.stmtCPU = map[string]int64{}
		}
		e.stmtCPU[l] += n
	}
}

func (st *benchStats) end() statsAtEnd {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	pg, ok := st.c.backendCPU()
	st.c.mu.Lock()
	stmts := make(map[string]int64, len(st.c.statements))
	for l, n := range st.c.statements {
		stmts[l] = n - st.stmts0[l]
	}
	cpu := map[string]int64{}
	for l, n := range st.c.stmtCPU {
		cpu[l] = n - st.cpu0[l]
	}
	st.c.mu.Unlock()
	return statsAtEnd{mallocs: m.Mallocs - st.mem0.Mallocs, allocBytes: m.TotalAlloc - st.mem0.TotalAlloc,
		roundTrips: st.c.roundTrips.Load() - st.rt0, commits: st.c.commits.Load() - st.cm0, pgCPU: pg - st.pgCPU0, pgCPUOK: ok,
		statements: stmts, stmtCPU: cpu}
}

// statementsLines renders the statements that ran at least once per 100
// workflows or cost their backends at least 1 µs a workflow, most frequent
// first, one line each with its executions and its backends' CPU per
// workflow and its CPU per execution. The worker processes' statements
// (-workers) are apart from the benchmark process's, their labels begun
// with workerLabel; BEGIN, COMMIT and ROLLBACK are counted by their CPU.
func (e statsAtEnd) statementsLines(n int) []string {
	type stmt struct {
		label string
		calls int64
	}
	var all []stmt
	for l, c := range e.statements {
		if c*100 >= int64(n) || e.stmtCPU[l] >= 1000*int64(n) {
			all = append(all, stmt{l, c})
		}
	}
	for l, ns := range e.stmtCPU {
		if _, counted := e.statements[l]; !counted && ns >= 1000*int64(n) {
			all = append(all, stmt{l, 0}) // BEGIN, COMMIT, ROLLBACK
		}
	}
	sort.Slice(all, func(i, j int) bool {
		return all[i].calls > all[j].calls || all[i].calls == all[j].calls && all[i].label < all[j].label
	})
	out := make([]string, len(all))
	for i, s := range all {
		out[i] = fmt.Sprintf("statement calls_per_wf=%.3f pg_us_per_wf=%.1f pg_us_per_call=%.0f sql=%q", float64(s.calls)/float64(n),
			float64(e.stmtCPU[s.label])/1e3/float64(n), float64(e.stmtCPU[s.label])/1e3/float64(max(s.calls, 1)), s.label)
	}
	return out
}

// report reads the database's side, once the engine and its pool are closed
// (a backend reports its table counters when it exits) and before the schema
// is dropped, and renders the stats line.
func (st *benchStats) report(ctx context.Context, e statsAtEnd, n int) (string, error) {
	db, err := openDB(1)
	if err != nil {
		return "", err
	}
	defer db.Close()
	f := func(v float64) float64 { return v / float64(n) }
	var b strings.Builder
	fmt.Fprintf(&b, "stats workflows=%d round_trips_per_wf=%.2f commits_per_wf=%.2f allocs_per_wf=%.0f alloc_kb_per_wf=%.1f",
		n, f(float64(e.roundTrips)), f(float64(e.commits)), f(float64(e.mallocs)), f(float64(e.allocBytes))/1024)
	if e.pgCPUOK {
		fmt.Fprintf(&b, " pg_backend_cpu_us_per_wf=%.0f", f(float64(e.pgCPU.Microseconds())))
	}

	t, err := readTableCounters(ctx, db, st.schema)
	if err != nil {
		return "", err
	}
	ins, upd, hot := t.ins-st.tables0.ins, t.upd-st.tables0.upd, t.hot-st.tables0.hot
	blks, seqRows := t.blks-st.tables0.blks, t.seqRows-st.tables0.seqRows
	fmt.Fprintf(&b, " rows_ins_per_wf=%.2f rows_upd_per_wf=%.2f hot_upd_per_wf=%.2f", f(float64(ins)), f(float64(upd)), f(float64(hot)))
	fmt.Fprintf(&b, " pg_blks_per_wf=%.1f seq_rows_read_per_wf=%.1f", f(float64(blks)), f(float64(seqRows)))

	var lsn1 string
	var global int64
	if err := db.QueryRowContext(ctx, `SELECT pg_current_wal_flush_lsn()::text, pg_wal_lsn_diff(pg_current_wal_flush_lsn(), $1::pg_lsn)::bigint`,
		st.lsn0).Scan(&lsn1, &global); err != nil {
		return "", err
	}
	var inspect bool
	if err := db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_walinspect')`).Scan(&inspect); err != nil {
		return "", err
	}
	if !inspect {
		fmt.Fprintf(&b, " wal_bytes_global_per_wf=%.0f (no pg_walinspect: every tenant's WAL)", f(float64(global)))
		return b.String(), nil
	}
	// The schema's relations (tables, indexes, their TOAST) by file node;
	// the WAL records that touch them; the commit records of their
	// transactions.
	var total, fpi, heap, btree, leafIns, commitRecs int64
	err = db.QueryRowContext(ctx, `WITH rels AS (
			SELECT pg_relation_filenode(c.oid)::text AS fn FROM pg_class c JOIN pg_namespace ns ON ns.oid = c.relnamespace
			WHERE ns.nspname = $1
			UNION SELECT pg_relation_filenode(t.reltoastrelid)::text FROM pg_class t JOIN pg_namespace ns ON ns.oid = t.relnamespace
			WHERE ns.nspname = $1 AND t.reltoastrelid <> 0
			UNION SELECT pg_relation_filenode(i.indexrelid)::text FROM pg_class t JOIN pg_namespace ns ON ns.oid = t.relnamespace
			JOIN pg_index i ON i.indrelid = t.reltoastrelid WHERE ns.nspname = $1),
		recs AS (SELECT * FROM pg_get_wal_records_info($2::pg_lsn, $3::pg_lsn)),
		ours AS (SELECT r.* FROM recs r WHERE r.block_ref IS NOT NULL AND EXISTS (
			SELECT 1 FROM regexp_matches(r.block_ref, 'rel \d+/' || (SELECT oid FROM pg_database WHERE datname = current_database()) || '/(\d+)', 'g') m
			JOIN rels ON rels.fn = m[1])),
		xids AS (SELECT DISTINCT xid FROM ours WHERE xid <> '0'),
		commits AS (SELECT r.* FROM recs r JOIN xids USING (xid) WHERE r.resource_manager = 'Transaction' AND r.record_type = 'COMMIT'),
		al AS (SELECT * FROM ours UNION ALL SELECT * FROM commits)
		SELECT coalesce(sum(record_length),0), coalesce(sum(fpi_length),0),
			coalesce(sum(record_length - fpi_length) FILTER (WHERE resource_manager IN ('Heap','Heap2')),0),
			coalesce(sum(record_length - fpi_length) FILTER (WHERE resource_manager = 'Btree'),0),
			count(*) FILTER (WHERE resource_manager = 'Btree' AND record_type = 'INSERT_LEAF'),
			(SELECT count(*) FROM commits)
		FROM al`, st.schema, st.lsn0, lsn1).Scan(&total, &fpi, &heap, &btree, &leafIns, &commitRecs)
	if err != nil {
		// A long run on a busy server: its first segments may be recycled
		// already. The figures read so far still stand.
		fmt.Fprintf(&b, " wal_unread=%q", err.Error())
		return b.String(), nil
	}
	fmt.Fprintf(&b, " wal_commits_per_wf=%.2f wal_bytes_per_wf=%.0f wal_fpi_bytes_per_wf=%.0f heap_wal_per_wf=%.0f btree_wal_per_wf=%.0f btree_leaf_inserts_per_wf=%.2f",
		f(float64(commitRecs)), f(float64(total-fpi)), f(float64(fpi)), f(float64(heap)), f(float64(btree)), f(float64(leafIns)))
	return b.String(), nil
}
