package tasks_test

import (
	"context"
	"testing"
	"time"

	"github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/tasks"
)

// A key rule names a key as the source's transform derives it: a key the
// transform would change can never match, and is refused with the key, the
// kind, the transform and what to write instead.
func TestValidateKeys(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		transform, key, want string // want "": accepted
	}{
		{tasks.TransformNone, "EU", ""},
		{tasks.TransformNone, "example.COM", ""},
		{tasks.TransformLower, "eu", ""},
		{tasks.TransformLower, "EU", `key "EU" never matches: kind renew lower-cases its keys (transform lower); write "eu"`},
		{tasks.TransformLower, "Example.com", `key "Example.com" never matches: kind renew lower-cases its keys (transform lower); write "example.com"`},
		{tasks.TransformTLD, "com", ""},
		{tasks.TransformTLD, "COM", `key "COM" never matches: kind renew keys on the last dot-separated label, lower-cased (transform tld); write "com"`},
		{tasks.TransformTLD, "example.com", `key "example.com" never matches: kind renew keys on the last dot-separated label, lower-cased (transform tld); write "com"`},
		{tasks.TransformTLD, ".COM", `key ".COM" never matches: kind renew keys on the last dot-separated label, lower-cased (transform tld); write "com"`},
		{tasks.TransformTLD, "com.", `key "com." never matches: kind renew keys on the last dot-separated label, lower-cased (transform tld); no key can match it, remove it`},
	} {
		fl := tasks.Flag{Kind: "renew", KeyRules: []tasks.KeyRule{{Keys: []string{"fr"}, Percent: 5}, {Keys: []string{"net", tc.key}, Percent: 50}}}
		err := fl.ValidateKeys(tc.transform)
		if tc.want == "" {
			require.NoError(t, err, "%s %q", tc.transform, tc.key)
			continue
		}
		var ve *tasks.FlagValueError
		require.ErrorAs(t, err, &ve, "%s %q", tc.transform, tc.key)
		require.Equal(t, "KeyRules", ve.Field)
		require.Equal(t, 1, ve.Rule)
		require.Equal(t, "net,"+tc.key+"=50", ve.Value)
		require.Equal(t, tc.want, ve.Problem)
		require.Equal(t, `tasks: flag "renew": KeyRules[1]: `+tc.want, err.Error())
	}
}

// Flags.Set refuses a key rule that the transform of a source declaring
// the kind (recorded by its intake) would change, and changes nothing. A
// rule already stored (before the check, or before the source's transform
// changed) does not block a change that keeps the rules as they are, such
// as the kill switch; KeyRuleProblems names it.
func TestFlagsSetRefusesKeysTheTransformChanges(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	v.intake(t, v.source(), nil) // transform tld
	ctx := context.Background()
	for _, key := range []string{"COM", "example.com", ".COM"} {
		_, err := v.flags.Set(ctx, tasks.Change{Flag: tasks.Flag{Kind: "renew", KeyRules: []tasks.KeyRule{{Keys: []string{key}, Percent: 50}}},
			Actor: "a", Reason: "r"})
		require.ErrorContains(t, err, `key "`+key+`" never matches: kind renew keys on the last dot-separated label, lower-cased (transform tld); write "com"`)
	}
	require.Zero(t, v.count(t, `SELECT count(*) FROM `+pq.QuoteIdentifier(v.schema)+`.flags`), "refused changes store nothing")
	f := v.setFlag(t, tasks.Flag{Kind: "renew", KeyRules: []tasks.KeyRule{{Keys: []string{"com"}, Percent: 50}}})

	// A rule stored before the check existed.
	changed := v.flags.Changed()
	_, err := v.db.Exec(`UPDATE ` + pq.QuoteIdentifier(v.schema) + `.flags SET key_rules = '[{"keys": ["COM"], "percent": 50}]' WHERE kind = 'renew'`)
	require.NoError(t, err)
	_, err = v.db.Exec(`SELECT pg_notify($1, 'renew')`, v.schema+"_flags")
	require.NoError(t, err)
	select {
	case <-changed:
	case <-time.After(30 * time.Second):
		t.Fatal("no change notification")
	}
	snap, err := v.flags.Snapshot(ctx)
	require.NoError(t, err)
	stored := tasks.Flag{Kind: "renew", KeyRules: []tasks.KeyRule{{Keys: []string{"COM"}, Percent: 50}}}
	problems, err := v.flags.KeyRuleProblems(ctx, snap)
	require.NoError(t, err)
	require.Len(t, problems, 1)
	require.ErrorContains(t, problems["renew"], `key "COM" never matches`)
	stored.Killed = true
	_, err = v.flags.Set(ctx, tasks.Change{Flag: stored, Version: f.Version, Actor: "a", Reason: "incident"})
	require.NoError(t, err, "the kill switch keeps the stored rules")
	stored.KeyRules = append(stored.KeyRules, tasks.KeyRule{Keys: []string{"fr"}, Percent: 10})
	_, err = v.flags.Set(ctx, tasks.Change{Flag: stored, Version: f.Version + 1, Actor: "a", Reason: "more"})
	require.ErrorContains(t, err, `key "COM" never matches`, "a change to the rules must fix them")

	// A source whose key comes from Go records no transform: no check.
	src := v.source()
	src.Name, src.Kinds = "by-func", map[string]tasks.KindSpec{"push": {Workflow: "renew"}}
	src.Key = tasks.KeySpec{Fn: func(r tasks.Row) (string, error) { return r.String("domain"), nil }}
	v.intake(t, src, nil)
	v.setFlag(t, tasks.Flag{Kind: "push", KeyRules: []tasks.KeyRule{{Keys: []string{"Example.COM"}, Percent: 50}}})
}
