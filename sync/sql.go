package graftsync

import (
	"context"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
)

// This file holds the mirror's SQL. Every identifier in it comes from a
// validated, quoted mapping or from the catalog (type names), never from
// event data; event data travels in parameters.

// baseArrays is the number of per-change arrays before the extras.
const baseArrays = 15

// stmts are one mapping's statements, built once by New.
type stmts struct {
	writeSame  string // same-database write: positions from the transaction ID
	writeRelay string // relay write: positions given
	readState  string // relay: stored positions of rows, locked
	outbox     string // checkpoint: changes into the outbox
	exists     string // MissingFail: does a row exist
	poll       string // requests
	ack        string // a request taken
	hasEx      bool   // writes return 'e' rows (version column)
	reqArg     bool   // writes take the request values as the last argument

	claim, oldest, deliver, retry string // relay, graft side
}

func (mr *Mirror) buildSQL() {
	s := &mr.sql
	mr.stateTable = qi(mr.stateSchema) + ".mirror_state"
	mr.outboxTable = qi(mr.cfg.Schema) + ".mirror_outbox"
	s.writeSame = mr.writeSQL(true)
	s.writeRelay = mr.writeSQL(false)
	s.readState = `SELECT row_key, ord FROM ` + mr.stateTable + ` WHERE mapping = $1 AND row_key = ANY($2::text[]) FOR UPDATE`
	s.outbox = `INSERT INTO ` + mr.outboxTable + ` (mapping, row_key, first_ord, last_ord, change)
		SELECT $1, v.row_key, o.base + v.first, o.base + v.last, v.change::jsonb
		FROM unnest($2::text[], $3::bigint[], $4::bigint[], $5::text[]) AS v(row_key, first, last, change),
			(SELECT pg_current_xact_id()::text::bigint << 20 AS base) o`
	key := mr.cols["Key.Column"]
	t := mr.table.quoted()
	s.exists = `SELECT EXISTS (SELECT 1 FROM ` + t + ` WHERE ` + qi(key.name) + ` = $1::` + key.typ + `)`
	if ac := mr.actionCol; ac != nil {
		s.poll = `SELECT t.` + qi(key.name) + `::text, t.` + qi(ac.name) + `::text, m.workflow_id, m.state
			FROM ` + t + ` t JOIN ` + mr.stateTable + ` m ON m.mapping = $1 AND m.row_key = t.` + qi(key.name) + `::text
			WHERE t.` + qi(ac.name) + ` = ANY($2::text[]::` + ac.typ + `[]) LIMIT $3`
		s.ack = `UPDATE ` + t + ` t SET ` + qi(ac.name) + ` = COALESCE($4::` + ac.typ + `,
				(SELECT x.val FROM unnest($5::text[], $6::text[]) AS x(s, val) WHERE x.s = m.state)::` + ac.typ + `, t.` + qi(ac.name) + `)
			FROM ` + mr.stateTable + ` m
			WHERE m.mapping = $1 AND m.row_key = $2 AND t.` + qi(key.name) + ` = $2::` + key.typ + ` AND t.` + qi(ac.name) + ` = $3::` + ac.typ
	}
	s.claim = `SELECT id, row_key, first_ord, last_ord, change::text, created_at FROM ` + mr.outboxTable + `
		WHERE mapping = $1 AND row_key NOT IN (SELECT row_key FROM ` + mr.outboxTable + ` WHERE mapping = $1 AND next_attempt_at > now())
		ORDER BY id LIMIT $2`
	s.oldest = `SELECT created_at FROM ` + mr.outboxTable + ` WHERE mapping = $1 ORDER BY id LIMIT 1`
	s.deliver = `DELETE FROM ` + mr.outboxTable + ` WHERE id = ANY($1::bigint[])`
	s.retry = `UPDATE ` + mr.outboxTable + ` SET attempts = attempts + 1, next_attempt_at = now() + $2::interval, last_error = $3
		WHERE id = ANY($1::bigint[])`
}

