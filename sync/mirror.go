package graftsync

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
	"go.opentelemetry.io/otel/metric"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/pgcatalog"
	"github.com/graftdev/graft/internal/pgident"
)

// Config configures a Mirror. Zero values take the documented defaults.
type Config struct {
	// Mapping declares what is mirrored where. Required.
	Mapping Mapping
	// DB is graft's database: the engine's Config.DB, the very pool. The
	// mirror prepares its statements on it and runs them in the engine's
	// checkpoint transactions; another pool works, without the prepared
	// statements. Required.
	DB *sqlx.DB
	// Schema is graft's schema, the engine's Config.Schema. The mirror's
	// tables live there (mirror_state next to the legacy table). Default
	// DefaultSchema ("graft").
	Schema string
	// LegacyDB is the legacy table's database when it is not graft's:
	// separate-database mode, with an outbox and a relay. Default nil:
	// same-database mode, the legacy table is in DB.
	LegacyDB *sqlx.DB
	// Funcs resolves the ExtraColumn.Func names of a loaded mapping.
	Funcs map[string]ExtraFunc
	// Logger receives warnings (missing rows, unusable values) and relay
	// errors. Default slog.Default().
	Logger *slog.Logger
	// MeterProvider receives the metrics. Default: the global provider.
	MeterProvider metric.MeterProvider
	// RelayInterval is how often an idle relay looks for changes. Default
	// DefaultRelayInterval (100ms).
	RelayInterval time.Duration
	// RelayBatch bounds the changes one relay round delivers. Default
	// DefaultRelayBatch (1000).
	RelayBatch int
	// RetryMin and RetryMax bound the relay's wait after a failed delivery;
	// the wait doubles from RetryMin at each failure. Defaults
	// DefaultRetryMin (100ms) and DefaultRetryMax (30s).
	RetryMin, RetryMax time.Duration
	// ActionInterval is how often the legacy table is polled for requests.
	// Default DefaultActionInterval (1s).
	ActionInterval time.Duration
	// ActionBatch bounds the requests taken per poll. Default
	// DefaultActionBatch (100).
	ActionBatch int
}

// Defaults of Config, applied to fields left zero.
const (
	// DefaultSchema is graft's schema, engine.DefaultSchema.
	DefaultSchema = engine.DefaultSchema
	// DefaultRelayInterval is how often an idle relay looks for changes.
	DefaultRelayInterval = 100 * time.Millisecond
	// DefaultRelayBatch bounds the changes one relay round delivers.
	DefaultRelayBatch = 1000
	// DefaultRetryMin is the relay's first wait after a failed delivery.
	DefaultRetryMin = 100 * time.Millisecond
	// DefaultRetryMax is the relay's longest wait after failed deliveries.
	DefaultRetryMax = 30 * time.Second
	// DefaultActionInterval is how often the legacy table is polled for requests.
	DefaultActionInterval = time.Second
	// DefaultActionBatch bounds the requests taken per poll.
	DefaultActionBatch = 100
)

func (c *Config) withDefaults() Config {
	out := *c
	out.Schema = cmp.Or(out.Schema, DefaultSchema)
	out.Logger = cmp.Or(out.Logger, slog.Default())
	out.RelayInterval = cmp.Or(out.RelayInterval, DefaultRelayInterval)
	out.RelayBatch = cmp.Or(out.RelayBatch, DefaultRelayBatch)
	out.RetryMin = cmp.Or(out.RetryMin, DefaultRetryMin)
	out.RetryMax = cmp.Or(out.RetryMax, DefaultRetryMax)
	out.ActionInterval = cmp.Or(out.ActionInterval, DefaultActionInterval)
	out.ActionBatch = cmp.Or(out.ActionBatch, DefaultActionBatch)
	return out
}

func (c *Config) validate() error {
	switch {
	case c.DB == nil:
		return errors.New("graftsync: Config.DB is required")
	case !pgident.Valid(c.Schema):
		return fmt.Errorf("graftsync: Config.Schema %q is not a valid identifier", c.Schema)
	case c.RelayInterval < time.Millisecond:
		return fmt.Errorf("graftsync: Config.RelayInterval %v is below 1ms", c.RelayInterval)
	case c.RelayBatch < 1:
		return errors.New("graftsync: Config.RelayBatch must be positive")
	case c.RetryMin <= 0 || c.RetryMax < c.RetryMin:
		return fmt.Errorf("graftsync: Config.RetryMin %v and RetryMax %v must be positive, RetryMin <= RetryMax", c.RetryMin, c.RetryMax)
	case c.ActionInterval < 10*time.Millisecond:
		return fmt.Errorf("graftsync: Config.ActionInterval %v is below 10ms", c.ActionInterval)
	case c.ActionBatch < 1:
		return errors.New("graftsync: Config.ActionBatch must be positive")
	}
	return nil
}

