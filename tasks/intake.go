package tasks

import (
	"bytes"
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"go.opentelemetry.io/otel/metric"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/pgident"
)

// Defaults of IntakeConfig.
const (
	// BatchSizeDefault is IntakeConfig.BatchSize's default.
	BatchSizeDefault = 500
	// PollIntervalDefault is IntakeConfig.PollInterval's default.
	PollIntervalDefault = time.Second
)

// IntakeConfig configures an Intake.
type IntakeConfig struct {
	// Engine starts the workflows; its database holds graft's schema and
	// must be the legacy table's database (the claim and the start commit
	// together). Required.
	Engine *engine.Engine
	// DatabaseURL opens the LISTEN connection (Source.Notify and flag
	// changes). Required.
	DatabaseURL string
	// Source is the legacy table. Required.
	Source *Source
	// KeyFuncs resolves Source.Key.Func by name.
	KeyFuncs map[string]KeyFunc
	// BatchSize is the most rows one claim transaction takes. Default
	// BatchSizeDefault.
	BatchSize int
	// PollInterval is how often intake looks for rows when no notification
	// arrives. Default PollIntervalDefault.
	PollInterval time.Duration
	// Logger receives intake's logs. Default slog.Default().
	Logger *slog.Logger
	// MeterProvider records intake's metrics. Default: none.
	MeterProvider metric.MeterProvider
}

// Intake moves pending legacy rows onto workflows by the flags. Any number
// of intakes (in any number of processes) may run over one source.
type Intake struct {
	cfg    IntakeConfig
	src    Source
	client *engine.Client
	db     *sqlx.DB
	schema string // quoted
	table  pgident.Table
	log    *slog.Logger
	m      *metrics
	kinds  []string
	idType string
	sql    struct{ claim, markGraft, unmark, markError, claims, lag, exists, differ, row string }
	listen *listenerConn
	cursor string // last ID of the previous batch; "" starts a pass
	// declarative: the claim query builds each row's input (Source.Input)
	// and the key is SQL, so rows are not read whole.
	declarative bool

	// failing holds, per row that could not be started, the error last
	// logged for it: a row that keeps failing is logged once per error,
	// not on every pass (MetricFailed counts every failure).
	failMu  sync.Mutex
	failing map[string]string

	// beforeCommit, when set (by tests), runs just before a claim
	// transaction commits, with the rows it started.
	beforeCommit func(started int)
}

// maxFailing bounds Intake.failing; past it the map is cleared (rows still
// failing are then logged once more).
const maxFailing = 10000

// ErrOperationExists is returned by Submit for an operation ID that is
// already in the legacy table with other values.
var ErrOperationExists = errors.New("tasks: operation already exists")

