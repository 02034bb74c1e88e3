package graftsync

import (
	"context"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/graftdev/graft/internal/pgarray"
)

// This file holds the mirror's SQL. Every identifier in it comes from a
// validated, quoted mapping or from the catalog (type names), never from
// event data; event data travels in parameters.

// stmts are one mapping's statements, built once by New.
type stmts struct {
	guardSame, rowsSame   string // same-database write: positions from the transaction ID
	guardRelay, rowsRelay string // relay write: positions given
	readState             string // relay: stored positions of rows, locked
	outbox                string // checkpoint: changes into the outbox
	exists                string // MissingFail: does a row exist
	poll                  string // requests
	ack                   string // a request taken
	lockState             string // acknowledgement: the row's mirror state, locked
	lockRow               string // acknowledgement with a version column: the legacy row, locked
	reqArg                bool   // the rows statement takes the request values
	needOpArg             bool   // the rows statement takes the needs_operator status value
	mappingArg            bool   // the same-database rows statement takes the mapping (after the arrays)

	claim, oldest, deliver, retry string // relay, graft side

	// writeFn creates the function that writes a batch in same-database
	// mode with a version column, fnSig is its signature and callFn calls
	// it (see writeFnSQL); empty otherwise.
	writeFn, fnSig, callFn string
	// foldCreate creates the function the engine calls within its commit
	// statement, foldSig is its signature and foldFn its name (see
	// foldFnSQL); empty when the mirror does not fold.
	foldCreate, foldSig, foldFn string
}

func (mr *Mirror) buildSQL() {
	s := &mr.sql
	mr.stateTable = qi(mr.stateSchema) + ".mirror_state"
	mr.outboxTable = qi(mr.cfg.Schema) + ".mirror_outbox" // in graft's database, which is the legacy one in same-database mode
	s.guardSame, s.rowsSame = mr.guardSQL(true), mr.rowsSQL(true, false)
	s.guardRelay, s.rowsRelay = mr.guardSQL(false), mr.rowsSQL(false, false)
	if mr.versioned && mr.cfg.LegacyDB == nil {
		s.writeFn, s.fnSig, s.callFn = mr.writeFnSQL()
		if mr.m.missingRow() != MissingFail {
			s.foldCreate, s.foldSig, s.foldFn = mr.foldFnSQL()
		}
	}
	key := mr.cols["key.column"]
	t := mr.table.Quoted()
	s.readState = `SELECT row_key, ord FROM ` + mr.stateTable + ` WHERE mapping = $1 AND row_key = ANY($2::text[]) FOR UPDATE`
	// Statements of the versioned variant reference $1 (the mapping) without
	// needing it, so that both variants take the same arguments.
	if v := mr.cols["version"]; v != nil {
		// The legacy rows' versions, locked: the relay's write follows.
		s.readState = `SELECT ` + qi(key.Name) + `::text, ` + qi(v.Name) + `::bigint FROM ` + t + `
			WHERE $1::text IS NOT NULL AND ` + qi(key.Name) + ` = ANY($2::text[]::` + key.Type + `[]) AND ` + qi(v.Name) + ` IS NOT NULL FOR UPDATE`
	}
	s.outbox = `INSERT INTO ` + mr.outboxTable + ` (mapping, row_key, first_ord, last_ord, change)
		SELECT $1, v.row_key, o.base + v.first, o.base + v.last, v.change::jsonb
		FROM unnest($2::text[], $3::bigint[], $4::bigint[], $5::text[]) AS v(row_key, first, last, change),
			(SELECT pg_current_xact_id()::text::bigint << 20 AS base) o`
	s.lockState = `SELECT state FROM ` + mr.stateTable + ` WHERE mapping = $1 AND row_key = $2 FOR UPDATE`
	s.lockRow = `SELECT 1 FROM ` + t + ` WHERE ` + qi(key.Name) + ` = $1::` + key.Type + ` FOR UPDATE`
	s.exists = `SELECT EXISTS (SELECT 1 FROM ` + t + ` WHERE ` + qi(key.Name) + ` = $1::` + key.Type + `)`
	if ac := mr.actionCol; ac != nil && mr.versioned {
		// No mirror_state: the rows graft mirrors are those with a version,
		// and their key is the workflow ID (Mapping.Validate).
		s.poll = `SELECT t.` + qi(key.Name) + `::text, t.` + qi(ac.Name) + `::text, t.` + qi(key.Name) + `::text, ''
			FROM ` + t + ` t WHERE $1::text IS NOT NULL AND t.` + qi(ac.Name) + ` = ANY($2::text[]::` + ac.Type + `[])
			  AND t.` + qi(mr.cols["version"].Name) + ` IS NOT NULL LIMIT $3`
		s.ack = `UPDATE ` + t + ` t SET ` + qi(ac.Name) + ` = COALESCE($4::` + ac.Type + `, t.` + qi(ac.Name) + `)
			WHERE $1::text IS NOT NULL AND t.` + qi(key.Name) + ` = $2::` + key.Type + ` AND t.` + qi(ac.Name) + ` = $3::` + ac.Type + `
			  AND $5::text[] IS NOT NULL AND $6::text[] IS NOT NULL`
	} else if ac != nil {
		s.poll = `SELECT t.` + qi(key.Name) + `::text, t.` + qi(ac.Name) + `::text, m.workflow_id, m.state
			FROM ` + t + ` t JOIN ` + mr.stateTable + ` m ON m.mapping = $1 AND m.row_key = t.` + qi(key.Name) + `::text
			WHERE t.` + qi(ac.Name) + ` = ANY($2::text[]::` + ac.Type + `[]) LIMIT $3`
		s.ack = `UPDATE ` + t + ` t SET ` + qi(ac.Name) + ` = COALESCE($4::` + ac.Type + `,
				(SELECT x.val FROM unnest($5::text[], $6::text[]) AS x(s, val) WHERE x.s = m.state)::` + ac.Type + `, t.` + qi(ac.Name) + `)
			FROM ` + mr.stateTable + ` m
			WHERE m.mapping = $1 AND m.row_key = $2 AND t.` + qi(key.Name) + ` = $2::` + key.Type + ` AND t.` + qi(ac.Name) + ` = $3::` + ac.Type
	}
	s.claim = `SELECT id, row_key, first_ord, last_ord, change::text, created_at FROM ` + mr.outboxTable + `
		WHERE mapping = $1 AND row_key NOT IN (SELECT row_key FROM ` + mr.outboxTable + ` WHERE mapping = $1 AND next_attempt_at > now())
		ORDER BY id LIMIT $2`
	s.oldest = `SELECT created_at FROM ` + mr.outboxTable + ` WHERE mapping = $1 ORDER BY id LIMIT 1`
	s.deliver = `DELETE FROM ` + mr.outboxTable + ` WHERE id = ANY($1::bigint[])`
	s.retry = `UPDATE ` + mr.outboxTable + ` SET attempts = attempts + 1, next_attempt_at = now() + $2::interval, last_error = $3
		WHERE id = ANY($1::bigint[])`
}

