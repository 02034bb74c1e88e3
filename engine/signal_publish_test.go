package engine_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/grafttest"
)

type pubConfirm struct {
	Approved bool   `json:"approved"`
	Note     string `json:"note,omitempty"`
}

// A worker publishes the signals its workflow types declare when it
// starts; a restart with the same declarations writes nothing, and a
// build that declares them differently replaces them, saying who and when.
func TestWorkersPublishSignalDeclarations(t *testing.T) {
	t.Parallel()
	body := func(ctx engine.Context, in string) (string, error) { return in, nil }
	confirm := engine.DeclareSignal[pubConfirm]("confirm", "approve the renewal")
	wf := engine.NewWorkflow("pub.renew", body).WithSignals(confirm, engine.DeclareSignal[*string]("note", ""))
	bare := engine.NewWorkflow("pub.bare", body)
	e := grafttest.NewEngine(t)
	require.NoError(t, e.Register(wf, bare))
	ctx := grafttest.Context(t, time.Minute)

	// Nothing is published before a worker starts.
	_, ok, err := e.Client().PublishedSignals(ctx, "pub.renew")
	require.NoError(t, err)
	require.False(t, ok)

	w1 := grafttest.StartWorker(t, e, engine.WorkerConfig{ID: "w1"})
	pub, ok, err := e.Client().PublishedSignals(ctx, "pub.renew")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, "w1", pub.PublishedBy)
	require.NotEmpty(t, pub.Build)
	require.False(t, pub.PublishedAt.IsZero())
	require.Len(t, pub.Signals, 2)
	c := pub.Signals[0]
	require.Equal(t, "confirm", c.Name)
	require.Equal(t, "approve the renewal", c.Description)
	require.False(t, c.AcceptsNull)
	require.Equal(t, "a JSON object", c.Carries)
	require.JSONEq(t, `{"type":"object","additionalProperties":false,
		"properties":{"approved":{"type":"boolean"},"note":{"type":"string"}}}`, string(c.Schema))
	want := confirm.Publish()
	require.JSONEq(t, string(want.Schema), string(c.Schema))
	want.Schema = c.Schema
	require.Equal(t, want, c)
	n := pub.Signals[1]
	require.True(t, n.AcceptsNull)
	require.JSONEq(t, `{"type":["string","null"]}`, string(n.Schema))
	// A type that declares no signal is published with none.
	b, ok, err := e.Client().PublishedSignals(ctx, "pub.bare")
	require.NoError(t, err)
	require.True(t, ok)
	require.Empty(t, b.Signals)

	// Another worker with the same declarations (a restart, a second
	// replica) writes nothing: the row is the first one's.
	var xmin string
	row := `SELECT xmin::text FROM "` + e.Schema() + `".published_signals WHERE workflow_type = 'pub.renew'`
	require.NoError(t, grafttest.DB(t).GetContext(ctx, &xmin, row))
	grafttest.StartWorker(t, e, engine.WorkerConfig{ID: "w2"})
	again, _, err := e.Client().PublishedSignals(ctx, "pub.renew")
	require.NoError(t, err)
	require.Equal(t, pub, again)
	var xmin2 string
	require.NoError(t, grafttest.DB(t).GetContext(ctx, &xmin2, row))
	require.Equal(t, xmin, xmin2, "an unchanged declaration was written again")
	require.NoError(t, w1.Stop(ctx))

	// A build that declares the type differently replaces the row (the
	// last worker to start wins); the other types' rows stay.
	e2 := grafttest.NewEngine(t, engine.Config{Schema: e.Schema()})
	wf2 := engine.NewWorkflow("pub.renew", body).WithSignals(engine.DeclareSignal[map[string]int]("confirm", "v2"))
	require.NoError(t, e2.Register(wf2))
	grafttest.StartWorker(t, e2, engine.WorkerConfig{ID: "w3"})
	v2, _, err := e.Client().PublishedSignals(ctx, "pub.renew")
	require.NoError(t, err)
	require.Equal(t, "w3", v2.PublishedBy)
	require.False(t, v2.PublishedAt.Before(pub.PublishedAt))
	require.Len(t, v2.Signals, 1)
	require.Equal(t, "v2", v2.Signals[0].Description)
	var sch map[string]any
	require.NoError(t, json.Unmarshal(v2.Signals[0].Schema, &sch))
	require.Equal(t, "object", sch["type"])
	b2, _, err := e.Client().PublishedSignals(ctx, "pub.bare")
	require.NoError(t, err)
	require.Equal(t, b, b2)

	// A schema not migrated to 014 has nothing published, and its workers
	// start all the same.
	_, err = grafttest.DB(t).ExecContext(ctx, `DROP TABLE "`+e.Schema()+`".published_signals`)
	require.NoError(t, err)
	_, ok, err = e.Client().PublishedSignals(ctx, "pub.renew")
	require.NoError(t, err)
	require.False(t, ok)
	grafttest.StartWorker(t, e, engine.WorkerConfig{ID: "w4"})
}