// NewIntake validates the source against the database, records its kinds
// (which flags may then name) and starts listening. Run Migrate first.
func NewIntake(ctx context.Context, cfg IntakeConfig) (*Intake, error) {
	switch {
	case cfg.Engine == nil:
		return nil, errors.New("tasks: IntakeConfig.Engine is required")
	case cfg.DatabaseURL == "":
		return nil, errors.New("tasks: IntakeConfig.DatabaseURL is required")
	case cfg.Source == nil:
		return nil, errors.New("tasks: IntakeConfig.Source is required")
	case cfg.BatchSize < 0 || cfg.BatchSize > 10000:
		return nil, fmt.Errorf("tasks: IntakeConfig.BatchSize %d is outside 1-10000", cfg.BatchSize)
	case cfg.PollInterval < 0:
		return nil, fmt.Errorf("tasks: IntakeConfig.PollInterval %v is negative", cfg.PollInterval)
	}
	cfg.BatchSize = cmp.Or(cfg.BatchSize, BatchSizeDefault)
	cfg.PollInterval = cmp.Or(cfg.PollInterval, PollIntervalDefault)
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	src := *cfg.Source
	if err := src.Validate(); err != nil {
		return nil, err
	}
	if src.Key.Fn == nil && src.Key.Func != "" {
		src.Key.Fn = cfg.KeyFuncs[src.Key.Func]
		if src.Key.Fn == nil {
			return nil, fmt.Errorf("%s%s %q is not in IntakeConfig.KeyFuncs", src.prefix(), src.field("key.func"), src.Key.Func)
		}
	}
	in := &Intake{cfg: cfg, src: src, client: cfg.Engine.Client(), db: cfg.Engine.DB(), schema: pgident.Quote(cfg.Engine.Schema()),
		log: cfg.Logger.With("source", src.name()), kinds: src.kinds()}
	in.table, _ = pgident.ParseTable(src.Table)
	tbl, err := src.check(ctx, in.db)
	if err != nil {
		return nil, err
	}
	in.idType = tbl.Columns[src.ID].Type
	for _, k := range in.kinds {
		if _, err := in.db.ExecContext(ctx, `INSERT INTO `+in.schema+`.intake_kinds (source, kind, workflow, key_transform) VALUES ($1, $2, $3, $4)
			ON CONFLICT (source, kind) DO UPDATE SET workflow = $3, key_transform = $4`, src.name(), k, src.Kinds[k].Workflow, src.recordKeyTransform()); err != nil {
			return nil, fmt.Errorf("tasks: record the source's kinds (has Migrate run?): %w", err)
		}
	}
	in.warnKeyRules(ctx)
	if in.m, err = newMetrics(cfg.MeterProvider, src.name(), in.lagSeconds); err != nil {
		return nil, err
	}
	in.buildSQL()
	channels := []string{flagsChannel(cfg.Engine.Schema())}
	if src.Notify != "" {
		channels = append(channels, src.Notify)
	}
	if in.listen, err = newListenerConn(cfg.DatabaseURL, in.log, channels...); err != nil {
		return nil, err
	}
	return in, nil
}

// Close stops listening. Stop Run first.
func (in *Intake) Close() error {
	in.m.close()
	return in.listen.close()
}