// A batch is written with two statements, guard then rows (with a Version
// column, rows alone), each one round trip whatever the batch's size.
//
// The guard upserts mirror_state: it drives from the batch and probes the
// primary key once per row. A change passes when its last position is
// above the stored one and the stored run has not ended (an activity left
// running by a workflow that returned must not reopen it). Comparing the
// last position is enough: a change is one transaction's (same-database
// mode), or the relay dropped the ones at or below the stored position
// before merging (see deliver). It returns the keys that passed, with the
// state they now have. With a Version column there is no guard statement:
// the version is the guard, checked by the rows statement.
//
// The rows statement updates the legacy rows (and creates them under
// MissingCreate). A batch touches few rows of a table that may be large, but
// a table created or filled recently, and not analyzed since, looks tiny to
// the planner, which then reads all of it for every batch: that is where a
// mirror's cost would go. So both statements run after planOff, which turns
// sequential and bitmap scans off and asks for the generic plan of prepared
// statements (see stmtCache), and the rows statement puts the settings back
// as it executes (with a Version column in same-database mode, the rows
// statement runs inside a function whose SET clauses do both: writeFnSQL). It returns (kind, key) rows: 'u' updated, 'e' exists but
// left as it was (the change altered nothing, or the version column is
// ahead), 'i' created, and one 'r' row.

