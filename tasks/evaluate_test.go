package tasks_test

import (
	"context"
	"crypto/md5"
	"encoding/json"
	"fmt"
	"strconv"
	"testing"

	"github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/tasks"
)

// idIn returns an operation ID whose bucket for kind is inside [lo, hi).
func idIn(kind string, lo, hi int) string {
	for i := 0; ; i++ {
		id := "op-" + strconv.Itoa(i)
		if b := tasks.Bucket(kind, id); b >= lo && b < hi {
			return id
		}
	}
}

type evalCase struct {
	name      string
	snap      tasks.Snapshot
	kind, key string
	id        string
	route     tasks.Route
	rule      string
}

func evalCases() []evalCase {
	half := &tasks.Flag{Kind: "renew", DefaultPercent: 50,
		KeyRules: []tasks.KeyRule{{Keys: []string{"info"}, Percent: 100}, {Keys: []string{"fr", "de"}, Percent: 0.5}}}
	flags := func(fs ...*tasks.Flag) map[string]*tasks.Flag {
		m := map[string]*tasks.Flag{}
		for _, f := range fs {
			m[f.Kind] = f
		}
		return m
	}
	killed := *half
	killed.Killed = true
	low, high := idIn("renew", 0, 50), idIn("renew", 5000, 10000)
	edge := idIn("renew", 4999, 5000)
	justOut := idIn("renew", 5000, 5001)
	return []evalCase{
		{"global kill wins over everything", tasks.Snapshot{Killed: true, Flags: flags(half)}, "renew", "info", low, tasks.RouteLegacy, tasks.RuleGlobalKill},
		{"no flag for the kind", tasks.Snapshot{Flags: flags(half)}, "transfer", "info", low, tasks.RouteLegacy, tasks.RuleNoFlag},
		{"kind kill switch", tasks.Snapshot{Flags: flags(&killed)}, "renew", "info", low, tasks.RouteLegacy, tasks.RuleKill},
		{"exact key at 100%", tasks.Snapshot{Flags: flags(half)}, "renew", "info", high, tasks.RouteGraft, tasks.RuleKey},
		{"key list, bucket below 0.5%", tasks.Snapshot{Flags: flags(half)}, "renew", "fr", low, tasks.RouteGraft, tasks.RuleKey},
		{"key list, bucket above 0.5%", tasks.Snapshot{Flags: flags(half)}, "renew", "fr", high, tasks.RouteLegacy, tasks.RuleKey},
		{"any key of a list", tasks.Snapshot{Flags: flags(half)}, "renew", "de", high, tasks.RouteLegacy, tasks.RuleKey},
		{"default percentage, in", tasks.Snapshot{Flags: flags(half)}, "renew", "com", edge, tasks.RouteGraft, tasks.RuleDefault},
		{"default percentage, out", tasks.Snapshot{Flags: flags(half)}, "renew", "com", justOut, tasks.RouteLegacy, tasks.RuleDefault},
		{"empty key takes the default", tasks.Snapshot{Flags: flags(half)}, "renew", "", low, tasks.RouteGraft, tasks.RuleDefault},
		{"0% default", tasks.Snapshot{Flags: flags(&tasks.Flag{Kind: "renew"})}, "renew", "com", low, tasks.RouteLegacy, tasks.RuleDefault},
		{"100% default", tasks.Snapshot{Flags: flags(&tasks.Flag{Kind: "renew", DefaultPercent: 100})}, "renew", "com", high, tasks.RouteGraft, tasks.RuleDefault},
	}
}

// Each rule of the evaluator.
func TestEvaluateRules(t *testing.T) {
	t.Parallel()
	for _, tc := range evalCases() {
		t.Run(tc.name, func(t *testing.T) {
			tc.snap.Version = 7
			d := tasks.Evaluate(&tc.snap, tc.kind, tc.key, tc.id)
			require.Equal(t, tc.route, d.Route)
			require.Equal(t, tc.rule, d.Rule)
			require.Equal(t, tasks.Bucket(tc.kind, tc.id), d.Bucket)
			require.EqualValues(t, 7, d.FlagsVersion)
		})
	}
}

// Raising a percentage only adds operations to graft.
func TestRaisingPercentOnlyAdds(t *testing.T) {
	t.Parallel()
	snap := func(p float64) *tasks.Snapshot {
		return &tasks.Snapshot{Flags: map[string]*tasks.Flag{"renew": {Kind: "renew", DefaultPercent: p}}}
	}
	for i := 0; i < 20000; i++ {
		id := strconv.Itoa(i)
		prev := false
		for _, p := range []float64{0, 0.01, 1, 12.5, 50, 99.99, 100} {
			in := tasks.Evaluate(snap(p), "renew", "com", id).Route == tasks.RouteGraft
			require.False(t, prev && !in, "operation %s left graft when the percentage rose to %v", id, p)
			prev = in
		}
		require.True(t, prev, "100%% routes everything to graft")
	}
}