// Mirror mirrors workflows into a legacy table. Register it in
// engine.Config.Interceptors (it is a CheckpointInterceptor, and an activity
// and workflow interceptor for MissingFail and input keys), then call Start
// for the relay (which every mode needs: in same-database mode it delivers
// what the legacy table refused at first) and requests (Mapping.Actions).
type Mirror struct {
	engine.InterceptorBase

	cfg   Config
	m     Mapping
	log   *slog.Logger
	table tableName
	cols  map[string]*column // by Mapping field name, see Mapping.check
	key   *column
	// actionCol is the request column, nil without Actions.
	actionCol     *column
	requestValues string // text[] literal of the request values
	extras        []*extra
	types         map[string]bool // Mapping.Workflows; nil: every type
	// labels are Step.Labels, shared by the changes (never written
	// through).
	labels map[string]*string
	keys   runKeys
	// recent: what the rows show after the changes this process folded
	// (see recentRows); max 0 when changes are never skipped.
	recent recentRows
	// stateSchema holds mirror_state: graft's schema, in the legacy database.
	stateSchema string
	stateTable  string
	// versioned: the mapping's Version column is the guard, and graft keeps
	// no mirror_state.
	versioned bool
	// planDefaults are the legacy pool's settings planOff changes.
	planDefaults [3]string
	outboxTable  string
	sql          stmts
	prep         stmtCache
	met          *metrics

	mu      sync.Mutex
	started bool
	stop    chan struct{}
	wg      sync.WaitGroup
}

// New validates the mapping against the legacy table, creates the mirror's
// tables in graft's schema when missing (mirror_state in the legacy
// database, the outbox in graft's) and returns the Mirror. Any mismatch
// between the mapping and the table is an error naming the field and the
// column.
func New(ctx context.Context, cfg Config) (*Mirror, error) {
	c := cfg.withDefaults()
	if err := c.validate(); err != nil {
		return nil, err
	}
	m := c.Mapping
	if err := m.Validate(); err != nil {
		return nil, err
	}
	t, _ := parseTable(m.Table)
	mr := &Mirror{cfg: c, m: m, log: c.Logger, table: t, stateSchema: c.Schema, keys: runKeys{max: 100000}, versioned: m.Version != ""}
	if m.keyFrom() == FromWorkflowID {
		// Only a workflow's runs write its row, one after the other.
		mr.recent.max = 100000
	}
	if m.Step != nil {
		mr.labels = make(map[string]*string, len(m.Step.Labels))
		for a, l := range m.Step.Labels {
			mr.labels[a] = &l
		}
	}
	if len(m.Workflows) > 0 {
		mr.types = map[string]bool{}
		for _, w := range m.Workflows {
			mr.types[w] = true
		}
	}
	legacy := mr.legacyDB()
	info, err := pgcatalog.Inspect(ctx, legacy, t)
	if err != nil {
		return nil, fmt.Errorf("%s%w", fieldPrefix(m.Table), err)
	}
	if mr.cols, err = m.check(info); err != nil {
		return nil, err
	}
	mr.key = mr.cols["key.column"]
	for i, x := range m.Extra {
		e := &extra{col: mr.cols[fmt.Sprintf("extra[%d].column", i)], activity: x.Activity, compute: x.Compute}
		switch {
		case x.Field != "":
			e.field = strings.Split(x.Field, ".")
		case x.Func != "":
			if e.compute = c.Funcs[x.Func]; e.compute == nil {
				return nil, fmt.Errorf("%sextra[%d].func %q is not in Config.Funcs", fieldPrefix(m.Table), i, x.Func)
			}
		}
		mr.extras = append(mr.extras, e)
	}
	if m.Actions != nil {
		mr.actionCol = info.Columns[m.actionColumn()]
		vals := make([]*string, 0, len(m.Actions.On))
		for _, v := range sortedKeys(m.Actions.On) {
			vals = append(vals, &v)
		}
		mr.requestValues = pgArray(vals)
		if !info.Indexed[mr.actionCol.Attnum] {
			mr.log.Warn("graftsync: the request column has no index; each poll for requests scans the table",
				"table", t.String(), "column", mr.actionCol.Name)
		}
	}
	if err := legacy.QueryRowContext(ctx, planSettings).Scan(&mr.planDefaults[0], &mr.planDefaults[1], &mr.planDefaults[2]); err != nil {
		return nil, fmt.Errorf("graftsync: read planner settings: %w", err)
	}
	if err := ensureTables(ctx, legacy, mr.stateSchema, !mr.versioned, c.LegacyDB == nil); err != nil {
		return nil, fmt.Errorf("graftsync: %w", err)
	}
	if c.LegacyDB != nil {
		if err := ensureTables(ctx, c.DB, c.Schema, false, true); err != nil {
			return nil, fmt.Errorf("graftsync: %w", err)
		}
	}
	if mr.met, err = newMetrics(c.MeterProvider, mr); err != nil {
		return nil, fmt.Errorf("graftsync: metrics: %w", err)
	}
	mr.buildSQL()
	for _, f := range [][2]string{{mr.sql.writeFn, mr.sql.fnSig}, {mr.sql.foldCreate, mr.sql.foldSig}} {
		if f[0] == "" {
			continue
		}
		if err := ensureFunction(ctx, legacy, mr.stateSchema, f[0], f[1]); err != nil {
			_ = mr.met.close()
			return nil, fmt.Errorf("graftsync: %w", err)
		}
	}
	texts := []string{mr.sql.rowsRelay}
	if !mr.versioned {
		texts = append(texts, mr.sql.guardRelay)
	}
	if mr.sql.callFn != "" {
		texts = append(texts, mr.sql.callFn)
	} else if c.LegacyDB == nil {
		texts = append(texts, mr.sql.rowsSame)
		if !mr.versioned {
			texts = append(texts, mr.sql.guardSame)
		}
	}
	err = mr.prep.prepare(ctx, legacy.DB, texts...)
	if err != nil {
		_ = mr.met.close()
		_ = mr.prep.close()
		return nil, fmt.Errorf("graftsync: prepare the mirror's statements: %w", err)
	}
	return mr, nil
}