// guardSQL builds the guard; same: positions come from the transaction ID.
//
// In same-database mode a run's changes commit in the order they happen,
// so within one run the stored position need not move: the row is written
// only when the guard needs it (a row's first change, a new run, the run's
// end, a move into or out of needs_operator) and otherwise only read, with
// one index lookup. The relay, whose deliveries can repeat, writes every
// position. Rows with changes waiting in the outbox (see writeSame) are left
// out, and reported with an empty state.
func (mr *Mirror) guardSQL(same bool) string {
	upsert := func(from, last string) string {
		return `INSERT INTO ` + mr.stateTable + ` AS m (mapping, row_key, workflow_id, run_id, ord, state, weak, closed)
		SELECT $1, v.row_key, v.workflow_id, v.run_id, ` + last + `, v.state, v.weak, v.closed FROM ` + from + `
		ON CONFLICT (mapping, row_key) DO UPDATE SET workflow_id = excluded.workflow_id, run_id = excluded.run_id, ord = excluded.ord,
			state = CASE WHEN excluded.weak AND m.state = 'needs_operator' THEN m.state ELSE excluded.state END,
			weak = excluded.weak, closed = excluded.closed, updated_at = now()
		WHERE m.ord < excluded.ord AND NOT (m.closed AND m.run_id = excluded.run_id)
		RETURNING m.row_key, m.state`
	}
	in := `WITH v AS (SELECT * FROM unnest($2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::bool[], $8::bool[])
			AS v(row_key, workflow_id, run_id, last, state, weak, closed))`
	var body, out string
	if same {
		// The outbox is almost always empty: look at it once (an InitPlan)
		// before looking up each row in it.
		body = `WITH v0 AS (SELECT * FROM unnest($2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::bool[], $8::bool[])
			AS v(row_key, workflow_id, run_id, last, state, weak, closed)),
	o AS (SELECT pg_current_xact_id()::text::bigint << 20 AS base),
	d AS (SELECT v0.row_key FROM v0
		WHERE (SELECT EXISTS (SELECT 1 FROM ` + mr.outboxTable + ` WHERE mapping = $1))
		  AND EXISTS (SELECT 1 FROM ` + mr.outboxTable + ` b WHERE b.mapping = $1 AND b.row_key = v0.row_key)),
	s AS (SELECT v0.*, x.ord AS m_ord, x.run_id AS m_run, x.closed AS m_closed, x.state AS m_state
		FROM v0 LEFT JOIN LATERAL (SELECT m.ord, m.run_id, m.closed, m.state FROM ` + mr.stateTable + ` m
			WHERE m.mapping = $1 AND m.row_key = v0.row_key LIMIT 1) x ON true
		WHERE NOT EXISTS (SELECT 1 FROM d WHERE d.row_key = v0.row_key)),
	up AS (` + upsert(`s v, o WHERE v.m_run IS NULL OR v.m_run <> v.run_id OR v.closed
			OR (v.state = 'needs_operator') <> (v.m_state = 'needs_operator')`, "(o.base + v.last)") + `),
	keep AS (SELECT v.row_key, CASE WHEN v.weak AND v.m_state = 'needs_operator' THEN v.m_state ELSE v.state END AS state
		FROM s v, o
		WHERE v.m_run = v.run_id AND NOT v.m_closed AND NOT v.closed AND v.m_ord < o.base + v.last
		  AND (v.state = 'needs_operator') = (v.m_state = 'needs_operator'))`
		out = `SELECT row_key, state FROM up UNION ALL SELECT row_key, state FROM keep UNION ALL SELECT row_key, '' FROM d`
	} else {
		body = in + `,
	up AS (` + upsert("v", "v.last") + `)`
		out = `SELECT row_key, state FROM up`
	}
	return body + `
	` + out
}

// planOff turns off sequential and bitmap scans, and asks for the generic
// plan of prepared statements, for the rest of the transaction (or up to a
// rollback to the savepoint it follows); the rows statement puts back the
// settings the pool's sessions had when the Mirror was created. See the
// comment above guardSQL.
const planOff = `SELECT set_config('enable_seqscan', 'off', true), set_config('enable_bitmapscan', 'off', true),
	set_config('plan_cache_mode', 'force_generic_plan', true)`

// planSettings reads the settings planOff changes.
const planSettings = `SELECT current_setting('enable_seqscan'), current_setting('enable_bitmapscan'), current_setting('plan_cache_mode')`

func (mr *Mirror) guardArgs(cs []*change) []any {
	var cols [7]arrayBuilder
	var num [24]byte
	for _, c := range cs {
		cols[0].add(c.Key)
		cols[1].add(c.WorkflowID)
		cols[2].add(c.RunID)
		cols[3].addRaw(strconv.AppendInt(num[:0], c.Last, 10))
		cols[4].add(string(c.State))
		cols[5].addBool(c.Weak)
		cols[6].addBool(c.Closed)
	}
	args := []any{mr.table.String()}
	for i := range cols {
		args = append(args, cols[i].String())
	}
	return args
}

// rowsArrays is the number of per-change arrays of the rows statement
// before the extras.
const rowsArrays = 11

// writeFnSQL builds, for same-database mode with a version column, a
// function that runs the rows statement in a block that catches its
// failure, and the statement that calls it. A batch then costs one round
// trip: the function is the savepoint (a PL/pgSQL block with an EXCEPTION
// clause runs in a subtransaction, which a failure rolls back), and its SET
// clauses are planOff, undone by PostgreSQL when it returns. A refusal
// comes back as one row ('x', the error) after whatever the statement had
// returned before failing. The function lives in graft's schema, named
// after a hash of its text, so a changed mapping gets a new one and a
// process never replaces the function another one is calling.
func (mr *Mirror) writeFnSQL() (create, sig, call string) {
	body := mr.rowsSQL(true, false)
	body = body[:strings.LastIndex(body, ` UNION ALL SELECT 'r', set_config(`)]
	params := make([]string, mr.rowsParams())
	for i := range params {
		params[i] = "text"
	}
	create, sig, fn := mr.fnSQL("graftsync_write_", params, "RETURN QUERY "+body, `SELECT 'x'::text, SQLSTATE || ': ' || SQLERRM`)
	if fn == "" {
		return "", "", ""
	}
	args := make([]string, len(params))
	for i := range args {
		args[i] = "$" + strconv.Itoa(i+1)
	}
	return create, sig, `SELECT graftsync_kind, graftsync_key FROM ` + fn + `(` + strings.Join(args, ", ") + `)`
}

