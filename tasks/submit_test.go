package tasks_test

import (
	"context"
	"sync"
	"testing"

	"github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/tasks"
)

// Submit, the path for legacy code that calls out instead of inserting a
// row: the row is inserted and, when the flags route it to graft, taken and
// its workflow started in one commit; a legacy-routed one stays pending.
func TestSubmitStartsTheOperation(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	in := v.intake(t, v.source(), nil)
	v.setFlag(t, tasks.Flag{Kind: "renew", KeyRules: []tasks.KeyRule{{Keys: []string{"info"}, Percent: 100}}})
	ctx := context.Background()
	s := pq.QuoteIdentifier(v.schema)

	out, err := in.Submit(ctx, map[string]any{"id": 1001, "kind": "renew", "domain": "call.INFO", "customer": "acme", "years": 2})
	require.NoError(t, err)
	require.Equal(t, "1001", out.OperationID)
	require.Equal(t, tasks.RouteGraft, out.Decision.Route)
	require.Equal(t, tasks.RuleKey, out.Decision.Rule)
	require.NotEmpty(t, out.RunID)
	require.False(t, out.Existing)
	var status string
	require.NoError(t, v.db.Get(&status, `SELECT status FROM `+v.table+` WHERE id = 1001`))
	require.Equal(t, "graft", status)
	run, err := v.e.Client().Describe(ctx, "1001")
	require.NoError(t, err)
	require.Equal(t, out.RunID, run.RunID)
	require.Equal(t, "renew", run.WorkflowType)
	require.Equal(t, 1, v.count(t, `SELECT count(*) FROM `+s+`.runs WHERE workflow_id = '1001' AND convert_from(input, 'UTF8') LIKE '%"years":2%'`+
		` AND headers->>'customer' = 'acme' AND headers->>'key' = 'info'`))
	require.Equal(t, 1, v.count(t, `SELECT count(*) FROM `+s+`.intake_claims WHERE operation_id = '1001' AND rule = 'key' AND run_id = $1`, out.RunID))

	// Without an ID the table's default gives one; .com renewals are legacy's.
	leg, err := in.Submit(ctx, map[string]any{"kind": "renew", "domain": "other.com", "years": 1})
	require.NoError(t, err)
	require.Equal(t, tasks.RouteLegacy, leg.Decision.Route)
	require.Equal(t, tasks.RuleDefault, leg.Decision.Rule)
	require.Empty(t, leg.RunID)
	require.NoError(t, v.db.Get(&status, `SELECT status FROM `+v.table+` WHERE id = $1`, leg.OperationID))
	require.Equal(t, "pending", status)
	require.Equal(t, 1, v.count(t, `SELECT count(*) FROM `+s+`.runs`))
}

// The same operation submitted twice (a retry whose first answer was lost,
// or two at once) is one row and one run; the second call gets the first's
// outcome. The same ID with other values is refused, naming the column.
func TestSubmitIsIdempotent(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	in := v.intake(t, v.source(), nil)
	v.setFlag(t, tasks.Flag{Kind: "renew", DefaultPercent: 100})
	ctx := context.Background()
	s := pq.QuoteIdentifier(v.schema)
	op := map[string]any{"id": 7, "kind": "renew", "domain": "twice.fr", "customer": "acme", "years": 1}

	outs := make([]*tasks.Submitted, 4)
	var wg sync.WaitGroup
	for i := range outs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := in.Submit(ctx, op)
			require.NoError(t, err)
			outs[i] = out
		}()
	}
	wg.Wait()
	existing := 0
	for _, o := range outs {
		require.Equal(t, outs[0].RunID, o.RunID)
		require.Equal(t, tasks.RouteGraft, o.Decision.Route)
		require.Equal(t, tasks.RuleDefault, o.Decision.Rule)
		require.Equal(t, outs[0].Decision, o.Decision)
		if o.Existing {
			existing++
		}
	}
	require.Equal(t, 3, existing)
	require.Equal(t, 1, v.count(t, `SELECT count(*) FROM `+v.table+` WHERE id = 7`))
	require.Equal(t, 1, v.count(t, `SELECT count(*) FROM `+s+`.runs WHERE workflow_id = '7'`))
	require.Equal(t, 1, v.count(t, `SELECT count(*) FROM `+s+`.intake_claims WHERE operation_id = '7'`))

	// The same ID for another operation is refused and changes nothing.
	_, err := in.Submit(ctx, map[string]any{"id": 7, "kind": "renew", "domain": "other.fr", "customer": "acme", "years": 3})
	require.ErrorIs(t, err, tasks.ErrOperationExists)
	require.ErrorContains(t, err, "domain, years")
	var domain string
	require.NoError(t, v.db.Get(&domain, `SELECT domain FROM `+v.table+` WHERE id = 7`))
	require.Equal(t, "twice.fr", domain)

	// A legacy-routed operation submitted again is reported as legacy's.
	v.setFlag(t, tasks.Flag{Kind: "transfer", DefaultPercent: 0})
	tr := map[string]any{"id": 8, "kind": "transfer", "domain": "x.de", "years": 1}
	first, err := in.Submit(ctx, tr)
	require.NoError(t, err)
	again, err := in.Submit(ctx, tr)
	require.NoError(t, err)
	require.True(t, again.Existing)
	require.Equal(t, tasks.RouteLegacy, first.Decision.Route)
	require.Equal(t, tasks.RouteLegacy, again.Decision.Route)
	require.Equal(t, 1, v.count(t, `SELECT count(*) FROM `+v.table+` WHERE id = 8`))
}

// Bad input to Submit is an error naming the field, and writes nothing.
func TestSubmitBadInput(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	in := v.intake(t, v.source(), nil)
	v.setFlag(t, tasks.Flag{Kind: "renew", DefaultPercent: 100})
	for _, tc := range []struct {
		name   string
		values map[string]any
		want   string
	}{
		{"unknown kind", map[string]any{"kind": "refund", "domain": "a.com"}, `column "kind" is "refund"`},
		{"no kind", map[string]any{"domain": "a.com"}, `column "kind" is ""`},
		{"unknown column", map[string]any{"kind": "renew", "domain": "a.com", "colour": "red"}, `colour`},
		{"bad column name", map[string]any{"kind": "renew", "domain": "a.com", `x"; DROP`: 1}, `is not a valid column name`},
		{"value the column refuses", map[string]any{"kind": "renew", "domain": "a.com", "id": "seven"}, `id`},
		{"input that does not decode", map[string]any{"kind": "renew", "domain": "a.com", "years": "two"}, `years`},
	} {
		_, err := in.Submit(context.Background(), tc.values)
		require.ErrorContains(t, err, tc.want, tc.name)
	}
	s := pq.QuoteIdentifier(v.schema)
	require.Zero(t, v.count(t, `SELECT count(*) FROM `+v.table))
	require.Zero(t, v.count(t, `SELECT count(*) FROM `+s+`.runs`))
	require.Zero(t, v.count(t, `SELECT count(*) FROM `+s+`.intake_claims`))
}
