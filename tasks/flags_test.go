package tasks_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/internal/testenv"
	"github.com/graftdev/graft/tasks"
)

// A change against a stale version is refused with a typed conflict; every
// change is audited with who, why, and the old and new values.
func TestFlagsVersionedAndAudited(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	v.intake(t, v.source(), nil)
	ctx := context.Background()
	f1, err := v.flags.Set(ctx, tasks.Change{Flag: tasks.Flag{Kind: "renew", DefaultPercent: 10}, Actor: "ana", Reason: "start small"})
	require.NoError(t, err)
	require.EqualValues(t, 1, f1.Version)
	_, err = v.flags.Set(ctx, tasks.Change{Flag: tasks.Flag{Kind: "renew", DefaultPercent: 20}, Actor: "bob", Reason: "create again"})
	var conflict *tasks.VersionConflictError
	require.ErrorAs(t, err, &conflict)
	require.True(t, errors.Is(err, tasks.ErrVersionConflict))
	require.EqualValues(t, 1, conflict.Current)
	require.EqualValues(t, 0, conflict.Expected)
	f2, err := v.flags.Set(ctx, tasks.Change{Flag: tasks.Flag{Kind: "renew", DefaultPercent: 25}, Version: 1, Actor: "bob", Reason: "more"})
	require.NoError(t, err)
	require.EqualValues(t, 2, f2.Version)
	_, err = v.flags.Set(ctx, tasks.Change{Flag: tasks.Flag{Kind: "renew", DefaultPercent: 30}, Version: 1, Actor: "eve", Reason: "stale"})
	require.ErrorIs(t, err, tasks.ErrVersionConflict)

	snap, err := v.flags.Snapshot(ctx)
	require.NoError(t, err)
	_, err = v.flags.GlobalKill(ctx, true, snap.Version-1, "eve", "stale kill")
	require.ErrorIs(t, err, tasks.ErrVersionConflict)
	nv, err := v.flags.GlobalKill(ctx, true, snap.Version, "ana", "incident 42")
	require.NoError(t, err)
	require.Equal(t, snap.Version+1, nv)

	audit, err := v.flags.Audit(ctx, "", 10)
	require.NoError(t, err)
	require.Len(t, audit, 3, "refused changes leave no audit entry")
	require.Equal(t, tasks.GlobalKind, audit[0].Kind)
	require.Equal(t, "incident 42", audit[0].Reason)
	require.Equal(t, "bob", audit[1].Actor)
	var old, nw tasks.Flag
	require.NoError(t, json.Unmarshal(audit[1].Old, &old))
	require.NoError(t, json.Unmarshal(audit[1].New, &nw))
	require.EqualValues(t, 10, old.DefaultPercent)
	require.EqualValues(t, 25, nw.DefaultPercent)
	require.Nil(t, audit[2].Old, "the creation has no old value")
	require.False(t, audit[0].At.IsZero())
}

// Bad flags are refused with an error naming what is wrong, and change
// nothing.
func TestFlagsBadInput(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	v.intake(t, v.source(), nil)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		c    tasks.Change
		want string
	}{
		{"unknown kind", tasks.Change{Flag: tasks.Flag{Kind: "refund", DefaultPercent: 5}, Actor: "a", Reason: "r"}, `kind "refund"`},
		{"percent above 100", tasks.Change{Flag: tasks.Flag{Kind: "renew", DefaultPercent: 101}, Actor: "a", Reason: "r"}, "DefaultPercent 101 is outside 0-100"},
		{"negative key percent", tasks.Change{Flag: tasks.Flag{Kind: "renew", KeyRules: []tasks.KeyRule{{Keys: []string{"fr"}, Percent: -1}}}, Actor: "a", Reason: "r"}, "KeyRules[0].Percent -1 is outside 0-100"},
		{"three decimals", tasks.Change{Flag: tasks.Flag{Kind: "renew", DefaultPercent: 12.345}, Actor: "a", Reason: "r"}, "more than two decimals"},
		{"rule without keys", tasks.Change{Flag: tasks.Flag{Kind: "renew", KeyRules: []tasks.KeyRule{{Percent: 5}}}, Actor: "a", Reason: "r"}, "KeyRules[0].Keys is empty"},
		{"no reason", tasks.Change{Flag: tasks.Flag{Kind: "renew"}, Actor: "a"}, "Reason"},
	} {
		_, err := v.flags.Set(ctx, tc.c)
		require.ErrorContains(t, err, tc.want, tc.name)
	}
	audit, err := v.flags.Audit(ctx, "", 10)
	require.NoError(t, err)
	require.Empty(t, audit)
}

// A change made by one process reaches another through LISTEN/NOTIFY: the
// second Flags (its own pool and listener) keeps its snapshot cached for an
// hour, so only the change notification can make it read the new flags.
// (How fast it arrives is shown by the design, not timed here.)
func TestFlagsChangeSeenByAnotherProcess(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	v.intake(t, v.source(), nil)
	ctx := context.Background()
	otherDB, err := sqlx.Open("postgres", testenv.DatabaseURL())
	require.NoError(t, err)
	otherDB.SetMaxOpenConns(2)
	t.Cleanup(func() { _ = otherDB.Close() })
	other, err := tasks.NewFlags(tasks.FlagsConfig{DB: otherDB, DatabaseURL: testenv.DatabaseURL(), Schema: v.schema, MaxStale: time.Hour})
	require.NoError(t, err)
	t.Cleanup(func() { _ = other.Close() })

	for i, pct := range []float64{10, 60, 0} {
		before, err := other.Snapshot(ctx)
		require.NoError(t, err)
		changed := other.Changed()
		f := v.setFlag(t, tasks.Flag{Kind: "renew", DefaultPercent: pct})
		select {
		case <-changed:
		case <-time.After(30 * time.Second):
			t.Fatalf("change %d: the other process heard no notification", i)
		}
		testenv.Eventually(t, 30*time.Second, func() bool {
			s, err := other.Snapshot(ctx)
			require.NoError(t, err)
			return s.Version > before.Version && s.Flags["renew"] != nil && s.Flags["renew"].Version == f.Version
		}, "change %d: the other process still reads the flags before it", i)
		s, err := other.Snapshot(ctx)
		require.NoError(t, err)
		require.Equal(t, pct, s.Flags["renew"].DefaultPercent)
		d, err := other.Evaluate(ctx, "renew", "com", "42")
		require.NoError(t, err)
		require.Equal(t, s.Version, d.FlagsVersion)
	}
}