// rowsParams is the number of parameters of the rows statement before the
// planner settings it puts back (set by rowsSQL).
func (mr *Mirror) rowsParams() int {
	return rowsArrays + len(mr.extras) + btoi(mr.sql.mappingArg) + btoi(mr.sql.reqArg) + btoi(mr.sql.needOpArg)
}

// fnSQL builds a write function of graft's schema named prefix and a hash
// of its text, with params, running body (PL/pgSQL statements) in a block
// whose failure runs the query onErr instead; without onErr, a failure
// fails the call. The function returns (kind, key) rows. fnSQL returns the
// CREATE statement, the signature and the name; all empty when body cannot
// be quoted.
func (mr *Mirror) fnSQL(prefix string, params []string, body, onErr string) (create, sig, fn string) {
	const quote = "$graftsync$"
	if strings.Contains(body, quote) || strings.Contains(onErr, quote) {
		return "", "", "" // cannot be quoted so: the batch takes the savepoint path
	}
	handler := ""
	if onErr != "" {
		handler = `EXCEPTION WHEN OTHERS OR query_canceled THEN
	RETURN QUERY ` + onErr + `;
`
	}
	text := `(` + strings.Join(params, ", ") + `)
	RETURNS TABLE (graftsync_kind text, graftsync_key text) LANGUAGE plpgsql
	SET enable_seqscan = off SET enable_bitmapscan = off SET plan_cache_mode = force_generic_plan
	AS ` + quote + `
#variable_conflict use_column
BEGIN
	` + body + `;
` + handler + `END
` + quote
	h := fnv.New64a()
	h.Write([]byte(text))
	fn = qi(mr.stateSchema) + "." + qi(fmt.Sprintf("%s%016x", prefix, h.Sum64()))
	return `CREATE FUNCTION ` + fn + text, fn + `(` + strings.Join(params, ",") + `)`, fn
}

