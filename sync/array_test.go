package graftsync

import (
	"testing"

	"github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/grafttest"
)

// TestArrayLiteral: values travel to PostgreSQL in text array literals that
// this package writes itself, quoting an element only when it must; quotes,
// backslashes, separators, whitespace and the word NULL in any case must
// come back exactly, and nil as NULL.
func TestArrayLiteral(t *testing.T) {
	t.Parallel()
	vals := []string{`plain`, `with "quotes"`, `back\slash\`, `a,b`, `{braces}`, `NULL`, `null`, `nUlL`, `NULLs`, ``, " lead", "trail\t",
		"new\nline", `ünïcode ✓`, `42`, `-1.5e3`, `[1:1]={x}`, `"`, `\`}
	in := []*string{nil, nil} // NULLs before a value, and one at the end
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
	require.Equal(t, "<null>", *out[0])
	require.Equal(t, "<null>", *out[1])
	for i, v := range vals {
		require.Equal(t, v, *out[i+2])
	}
	require.Equal(t, "<null>", *out[len(vals)+2])
	require.Equal(t, "{}", pgArray(nil))
}

// TestArraysLeaveOutTrailingNulls: the rows statement's arrays are written
// into one buffer and leave out their trailing NULLs (and false as NULL),
// which unnest pads back against the full-length first array.
func TestArraysLeaveOutTrailingNulls(t *testing.T) {
	t.Parallel()
	x := "x"
	var a arrayBuilder
	for _, k := range []string{"a", "b", "c"} {
		a.add(k)
	}
	a.next(false)
	for _, v := range []*string{&x, nil, nil} {
		a.addPtr(v)
	}
	a.next(true)
	for range 3 {
		a.addPtr(nil)
	}
	a.next(true)
	for _, v := range []bool{false, true, false} {
		a.addTrue(v)
	}
	a.next(true)
	got := a.all()
	require.Equal(t, []string{`{a,b,c}`, `{x}`, `{}`, `{NULL,t}`}, got)
	rows, err := grafttest.DB(t).Query(`SELECT k, COALESCE(v, '<null>'), COALESCE(n, '<null>'), COALESCE(b::text, '<null>')
		FROM unnest($1::text[], $2::text[], $3::text[], $4::bool[]) AS u(k, v, n, b)`, got[0], got[1], got[2], got[3])
	require.NoError(t, err)
	defer rows.Close()
	var out []string
	for rows.Next() {
		var k, v, n, b string
		require.NoError(t, rows.Scan(&k, &v, &n, &b))
		out = append(out, k+"="+v+","+n+","+b)
	}
	require.NoError(t, rows.Err())
	require.Equal(t, []string{"a=x,<null>,<null>", "b=<null>,<null>,true", "c=<null>,<null>,<null>"}, out)
}
