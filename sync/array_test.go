package graftsync

import (
	"testing"

	"github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/grafttest"
)

// TestArrayLiteral: values travel to PostgreSQL in text array literals that
// this package writes itself; quotes, backslashes, separators and the word
// NULL must come back exactly, and nil as NULL.
func TestArrayLiteral(t *testing.T) {
	t.Parallel()
	vals := []string{`plain`, `with "quotes"`, `back\slash\`, `a,b`, `{braces}`, `NULL`, ``, "new\nline", `ünïcode ✓`}
	in := make([]*string, 0, len(vals)+1)
	for i := range vals {
		in = append(in, &vals[i])
	}
	in = append(in, nil)
	var out []*string
	var got pq.StringArray
	require.NoError(t, grafttest.DB(t).QueryRow(`SELECT array_agg(COALESCE(x, '<null>')) FROM unnest($1::text[]) x`, pgArray(in)).Scan(&got))
	for i := range got {
		out = append(out, &got[i])
	}
	require.Len(t, out, len(in))
	for i, v := range vals {
		require.Equal(t, v, *out[i])
	}
	require.Equal(t, "<null>", *out[len(vals)])
	require.Equal(t, "{}", pgArray(nil))
}