// rowsSQL builds the rows statement; same: positions come from the
// transaction ID. fold (same-database mode with a version column only)
// builds the body of the fold function (foldFnSQL): the changes carry their
// run, only those of written runs are applied (the others come back as
// 'f'), and the function has made sure beforehand that no change of the
// batch's rows waits in the outbox.
func (mr *Mirror) rowsSQL(same, fold bool) string {
	first, last := "v.first", "v.last"
	if same && mr.cols["version"] != nil {
		// The transaction's base position: an uncorrelated subquery, which
		// PostgreSQL runs once (an InitPlan), where a CTE joined to every
		// row cost two joins and their start-up at each batch.
		const base = "(SELECT pg_current_xact_id()::text::bigint << 20)"
		first, last = "("+base+" + v.first)", "("+base+" + v.last)"
	}
	var b strings.Builder
	w := func(s ...string) {
		for _, x := range s {
			b.WriteString(x)
		}
	}
	n := rowsArrays + len(mr.extras)
	param := func(i int) string { return "$" + strconv.Itoa(i) }
	// With a version column in same-database mode there is no guard
	// statement to hold back rows with changes waiting in the outbox (see
	// writeSame): this statement does, and reports them as 'd'.
	defer0 := same && mr.versioned
	vName := "v"
	if defer0 {
		vName = "v0"
	}
	// The fold function's own parameters follow the rows statement's.
	foldAt := n + 1 + btoi(defer0) + btoi(mr.statusIsRequest()) + btoi(mr.needOpByRow())
	fold = fold && defer0
	if fold {
		vName = "v00"
	}
	// The times travel as microseconds since the epoch (see rowsArgs):
	// parsing one text timestamp per change was a tenth of the statement.
	// The arrays are unnested in the select list, where PostgreSQL runs the
	// calls in lockstep and pads the shorter arrays with NULLs, as a
	// several-array unnest in FROM does; there, each array was first
	// copied into a tuplestore of its own (TestFoldCost: 35-45 us less a
	// batch of 26 workflows).
	cols := []string{"$1::text[]", "row_key", "$2::bigint[]", "first", "$3::bigint[]", "last", "$4::bigint[]", "at",
		"$5::text[]", "status", "$6::text[]", "step", "$7::text[]", "err", "$8::bool[]", "clear_err", "$9::text[]", "attempts",
		"$10::text[]", "progress", "$11::bool[]", "weak"}
	for i := range mr.extras {
		cols = append(cols, param(rowsArrays+1+i)+"::text[]", "x"+strconv.Itoa(i))
	}
	if fold {
		cols = append(cols, param(foldAt)+"::text[]", "run")
	}
	w(`WITH `, vName, ` AS (SELECT `)
	for i := 0; i < len(cols); i += 2 {
		if i > 0 {
			w(", ")
		}
		w("unnest(", cols[i], ") AS ", cols[i+1])
	}
	w(`)`)
	// Whether a change's run was written: a hashed subplan, built once
	// (OFFSET 0: the expression is not copied into each use of written).
	// "run = ANY(written)" compared each change with every written run (a
	// parameter array is searched element by element), a batch's square;
	// a semi-join for the written changes and an anti-join for the others
	// ('f') hashed twice.
	if fold {
		w(`,
	v AS (SELECT v00.*, v00.run IN (SELECT unnest(`, param(foldAt+1), `::text[])) AS written FROM v00 OFFSET 0)`)
	} else if defer0 {
		w(`,
	d AS (SELECT v0.row_key FROM v0
		WHERE (SELECT EXISTS (SELECT 1 FROM `, mr.outboxTable, ` WHERE mapping = `, param(n+1), `))
		  AND EXISTS (SELECT 1 FROM `, mr.outboxTable, ` b WHERE b.mapping = `, param(n+1), ` AND b.row_key = v0.row_key)),
	v AS (SELECT * FROM v0 WHERE NOT EXISTS (SELECT 1 FROM d WHERE d.row_key = v0.row_key))`)
		mr.sql.mappingArg = true
	}
	next := n + 1 + btoi(defer0)
	t := mr.table.Quoted()
	key := mr.cols["key.column"]
	// The = ANY condition, redundant with the join, is what lets the
	// planner look the batch's rows up by index.
	keyMatch := func(alias string) string {
		c := alias + "." + qi(key.Name)
		return c + " = ANY($1::text[]::" + key.Type + "[]) AND " + c + " = v.row_key::" + key.Type
	}
	// cmp: the column counts when deciding whether a change alters the row.
	type set struct {
		col, expr, ins string
		cmp            bool
	}
	var sets []set
	orDefault := func(c *column, expr string) string {
		if c.DefExpr == "" {
			return expr
		}
		return "COALESCE(" + expr + ", " + c.DefExpr + ")"
	}
	keep := func(c *column, v string) set {
		e := v + "::" + c.Type
		return set{c.Name, "COALESCE(" + e + ", t." + qi(c.Name) + ")", orDefault(c, e), true}
	}
	if c := mr.cols["status.column"]; c != nil {
		expr := "COALESCE(v.status::" + c.Type + ", t." + qi(c.Name) + ")"
		reqAt := 0
		if mr.statusIsRequest() {
			mr.sql.reqArg, reqAt = true, next
			next++
		}
		// With a version column there is no mirror_state to say whether the
		// workflow needs an operator: the row's status says it, and a wait
		// leaves it so.
		if mr.needOpByRow() {
			mr.sql.needOpArg = true
			expr = "CASE WHEN v.weak AND t." + qi(c.Name) + "::text = " + param(next) + " THEN t." + qi(c.Name) + " ELSE " + expr + " END"
			next++
		}
		// A pending request value stays until the request is taken.
		if reqAt > 0 {
			expr = "CASE WHEN t." + qi(c.Name) + "::text = ANY(" + param(reqAt) + "::text[]) THEN t." + qi(c.Name) + " ELSE " + expr + " END"
		}
		sets = append(sets, set{c.Name, expr, orDefault(c, "v.status::"+c.Type), true})
	}
	if c := mr.cols["step.column"]; c != nil {
		sets = append(sets, keep(c, "v.step"))
	}
	if c := mr.cols["error.column"]; c != nil {
		sets = append(sets, set{c.Name, "CASE WHEN v.clear_err THEN NULL ELSE COALESCE(v.err::" + c.Type + ", t." + qi(c.Name) + ") END",
			"CASE WHEN v.clear_err THEN NULL ELSE " + orDefault(c, "v.err::"+c.Type) + " END", true})
	}
	if c := mr.cols["attempts"]; c != nil {
		sets = append(sets, keep(c, "v.attempts"))
	}
	if c := mr.cols["updated_at"]; c != nil {
		at := "(timestamptz 'epoch' + v.at * interval '1 microsecond')::" + c.Type
		sets = append(sets, set{c.Name, at, at, false})
	}
	if c := mr.cols["progress.column"]; c != nil {
		sets = append(sets, keep(c, "v.progress"))
	}
	for i, x := range mr.extras {
		sets = append(sets, keep(x.col, "v.x"+strconv.Itoa(i)))
	}
	ver := ""
	if c := mr.cols["version"]; c != nil {
		sets = append(sets, set{c.Name, last + "::" + c.Type, last + "::" + c.Type, false})
		ver = " AND (t." + qi(c.Name) + " IS NULL OR t." + qi(c.Name) + " < " + first + ")"
	}
	// A change that leaves every mapped column as it is writes nothing, not
	// even the updated-at time: the row did not change, and the legacy
	// table's triggers and audit need not hear of it.
	var now, was []string
	for _, s := range sets {
		if s.cmp {
			now, was = append(now, s.expr), append(was, "t."+qi(s.col))
		}
	}
	changed := ""
	if len(now) > 0 {
		changed = " AND ROW(" + strings.Join(now, ", ") + ") IS DISTINCT FROM ROW(" + strings.Join(was, ", ") + ")"
	}
	// Outside the fold, the batch's rows are read once, by index (cur):
	// whether each exists, and whether the change would write it. Only the
	// rows a change would write are updated, and the update checks the same
	// conditions on the row's latest version (a row another transaction
	// changed meanwhile is judged as it is now). A row the change leaves as
	// it is costs one index lookup, not one in the update and a second to
	// learn that it exists. Skipping it on the statement's snapshot is what
	// writing it first and having the other transaction write it after
	// would have left.
	setList := func() {
		for i, s := range sets {
			if i > 0 {
				w(", ")
			}
			w(qi(s.col), " = ", s.expr)
		}
	}
	byKey := ` AND t.` + qi(key.Name) + ` = v.row_key::` + key.Type + ver + changed
	create := mr.m.missingRow() == MissingCreate
	// insert creates the missing rows (MissingCreate) of the changes that
	// pass where, a condition on v.
	insert := func(where string) {
		w(`,
	li AS (INSERT INTO `, t, ` AS t (`, qi(key.Name))
		for _, s := range sets {
			w(", ", qi(s.col))
		}
		w(`)
		SELECT v.row_key::`, key.Type)
		for _, s := range sets {
			w(", ", s.ins)
		}
		w(` FROM v
		WHERE `, where, `
		ON CONFLICT DO NOTHING
		RETURNING t.`, qi(key.Name), `::text AS row_key)`)
	}
	if fold {
		// The fold reports no row per change, only the exceptions (see
		// below), so it updates the rows of the written changes by key
		// directly, one index descent each, and looks up again only the
		// rows it did not write, to tell the missing ones. A row a
		// concurrent legacy write changed after the snapshot is waited for,
		// then judged as the legacy transaction left it: PostgreSQL
		// rechecks the update's conditions on the row's latest version
		// (TestFoldWritesAfterAConcurrentLegacyWrite).
		w(`,
	lu AS (UPDATE `, t, ` t SET `)
		setList()
		w(`
		FROM v WHERE v.written`, byKey, `
		RETURNING t.`, qi(key.Name), `::text AS row_key)`)
		if create {
			insert(`v.written AND NOT EXISTS (SELECT 1 FROM lu WHERE lu.row_key = v.row_key)`)
		}
		// The fold reports what the mirror accounts for, and no more: the
		// number of rows written ('w', when not zero), the missing rows
		// ('m') and the changes of runs the statement did not write ('f').
		// The rows a change left as they are, most of them, cost no result
		// row to send and read back.
		// An update writes a row once, and UNION drops duplicates: the
		// rows counted are distinct.
		wrote, notWritten := `SELECT row_key FROM lu`, `NOT EXISTS (SELECT 1 FROM lu WHERE lu.row_key = v.row_key)`
		if create {
			wrote += ` UNION SELECT row_key FROM li`
			notWritten += ` AND NOT EXISTS (SELECT 1 FROM li WHERE li.row_key = v.row_key)`
		}
		w(`
	SELECT 'w'::text, n::text FROM (SELECT count(*) AS n FROM (`, wrote, `) x) w WHERE n > 0
	UNION ALL SELECT 'm', v.row_key FROM v WHERE v.written AND `, notWritten, `
		AND NOT EXISTS (SELECT 1 FROM `, t, ` t WHERE t.`, qi(key.Name), ` = v.row_key::`, key.Type, `)
	UNION ALL SELECT 'f', row_key FROM v WHERE NOT v.written`)
	} else {
		w(`,
	cur AS (SELECT v.*, true`, ver, changed, ` AS chg FROM v, `, t, ` t WHERE `, keyMatch("t"), `),
	lu AS (UPDATE `, t, ` t SET `)
		setList()
		w(`
		FROM cur v WHERE v.chg`, byKey, `
		RETURNING t.`, qi(key.Name), `::text AS row_key),
	ex AS (SELECT DISTINCT cur.row_key FROM cur WHERE NOT EXISTS (SELECT 1 FROM lu WHERE lu.row_key = cur.row_key))`)
		if create {
			// Rows the snapshot shows and the change leaves as they are
			// exist: no insert to try.
			insert(`NOT EXISTS (SELECT 1 FROM lu WHERE lu.row_key = v.row_key)
		  AND NOT EXISTS (SELECT 1 FROM cur WHERE cur.row_key = v.row_key AND NOT cur.chg)`)
		}
		w(`
	SELECT 'u'::text, row_key FROM lu UNION ALL SELECT 'e', row_key FROM ex`)
		if defer0 {
			w(` UNION ALL SELECT 'd', row_key FROM d`)
		}
		if create {
			w(` UNION ALL SELECT 'i', row_key FROM li`)
		}
	}
	w(` UNION ALL SELECT 'r', set_config('enable_seqscan', `, param(next), `, true) || set_config('enable_bitmapscan', `, param(next+1), `, true)
		|| set_config('plan_cache_mode', `, param(next+2), `, true)`)
	return b.String()
}