// Table is the mapping's table, "schema.table".
func (mr *Mirror) Table() string { return mr.table.String() }

func (mr *Mirror) legacyDB() *sqlx.DB {
	if mr.cfg.LegacyDB != nil {
		return mr.cfg.LegacyDB
	}
	return mr.cfg.DB
}

func (mr *Mirror) mirrors(workflowType string) bool {
	return mr.types == nil || mr.types[workflowType]
}

// Checkpoint writes the batch's changes in the checkpoint transaction: into
// the legacy table (same-database mode) or the outbox.
func (mr *Mirror) Checkpoint(ctx context.Context, tx engine.CheckpointTx, events []*engine.CheckpointEvent) error {
	cs, err := mr.changes(events)
	if err != nil || len(cs) == 0 {
		return err
	}
	for _, c := range cs {
		mr.recent.forget(c.Key)
	}
	if mr.cfg.LegacyDB != nil {
		return mr.writeOutbox(ctx, tx, cs)
	}
	return mr.writeSame(ctx, tx, cs)
}

// changes folds the batch's events into one change per row, in order.
func (mr *Mirror) changes(events []*engine.CheckpointEvent) ([]*change, error) {
	return mr.changesIn(events, nil)
}

// changesIn is changes, in the memory of fs when it is not nil.
func (mr *Mirror) changesIn(events []*engine.CheckpointEvent, fs *foldScratch) ([]*change, error) {
	if len(events) >= 1<<20 {
		return nil, fmt.Errorf("graftsync: a batch of %d checkpoints is more than a position can index (2^20)", len(events))
	}
	var b batch
	// The batch's changes in one allocation (a merged one's place goes
	// unused).
	var all []change
	if fs != nil {
		all, b.byKey, b.order = fs.take(len(events))
	} else {
		all = make([]change, len(events))
		b = batch{byKey: make(map[string]*change, len(events)), order: make([]*change, 0, len(events))}
	}
	for i, ev := range events {
		if !mr.mirrors(ev.WorkflowType) {
			continue
		}
		key, err := mr.keyOf(ev)
		if err != nil {
			mr.log.Warn("graftsync: checkpoint not mirrored: no row key", "table", mr.table.String(),
				"workflow_id", ev.WorkflowID, "run_id", ev.RunID, "kind", ev.Kind, "err", err)
			continue
		}
		b.add(mr.toChange(&all[i], ev, key, int64(i)))
	}
	return b.order, nil
}