// writeSQL builds the statement that applies a batch of changes (one per
// row) to mirror_state and the legacy table, with the never-regress guard.
// It returns rows (kind, key): 'g' for a change past the guard, 'u' for an
// updated row, 'e' for a row that exists (with a version column, whose guard
// may leave an existing row alone), 'i' for a created one.
func (mr *Mirror) writeSQL(same bool) string {
	first, last, withO := "v.first", "v.last", ""
	var b strings.Builder
	w := func(s ...string) {
		for _, x := range s {
			b.WriteString(x)
		}
	}
	w(`WITH v AS (SELECT * FROM unnest($2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::text[], $8::bool[], $9::bool[],
		$10::timestamptz[], $11::text[], $12::text[], $13::text[], $14::bool[], $15::text[], $16::text[]`)
	for i := range mr.extras {
		w(", $", strconv.Itoa(17+i), "::text[]")
	}
	w(`) AS v(row_key, workflow_id, run_id, first, last, state, weak, closed, at, status, step, err, clear_err, attempts, progress`)
	for i := range mr.extras {
		w(", x", strconv.Itoa(i))
	}
	w(`))`)
	if same {
		first, last, withO = "(o.base + v.first)", "(o.base + v.last)", ", o"
		w(`, o AS (SELECT pg_current_xact_id()::text::bigint << 20 AS base)`)
	}
	st := mr.stateTable
	w(`,
	su AS (UPDATE `, st, ` m SET workflow_id = v.workflow_id, run_id = v.run_id, ord = `, last, `,
			state = CASE WHEN v.weak AND m.state = 'needs_operator' THEN m.state ELSE v.state END,
			closed = v.closed, updated_at = now()
		FROM v`, withO, ` WHERE m.mapping = $1 AND m.row_key = v.row_key AND m.ord < `, first, `
		  AND NOT (m.closed AND m.run_id = v.run_id)
		RETURNING m.row_key, m.state),
	si AS (INSERT INTO `, st, ` AS m (mapping, row_key, workflow_id, run_id, ord, state, closed)
		SELECT $1, v.row_key, v.workflow_id, v.run_id, `, last, `, v.state, v.closed FROM v`, withO, `
		WHERE NOT EXISTS (SELECT 1 FROM `, st, ` x WHERE x.mapping = $1 AND x.row_key = v.row_key)
		ON CONFLICT (mapping, row_key) DO NOTHING
		RETURNING m.row_key, m.state),
	ok AS (SELECT row_key, state FROM su UNION ALL SELECT row_key, state FROM si)`)

	t := mr.table.quoted()
	key := mr.cols["Key.Column"]
	keyMatch := func(alias string) string { return alias + "." + qi(key.name) + " = v.row_key::" + key.typ }
	type set struct{ col, expr, ins string }
	var sets []set
	orDefault := func(c *column, expr string) string {
		if c.defExpr == "" {
			return expr
		}
		return "COALESCE(" + expr + ", " + c.defExpr + ")"
	}
	keep := func(c *column, v string) set {
		e := v + "::" + c.typ
		return set{c.name, "COALESCE(" + e + ", t." + qi(c.name) + ")", orDefault(c, e)}
	}
	if c := mr.cols["Status.Column"]; c != nil {
		expr := "CASE"
		if mr.actionCol == c {
			mr.sql.reqArg = true
			expr += " WHEN t." + qi(c.name) + "::text = ANY($" + strconv.Itoa(17+len(mr.extras)) + "::text[]) THEN t." + qi(c.name)
		}
		expr += " WHEN v.weak AND ok.state = 'needs_operator' THEN t." + qi(c.name) +
			" ELSE COALESCE(v.status::" + c.typ + ", t." + qi(c.name) + ") END"
		sets = append(sets, set{c.name, expr, orDefault(c, "v.status::"+c.typ)})
	}
	if c := mr.cols["Step.Column"]; c != nil {
		sets = append(sets, keep(c, "v.step"))
	}
	if c := mr.cols["Error.Column"]; c != nil {
		sets = append(sets, set{c.name, "CASE WHEN v.clear_err THEN NULL ELSE COALESCE(v.err::" + c.typ + ", t." + qi(c.name) + ") END",
			"CASE WHEN v.clear_err THEN NULL ELSE " + orDefault(c, "v.err::"+c.typ) + " END"})
	}
	if c := mr.cols["Attempts"]; c != nil {
		sets = append(sets, keep(c, "v.attempts"))
	}
	if c := mr.cols["UpdatedAt"]; c != nil {
		sets = append(sets, set{c.name, "v.at::" + c.typ, "v.at::" + c.typ})
	}
	if c := mr.cols["Progress.Column"]; c != nil {
		sets = append(sets, keep(c, "v.progress"))
	}
	for i, x := range mr.extras {
		sets = append(sets, keep(x.col, "v.x"+strconv.Itoa(i)))
	}
	ver := ""
	if c := mr.cols["Version"]; c != nil {
		sets = append(sets, set{c.name, last + "::" + c.typ, last + "::" + c.typ})
		ver = " AND (t." + qi(c.name) + " IS NULL OR t." + qi(c.name) + " < " + first + ")"
		mr.sql.hasEx = true
	}
	w(`,
	lu AS (UPDATE `, t, ` t SET `)
	for i, s := range sets {
		if i > 0 {
			w(", ")
		}
		w(qi(s.col), " = ", s.expr)
	}
	w(`
		FROM v JOIN ok ON ok.row_key = v.row_key`, withO, `
		WHERE `, keyMatch("t"), ver, `
		RETURNING t.`, qi(key.name), `::text AS row_key)`)
	if mr.sql.hasEx {
		w(`,
	ex AS (SELECT t.`, qi(key.name), `::text AS row_key FROM `, t, ` t JOIN v ON `, keyMatch("t"), `)`)
	}
	create := mr.m.missingRow() == MissingCreate
	if create {
		w(`,
	li AS (INSERT INTO `, t, ` AS t (`, qi(key.name))
		for _, s := range sets {
			w(", ", qi(s.col))
		}
		w(`)
		SELECT v.row_key::`, key.typ)
		for _, s := range sets {
			w(", ", s.ins)
		}
		w(` FROM v JOIN ok ON ok.row_key = v.row_key`, withO, `
		WHERE NOT EXISTS (SELECT 1 FROM `, t, ` x WHERE `, keyMatch("x"), `)
		ON CONFLICT DO NOTHING
		RETURNING t.`, qi(key.name), `::text AS row_key)`)
	}
	w(`
	SELECT 'g'::text, row_key FROM ok UNION ALL SELECT 'u', row_key FROM lu`)
	if mr.sql.hasEx {
		w(` UNION ALL SELECT 'e', row_key FROM ex`)
	}
	if create {
		w(` UNION ALL SELECT 'i', row_key FROM li`)
	}
	return b.String()
}