// statusIsRequest: the status column is also the request column
// (Mapping.Actions), and the rows statement takes the request values.
func (mr *Mirror) statusIsRequest() bool {
	c := mr.cols["status.column"]
	return c != nil && mr.actionCol == c
}

// needOpByRow: with a version column there is no mirror_state, and the
// rows statement takes the status value that says a workflow needs an
// operator.
func (mr *Mirror) needOpByRow() bool {
	if mr.cols["status.column"] == nil || !mr.versioned {
		return false
	}
	_, ok := mr.m.Status.Values[StateNeedsOperator]
	return ok
}

// rowsArgs renders the changes that passed the guard, in the state the
// guard left each row in (change.now), as the rows statement's arguments.
// The arrays are written one after the other into one buffer, a column at a
// time, and leave out their trailing NULLs: unnest pads the arrays shorter
// than the keys' with NULLs, and most batches have columns no change fills
// (an error, a progress). A false bool is written as NULL, which the
// statement reads the same way (see rowsSQL: clear_err and weak are only
// ever tested by CASE WHEN and AND). With runs (the fold function), the
// changes' runs follow, in the same buffer, in place of the planner
// settings (the function's SET clauses are planOff).
func (mr *Mirror) rowsArgs(same bool, cs []*change, runs bool) []any {
	n := rowsArrays + len(mr.extras)
	size := 0
	for _, c := range cs {
		size += len(c.Key) + 56
		if runs {
			size += len(c.RunID) + 1
		}
	}
	var a arrayBuilder
	a.b.Grow(size + 8*n)
	var buf [24]byte
	num := func(v int64) { a.addRaw(strconv.AppendInt(buf[:0], v, 10)) }
	column := func(trim bool, add func(c *change)) {
		for _, c := range cs {
			add(c)
		}
		a.next(trim)
	}
	column(false, func(c *change) { a.add(c.Key) })
	column(true, func(c *change) { num(c.First) })
	column(true, func(c *change) { num(c.Last) })
	column(true, func(c *change) { num(atMicros(c.At)) })
	column(true, func(c *change) {
		// A wait leaves a workflow that needs an operator showing so.
		if mr.m.Status != nil && !(c.Weak && c.now == StateNeedsOperator) {
			if v, ok := mr.m.Status.Values[c.now]; ok {
				a.add(v)
				return
			}
		}
		a.addPtr(nil)
	})
	column(true, func(c *change) { a.addPtr(c.Step) })
	column(true, func(c *change) { a.addPtr(c.Err) })
	column(true, func(c *change) { a.addTrue(c.ClearErr) })
	column(true, func(c *change) {
		if c.Attempts != nil {
			num(*c.Attempts)
		} else {
			a.addPtr(nil)
		}
	})
	column(true, func(c *change) { a.addPtr(c.Progress) })
	column(true, func(c *change) { a.addTrue(c.Weak) })
	for j := range mr.extras {
		column(true, func(c *change) {
			var x *string
			if j < len(c.Extras) {
				x = c.Extras[j]
			}
			a.addPtr(x)
		})
	}
	if runs {
		column(false, func(c *change) { a.add(c.RunID) })
	}
	arrays := a.all()
	args := make([]any, 0, n+6)
	for _, s := range arrays[:n] {
		args = append(args, s)
	}
	if same && mr.sql.mappingArg {
		args = append(args, mr.table.String())
	}
	if mr.sql.reqArg {
		args = append(args, mr.requestValues)
	}
	if mr.sql.needOpArg {
		args = append(args, mr.m.Status.Values[StateNeedsOperator])
	}
	if runs {
		return append(args, arrays[n])
	}
	return append(args, mr.planDefaults[0], mr.planDefaults[1], mr.planDefaults[2])
}