// writeSame applies changes to the legacy table in the checkpoint
// transaction. If the legacy table refuses the write (a trigger, a
// constraint, a lock timeout), the changes go to the outbox instead, in the
// same transaction, and the relay delivers them with retries: failing the
// checkpoint would fail the activity's attempt and run it again (a charge,
// say) for as long as the legacy table refuses. A row with changes waiting
// in the outbox has its later changes queued behind them, in order.
func (mr *Mirror) writeSame(ctx context.Context, tx engine.CheckpointTx, cs []*change) error {
	if mr.sql.callFn != "" {
		return mr.writeSameFn(ctx, tx, cs)
	}
	// One round trip: the savepoint the fallback needs, and planOff.
	if _, err := tx.ExecContext(ctx, `SAVEPOINT graftsync_mirror; `+planOff); err != nil {
		return fmt.Errorf("graftsync: mirror into %s: %w", mr.table, err)
	}
	if err := mr.apply(ctx, tx, true, cs); err != nil {
		if _, rerr := tx.ExecContext(ctx, `ROLLBACK TO SAVEPOINT graftsync_mirror`); rerr != nil {
			return fmt.Errorf("graftsync: mirror into %s: %w", mr.table, errors.Join(err, rerr))
		}
		mr.log.Error("graftsync: mirror write refused; changes queued for the relay", "table", mr.table.String(),
			"rows", len(cs), "err", err)
		mr.met.queued(ctx, int64(len(cs)))
		return mr.writeOutbox(ctx, tx, cs)
	}
	return mr.queueDeferred(ctx, tx, cs)
}

