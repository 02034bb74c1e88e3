package tasks

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/graftdev/graft/internal/pgident"
)

// Submitted is the outcome of Submit.
type Submitted struct {
	// OperationID is the new row's ID (the workflow ID when routed to graft).
	OperationID string
	// Decision is where the operation went and why.
	Decision Decision
	// RunID is the started run's ID (RouteGraft only).
	RunID string
	// Existing is set when the operation was already in the table with the
	// same values (a retried Submit): nothing was written, and Decision and
	// RunID are those recorded when graft claimed it. An existing row graft
	// did not claim shows RouteLegacy with an empty Rule.
	Existing bool
}

// Submit takes an operation from legacy code that calls out instead of
// inserting a row: values are the row's column values by column name, as the
// legacy code would have inserted them (the status column is set by Submit).
// In one transaction it inserts the row, routes it by the flags, and, when
// it goes to graft, starts its workflow and marks it taken; a row routed to
// the legacy path stays pending for the legacy runner. Bad input (an unknown
// column or kind, a value the column refuses, input that does not decode)
// is an error naming it, and nothing is written.
//
// Submit is idempotent when values name the ID column: submitting an
// operation that is already in the table with the same values returns its
// outcome (Submitted.Existing) and writes nothing, so legacy code may retry
// a call whose answer it lost. The same ID with other values is refused
// with ErrOperationExists, naming the columns that differ.
func (in *Intake) Submit(ctx context.Context, values map[string]any) (*Submitted, error) {
	s := &in.src
	cols := make([]string, 0, len(values))
	for c := range values {
		if !pgident.Valid(c) {
			return nil, fmt.Errorf("tasks: submit: %q is not a valid column name", c)
		}
		if c != s.Status.Column {
			cols = append(cols, c)
		}
	}
	sort.Strings(cols)
	kind, _ := values[s.Kind].(string)
	if _, ok := s.Kinds[kind]; !ok {
		return nil, fmt.Errorf("%w: submit: column %q is %q, which source %s does not declare", ErrUnknownKind, s.Kind, kind, s.name())
	}
	obj := map[string]any{s.Status.Column: s.Status.Pending}
	for _, c := range cols {
		obj[c] = values[c]
	}
	body, err := json.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("tasks: submit: encode values: %w", err)
	}
	cols = append(cols, s.Status.Column)
	list, sel := "", ""
	for i, c := range cols {
		if i > 0 {
			list, sel = list+", ", sel+", "
		}
		list += pgident.Quote(c)
		sel += "r." + pgident.Quote(c)
	}
	t := in.table.Quoted()

	tx, err := in.db.BeginTxx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	snap, err := readSnapshot(ctx, tx, in.schema, true)
	if err != nil {
		return nil, err
	}
	if id, ok := values[s.ID]; ok {
		// cols ends with the status column, which the row has moved on.
		out, err := in.submitted(ctx, tx, fmt.Sprint(id), string(body), cols[:len(cols)-1], kind)
		if err != nil || out != nil {
			return out, err
		}
	}
	var raw []byte
	var row Row
	err = tx.QueryRowContext(ctx, `INSERT INTO `+t+` AS t (`+list+`) SELECT `+sel+` FROM jsonb_populate_record(NULL::`+t+`, $1::jsonb) r
		RETURNING t.`+pgident.Quote(s.ID)+`::text, to_jsonb(t)`, string(body)).Scan(&row.ID, &raw)
	if err != nil {
		if pe, ok := err.(*pq.Error); ok && pe.Column != "" {
			return nil, fmt.Errorf("tasks: submit: column %q: %s", pe.Column, pe.Message)
		}
		return nil, fmt.Errorf("tasks: submit: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&row.Columns); err != nil {
		return nil, fmt.Errorf("tasks: submit: decode row: %w", err)
	}
	row.Kind, row.Customer = kind, row.String(s.Customer)
	key, err := s.key(row)
	if err != nil {
		return nil, fmt.Errorf("tasks: submit: operation %s: routing key: %w", row.ID, err)
	}
	d := Evaluate(snap, kind, key, row.ID)
	in.m.evaluated(ctx, kind, d.Rule, 1)
	out := &Submitted{OperationID: row.ID, Decision: d}
	if d.Route == RouteGraft {
		started, failed, err := in.start(ctx, tx.Tx, snap, []claimed{{row: row, key: key, dec: d}})
		if err != nil {
			return nil, err
		}
		if len(failed) > 0 {
			return nil, fmt.Errorf("tasks: submit: operation %s: %w", row.ID, failed[0].err)
		}
		out.RunID = started[0].runID
	}
	if err := tx.Commit(); err != nil {
		return nil, err
	}
	in.m.claimed(ctx, kind, d.Route, 1)
	return out, nil
}

// submitted returns the outcome of an operation already in the table (nil
// when there is none): the same operation submitted again. Two Submits of
// one ID are serialised by a transaction-scoped advisory lock, so the
// second sees the first's row once the first commits.
func (in *Intake) submitted(ctx context.Context, tx *sqlx.Tx, id, body string, cols []string, kind string) (*Submitted, error) {
	s := &in.src
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, "graft-submit:"+in.table.String()+":"+id); err != nil {
		return nil, fmt.Errorf("tasks: submit: %w", err)
	}
	var exists bool
	if err := tx.GetContext(ctx, &exists, in.sql.exists, id); err != nil {
		return nil, fmt.Errorf("tasks: submit: column %q: %w", s.ID, err)
	}
	if !exists {
		return nil, nil
	}
	var differ []string
	if err := tx.QueryRowContext(ctx, in.sql.differ, id, body, pq.Array(cols)).Scan(pq.Array(&differ)); err != nil {
		return nil, fmt.Errorf("tasks: submit: compare with the existing row: %w", err)
	}
	if len(differ) > 0 {
		return nil, fmt.Errorf("%w: %s = %s, with other values in column(s) %s", ErrOperationExists, s.ID, id, strings.Join(differ, ", "))
	}
	out := &Submitted{OperationID: id, Existing: true, Decision: Decision{Route: RouteLegacy, Bucket: Bucket(kind, id)}}
	var bucket int
	err := tx.QueryRowContext(ctx, `SELECT rule, bucket, flags_version, run_id FROM `+in.schema+`.intake_claims
		WHERE operation_id = $1 AND source = $2 ORDER BY claimed_at DESC LIMIT 1`, id, s.name()).
		Scan(&out.Decision.Rule, &bucket, &out.Decision.FlagsVersion, &out.RunID)
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return nil, fmt.Errorf("tasks: submit: read the claim of %s: %w", id, err)
	default:
		out.Decision.Route, out.Decision.Bucket = RouteGraft, bucket
	}
	return out, nil
}
