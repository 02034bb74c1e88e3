package engine

import (
	"regexp"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestUnnestClauseFollowsItsColumns pins the unnest clause a column list
// renders: each column's placeholder, cast and alias name in the list's
// order, numbered from the offset, limited to the first column's length.
func TestUnnestClauseFollowsItsColumns(t *testing.T) {
	cols := newUnnest(
		textCol("id", func(r fencedRun) string { return r.runID }),
		intCol("token", func(r fencedRun) int { return r.token }),
	)
	require.Equal(t, `(SELECT * FROM unnest($3::text[], $4::int[]) AS v(id, token) LIMIT cardinality($3::text[])) AS v`, cols.sql(2, "v"))
	b := cols.batch(2)
	b.add(fencedRun{`a"b`, 1})
	b.add(fencedRun{"c", 2})
	require.Equal(t, []any{"x", `{"a\"b","c"}`, "{1,2}"}, b.args([]any{"x"}))
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
	}
}