// atMicros is t in microseconds since the epoch, rounded to the nearest as
// PostgreSQL rounds a timestamp's fraction.
func atMicros(t time.Time) int64 {
	return t.Round(time.Microsecond).UnixMicro()
}

// arrayBuilder renders PostgreSQL text array literals, element by element:
// one (String), or several one after the other in one buffer (next closes
// each, all returns them). Elements are quoted only when PostgreSQL needs
// it, and the text is built once, without a copy at the end: the arrays
// are a good part of what a batch sends, and the driver copies them again.
type arrayBuilder struct {
	b strings.Builder
	// n counts the elements written into the open array; nulls are NULLs
	// added after them and not yet written, which next leaves out when it
	// trims the array.
	n, nulls int
	ends     []int
	// quoted is where add quotes an element before writing it.
	quoted []byte
}

// sep writes the NULLs held back and the start of an element.
func (a *arrayBuilder) sep() {
	a.flushNulls()
	a.sep1()
}

func (a *arrayBuilder) flushNulls() {
	for ; a.nulls > 0; a.nulls-- {
		a.sep1()
		a.b.WriteString("NULL")
	}
}

func (a *arrayBuilder) sep1() {
	if a.n == 0 {
		a.b.WriteByte('{')
	} else {
		a.b.WriteByte(',')
	}
	a.n++
}

// add appends an element, quoted when it must be (pgarray.AppendElem).
func (a *arrayBuilder) add(s string) {
	a.sep()
	if pgarray.Plain(s) {
		a.b.WriteString(s)
		return
	}
	a.quoted = pgarray.AppendElem(a.quoted[:0], s)
	a.b.Write(a.quoted)
}