func (in *Intake) buildSQL() {
	s, t := &in.src, in.table.Quoted()
	q := func(c string) string { return "t." + pgident.Quote(c) }
	keySQL := s.keySQL()
	key := cmp.Or(keySQL, "NULL::text")
	pred := ""
	if keySQL != "" {
		// The flags decide in the query itself, so rows left to the legacy
		// runner are neither returned nor locked. The claim transaction has
		// read the flags (and holds them), so it passes them in as arrays
		// rather than have routed_to_graft read them again for every row:
		// $5 the threshold (first bucket left to legacy) of each kind in
		// $2, $6 "kind<US>key" of each key rule with its threshold in $7.
		// flag_bucket is inlined. Go's Evaluate checks each row again.
		pred = ` AND ` + in.schema + `.flag_bucket(` + q(s.Kind) + `::text, ` + q(s.ID) + `::text) < COALESCE(
			($7::int[])[array_position($6::text[], ` + q(s.Kind) + `::text || E'\x1f' || ` + keySQL + `)],
			($5::int[])[array_position($2::text[], ` + q(s.Kind) + `::text)])`
	} else {
		// Go derives the key: every pending row is read; $5-$7 are unused.
		pred = ` AND ($5::int[] IS NULL OR $6::text[] IS NULL OR $7::int[] IS NULL OR true)`
	}
	// A source whose input and key are columns needs no Go code per row:
	// the query builds the input and reads the customer, instead of
	// shipping every column.
	in.declarative = keySQL != "" && s.InputFn == nil
	cols := `to_jsonb(t)`
	if in.declarative {
		var obj []string
		for _, field := range slices.Sorted(maps.Keys(s.Input)) {
			obj = append(obj, pq.QuoteLiteral(field)+`, `+q(s.Input[field]))
		}
		cols = `jsonb_build_object(` + strings.Join(obj, `, `) + `)::text`
		if s.Customer != "" {
			cols += `, ` + q(s.Customer) + `::text`
		} else {
			cols += `, NULL::text`
		}
	}
	in.sql.claim = `SELECT ` + q(s.ID) + `::text, ` + q(s.Kind) + `::text, ` + key + `, ` + cols + `
		FROM ` + t + ` t
		WHERE ` + q(s.Status.Column) + ` = $1 AND ` + q(s.Kind) + `::text = ANY($2::text[])
		  AND ($3::text IS NULL OR ` + q(s.ID) + ` > $3::` + in.idType + `)` + pred + `
		ORDER BY ` + q(s.ID) + ` LIMIT $4 FOR UPDATE OF t SKIP LOCKED`
	clearErr := ""
	if s.Error != "" {
		clearErr = `, ` + pgident.Quote(s.Error) + ` = NULL`
		in.sql.markError = `UPDATE ` + t + ` t SET ` + pgident.Quote(s.Error) + ` = v.msg
			FROM unnest($1::text[], $2::text[]) AS v(id, msg)
			WHERE ` + q(s.ID) + ` = v.id::` + in.idType + ` AND ` + q(s.Error) + ` IS DISTINCT FROM v.msg`
	}
	in.sql.markGraft = `UPDATE ` + t + ` t SET ` + pgident.Quote(s.Status.Column) + ` = $1` + clearErr + `
		WHERE ` + q(s.ID) + ` = ANY($2::text[]::` + in.idType + `[]) AND ` + q(s.Status.Column) + ` = $3`
	in.sql.unmark = `UPDATE ` + t + ` t SET ` + pgident.Quote(s.Status.Column) + ` = $1
		WHERE ` + q(s.ID) + ` = ANY($2::text[]::` + in.idType + `[])`
	in.sql.claims = `INSERT INTO ` + in.schema + `.intake_claims (operation_id, source, kind, routing_key, customer, rule, bucket, flags_version, workflow_id, run_id)
		SELECT v.id, $1, v.kind, v.key, NULLIF(v.customer, ''), v.rule, v.bucket, $2, v.id, v.run_id
		FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::int[], $9::text[]) AS v(id, kind, key, customer, rule, bucket, run_id)
		WHERE NOT EXISTS (SELECT 1 FROM ` + t + ` t WHERE ` + q(s.ID) + ` = v.id::` + in.idType + ` AND ` + q(s.Status.Column) + ` = $10)`
	if s.CreatedAt != "" {
		in.sql.lag = `SELECT COALESCE(EXTRACT(EPOCH FROM now() - min(` + q(s.CreatedAt) + `)), 0)::float8 FROM ` + t + ` t
			WHERE ` + q(s.Status.Column) + ` = $1 AND ` + q(s.Kind) + `::text = ANY($2::text[])`
	}
	in.sql.row = `SELECT to_jsonb(t) FROM ` + t + ` t WHERE ` + q(s.ID) + ` = $1::` + in.idType
	in.sql.exists = `SELECT EXISTS (SELECT 1 FROM ` + t + ` t WHERE ` + q(s.ID) + ` = $1::` + in.idType + `)`
	// The columns $3 whose values in the JSON object $2, read as the
	// table's types, differ from row $1's.
	in.sql.differ = `SELECT COALESCE(array_agg(n.key ORDER BY n.key), '{}')
		FROM ` + t + ` t, jsonb_each(to_jsonb(jsonb_populate_record(NULL::` + t + `, $2::jsonb))) n
		WHERE ` + q(s.ID) + ` = $1::` + in.idType + ` AND n.key = ANY($3::text[]) AND n.value IS DISTINCT FROM to_jsonb(t) -> n.key`
}

// Run claims batches until ctx ends: at once while batches come back full,
// else at the next notification (Source.Notify, a flag change) or poll.
// A failed batch is logged and retried after a poll interval.
func (in *Intake) Run(ctx context.Context) error {
	for {
		res, err := in.ClaimBatch(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			in.log.Error("tasks: intake batch failed", "err", err)
		}
		if err == nil && !res.PassEnded {
			continue // finish the pass
		}
		t := time.NewTimer(in.cfg.PollInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-in.listen.notified():
		case <-t.C:
		}
		t.Stop()
	}
}

// BatchResult is what one claim transaction did.
type BatchResult struct {
	// Scanned counts the rows the batch read (and locked).
	Scanned int
	// Started counts rows claimed for graft with their workflows started.
	Started int
	// Failed counts rows that could not be started (bad input); they stay
	// pending, with their error in Source.Error when set.
	Failed int
	// FlagsVersion is the flag set's version the batch used.
	FlagsVersion int64
	// PassEnded is set when the batch reached the end of the table: the
	// next batch starts a new pass from its beginning.
	PassEnded bool
}

