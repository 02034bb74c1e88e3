package engine

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"github.com/lib/pq"

	"github.com/graftdev/graft/internal/typeschema"
)

// Workers publish their workflow types' signal declarations.
//
// A declaration (DeclareSignal) holds a Go type, which only a process that
// registers the workflow has. graft server registers none, so it could
// offer no signal but cancel's operator signal. So a worker, when it
// starts, writes the declarations of the types it serves into the
// published_signals table (migration 014), one row a type: each signal's
// name, description, the JSON Schema of its payload (typeschema.Of) and
// whether a payload of null is taken; a process that does not register the
// type reads them (Client.PublishedSignals) and checks a payload against
// the schema before it sends it.
//
// One statement writes every type's row, and only the rows whose
// declarations differ from the stored ones (a restart of many workers
// with unchanged code writes nothing). Two builds that declare a type
// differently (a rolling deploy) replace each other's row: the last one to
// start wins, and the row says which worker (published_by, its ID), which
// build (the binary's module version and VCS revision) and when. A type
// that declares no signal is published too, with none: a reader then
// knows it declares none rather than that nobody said.

// PublishedSignal is a signal declaration as a worker published it.
type PublishedSignal struct {
	// Name is the signal's name.
	Name string `json:"name"`
	// Description says what the signal does, for people.
	Description string `json:"description,omitempty"`
	// Schema is the JSON Schema of the payload (see package typeschema):
	// unknown fields refused, null taken only when AcceptsNull.
	Schema json.RawMessage `json:"schema"`
	// AcceptsNull is whether a payload of null (none) is taken: the type
	// is a pointer, an interface or an empty struct.
	AcceptsNull bool `json:"accepts_null"`
	// Carries says what JSON the payload is written as ("a JSON object"),
	// for the error refusing a payload of null; "" when AcceptsNull.
	Carries string `json:"carries,omitempty"`
}

// PublishedSignals is the declarations a worker published for a workflow
// type.
type PublishedSignals struct {
	WorkflowType string
	Signals      []PublishedSignal
	// PublishedBy is the ID of the worker that published them, Build its
	// binary's module version and VCS revision, PublishedAt when.
	PublishedBy string
	Build       string
	PublishedAt time.Time
}

// Publish describes the declaration as a worker publishes it.
func (d SignalDecl) Publish() PublishedSignal {
	p := PublishedSignal{Name: d.Name, Description: d.Description, Carries: typeschema.Carries(d.typ)}
	p.AcceptsNull = p.Carries == ""
	sch := typeschema.Of(d.typ)
	if sch == nil {
		sch = map[string]any{}
	}
	p.Schema, _ = json.Marshal(sch) // maps of strings, numbers and booleans
	return p
}

// publishSignals writes the declarations of the worker's workflow types,
// replacing a type's row only when they differ; it returns how many rows
// it wrote.
func (w *Worker) publishSignals(ctx context.Context) (int64, error) {
	types := slices.Sorted(slices.Values(w.types))
	docs := make([]string, len(types))
	for i, t := range types {
		sigs, _ := w.e.WorkflowSignals(t)
		pub := make([]PublishedSignal, 0, len(sigs))
		for _, d := range sigs {
			pub = append(pub, d.Publish())
		}
		b, err := json.Marshal(pub)
		if err != nil {
			return 0, fmt.Errorf("engine: publish the signals of %q: %w", t, err)
		}
		docs[i] = string(b)
	}
	return w.e.store.publishSignals(ctx, w.id, buildID(), types, docs)
}

func (s *store) publishSignals(ctx context.Context, by, build string, types, docs []string) (int64, error) {
	t := pq.QuoteIdentifier(s.schema) + ".published_signals"
	res, err := s.db.ExecContext(ctx, `INSERT INTO `+t+` AS p (workflow_type, signals, published_by, build, published_at)
		SELECT u.t, u.d::jsonb, $3, $4, now() FROM unnest($1::text[], $2::text[]) AS u(t, d)
		ON CONFLICT (workflow_type) DO UPDATE SET signals = EXCLUDED.signals, published_by = EXCLUDED.published_by,
			build = EXCLUDED.build, published_at = EXCLUDED.published_at
		WHERE p.signals IS DISTINCT FROM EXCLUDED.signals`,
		pq.Array(types), pq.Array(docs), by, build)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// PublishedSignals reads the signal declarations the workers published for
// a workflow type; ok is false when none did (no worker serving it has
// started since the table exists, or the schema has no such table yet).
func (c *Client) PublishedSignals(ctx context.Context, workflowType string) (pub *PublishedSignals, ok bool, err error) {
	var raw []byte
	p := &PublishedSignals{WorkflowType: workflowType}
	err = c.e.db.QueryRowContext(ctx, `SELECT signals, published_by, build, published_at FROM `+
		pq.QuoteIdentifier(c.e.store.schema)+`.published_signals WHERE workflow_type = $1`, workflowType).
		Scan(&raw, &p.PublishedBy, &p.Build, &p.PublishedAt)
	var pe *pq.Error
	if errors.Is(err, sql.ErrNoRows) || errors.As(err, &pe) && pe.Code == "42P01" {
		// 42P01: a schema not migrated to 014 yet, where nothing is published.
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("engine: read the published signals of %q: %w", workflowType, err)
	}
	if err := json.Unmarshal(raw, &p.Signals); err != nil {
		return nil, false, fmt.Errorf("engine: read the published signals of %q: %w", workflowType, err)
	}
	return p, true, nil
}

// buildID names the running binary's build: its main module's path and
// version, and the VCS revision (with "+dirty" for a modified tree) when
// the binary was built with them.
var buildID = sync.OnceValue(func() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	id := bi.Main.Path + "@" + bi.Main.Version
	var rev, dirty string
	for _, s := range bi.Settings {
		switch {
		case s.Key == "vcs.revision":
			rev = s.Value
		case s.Key == "vcs.modified" && s.Value == "true":
			dirty = "+dirty"
		}
	}
	if rev != "" {
		id += " " + rev + dirty
	}
	return id
})