// addRaw appends an element that needs no quoting (digits).
func (a *arrayBuilder) addRaw(s []byte) {
	a.sep()
	a.b.Write(s)
}

func (a *arrayBuilder) addBool(v bool) {
	a.sep()
	if v {
		a.b.WriteByte('t')
	} else {
		a.b.WriteByte('f')
	}
}

// addTrue appends true, or NULL for false.
func (a *arrayBuilder) addTrue(v bool) {
	if v {
		a.addBool(true)
	} else {
		a.addPtr(nil)
	}
}

// addPtr appends *s, or NULL for nil.
func (a *arrayBuilder) addPtr(s *string) {
	if s == nil {
		a.nulls++
		return
	}
	a.add(*s)
}

// String returns the one array built.
func (a *arrayBuilder) String() string {
	a.next(false)
	return a.b.String()
}

// next closes the open array, without its trailing NULLs when trim is set,
// and opens the next one.
func (a *arrayBuilder) next(trim bool) {
	if trim {
		a.nulls = 0
	} else {
		a.flushNulls()
	}
	if a.n == 0 {
		a.b.WriteByte('{')
	}
	a.b.WriteByte('}')
	a.ends = append(a.ends, a.b.Len())
	a.n = 0
}

// all returns the closed arrays, sharing one string.
func (a *arrayBuilder) all() []string {
	s := a.b.String()
	out := make([]string, len(a.ends))
	from := 0
	for i, end := range a.ends {
		out[i], from = s[from:end], end
	}
	return out
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// pgArray renders a text array literal; nil elements are NULL.
func pgArray(vals []*string) string {
	var a arrayBuilder
	for _, v := range vals {
		a.addPtr(v)
	}
	return a.String()
}

// ensureTables creates the mirror's tables in schema: mirror_state (next
// to the legacy table) or the outbox (in graft's database). Safe to run
// from many processes at once.
func ensureTables(ctx context.Context, db *sqlx.DB, schema string, state, outbox bool) error {
	q := qi(schema)
	h := fnv.New64a()
	h.Write([]byte("graftsync-migrate:" + schema))
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	stmts := []string{
		fmt.Sprintf(`SELECT pg_advisory_xact_lock(%d)`, int64(h.Sum64())),
		`CREATE SCHEMA IF NOT EXISTS ` + q,
	}
	if state {
		// One row per mirrored legacy row: the last change applied to it.
		// Updated on every change, so leave room for HOT updates.
		stmts = append(stmts, `CREATE TABLE IF NOT EXISTS `+q+`.mirror_state (
			mapping     text NOT NULL,
			row_key     text NOT NULL,
			workflow_id text NOT NULL,
			run_id      text NOT NULL,
			ord         bigint NOT NULL,
			state       text NOT NULL,
			-- weak: the last change was a wait only (see change.Weak).
			weak        boolean NOT NULL DEFAULT false,
			closed      boolean NOT NULL DEFAULT false,
			updated_at  timestamptz NOT NULL DEFAULT now(),
			PRIMARY KEY (mapping, row_key)
		) WITH (fillfactor = 80)`)
	}
	if outbox {
		stmts = append(stmts,
			`CREATE TABLE IF NOT EXISTS `+q+`.mirror_outbox (
				id              bigserial PRIMARY KEY,
				mapping         text NOT NULL,
				row_key         text NOT NULL,
				first_ord       bigint NOT NULL,
				last_ord        bigint NOT NULL,
				change          jsonb NOT NULL,
				created_at      timestamptz NOT NULL DEFAULT now(),
				attempts        int NOT NULL DEFAULT 0,
				next_attempt_at timestamptz,
				last_error      text
			)`,
			`CREATE INDEX IF NOT EXISTS mirror_outbox_by_mapping ON `+q+`.mirror_outbox (mapping, id)`,
			`CREATE INDEX IF NOT EXISTS mirror_outbox_by_row ON `+q+`.mirror_outbox (mapping, row_key)`)
	}
	for _, s := range stmts {
		if _, err := tx.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("create mirror tables in %s: %w", schema, err)
		}
	}
	return tx.Commit()
}

// ensureFunction creates the function of create (writeFnSQL) unless it
// exists (sig is its signature). Safe to run from many processes at once.
func ensureFunction(ctx context.Context, db *sqlx.DB, schema, create, sig string) error {
	h := fnv.New64a()
	h.Write([]byte("graftsync-migrate:" + schema))
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, fmt.Sprintf(`SELECT pg_advisory_xact_lock(%d)`, int64(h.Sum64()))); err != nil {
		return err
	}
	var exists bool
	if err := tx.QueryRowContext(ctx, `SELECT to_regprocedure($1) IS NOT NULL`, sig).Scan(&exists); err != nil {
		return err
	}
	if !exists {
		if _, err := tx.ExecContext(ctx, create); err != nil {
			return fmt.Errorf("create the mirror's write function %s: %w", sig, err)
		}
	}
	return tx.Commit()
}

// lockKey is an advisory lock key for name.
func lockKey(name string) int64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	return int64(h.Sum64())
}
