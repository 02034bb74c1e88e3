package engine

import (
	"database/sql"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestUnnestClauseFollowsItsColumns pins the unnest clause a column list
// renders: each column's placeholder, cast and alias name in the list's
// order, unnested in the select list (in step), numbered from the offset,
// limited to the first column's length.
func TestUnnestClauseFollowsItsColumns(t *testing.T) {
	cols := newUnnest(
		textCol("id", func(r fencedRun) string { return r.runID }),
		intCol("token", func(r fencedRun) int { return r.token }),
	)
	require.Equal(t, `(SELECT unnest($3::text[]) AS id, unnest($4::int[]) AS token LIMIT cardinality($3::text[])) AS v`, cols.sql(2, "v"))
	b := cols.batch(2)
	b.add(fencedRun{`a"b`, 1})
	b.add(fencedRun{"c", 2})
	require.Equal(t, []any{"x", `{"a\"b","c"}`, "{1,2}"}, b.args([]any{"x"}))
	// As a VALUES list: a parameter per cell, row after row.
	require.Equal(t, `(SELECT * FROM (VALUES ($3::text, $4::int), ($5::text, $6::int)) AS v(id, token) LIMIT (SELECT 2)) AS v`, cols.from(2, "v", 2))
	require.Equal(t, cols.sql(2, "v"), cols.from(2, "v", 0))
	require.Equal(t, 4, cols.params(2))
	require.Equal(t, 2, cols.params(0))
	require.Equal(t, []any{"x", `a"b`, int64(1), "c", int64(2)}, b.argsAs([]any{"x"}, 2))
}

// The unnest clause gives back a batch's rows in order, each row's cells
// from the same position of every array (NULL cells too), and no rows for
// a batch without any (its columns sent as NULL).
func TestUnnestClauseReadsBackRows(t *testing.T) {
	t.Parallel()
	db := testDB(t)
	type row struct {
		fencedRun
		owner string
	}
	cols := newUnnest(
		textCol("id", func(r row) string { return r.runID }),
		intCol("token", func(r row) int { return r.token }),
		optTextCol("owner", func(r row) string { return r.owner }),
	)
	q := `SELECT v.id, v.token, v.owner FROM ` + cols.sql(0, "v")
	read := func(args []any) []string {
		rows, err := db.Query(q, args...)
		require.NoError(t, err)
		defer rows.Close()
		var got []string
		for rows.Next() {
			var id string
			var token int
			var owner sql.NullString
			require.NoError(t, rows.Scan(&id, &token, &owner))
			got = append(got, id+"/"+strconv.Itoa(token)+"/"+owner.String+"/"+strconv.FormatBool(owner.Valid))
		}
		require.NoError(t, rows.Err())
		return got
	}
	b := cols.batch(3)
	b.add(row{fencedRun{"c", 3}, "w"})
	b.add(row{fencedRun{"a", 1}, ""})
	b.add(row{fencedRun{"b", 2}, "x"})
	require.Equal(t, []string{"c/3/w/true", "a/1//false", "b/2/x/true"}, read(b.args(nil)))
	none := cols.batch(0)
	require.Empty(t, read(none.args(nil)))
}

// TestValuesCellsSendNull pins the parameters of a VALUES list's cells:
// NULL (nil) where the array element would be NULL, the value otherwise.
func TestValuesCellsSendNull(t *testing.T) {
	now := time.Date(2026, 12, 6, 6, 0, 0, 0, time.UTC)
	st := &stepRow{RunID: "r", Seq: 1, Kind: stepActivity, Name: "n", Status: stepStarted, Input: []byte(`{}`),
		Attempts: 1, StartedAt: nullTime(now), SignalID: sql.NullInt64{Int64: 7, Valid: true}}
	args := stepArgs(nil, []*stepRow{st}, []fence{{"w", 2}}, 1)
	require.Len(t, args, len(stepCols))
	cell := func(name string) any {
		for i, c := range stepCols {
			if c.name == name {
				return args[i]
			}
		}
		panic(name)
	}
	require.Equal(t, "r", cell("run_id"))
	require.Equal(t, int64(1), cell("seq"))
	require.Equal(t, []byte(`{}`), cell("input"))
	require.Nil(t, cell("output"))
	require.Nil(t, cell("error"))
	require.Equal(t, now, cell("started_at"))
	require.Nil(t, cell("completed_at"))
	require.Equal(t, int64(7), cell("signal_id"))
	require.Nil(t, cell("child_workflow_id"))
	require.Equal(t, "w", cell("owner"))
	require.Equal(t, int64(2), cell("token"))
	require.Nil(t, cell("attempt_log"))
	fin := &writeOp{runID: "r", owner: "w", token: 2, fin: &finishSpec{status: StatusWaiting, errJSON: []byte(`{"m":1}`)}}
	fargs := finishArgs(nil, []*writeOp{fin}, []int{0}, 1)
	require.Equal(t, []any{"r", "w", "waiting", nil, `{"m":1}`, nil, int64(0), int64(2), false}, fargs)
}

// TestHotStatementsNumberTheirParameters checks that the statements built
// from several column lists use exactly the parameters their callers send.
func TestHotStatementsNumberTheirParameters(t *testing.T) {
	s := newStore(nil, "graft")
	maxParam := func(q string) int {
		n := 0
		for _, m := range regexp.MustCompile(`\$(\d+)`).FindAllStringSubmatch(q, -1) {
			v, _ := strconv.Atoi(m[1])
			n = max(n, v)
		}
		return n
	}
	for name, c := range map[string]struct {
		q string
		n int
	}{
		"finishRuns":          {s.sql.finishRuns, finishParams},
		"insertRuns":          {s.sql.insertRuns, runParams},
		"insertAnnouncedRuns": {s.sql.insertAnnouncedRuns, runParams + 1},
		"insertSteps":         {s.sql.insertSteps, stepParams},
	} {
		require.Equal(t, c.n, maxParam(c.q), name)
	}
	for name, sh := range commitShapes() {
		c := s.sql.commit[sh]
		require.Equal(t, c.params, maxParam(c.q), name)
		for _, rows := range []uint8{1, valuesRows} {
			c := s.commitFor(commitKey{sh: sh, steps: rows, fins: rows, news: rows, newSteps: rows})
			require.Equal(t, c.params, maxParam(c.q), "%s, %d rows", name, rows)
		}
	}
}