// writeArgs renders changes as the write statement's arguments.
func (mr *Mirror) writeArgs(cs []*change) []any {
	n := len(cs)
	cols := make([][]*string, baseArrays+len(mr.extras))
	for i := range cols {
		cols[i] = make([]*string, n)
	}
	str := func(s string) *string { return &s }
	for i, c := range cs {
		cols[0][i] = str(c.Key)
		cols[1][i] = str(c.WorkflowID)
		cols[2][i] = str(c.RunID)
		cols[3][i] = str(strconv.FormatInt(c.First, 10))
		cols[4][i] = str(strconv.FormatInt(c.Last, 10))
		cols[5][i] = str(string(c.State))
		cols[6][i] = str(strconv.FormatBool(c.Weak))
		cols[7][i] = str(strconv.FormatBool(c.Closed))
		cols[8][i] = str(c.At.UTC().Format(time.RFC3339Nano))
		if s := mr.m.Status; s != nil {
			if v, ok := s.Values[c.State]; ok {
				cols[9][i] = &v
			}
		}
		cols[10][i] = c.Step
		cols[11][i] = c.Err
		cols[12][i] = str(strconv.FormatBool(c.ClearErr))
		if c.Attempts != nil {
			cols[13][i] = str(strconv.FormatInt(*c.Attempts, 10))
		}
		cols[14][i] = c.Progress
		for j := range mr.extras {
			if j < len(c.Extras) {
				cols[baseArrays+j][i] = c.Extras[j]
			}
		}
	}
	args := make([]any, 0, 2+len(cols))
	args = append(args, mr.table.String())
	for _, c := range cols {
		args = append(args, pgArray(c))
	}
	if mr.sql.reqArg {
		args = append(args, mr.requestValues)
	}
	return args
}

// pgArray renders a text array literal; nil elements are NULL.
func pgArray(vals []*string) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, v := range vals {
		if i > 0 {
			b.WriteByte(',')
		}
		if v == nil {
			b.WriteString("NULL")
			continue
		}
		b.WriteByte('"')
		for _, r := range *v {
			if r == '"' || r == '\\' {
				b.WriteByte('\\')
			}
			b.WriteRune(r)
		}
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}

// ensureTables creates the mirror's tables in schema: mirror_state always,
// the outbox when asked. Safe to run from many processes at once.
func ensureTables(ctx context.Context, db *sqlx.DB, schema string, outbox bool) error {
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
		// One row per mirrored legacy row: the last change applied to it.
		// Updated on every change, so leave room for HOT updates.
		`CREATE TABLE IF NOT EXISTS ` + q + `.mirror_state (
			mapping     text NOT NULL,
			row_key     text NOT NULL,
			workflow_id text NOT NULL,
			run_id      text NOT NULL,
			ord         bigint NOT NULL,
			state       text NOT NULL,
			closed      boolean NOT NULL DEFAULT false,
			updated_at  timestamptz NOT NULL DEFAULT now(),
			PRIMARY KEY (mapping, row_key)
		) WITH (fillfactor = 80)`,
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
			`CREATE INDEX IF NOT EXISTS mirror_outbox_retrying ON `+q+`.mirror_outbox (mapping, row_key) WHERE next_attempt_at IS NOT NULL`)
	}
	for _, s := range stmts {
		if _, err := tx.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("create mirror tables in %s: %w", schema, err)
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
