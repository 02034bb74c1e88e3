package pgarray_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/internal/pgarray"
)

// What reads back as itself unquoted; engine's and sync's tests read both
// kinds back through PostgreSQL.
func TestPlain(t *testing.T) {
	for s, plain := range map[string]bool{
		"run-1": true, "2026-12-07T05:30:00.5Z": true, `\\x7b`: false, "é": true, "NULLS": true, "nul": true,
		"": false, "NULL": false, "null": false, "nUlL": false, `a"b`: false, `a\b`: false, "{": false, "}": false,
		"a,b": false, "a b": false, "\tx": false, "x\n": false, "\r": false, "\v": false, "\f": false,
	} {
		require.Equal(t, plain, pgarray.Plain(s), "%q", s)
		require.Equal(t, plain, pgarray.Plain([]byte(s)), "%q as bytes", s)
	}
}

// AppendElem quotes what is not Plain, escaping quotes and backslashes.
func TestAppendElem(t *testing.T) {
	for s, want := range map[string]string{
		"run-1": "run-1", "": `""`, "NULL": `"NULL"`, "a b": `"a b"`, `a"b`: `"a\"b"`, `a\b`: `"a\\b"`,
		`"\`: `"\"\\"`, "{x}": `"{x}"`,
	} {
		require.Equal(t, want, string(pgarray.AppendElem([]byte("p,"), s))[2:], "%q", s)
		require.Equal(t, want, string(pgarray.AppendElem(nil, []byte(s))), "%q as bytes", s)
	}
}