// claimed is one row to start.
type claimed struct {
	row   Row
	key   string
	input json.RawMessage // built by the claim query (declarative sources)
	dec   Decision
	runID string // once started
}

// ClaimBatch runs one claim transaction: it reads the flags (holding them so
// no change commits meanwhile), locks up to BatchSize pending rows of the
// source's kinds that the flags route to graft (SKIP LOCKED, so concurrent
// intakes and the legacy runner are not blocked), starts their workflows
// and marks them taken, all in one commit. Passes go over the table in ID
// order, so rows left pending (legacy-routed or bad) do not hold up the
// rest.
func (in *Intake) ClaimBatch(ctx context.Context) (BatchResult, error) {
	var res BatchResult
	start := time.Now()
	tx, err := in.db.BeginTxx(ctx, nil)
	if err != nil {
		return res, err
	}
	defer tx.Rollback()
	snap, err := readSnapshot(ctx, tx, in.schema, true)
	if err != nil {
		return res, err
	}
	res.FlagsVersion = snap.Version
	kinds := in.activeKinds(snap)
	if len(kinds) == 0 {
		in.cursor, res.PassEnded = "", true
		return res, nil
	}
	var cursor any
	if in.cursor != "" {
		cursor = in.cursor
	}
	thresholds, ruleKeys, ruleThresholds := sqlThresholds(snap, kinds)
	rows, err := tx.QueryContext(ctx, in.sql.claim, in.src.Status.Pending, pq.Array(kinds), cursor, in.cfg.BatchSize,
		pq.Array(thresholds), pq.Array(ruleKeys), pq.Array(ruleThresholds))
	if err != nil {
		return res, fmt.Errorf("tasks: claim: %w", err)
	}
	batch := make([]claimed, 0, in.cfg.BatchSize)
	var last string
	for rows.Next() {
		var c claimed
		var key, customer sql.NullString
		var raw []byte
		dest := []any{&c.row.ID, &c.row.Kind, &key, &raw}
		if in.declarative {
			dest = append(dest, &customer)
		}
		if err := rows.Scan(dest...); err != nil {
			rows.Close()
			return res, err
		}
		res.Scanned++
		last = c.row.ID
		c.key = key.String
		if in.declarative {
			c.input, c.row.Customer = raw, customer.String
		} else {
			dec := json.NewDecoder(bytes.NewReader(raw))
			dec.UseNumber()
			if err := dec.Decode(&c.row.Columns); err != nil {
				rows.Close()
				return res, fmt.Errorf("tasks: operation %s: decode row: %w", c.row.ID, err)
			}
			c.row.Customer = c.row.String(in.src.Customer)
		}
		batch = append(batch, c)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return res, fmt.Errorf("tasks: claim: %w", err)
	}
	if res.Scanned == in.cfg.BatchSize {
		in.cursor = last
	} else {
		in.cursor, res.PassEnded = "", true
	}
	var failed []rowError
	graft := make([]claimed, 0, len(batch))
	counts := map[[2]string]int{}
	sqlKey := in.src.keySQL() != ""
	for _, c := range batch {
		if !sqlKey {
			if c.key, err = in.src.key(c.row); err != nil {
				failed = append(failed, rowError{c.row.ID, fmt.Errorf("routing key: %w", err)})
				continue
			}
		}
		c.dec = Evaluate(snap, c.row.Kind, c.key, c.row.ID)
		counts[[2]string{c.row.Kind, c.dec.Rule}]++
		if c.dec.Route != RouteGraft {
			if sqlKey {
				in.log.Warn("tasks: the SQL and Go flag evaluations disagree; the row is left pending", "operation", c.row.ID, "rule", c.dec.Rule)
			}
			in.m.claimed(ctx, c.row.Kind, RouteLegacy, 1)
			continue
		}
		graft = append(graft, c)
	}
	for k, n := range counts {
		in.m.evaluated(ctx, k[0], k[1], n)
	}
	started, bad, err := in.start(ctx, tx.Tx, snap, graft)
	if err != nil {
		return res, err
	}
	failed = append(failed, bad...)
	if err := in.markFailed(ctx, tx.Tx, failed); err != nil {
		return res, err
	}
	if in.beforeCommit != nil {
		in.beforeCommit(len(started))
	}
	if err := tx.Commit(); err != nil {
		return res, fmt.Errorf("tasks: commit claim: %w", err)
	}
	res.Started, res.Failed = len(started), len(failed)
	perKind := map[string]int{}
	for _, c := range started {
		perKind[c.row.Kind]++
	}
	for k, n := range perKind {
		in.m.claimed(ctx, k, RouteGraft, n)
	}
	in.forgetFailures(started)
	in.m.batch(ctx, time.Since(start), len(failed))
	return res, nil
}