// The SQL function decides exactly as Evaluate, rule by rule.
func TestSQLDecisionMatchesEvaluate(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	v.intake(t, v.source(), nil) // declares the kinds
	ctx := context.Background()
	s := pq.QuoteIdentifier(v.schema)
	for _, tc := range evalCases() {
		_, err := v.db.Exec(`DELETE FROM ` + s + `.flags`)
		require.NoError(t, err)
		for _, f := range tc.snap.Flags {
			v.setFlag(t, *f)
		}
		snapNow, err := v.flags.Snapshot(ctx)
		require.NoError(t, err)
		cur := snapNow.Version
		if snapNow.Killed != tc.snap.Killed {
			cur, err = v.flags.GlobalKill(ctx, tc.snap.Killed, cur, "test", "case")
			if err != nil { // the cache was a change behind
				require.NoError(t, v.db.Get(&cur, `SELECT version FROM `+s+`.flags_state`))
				cur, err = v.flags.GlobalKill(ctx, tc.snap.Killed, cur, "test", "case")
			}
			require.NoError(t, err)
		}
		var route, rule string
		var bucket int
		var version int64
		require.NoError(t, v.db.QueryRow(`SELECT route, rule, bucket, flags_version FROM `+s+`.route_decision($1, NULLIF($2, ''), $3)`,
			tc.kind, tc.key, tc.id).Scan(&route, &rule, &bucket, &version), tc.name)
		want := tasks.Evaluate(&tc.snap, tc.kind, tc.key, tc.id)
		require.Equal(t, string(want.Route), route, tc.name)
		require.Equal(t, want.Rule, rule, tc.name)
		require.Equal(t, want.Bucket, bucket, tc.name)
		var graft bool
		require.NoError(t, v.db.QueryRow(`SELECT `+s+`.routed_to_graft($1, NULLIF($2, ''), $3)`, tc.kind, tc.key, tc.id).Scan(&graft))
		require.Equal(t, want.Route == tasks.RouteGraft, graft, tc.name)
		// route_with, given the same flag as JSON, decides the same.
		var flagJSON []byte
		if f := tc.snap.Flags[tc.kind]; f != nil {
			flagJSON, _ = json.Marshal(f)
		}
		require.NoError(t, v.db.QueryRow(`SELECT route, rule, bucket FROM `+s+`.route_with($1, $2::jsonb, $3, NULLIF($4, ''), $5)`,
			tc.snap.Killed, nullBytes(flagJSON), tc.kind, tc.key, tc.id).Scan(&route, &rule, &bucket), tc.name)
		require.Equal(t, string(want.Route), route, "route_with: "+tc.name)
		require.Equal(t, want.Rule, rule, "route_with: "+tc.name)
		require.Equal(t, want.Bucket, bucket, "route_with: "+tc.name)
		// And so does a bucket below route_threshold, what previews count.
		require.NoError(t, v.db.QueryRow(`SELECT `+s+`.flag_bucket($3, $4) < `+s+`.route_threshold($1, $2::jsonb, NULLIF($5, ''))`,
			tc.snap.Killed, nullBytes(flagJSON), tc.kind, tc.id, tc.key).Scan(&graft), tc.name)
		require.Equal(t, want.Route == tasks.RouteGraft, graft, "route_threshold: "+tc.name)
	}
}

func nullBytes(b []byte) any {
	if b == nil {
		return nil
	}
	return string(b)
}

// Go and SQL compute the same bucket for a million IDs of several shapes.
func TestBucketAgreesWithSQLOnAMillionIDs(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	s := pq.QuoteIdentifier(v.schema)
	rows, err := v.db.Query(`SELECT i, ` + s + `.flag_bucket('renew', CASE i % 4
			WHEN 0 THEN i::text WHEN 1 THEN 'op-' || i WHEN 2 THEN md5(i::text)::uuid::text ELSE 'dömaine-' || i || '.fr' END)
		FROM generate_series(0, 999999) i ORDER BY i`)
	require.NoError(t, err)
	defer rows.Close()
	n := 0
	for rows.Next() {
		var i, b int
		require.NoError(t, rows.Scan(&i, &b))
		var id string
		switch i % 4 {
		case 0:
			id = strconv.Itoa(i)
		case 1:
			id = "op-" + strconv.Itoa(i)
		case 2:
			id = uuidOfMD5(strconv.Itoa(i))
		default:
			id = "dömaine-" + strconv.Itoa(i) + ".fr"
		}
		if got := tasks.Bucket("renew", id); got != b {
			t.Fatalf("ID %q: Go bucket %d, SQL bucket %d", id, got, b)
		}
		n++
	}
	require.NoError(t, rows.Err())
	require.Equal(t, 1000000, n)
}

// uuidOfMD5 is PostgreSQL's md5(s)::uuid::text.
func uuidOfMD5(s string) string {
	h := fmt.Sprintf("%x", md5.Sum([]byte(s)))
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