// writeSameFn is writeSame through the write function (writeFnSQL): one
// round trip, in which the function's block is the savepoint.
func (mr *Mirror) writeSameFn(ctx context.Context, tx engine.CheckpointTx, cs []*change) error {
	byKey := make(map[string]*change, len(cs))
	for _, c := range cs {
		c.out, c.now = outPassed, c.State
		byKey[c.Key] = c
	}
	args := mr.rowsArgs(true, cs, false)
	args = args[:len(args)-len(mr.planDefaults)] // the function's SET clauses are planOff
	rows, err := mr.prep.query(ctx, mr.legacyDB().DB, tx, mr.sql.callFn, args...)
	if err != nil {
		return fmt.Errorf("graftsync: mirror into %s: %w", mr.table, err)
	}
	var refused string
	for rows.Next() {
		var kind string
		var key sql.NullString
		if err := rows.Scan(&kind, &key); err != nil {
			rows.Close()
			return fmt.Errorf("graftsync: mirror into %s: %w", mr.table, err)
		}
		if kind == "x" {
			refused = key.String
			continue
		}
		if c := byKey[key.String]; c != nil {
			c.record(kind)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("graftsync: mirror into %s: %w", mr.table, err)
	}
	if refused != "" {
		// The function's block rolled the write back.
		mr.log.Error("graftsync: mirror write refused; changes queued for the relay", "table", mr.table.String(),
			"rows", len(cs), "err", refused)
		mr.met.queued(ctx, int64(len(cs)))
		return mr.writeOutbox(ctx, tx, cs)
	}
	return mr.queueDeferred(ctx, tx, cs)
}

// queueDeferred writes the changes queued behind changes waiting in the
// outbox (outDeferred) to the outbox, and settles the others.
func (mr *Mirror) queueDeferred(ctx context.Context, tx engine.CheckpointTx, cs []*change) error {
	var later []*change
	for _, c := range cs {
		if c.out&outDeferred != 0 {
			later = append(later, c)
		}
	}
	if len(later) > 0 {
		mr.met.queued(ctx, int64(len(later)))
		if err := mr.writeOutbox(ctx, tx, later); err != nil {
			return err
		}
	}
	return mr.settle(ctx, cs, true)
}

// apply runs the guard and the rows statement (guardSQL, rowsSQL) and records
// each change's outcome on it. planOff must have run in q.
func (mr *Mirror) apply(ctx context.Context, q queryer, same bool, cs []*change) error {
	guard, stmt := mr.sql.guardRelay, mr.sql.rowsRelay
	if same {
		guard, stmt = mr.sql.guardSame, mr.sql.rowsSame
	}
	byKey := make(map[string]*change, len(cs))
	for _, c := range cs {
		c.out, c.now = 0, ""
		byKey[c.Key] = c
	}
	db := mr.legacyDB().DB
	passed := make([]*change, 0, len(cs))
	if mr.versioned {
		// The version column is the guard; a wait's stickiness is decided
		// by the row's status (see rowsSQL).
		for _, c := range cs {
			c.out, c.now = outPassed, c.State
			passed = append(passed, c)
		}
	} else {
		rows, err := mr.prep.query(ctx, db, q, guard, mr.guardArgs(cs)...)
		if err != nil {
			return err
		}
		for rows.Next() {
			var key, val string
			if err := rows.Scan(&key, &val); err != nil {
				rows.Close()
				return err
			}
			c := byKey[key]
			switch {
			case c == nil:
			case val == "":
				c.out |= outDeferred
			default:
				c.out |= outPassed
				c.now = State(val)
				passed = append(passed, c)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
	}
	// Run even when nothing passed: the statement puts the settings back.
	rows, err := mr.prep.query(ctx, db, q, stmt, mr.rowsArgs(same, passed, false)...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var kind string
		var key sql.NullString
		if err := rows.Scan(&kind, &key); err != nil {
			return err
		}
		if c := byKey[key.String]; c != nil {
			c.record(kind)
		}
	}
	return rows.Err()
}

// record notes on c one row of the rows statement (see rowsSQL).
func (c *change) record(kind string) {
	switch kind {
	case "u":
		c.out |= outUpdated | outExists
	case "e":
		c.out |= outExists
	case "i":
		c.out |= outInserted
	case "d":
		c.out = outDeferred
	}
}

// settle accounts for a write: stale changes, missing rows and the policy.
// refuse says whether a start whose row is missing can still be refused
// (same-database mode, inside the checkpoint transaction).
func (mr *Mirror) settle(ctx context.Context, cs []*change, refuse bool) error {
	var written, stale, missing int64
	var refused error
	for _, c := range cs {
		switch {
		case c.out&outDeferred != 0:
		case c.out&outPassed == 0:
			stale++
		case c.out&(outUpdated|outInserted) != 0:
			written++
		case c.out&outExists != 0:
			// Nothing to change, or the version column is ahead.
		default:
			missing++
			policy := mr.m.missingRow()
			if policy == MissingFail && c.Started && refuse {
				if refused == nil {
					refused = &MissingRowError{Table: mr.table.String(), Key: c.Key, WorkflowID: c.WorkflowID}
				}
				continue
			}
			mr.log.Warn("graftsync: legacy row missing; change not written", "table", mr.table.String(), "key", c.Key,
				"workflow_id", c.WorkflowID, "state", c.State, "missing_row", policy)
		}
	}
	mr.met.wrote(ctx, written, stale, missing)
	return refused
}

// writeOutbox records the changes for the relay.
func (mr *Mirror) writeOutbox(ctx context.Context, tx engine.CheckpointTx, cs []*change) error {
	keys := make([]*string, len(cs))
	firsts := make([]*string, len(cs))
	lasts := make([]*string, len(cs))
	payloads := make([]*string, len(cs))
	for i, c := range cs {
		b, err := json.Marshal(c)
		if err != nil {
			return fmt.Errorf("graftsync: encode change: %w", err)
		}
		k, f, l, p := c.Key, fmt.Sprint(c.First), fmt.Sprint(c.Last), string(b)
		keys[i], firsts[i], lasts[i], payloads[i] = &k, &f, &l, &p
	}
	if _, err := tx.ExecContext(ctx, mr.sql.outbox, mr.table.String(), pgArray(keys), pgArray(firsts), pgArray(lasts), pgArray(payloads)); err != nil {
		return fmt.Errorf("graftsync: write outbox: %w", err)
	}
	return nil
}

// queryer is a checkpoint transaction or a relay's transaction.
type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// ExecuteActivity checks, under MissingFail, that the workflow's row still
// exists before each attempt; when it does not, the attempt fails
// non-retryably with an ApplicationError of type MissingRowErrorType.
func (mr *Mirror) ExecuteActivity(ctx context.Context, in *engine.ActivityInput, next engine.ActivityNext) (any, error) {
	if mr.m.missingRow() != MissingFail || !mr.mirrors(in.Info.Workflow.WorkflowType) {
		return next(ctx, in)
	}
	wf := in.Info.Workflow
	key, err := mr.keyOf(&engine.CheckpointEvent{Kind: engine.CheckpointActivityCompleted, WorkflowID: wf.WorkflowID, RunID: wf.RunID, Headers: in.Headers})
	if err != nil {
		return next(ctx, in) // no key, nothing to check; the checkpoint logs it
	}
	var ok bool
	if err := mr.legacyDB().QueryRowContext(ctx, mr.sql.exists, key).Scan(&ok); err != nil {
		return nil, fmt.Errorf("graftsync: check legacy row %s %q: %w", mr.table, key, err)
	}
	if !ok {
		e := &MissingRowError{Table: mr.table.String(), Key: key, WorkflowID: wf.WorkflowID}
		return nil, engine.NewNonRetryableError(MissingRowErrorType, e.Error(), map[string]string{"table": e.Table, "key": key})
	}
	return next(ctx, in)
}

// ExecuteWorkflow remembers the row key of a run whose key comes from its
// input, for the checkpoints that do not carry the input.
func (mr *Mirror) ExecuteWorkflow(ctx engine.Context, in *engine.ExecuteWorkflowInput, next engine.WorkflowNext) (any, error) {
	if mr.m.keyFrom() != FromInput || !mr.mirrors(in.Info.WorkflowType) {
		return next(ctx, in)
	}
	key, err := mr.inputKey(in.Args)
	if err != nil {
		mr.log.Warn("graftsync: workflow not mirrored: no row key", "table", mr.table.String(), "workflow_id", in.Info.WorkflowID, "err", err)
		return next(ctx, in)
	}
	mr.keys.acquire(in.Info.RunID, key)
	defer mr.keys.release(in.Info.RunID)
	return next(ctx, in)
}

// Start starts the background work: the relay, which in same-database
// mode delivers only the changes the legacy table refused at first, and the
// request poller when the mapping has Actions (which uses c to cancel and
// signal; c may be nil without Actions). Stop ends it.
func (mr *Mirror) Start(ctx context.Context, c *engine.Client) error {
	mr.mu.Lock()
	defer mr.mu.Unlock()
	if mr.started {
		return errors.New("graftsync: mirror already started")
	}
	if mr.m.Actions != nil && c == nil {
		return errors.New("graftsync: Start needs a client to act on requests (Mapping.Actions)")
	}
	mr.started = true
	mr.stop = make(chan struct{})
	mr.wg.Add(1)
	go func() {
		defer mr.wg.Done()
		mr.relayLoop()
	}()
	if mr.m.Actions != nil {
		mr.wg.Add(1)
		go func() {
			defer mr.wg.Done()
			mr.actionLoop(c)
		}()
	}
	return nil
}

// Stop ends the background work started by Start and waits for it, or for
// ctx.
func (mr *Mirror) Stop(ctx context.Context) error {
	mr.mu.Lock()
	if !mr.started {
		mr.mu.Unlock()
		return nil
	}
	mr.started = false
	close(mr.stop)
	mr.mu.Unlock()
	done := make(chan struct{})
	go func() { mr.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops the background work and unregisters the metrics.
func (mr *Mirror) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := mr.Stop(ctx)
	return errors.Join(err, mr.met.close(), mr.prep.close())
}

// PurgeClosed deletes up to limit mirror_state rows whose run ended before
// cutoff, and returns how many it deleted (none with a Version column,
// since graft then keeps no mirror_state). mirror_state holds one row per
// mirrored legacy row; call this with the engine's retention, well past the
// relay's lag: a purged row no longer guards against a late delivery of its
// run's changes. A new run of the workflow mirrors as before.
func (mr *Mirror) PurgeClosed(ctx context.Context, cutoff time.Time, limit int) (int, error) {
	if limit <= 0 {
		return 0, errors.New("graftsync: PurgeClosed: limit must be positive")
	}
	if mr.versioned {
		return 0, nil // no mirror_state
	}
	res, err := mr.legacyDB().ExecContext(ctx, `DELETE FROM `+mr.stateTable+` WHERE (mapping, row_key) IN (
			SELECT mapping, row_key FROM `+mr.stateTable+` WHERE mapping = $1 AND closed AND updated_at < $2
			LIMIT $3 FOR UPDATE SKIP LOCKED)`, mr.table.String(), cutoff, limit)
	if err != nil {
		return 0, fmt.Errorf("graftsync: purge %s: %w", mr.stateTable, err)
	}
	n, err := res.RowsAffected()
	return int(n), err
}