// rowError is why one row could not be started.
type rowError struct {
	id  string
	err error
}

// sqlThresholds passes the flags of kinds to the claim query: each kind's
// default threshold, and each key rule's as "kind\x1fkey" with its
// threshold (the first rule naming a key decides, as in Evaluate).
func sqlThresholds(s *Snapshot, kinds []string) (thresholds []int64, ruleKeys []string, ruleThresholds []int64) {
	thresholds = make([]int64, len(kinds))
	for i, k := range kinds {
		f := s.Flags[k]
		thresholds[i] = int64(threshold(f.DefaultPercent))
		seen := map[string]bool{}
		for _, r := range f.KeyRules {
			for _, key := range r.Keys {
				if !seen[key] {
					seen[key] = true
					ruleKeys, ruleThresholds = append(ruleKeys, k+"\x1f"+key), append(ruleThresholds, int64(threshold(r.Percent)))
				}
			}
		}
	}
	return thresholds, ruleKeys, ruleThresholds
}

// activeKinds are the source's kinds whose flags may route something to
// graft; none when the global kill switch is on.
func (in *Intake) activeKinds(s *Snapshot) []string {
	if s.Killed {
		return nil
	}
	var out []string
	for _, k := range in.kinds {
		f := s.Flags[k]
		if f == nil || f.Killed {
			continue
		}
		any := f.DefaultPercent > 0
		for _, r := range f.KeyRules {
			any = any || r.Percent > 0
		}
		if any {
			out = append(out, k)
		}
	}
	return out
}

