package tasks_test

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/tasks"
)

// TestPreviewFlag: a preview counts, over the pending rows, what the flags
// route now and what a proposed flag would route, exactly as Evaluate (and
// then intake) decides, and changes nothing; a bounded scan says it is an
// estimate.
func TestPreviewFlag(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	in := v.intake(t, v.source(), nil)
	v.insert(t, 3000, "renew", "info", "fr", "com")
	v.insert(t, 100, "transfer", "info")
	v.setFlag(t, tasks.Flag{Kind: "renew", KeyRules: []tasks.KeyRule{{Keys: []string{"info"}, Percent: 100}}})
	proposed := tasks.Flag{Kind: "renew", DefaultPercent: 10, KeyRules: []tasks.KeyRule{{Keys: []string{"info"}, Percent: 100}, {Keys: []string{"fr"}, Percent: 50}}}
	ctx := context.Background()
	before, err := v.flags.Snapshot(ctx)
	require.NoError(t, err)

	p, err := in.PreviewFlag(ctx, proposed, 0)
	require.NoError(t, err)
	require.False(t, p.Estimate)
	require.EqualValues(t, 3000, p.Scanned)

	// The same counts, by Go's Evaluate over the same rows.
	after := &tasks.Snapshot{Version: before.Version, Flags: map[string]*tasks.Flag{"renew": &proposed}}
	var want tasks.FlagPreview
	byKey := map[string]int64{}
	rows, err := v.db.Query(`SELECT id::text, domain FROM ` + v.table + ` WHERE kind = 'renew' AND status = 'pending'`)
	require.NoError(t, err)
	for rows.Next() {
		var id, domain string
		require.NoError(t, rows.Scan(&id, &domain))
		key := domain[strings.LastIndex(domain, ".")+1:]
		b, a := tasks.Evaluate(before, "renew", key, id), tasks.Evaluate(after, "renew", key, id)
		if b.Route == tasks.RouteGraft {
			want.Before.Graft++
		}
		if a.Route == tasks.RouteGraft {
			want.After.Graft++
			byKey[key]++
		}
		if b.Route != a.Route && a.Route == tasks.RouteGraft {
			want.ToGraft++
		}
		if b.Route != a.Route && b.Route == tasks.RouteGraft {
			want.ToLegacy++
		}
	}
	require.NoError(t, rows.Err())
	require.Equal(t, want.Before.Graft, p.Before.Graft)
	require.Equal(t, want.After.Graft, p.After.Graft)
	require.Equal(t, 3000-want.After.Graft, p.After.Legacy)
	require.Equal(t, want.ToGraft, p.ToGraft)
	require.Equal(t, want.ToLegacy, p.ToLegacy)
	require.EqualValues(t, 1000, p.Before.Graft, "every .info row")
	require.Greater(t, p.ToGraft, int64(0))
	require.Len(t, p.ByKey, 3)
	for _, k := range p.ByKey {
		require.Equal(t, byKey[k.Key], k.AfterGraft, k.Key)
		require.EqualValues(t, 1000, k.Rows)
	}

	// Nothing changed: the flags, and every row is still pending.
	now, err := v.flags.Snapshot(ctx)
	require.NoError(t, err)
	require.Equal(t, before.Version, now.Version)
	require.Equal(t, 3100, v.count(t, `SELECT count(*) FROM `+v.table+` WHERE status = 'pending'`))

	// Bounded: a scan that reaches its limit is an estimate.
	p, err = in.PreviewFlag(ctx, proposed, 500)
	require.NoError(t, err)
	require.True(t, p.Estimate)
	require.EqualValues(t, 500, p.Scanned)

	// Applied, intake takes exactly what the preview counted.
	v.setFlag(t, proposed)
	full, err := in.PreviewFlag(ctx, proposed, 0)
	require.NoError(t, err)
	require.Equal(t, full.Before, full.After, "after the change, before is after")
	require.EqualValues(t, drain(t, in), full.After.Graft)

	// Refusals name what is wrong.
	_, err = in.PreviewFlag(ctx, tasks.Flag{Kind: "nope"}, 0)
	require.ErrorIs(t, err, tasks.ErrUnknownKind)
	_, err = in.PreviewFlag(ctx, tasks.Flag{Kind: "renew", DefaultPercent: 101}, 0)
	require.ErrorContains(t, err, "outside 0-100")
	_, err = in.PreviewFlag(ctx, proposed, tasks.PreviewLimitMax+1)
	require.ErrorContains(t, err, "preview limit")
}
