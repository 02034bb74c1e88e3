// Package graftsync mirrors the life of graft workflows into an existing
// ("legacy") operations table through a declared Mapping, so that the legacy
// API, and whoever reads the table, shows the truth without knowing graft
// exists. It also carries requests the other way: a legacy back office that
// sets a row's status to, say, "cancel_requested" cancels or signals the
// workflow.
//
// The directory is sync/ but the package is named graftsync, so that it
// does not shadow the standard library's sync wherever both are imported:
//
//	import graftsync "github.com/graftdev/graft/sync"
//
// It imports engine (for the interceptor interfaces and the client) and
// third-party libraries, and none of graft's other packages.
//
// # Using it
//
// One Mirror serves one Mapping (one legacy table); register several for
// several tables. Create it before the engine, on the engine's pool, and
// register it as an interceptor:
//
//	mr, err := graftsync.New(ctx, graftsync.Config{Mapping: m, DB: db, Schema: "graft"})
//	e, err := engine.New(engine.Config{DB: db, DatabaseURL: url, Schema: "graft",
//		Interceptors: []engine.Interceptor{mr}})
//	err = mr.Start(ctx, e.Client()) // the relay and requests, when used
//	defer mr.Close()
//
// # The mapping
//
// A Mapping names the table (schema-qualified), how a workflow finds its row
// (the workflow ID, a header, or a field of the workflow's input) and which
// columns receive what: a status through a map from graft's states (State) to
// the legacy vocabulary, the current step through a map from activity names
// to legacy labels, the last error, the attempt count, an updated-at time, a
// progress value, and extra columns computed from an activity's result by
// functions you register in Config.Funcs. Declare it in Go or load it from
// YAML or JSON with LoadMapping. Only the columns a mapping names are ever
// read or written; graft never alters a legacy table.
//
// New checks the mapping against the database before anything runs: the
// table and every named column must exist with a compatible type, enum and
// varchar columns must accept every configured value, a "create" policy needs
// a unique key and values for every NOT NULL column. Errors name the field and
// the column. Identifiers are validated and quoted, never concatenated raw.
//
// # States
//
// A workflow's state follows its checkpoints: started is StatePending; each
// completed or failed activity is StateRunning; an unloaded wait is
// StateWaiting; the end is StateCompleted, StateFailed or StateCancelled
// (continue-as-new stays StateRunning). StateNeedsOperator is graft's name for
// "stuck until a person acts": an activity failure or a workflow failure whose
// error matches engine.ErrNeedsOperator (see engine.NewNeedsOperatorError, or set
// Mapping.NeedsOperator). A workflow that catches such a failure and waits for
// an operator's signal keeps the state while it waits; its next activity or
// its end moves it on.
//
// The step column shows the latest activity that reached a checkpoint: graft
// records an activity when it completes or finally fails, not when it starts,
// and likewise the attempt count is the number of attempts that activity took.
//
// # Same-database mode
//
// When the legacy table lives in graft's database (Config.LegacyDB is nil),
// the Mirror is a CheckpointInterceptor: the rows change in the very
// transaction that records the checkpoint, so a mirror write is exactly-once
// and atomic with the engine's own state. A batch of checkpoints (group
// commit) costs one or two set-based statements, however many rows it
// touches: a guard that upserts mirror_state (not with a Version column),
// and one that updates the legacy rows. Both are prepared when the Mirror is
// created, on Config.DB, which is why it must be the engine's own pool, and
// both look rows up by index: they are planned with sequential scans off,
// since a table that was never analyzed looks tiny to the planner, which
// would then read all of it for every batch. A change that alters no mapped
// column writes nothing: the statement reads each of the batch's rows once,
// and updates only a row that a change alters (folded, the update finds
// the row by its key and writes it when the change alters it; a row it
// leaves as it is is looked up once more, to tell whether it exists). With
// the legacy table's own indexes, an update of an indexed column such as a
// status is never a HOT update, which is most of what a mirror costs.
//
// If the legacy table refuses a write (a trigger, a constraint), the batch's
// changes go to the outbox instead, in the same transaction, and the relay
// (Start) delivers them with retries; later changes of those rows queue
// behind them. Failing the checkpoint instead would make the engine drop the
// run and run its last activity again and again. The write is therefore
// undone on its own: after a savepoint, or, with a Version column, inside a
// PL/pgSQL function whose EXCEPTION block does the same in the one round
// trip that writes the batch. New creates that function in graft's schema,
// named graftsync_write_ and a hash of its text (a changed mapping gets a
// new one; dropping an unused one is safe, a Mirror re-creates its own when
// it starts).
//
// With a Version column, and a MissingRow policy other than MissingFail
// (which may refuse a checkpoint), the mirror goes further: it is an
// engine.CheckpointFolder, and the engine calls a second function
// (graftsync_fold_ and a hash) inside its own commit statement, so a batch
// of checkpoints and its legacy rows are one statement and one round trip.
// It leaves out the changes of runs whose records the statement did not
// write (a lost lease, a refused start). When the legacy table refuses the
// write, or a row of the batch has changes waiting in the outbox, the
// function fails the statement, and the engine writes the batch again in a
// transaction with Checkpoint, as above: the rare case pays twice so that
// the usual one carries no savepoint and no outbox payloads.
//
// When rows are keyed by workflow ID, a folded change that would leave
// every mapped column as the run's previous change left it (the same
// status, step, attempts...) is not even looked up, provided this process
// folded that previous change and saw it commit, and the run has written
// nothing since (the change's first event follows it); it is not sent to
// the statement at all, and the engine tells whether the statement wrote
// the run (CheckpointFold.Unwritten). A legacy write to the row in between
// then shows until the run's next change that alters the row, which
// judges the row as any change does.
//
// # Separate-database mode
//
// When Config.LegacyDB is set, the checkpoint transaction writes each row's
// change into an outbox table in graft's schema, and a relay (started by
// Start) delivers the changes to the legacy database in order per row, with
// retries and backoff. A row whose change keeps failing is retried on its own
// with growing waits, and holds back only its own later changes. One relay at
// a time works per mapping (a PostgreSQL advisory lock elects it; the others
// stand by), which is what keeps the order per row. The age of the oldest
// undelivered change is the MetricRelayLag gauge.
//
// # Never regress
//
// Every change carries a position: the checkpoint transaction's ID shifted
// left by 20 bits plus the change's index in its batch. One run's
// checkpoints commit one after the other, so positions grow in the order
// things happened (when a workflow runs activities in parallel, the one
// whose completion commits last is the one the row shows); a run that
// replaces another (reset, continue-as-new, a reused ID) is created after
// it, so its positions are higher too. A change whose position is not above
// the row's is dropped, so a duplicate or late relay delivery never
// overwrites a newer state. The row's position is kept in one of two places.
//
// By default graft keeps it in <schema>.mirror_state, one row per legacy
// row, next to the legacy table (in the legacy database in
// separate-database mode). mirror_state also records which run owns the
// row, whether that run has ended (nothing of an ended run shows after its
// end, not even an activity it left running), whether it needs an operator,
// and the workflow ID that requests are sent to. In same-database mode a
// run's changes commit in order, so it is written only when one of those
// changes; the relay writes every position.
//
// When the mapping names a Version column (bigint), the row's version is
// the position, checked and written with the row, and graft keeps no
// mirror_state: a batch then costs one statement, and the legacy
// application sees graft's writes in its own optimistic locking. What the
// version cannot say, graft then takes elsewhere: whether the workflow needs
// an operator comes from the row's status, the rows graft mirrors are those
// with a version, and requests need the key to be the workflow ID. An ended
// run is protected by the engine alone, which fences a worker that lost its
// run and discards what an ended run's leftover activities produce.
//
// # A missing row
//
// Mapping.MissingRow decides what happens when a workflow's row does not
// exist: MissingSkip (the default) logs a warning and writes nothing;
// MissingCreate inserts the row; MissingFail refuses the workflow. A start
// whose row is missing is refused with a *MissingRowError (in same-database
// mode inside the checkpoint transaction; in separate-database mode the first
// activity finds it), and every activity attempt first checks that the row
// is still there, failing non-retryably (ApplicationError type
// MissingRowErrorType) when it is not, so the workflow fails with that error
// unless it handles it.
//
// # Requests from the legacy side
//
// Mapping.Actions turns request values of a column into graft calls: a
// cancellation or a named signal whose payload is a Request. graft polls for
// them: every Config.ActionInterval it selects the rows whose request column
// holds a request value and that graft mirrors (a join with mirror_state, or
// a version set), acts, and then acknowledges by writing Action.Ack (or,
// when empty, the status of the run's current state) with a compare-and-set,
// so a request the legacy side changed meanwhile is left alone. Mirror
// writes never overwrite a pending request value.
//
// Why polling rather than a trigger with NOTIFY: a trigger would alter the
// legacy table, which graft never does (DESIGN.md: the table stays the user's), and
// the requests are people's actions, for which a second of latency is
// nothing. Polling on the request values themselves, rather than on an
// updated-at cursor, needs no cursor, misses no row whose transaction commits
// late, and does not depend on the legacy application bumping updated-at; it
// is cheap when the request column is indexed (New logs a warning when it is
// not). Only rows graft mirrors are considered, so the legacy runner's own
// rows are left alone. Delivery is at least once:
// cancelling twice is harmless, but a process that dies between a signal and
// its acknowledgement leaves the request to be signalled again, so a
// signal handler should be idempotent.
//
// # Metrics
//
// The Mirror reports through OpenTelemetry (Config.MeterProvider, nil for the
// global provider): rows written, missing rows, stale changes dropped,
// relay deliveries, errors, delay and lag, and requests acted on. See the
// Metric* constants.
package graftsync