// start marks the graft-routed rows taken, starts their workflows in tx
// and records the decisions. The rows are marked before the starts, so a
// checkpoint interceptor that writes the same rows at a workflow's start (a
// sync mirror mapping StatePending, in this very transaction) writes over
// intake's mark rather than under it. Rows whose start was refused are put
// back to pending and returned as failed.
func (in *Intake) start(ctx context.Context, tx *sql.Tx, snap *Snapshot, rows []claimed) (started []claimed, failed []rowError, err error) {
	if len(rows) == 0 {
		return nil, nil, nil
	}
	params := make([]engine.StartManyParams, 0, len(rows))
	keep := make([]claimed, 0, len(rows))
	ids := make([]string, 0, len(rows))
	for _, c := range rows {
		input := c.input
		if input == nil {
			var err error
			if input, err = in.src.input(c.row); err != nil {
				failed = append(failed, rowError{c.row.ID, fmt.Errorf("input: %w", err)})
				continue
			}
		}
		k := in.src.Kinds[c.row.Kind]
		opts := &engine.StartOptions{ID: c.row.ID, Queue: k.Queue, ConflictPolicy: engine.ConflictUseExisting, Headers: engine.Headers{}}
		if c.row.Customer != "" {
			opts.Headers[CustomerHeader] = c.row.Customer
		}
		if c.key != "" {
			opts.Headers[KeyHeader] = c.key
		}
		params = append(params, engine.StartManyParams{Workflow: k.Workflow, Input: input, Options: opts})
		keep = append(keep, c)
		ids = append(ids, c.row.ID)
	}
	if len(keep) == 0 {
		return nil, failed, nil
	}
	res, err := tx.ExecContext(ctx, in.sql.markGraft, in.src.Status.Graft, pq.Array(ids), in.src.Status.Pending)
	if err != nil {
		return nil, nil, fmt.Errorf("tasks: mark rows taken: %w", err)
	}
	if n, _ := res.RowsAffected(); int(n) != len(ids) {
		return nil, nil, fmt.Errorf("tasks: marked %d of %d claimed rows taken; rolled back", n, len(ids))
	}
	results, err := in.client.StartManyTx(ctx, tx, params)
	if err != nil {
		return nil, nil, err
	}
	var kinds, keys, customers, rules, runIDs, refused []string
	var buckets []int64
	ids = ids[:0]
	for i, r := range results {
		c := keep[i]
		if r.Err != nil {
			failed = append(failed, rowError{c.row.ID, r.Err})
			refused = append(refused, c.row.ID)
			continue
		}
		c.runID = r.Run.RunID
		started = append(started, c)
		ids, kinds, keys, customers = append(ids, c.row.ID), append(kinds, c.row.Kind), append(keys, c.key), append(customers, c.row.Customer)
		rules, buckets, runIDs = append(rules, c.dec.Rule), append(buckets, int64(c.dec.Bucket)), append(runIDs, r.Run.RunID)
	}
	if len(refused) > 0 {
		if _, err := tx.ExecContext(ctx, in.sql.unmark, in.src.Status.Pending, pq.Array(refused)); err != nil {
			return nil, nil, fmt.Errorf("tasks: put refused rows back to pending: %w", err)
		}
	}
	if len(ids) == 0 {
		return nil, failed, nil
	}
	// A claim is recorded only for a row that no longer looks pending:
	// one that a workflow's start wrote back to the pending value (a sync
	// mirror whose StatePending value is Status.Pending) would be claimed
	// again on every pass.
	res, err = tx.ExecContext(ctx, in.sql.claims, in.src.name(), snap.Version, pq.Array(ids), pq.Array(kinds), pq.Array(keys),
		pq.Array(customers), pq.Array(rules), pq.Array(buckets), pq.Array(runIDs), in.src.Status.Pending)
	if err != nil {
		return nil, nil, fmt.Errorf("tasks: record claims: %w", err)
	}
	if n, _ := res.RowsAffected(); int(n) != len(ids) {
		return nil, nil, fmt.Errorf("%s%d of %d rows show %s %q again once their workflows started (does a sync mirror map StatePending to %q? give it another value); rolled back",
			in.src.prefix(), len(ids)-int(n), len(ids), in.src.field("status.pending"), in.src.Status.Pending, in.src.Status.Pending)
	}
	return started, failed, nil
}

// markFailed logs rows that could not be started and writes their errors
// into Source.Error; the rows stay pending.
func (in *Intake) markFailed(ctx context.Context, tx *sql.Tx, failed []rowError) error {
	if len(failed) == 0 {
		return nil
	}
	ids, msgs := make([]string, len(failed)), make([]string, len(failed))
	in.failMu.Lock()
	if in.failing == nil || len(in.failing) > maxFailing {
		in.failing = map[string]string{}
	}
	for i, f := range failed {
		ids[i], msgs[i] = f.id, "graft intake: "+f.err.Error()
		if in.failing[f.id] != msgs[i] {
			in.failing[f.id] = msgs[i]
			in.log.Warn("tasks: operation left pending: it cannot be started (logged once per error)", "operation", f.id, "err", f.err)
		}
	}
	in.failMu.Unlock()
	if in.sql.markError == "" {
		return nil
	}
	if _, err := tx.ExecContext(ctx, in.sql.markError, pq.Array(ids), pq.Array(msgs)); err != nil {
		return fmt.Errorf("tasks: record row errors: %w", err)
	}
	return nil
}

// forgetFailures drops the started rows from the failures already logged.
func (in *Intake) forgetFailures(started []claimed) {
	in.failMu.Lock()
	defer in.failMu.Unlock()
	if len(in.failing) == 0 {
		return
	}
	for _, c := range started {
		delete(in.failing, c.row.ID)
	}
}

// lagSeconds is the age of the oldest pending row of the source's kinds.
func (in *Intake) lagSeconds(ctx context.Context) (float64, bool) {
	if in.sql.lag == "" {
		return 0, false
	}
	var lag float64
	if err := in.db.QueryRowContext(ctx, in.sql.lag, in.src.Status.Pending, pq.Array(in.kinds)).Scan(&lag); err != nil {
		return 0, false
	}
	return lag, true
}
